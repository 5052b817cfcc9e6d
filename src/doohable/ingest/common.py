"""The types every ingest path shares: where an image was seen, what one ingest did, the counts
of a run, and the error for inputs that fail for a reason other than their image content."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class IngestError(ValueError):
    """An input could not be ingested for a reason other than its image content."""


@dataclass(frozen=True)
class SourceInfo:
    """Where an image was seen. ``kind``: file | url | upload | userscript."""

    kind: str
    uri: str
    network: str | None = None
    page_url: str | None = None
    author: str | None = None
    caption: str | None = None
    posted_at: Any = None  # datetime
    added_by: int | None = None  # users.id


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did: the image's id, whether it was already known, and the closest
    earlier image when it is a near-duplicate."""

    image_id: int
    sha256: str
    duplicate: bool
    near_duplicate_of: int | None
    phash: str = ""


@dataclass
class IngestReport:
    """Counts of an ingest run; ``rejected`` lists ``{"source", "error"}`` for each bad input."""

    added: int = 0
    duplicates: int = 0
    near_duplicates: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)

    def count(self, result: IngestResult) -> None:
        self.image_ids.append(result.image_id)
        if result.duplicate:
            self.duplicates += 1
            return
        self.added += 1
        if result.near_duplicate_of is not None:
            self.near_duplicates += 1

    def reject(self, source: str, error: str) -> None:
        self.rejected.append({"source": source, "error": error})

    def as_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "duplicates": self.duplicates,
            "near_duplicates": self.near_duplicates,
            "rejected": self.rejected,
            "image_ids": self.image_ids,
        }
