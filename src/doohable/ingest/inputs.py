"""Inputs -> images: files, folders, URLs and ``.txt``/``.csv`` lists expanded into items,
each read or fetched and ingested in its own transaction."""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from doohable.config import Settings
from doohable.images import ImageError, read_limited
from doohable.ingest.common import IngestError, IngestReport, IngestResult, SourceInfo
from doohable.ingest.fetch import fetch_url
from doohable.ingest.phash import PhashIndex
from doohable.ingest.store import ingest_bytes
from doohable.store.blobs import BlobStore

log = logging.getLogger(__name__)

MAX_LIST_DEPTH = 3
LIST_SUFFIXES = (".txt", ".csv")


@dataclass(frozen=True)
class Item:
    """One thing to ingest: a file path or a URL."""

    kind: str  # file | url
    uri: str


_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def _is_url(s: str) -> bool:
    return _SCHEME.match(s) is not None


def read_list(path: Path) -> list[str]:
    """Entries of a ``.txt`` (one per line, ``#`` comments) or ``.csv`` (a column named
    url/path/file/source, else the first column) list; relative paths are taken relative to
    the list's folder."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
        header = [c.strip().lower() for c in rows[0]] if rows else []
        named = next((header.index(n) for n in ("url", "path", "file", "source") if n in header), None)
        col, rows = (named, rows[1:]) if named is not None else (0, rows)
        entries = [r[col].strip() for r in rows if len(r) > col]
    else:
        entries = [ln.strip() for ln in text.splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    return [e if _is_url(e) or os.path.isabs(e) else str(path.parent / e) for e in entries]


def _walk(folder: Path) -> Iterator[Path]:
    """Files under ``folder``, recursively, sorted, without hidden files or following links."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def expand_inputs(inputs: Iterable[str], report: IngestReport, depth: int = 0) -> Iterator[Item]:
    """Files, folders (recursive), URLs and ``.txt``/``.csv`` lists -> items; inputs that
    cannot be used go to ``report.rejected``. Inside folders every file is an image candidate
    (a list must be given directly)."""
    for raw in inputs:
        s = raw.strip()
        if not s:
            continue
        if _is_url(s):
            if s.lower().startswith(("http://", "https://")):
                yield Item("url", s)
            else:
                report.reject(s, "only http and https URLs can be fetched")
            continue
        p = Path(s).expanduser()
        if p.is_dir():
            yield from (Item("file", str(f.resolve())) for f in _walk(p))
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            if depth >= MAX_LIST_DEPTH:
                report.reject(s, f"lists nested more than {MAX_LIST_DEPTH} deep")
                continue
            try:
                entries = read_list(p)
            except (OSError, UnicodeDecodeError, csv.Error) as e:
                report.reject(s, f"cannot read the list: {e}")
                continue
            yield from expand_inputs(entries, report, depth + 1)
        elif p.is_file():
            yield Item("file", str(p.resolve()))
        else:
            report.reject(s, "no such file or folder")


ProgressFn = Callable[[int, int, str], None]


def _ingest_item(
    engine: Engine, blobs: BlobStore, item: Item, settings: Settings, index: PhashIndex
) -> IngestResult:
    """Read or fetch one item and ingest it in its own transaction."""
    from doohable.store.db import session_scope

    if item.kind == "url":
        data = fetch_url(item.uri, settings)
    else:
        data = read_limited(item.uri, settings.max_image_bytes)
    source = SourceInfo(item.kind, item.uri)
    try:
        with session_scope(engine) as session:
            return ingest_bytes(session, blobs, data, source=source, settings=settings, index=index)
    except IntegrityError:
        # another process stored the same bytes at the same moment: try again, as a duplicate
        with session_scope(engine) as session:
            return ingest_bytes(session, blobs, data, source=source, settings=settings, index=index)


def ingest_inputs(
    inputs: list[str], settings: Settings, on_progress: ProgressFn | None = None
) -> IngestReport:
    """Ingest every image found in ``inputs``; one transaction per image, so that a bad
    input is listed in ``rejected`` with its reason and never stops the run.

    ``on_progress(done, total, source)`` is called after each item."""
    from doohable.store.blobs import open_blobs
    from doohable.store.db import get_engine, session_scope
    from doohable.store.faults import unavailable_reason

    report = IngestReport()
    items = list(expand_inputs(inputs, report))
    engine = get_engine(settings.resolved_database_url)
    blobs = open_blobs(settings.resolved_blob_url)
    with session_scope(engine) as session:
        index = PhashIndex.load(session)
    for done, item in enumerate(items, 1):
        try:
            result = _ingest_item(engine, blobs, item, settings, index)
            report.count(result)
            if not result.duplicate:
                index.add(result.image_id, result.phash)
        except (ImageError, IngestError, OSError) as e:
            report.reject(item.uri, str(e))
        except Exception as e:  # a bug or a database error must not lose the rest of the run
            reason = unavailable_reason(e)  # the database down or locked: said plainly
            if reason is None:
                log.exception("ingest of %s failed", item.uri)
            report.reject(item.uri, reason or f"unexpected error ({type(e).__name__}): {e}")
        if on_progress is not None:
            on_progress(done, len(items), item.uri)
    return report
