"""``doohable backup`` / ``restore``: a snapshot taken while 8 clients vote, undo and upload on
a real server; restored into an empty home, it holds every vote and image acknowledged before
the backup started, every row has its bytes, and the stored ratings equal a replay of the log.
On SQLite and on PostgreSQL; blobs on the local disk and on S3."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from doohable.config import Settings
from doohable.store import backup as bk
from doohable.store.blobs import open_blobs
from doohable.store.db import dispose_all, get_engine, session_scope
from doohable.store.users import add_user
from server_support import start_server, stop_server
from test_blobs import s3_endpoint, s3_url  # noqa: F401  (fixtures: the moto S3 server)
from test_crash_consistency import CLIENTS, Acked, _check_store, _client_loop
from voting_support import add_images

DOOHABLE = str(Path(sys.executable).with_name("doohable"))


@pytest.fixture
def empty_home(db_url: str, tmp_path: Path) -> Iterator[Settings]:
    """A second, empty home on the same kind of database as ``db_url``."""
    home = tmp_path / "restored"
    blob_url = f"file://{home / 'blobs'}"
    if db_url.startswith("sqlite"):
        yield Settings(home=home, database_url=f"sqlite:///{home / 'doohable.db'}", blob_url=blob_url)
        return
    base, _, _ = db_url.partition("?")
    schema = f"r_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield Settings(home=home, database_url=f"{base}?options=-csearch_path%3D{schema}", blob_url=blob_url)
    dispose_all()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def cli(args: list[str], settings: Settings | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if settings is not None:
        env.update(DOOHABLE_HOME=str(settings.home), DOOHABLE_DATABASE_URL=str(settings.database_url),
                   DOOHABLE_BLOB_URL=str(settings.blob_url))
    return subprocess.run(
        [DOOHABLE, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


@pytest.mark.slow
def test_backup_under_vote_load_restores_everything_acknowledged(
    settings: Settings, empty_home: Settings, tmp_path: Path
) -> None:
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        add_images(s, 12, blobs=open_blobs(settings.resolved_blob_url))
        tokens = [(u.id, t) for u, t in (add_user(s, f"voter{k}", "voter") for k in range(CLIENTS))]
    dispose_all()
    proc, url = start_server(tmp_path / "serve.log")
    acked, stop = Acked(), threading.Event()
    threads = [threading.Thread(target=_client_loop, args=(url, t, uid, k, acked, stop), daemon=True)
               for k, (uid, t) in enumerate(tokens)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked.votes) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        with acked.lock:  # everything acknowledged before the backup starts
            before = Acked(votes=dict(acked.votes), undos=set(acked.undos), images=dict(acked.images))
        done = cli(["backup", str(tmp_path / "snap"), "--json"])
        n_during = len(acked.votes)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        stop_server(proc)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(before.votes) >= 20 and before.images, "the clients did too little before the backup"
    assert n_during > len(before.votes), "the backup ran while no vote came in"
    assert out["path"] == str(tmp_path / "snap") and out["votes"] >= len(before.votes) + len(before.undos)

    restored = cli(["restore", str(tmp_path / "snap"), "--json"], empty_home)
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout) == out
    _check_store(empty_home, before)  # every acknowledged row, bytes, no orphan, ratings = replay

    again = cli(["restore", str(tmp_path / "snap")], empty_home)
    assert again.returncode != 0 and "empty home" in again.stderr and "Traceback" not in again.stderr


def test_backup_refuses_corruption_and_a_used_folder(settings: Settings, tmp_path: Path) -> None:
    blobs = open_blobs(settings.resolved_blob_url)
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        add_images(s, 3, blobs=blobs)
    snap = tmp_path / "snap"
    summary = bk.backup(settings.resolved_database_url, blobs, snap)
    assert (summary.images, summary.votes) == (3, 0)
    assert not (tmp_path / "snap.partial").exists()
    manifest = json.loads((snap / "manifest.json").read_text())
    assert manifest.get("pg_dump", False) == (snap / "postgres.dump").is_file()  # PostgreSQL + pg_dump
    with pytest.raises(bk.BackupError, match="not empty"):
        bk.backup(settings.resolved_database_url, blobs, snap)
    table = snap / "tables" / "images.jsonl"
    table.write_text(table.read_text().replace('"JPEG"', '"PNG"', 1))
    with pytest.raises(bk.BackupError, match="corrupted"):
        bk.read_manifest(snap)
    with pytest.raises(bk.BackupError, match="not a doohable backup"):
        bk.read_manifest(tmp_path)


def test_backup_and_restore_with_blobs_on_s3(
    settings: Settings, s3_url: str, tmp_path: Path  # noqa: F811
) -> None:
    """Blobs on the S3 server are copied into the backup by manifest and back onto S3."""
    s3 = open_blobs(s3_url)
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        add_images(s, 4, blobs=s3)
    snap = tmp_path / "snap"
    bk.backup(settings.resolved_database_url, s3, snap)
    manifest = json.loads((snap / "manifest.json").read_text())
    for sha in manifest["blobs"]:
        assert hashlib.sha256((snap / "blobs" / sha[:2] / sha[2:4] / sha).read_bytes()).hexdigest() == sha
    target_db = f"sqlite:///{tmp_path / 'other.db'}"
    target = open_blobs(s3_url.replace("/images", "/restored"))
    summary = bk.restore(snap, target_db, target)
    assert summary.images == 4
    assert {sha for sha, _ in target.iter_blobs()} == set(manifest["blobs"])
