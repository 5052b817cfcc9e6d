"""Crash consistency: ``kill -9`` a real ``doohable serve`` while 8 clients vote, undo and
upload; restart it; then every acknowledged (2xx) vote and image is there, nothing is
half-written (no orphan blob, no row without its bytes, no temporary file) and the stored
Elo ratings equal a replay of the vote log. On SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from doohable import voting
from doohable.config import Settings
from doohable.store.blobs import BlobStore, open_blobs
from doohable.store.db import dispose_all, get_engine, session_scope
from doohable.store.models import Image, Rating, Vote
from doohable.store.users import add_user
from server_support import start_server, stop_server
from test_blobs import s3_endpoint, s3_url, store  # noqa: F401  (fixtures: the file and S3 stores)
from voting_support import add_images, jpeg_bytes

CLIENTS = 8
MIN_ACKED_VOTES = 120  # kill once at least this many votes were acknowledged (or after MAX_RUN_S)
MAX_RUN_S = 20.0


@dataclass
class Acked:
    """What the server acknowledged (answered 2xx) to the clients."""

    votes: dict[int, tuple[int, str, int | None]] = field(default_factory=dict)  # id -> voter, token, winner
    undos: set[int] = field(default_factory=set)
    images: dict[int, str] = field(default_factory=dict)  # id -> sha256
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client_loop(
    url: str, token: str, voter_id: int, k: int, acked: Acked, stop: threading.Event,
    on_response: Callable[[httpx.Response], None] | None = None,
) -> None:
    """Vote (and now and then undo or upload) until the server dies or ``stop`` is set;
    ``on_response`` sees every answer."""
    rng = random.Random(k)
    n = 0
    hooks = {"response": [on_response] if on_response else []}
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=auth, timeout=30, event_hooks=hooks) as c:
        while not stop.is_set():
            n += 1
            try:
                if n % 5 == 0:
                    data = jpeg_bytes(10_000 + 1000 * k + n)
                    r = c.post("/api/v1/images", files={"file": (f"{k}-{n}.jpg", data, "image/jpeg")})
                    if r.status_code == 201:
                        with acked.lock:
                            acked.images[r.json()["id"]] = hashlib.sha256(data).hexdigest()
                    continue
                if n % 11 == 0:
                    r = c.post("/api/v1/votes/undo")
                    if r.status_code == 200 and r.json()["undone"]:
                        with acked.lock:
                            acked.undos.add(r.json()["undo_id"])
                    continue
                pair = c.get("/api/v1/pairs/next")
                if pair.status_code != 200:
                    continue
                p = pair.json()
                winner = rng.choice([p["left"]["id"], p["right"]["id"], None])
                r = c.post("/api/v1/votes", json={"pair_token": p["pair_token"], "winner_id": winner})
                if r.status_code in (200, 201):
                    with acked.lock:
                        acked.votes[r.json()["vote_id"]] = (voter_id, p["pair_token"], winner)
            except httpx.HTTPError:
                return  # the server was killed


def _blob_files(root: Path) -> tuple[set[str], list[Path]]:
    """SHA-256 names of the blobs under ``root``, and any other file (e.g. a temporary one)."""
    shas, other = set(), []
    for p in root.rglob("*"):
        if p.is_file():
            if len(p.name) == 64 and p.parent.parent.parent == root:
                shas.add(p.name)
            else:
                other.append(p)
    return shas, other


def _check_store(settings: Settings, acked: Acked) -> None:
    engine = get_engine(settings.resolved_database_url)
    blobs = open_blobs(settings.resolved_blob_url)
    root = Path(settings.resolved_blob_url.removeprefix("file://"))
    with session_scope(engine) as s:
        # 1. every acknowledged vote, undo and image is stored, as acknowledged
        votes = {v.id: v for v in s.scalars(select(Vote))}
        for vote_id, (voter, token, winner) in acked.votes.items():
            v = votes.get(vote_id)
            assert v is not None, f"acknowledged vote {vote_id} lost"
            assert (v.voter_id, v.pair_token, v.winner_id) == (voter, token, winner)
        assert acked.undos <= set(votes), "an acknowledged undo was lost"
        images = {i.id: i.sha256 for i in s.scalars(select(Image))}
        for image_id, sha in acked.images.items():
            assert images.get(image_id) == sha, f"acknowledged image {image_id} lost"
        # 2. nothing half-written: every row has its bytes, every blob its row, no temp file
        for sha in images.values():
            assert hashlib.sha256(blobs.get(sha)).hexdigest() == sha
        shas, other = _blob_files(root)
        assert shas == set(images.values()), f"orphan blobs: {sorted(shas - set(images.values()))[:5]}"
        assert not other, f"half-written files in the blob store: {other[:5]}"
        # 3. the stored Elo ratings are exactly a replay of the log
        replay = voting.replay_elo(voting.log_rows(s))
        elo = s.scalars(select(Rating).where(Rating.method == "elo"))
        stored = {r.image_id: (r.rating, r.votes) for r in elo}
        for image_id, rating in replay.ratings.items():
            assert stored[image_id][0] == pytest.approx(rating, abs=1e-9), image_id
            assert stored[image_id][1] == replay.votes[image_id], image_id
        assert all(stored[i] == (0.0, 0) for i in set(stored) - set(replay.ratings))
        assert voting.rebuild_ratings(s).max_elo_change < 1e-9
        s.rollback()  # the check changes nothing


@pytest.mark.slow
def test_kill_9_during_votes_and_uploads_loses_nothing(settings: Settings, tmp_path: Path) -> None:
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        add_images(s, 12, blobs=open_blobs(settings.resolved_blob_url))
        voters = [add_user(s, f"voter{k}", "voter") for k in range(CLIENTS)]
        tokens = [(u.id, t) for u, t in voters]
    dispose_all()
    log = tmp_path / "serve.log"
    proc, url = start_server(log)
    acked, stop = Acked(), threading.Event()
    threads = [
        threading.Thread(target=_client_loop, args=(url, t, uid, k, acked, stop), daemon=True)
        for k, (uid, t) in enumerate(tokens)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + MAX_RUN_S
    while len(acked.votes) < MIN_ACKED_VOTES and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-flight: requests are being served right now
    proc.wait(timeout=10)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert len(acked.votes) >= 20 and acked.images, "the clients did too little before the kill"

    # restart: the server comes back on the same store and recovers (nothing else writes to
    # this store, so blobs of any age without a row are orphans); everything acknowledged is there
    proc, url = start_server(log, env={"DOOHABLE_ORPHAN_BLOB_GRACE_S": "0"})
    try:
        _check_store(settings, acked)
        token = tokens[0][1]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            assert c.get("/healthz").status_code == 200
            p = c.get("/api/v1/pairs/next").json()
            r = c.post("/api/v1/votes", json={"pair_token": p["pair_token"], "winner_id": p["left"]["id"]})
            assert r.status_code == 201
    finally:
        stop_server(proc)


def test_sweep_deletes_old_orphans_only(settings: Settings) -> None:
    from doohable.ingest import sweep_orphan_blobs

    engine = get_engine(settings.resolved_database_url)
    blobs = open_blobs(settings.resolved_blob_url)
    with session_scope(engine) as s:
        (kept,) = add_images(s, 1, blobs=blobs)
        kept_sha = s.get(Image, kept).sha256  # type: ignore[union-attr]
    orphan_old, orphan_young = jpeg_bytes(501), jpeg_bytes(502)
    sha_old, sha_young = (hashlib.sha256(d).hexdigest() for d in (orphan_old, orphan_young))
    blobs.put(sha_old, orphan_old)
    blobs.put(sha_young, orphan_young)
    root = Path(settings.resolved_blob_url.removeprefix("file://"))
    an_hour_ago = time.time() - 3600
    for sha in (sha_old, kept_sha):
        os.utime(root / sha[:2] / sha[2:4] / sha, (an_hour_ago, an_hour_ago))
    tmp = root / sha_old[:2] / sha_old[2:4] / ".tmp-crashed"
    tmp.write_bytes(b"half")
    os.utime(tmp, (an_hour_ago, an_hour_ago))

    assert sweep_orphan_blobs(engine, blobs, older_than_s=600) == 1
    assert not blobs.exists(sha_old) and not tmp.exists()
    assert blobs.exists(sha_young), "a young orphan may belong to an ingest still in flight"
    assert blobs.exists(kept_sha)
    assert sweep_orphan_blobs(engine, blobs, older_than_s=0) == 1 and not blobs.exists(sha_young)


def test_both_stores_list_their_blobs_with_times(store: BlobStore) -> None:  # noqa: F811
    data = [jpeg_bytes(600 + k) for k in range(3)]
    shas = {hashlib.sha256(d).hexdigest() for d in data}
    for d in data:
        store.put(hashlib.sha256(d).hexdigest(), d)
    listed = dict(store.iter_blobs())
    assert set(listed) == shas
    assert all(abs(t - time.time()) < 600 for t in listed.values())
