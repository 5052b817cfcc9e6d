"""A small real collection for the in-house loop's tests: SCUT images in the database and
votes that follow their mean scores."""

from __future__ import annotations

import csv
import hashlib
import itertools
from pathlib import Path
from typing import Any

from doohable.store.blobs import open_blobs
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Image, Vote
from doohable.store.users import add_user


def vote_collection(settings: Any, shared_data: Path, n: int = 14) -> list[int]:
    """n real SCUT images in the database, and one vote per pair for the higher mean score."""
    root = shared_data / "scut-fbp5500"
    labels = {r["image"]: float(r["score"]) for r in csv.DictReader((root / "labels.csv").open())}
    names = sorted(labels)[:: len(labels) // n][:n]
    blobs = open_blobs(settings.resolved_blob_url)
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        voter, _ = add_user(s, "dana")
        ids, truth = [], {}
        for name in names:
            data = (root / "images" / name).read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            blobs.put(sha, data)
            img = Image(sha256=sha, phash="0" * 16, width=350, height=350, format="JPEG",
                        size_bytes=len(data))
            s.add(img)
            s.flush()
            ids.append(img.id)
            truth[img.id] = labels[name]
        for a, b in itertools.combinations(ids, 2):
            s.add(Vote(voter_id=voter.id, left_id=a, right_id=b, winner_id=a if truth[a] > truth[b] else b))
    return ids
