"""Backup and restore: a consistent snapshot of the database and the image bytes, taken while
the service runs, restored into an empty home (any database: SQLite or PostgreSQL).

A backup is a folder::

    manifest.json          format, schema revision, time, row count and SHA-256 of each table file,
                           and the SHA-256 and size of every blob (the manifest of the bytes)
    tables/NAME.jsonl      one JSON object per row, ordered by primary key
    blobs/ab/cd/abcd…      the image bytes, by SHA-256 (the local blob store's layout)
    postgres.dump          PostgreSQL only, when a ``pg_dump`` of the server's major version is on
                           PATH: the same snapshot as a ``pg_dump --format=custom`` archive

Consistency: every table is read in one snapshot — PostgreSQL: one ``REPEATABLE READ``
read-only transaction (the mechanism ``pg_dump`` uses; its snapshot is exported to ``pg_dump``);
SQLite: the online backup API copies the database (readers and writers go on), and the copy is
read. Blobs are immutable and named by their hash, so copying the snapshot's blobs afterwards
gives the same bytes. The folder is written as ``DEST.partial`` and renamed at the end: a
folder named DEST is always complete."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Table, func, select, text

from doohable.store.blobs import BlobStore, LocalBlobStore
from doohable.store.db import current_revision, get_engine, head_revision, make_engine
from doohable.store.models import Base

FORMAT = 1
ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


class BackupError(RuntimeError):
    """A backup or restore that cannot be done (the reason is in the message)."""


@dataclass
class Summary:
    images: int
    votes: int
    path: str

    def as_json(self) -> dict[str, Any]:
        return {"images": self.images, "votes": self.votes, "path": self.path}


def _tables() -> list[Table]:
    """Every table, parents before children (foreign keys)."""
    return list(Base.metadata.sorted_tables)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- snapshot ---------------------------------------------------------------------------


@contextmanager
def _snapshot(engine: Engine) -> Iterator[tuple[Connection, str | None]]:
    """A connection that sees one consistent state of the database, and (PostgreSQL) the
    exported snapshot id for ``pg_dump --snapshot``."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            conn.execute(text("SET TRANSACTION READ ONLY"))
            snap = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            yield conn, str(snap)
        return
    src_path = engine.url.database
    if not src_path:
        raise BackupError("an in-memory SQLite database cannot be backed up")
    with tempfile.TemporaryDirectory(prefix="doohable-backup-") as tmp:
        copy = Path(tmp) / "snapshot.db"
        src, dst = sqlite3.connect(src_path, timeout=30), sqlite3.connect(copy)
        try:
            src.backup(dst)  # SQLite's online backup API: one consistent copy, writers go on
        finally:
            dst.close()
            src.close()
        snap_engine = make_engine(f"sqlite:///{copy}")
        try:
            with snap_engine.connect() as conn:
                yield conn, None
        finally:
            snap_engine.dispose()


def _dump_table(conn: Connection, table: Table, path: Path) -> int:
    pk = list(table.primary_key.columns)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for row in conn.execute(select(table).order_by(*pk)).mappings():
            f.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
            n += 1
    return n


def _pg_dump(url: str, snapshot: str, out: Path, conn: Connection) -> bool:
    """Also write the snapshot as a pg_dump archive when a pg_dump of the server's major
    version is on PATH (returns whether it did)."""
    exe = shutil.which("pg_dump")
    if exe is None:
        return False
    server_major = int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    if f" {server_major}." not in version:
        return False
    from sqlalchemy.engine import make_url

    u = make_url(url)
    schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    env = {**os.environ, "PGPASSWORD": u.password or ""}
    cmd = [exe, "--format=custom", f"--snapshot={snapshot}", f"--schema={schema}", "--no-owner",
           "-h", u.host or "localhost", "-p", str(u.port or 5432), "-U", u.username or "postgres",
           "-f", str(out), u.database or ""]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise BackupError(f"pg_dump failed: {done.stderr.strip()[:500]}")
    return True


def backup(
    database_url: str, blobs: BlobStore, dest: Path, on_progress: ProgressFn | None = None
) -> Summary:
    """Write a consistent snapshot of ``database_url`` and its blobs to the new folder ``dest``."""
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} exists and is not empty: choose a new folder")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "tables").mkdir(parents=True)
    engine = get_engine(database_url)
    manifest: dict[str, Any] = {"format": FORMAT, "created_at": dt.datetime.now(dt.UTC).isoformat(),
                                "database": engine.dialect.name, "tables": {}}
    with _snapshot(engine) as (conn, snapshot):
        manifest["revision"] = current_revision_of(conn)
        for table in _tables():
            path = partial / "tables" / f"{table.name}.jsonl"
            manifest["tables"][table.name] = {"rows": _dump_table(conn, table, path),
                                              "sha256": _sha256_file(path)}
        shas = list(conn.execute(select(Base.metadata.tables["images"].c.sha256)).scalars())
        if snapshot is not None:
            manifest["pg_dump"] = _pg_dump(database_url, snapshot, partial / "postgres.dump", conn)
    manifest["blobs"] = _copy_blobs(blobs, LocalBlobStore(partial / "blobs"), shas, "backup", on_progress)
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if dest.exists():
        dest.rmdir()
    partial.rename(dest)
    return _summary(manifest, dest)


def current_revision_of(conn: Connection) -> str:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision() or ""


def _copy_blobs(
    src: BlobStore, dst: BlobStore, shas: list[str], stage: str, on_progress: ProgressFn | None
) -> dict[str, int]:
    """Copy the blobs ``shas`` from ``src`` to ``dst``, checking each one's SHA-256."""
    sizes: dict[str, int] = {}
    for done, sha in enumerate(shas, 1):
        try:
            data = src.get(sha)
        except KeyError:
            raise BackupError(f"blob {sha} is missing from {src.url}") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise BackupError(f"blob {sha} in {src.url} does not match its SHA-256 (corrupted)")
        dst.put(sha, data)
        sizes[sha] = len(data)
        if on_progress is not None:
            on_progress(stage, done, len(shas))
    return sizes


def _summary(manifest: dict[str, Any], path: Path) -> Summary:
    t = manifest["tables"]
    return Summary(images=t["images"]["rows"], votes=t["votes"]["rows"], path=str(path))


# --- restore ----------------------------------------------------------------------------


def read_manifest(src: Path) -> dict[str, Any]:
    """The manifest of the backup ``src``, with every table file checked against its SHA-256."""
    try:
        manifest: dict[str, Any] = json.loads((src / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise BackupError(f"{src} is not a doohable backup (no readable manifest.json: {e})") from e
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{src}: backup format {manifest.get('format')!r} is not supported")
    if manifest.get("revision") != head_revision():
        raise BackupError(
            f"{src} has schema revision {manifest.get('revision')!r}; this doohable restores "
            f"{head_revision()!r}: restore with the doohable version that made it, then upgrade"
        )
    for name, info in manifest["tables"].items():
        if _sha256_file(src / "tables" / f"{name}.jsonl") != info["sha256"]:
            raise BackupError(f"{src}/tables/{name}.jsonl does not match its SHA-256 (corrupted)")
    return manifest


def _rows(path: Path, table: Table) -> Iterator[dict[str, Any]]:
    dates = [c.name for c in table.columns if isinstance(c.type, DateTime)]
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            for c in dates:
                if row.get(c) is not None:
                    row[c] = dt.datetime.fromisoformat(row[c])
            yield row


def _check_empty(conn: Connection) -> None:
    for name in ("users", "images", "votes"):
        table = Base.metadata.tables[name]
        if conn.execute(select(func.count()).select_from(table)).scalar_one():
            raise BackupError(f"the target database already has {name}: restore only into an empty home")


def _reset_sequences(conn: Connection) -> None:
    """PostgreSQL: move each id sequence past the restored ids."""
    if conn.dialect.name != "postgresql":
        return
    for table in _tables():
        if "id" in table.c and table.c.id.primary_key and table.c.id.autoincrement:
            conn.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                f"COALESCE((SELECT max(id) FROM {table.name}), 0) + 1, false)"
            ))


def restore(src: Path, database_url: str, blobs: BlobStore, on_progress: ProgressFn | None = None) -> Summary:
    """Bring the backup ``src`` back into an empty database and blob store: bytes first (each
    checked against its SHA-256), then every row in one transaction."""
    manifest = read_manifest(src)
    engine = get_engine(database_url)
    with engine.connect() as conn:
        _check_empty(conn)
    _copy_blobs(LocalBlobStore(src / "blobs"), blobs, list(manifest["blobs"]), "blobs", on_progress)
    with engine.begin() as conn:
        _check_empty(conn)
        tables = [t for t in _tables() if t.name in manifest["tables"]]
        for k, table in enumerate(tables, 1):
            if table.name == "alembic_version":
                continue
            batch: list[dict[str, Any]] = []
            for row in _rows(src / "tables" / f"{table.name}.jsonl", table):
                batch.append(row)
                if len(batch) >= 1000:
                    conn.execute(table.insert(), batch)
                    batch = []
            if batch:
                conn.execute(table.insert(), batch)
            if on_progress is not None:
                on_progress("rows", k, len(tables))
        _reset_sequences(conn)
    if current_revision(engine) != manifest["revision"]:
        raise BackupError("the restored database is not at the backup's schema revision")
    return _summary(manifest, src)
