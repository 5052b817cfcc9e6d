"""Database engine and sessions. SQLite by default (WAL, foreign keys on), PostgreSQL by URL.

The schema is created or upgraded by Alembic on first use (:func:`get_engine`) and by
``doohable init``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> Engine:
    """A new engine for ``url``; for SQLite the parent folder is created and pragmas set."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> str:
    """Apply all migrations; return the current revision id."""
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return current_revision(engine)


def current_revision(engine: Engine) -> str:
    with engine.connect() as conn:
        rev = MigrationContext.configure(conn).get_current_revision()
    return rev or ""


def head_revision() -> str:
    script = ScriptDirectory(str(MIGRATIONS))
    return script.get_current_head() or ""


class SchemaError(RuntimeError):
    """The database's schema is newer than this doohable (a downgrade is never done)."""


def check_not_newer(engine: Engine) -> str:
    """The database's revision; SchemaError when this code does not know it (made by a newer
    doohable: upgrading doohable is the way, downgrading a database is refused)."""
    rev = current_revision(engine)
    known = {s.revision for s in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}
    if rev and rev not in known:
        raise SchemaError(
            f"the database is at schema revision {rev!r}, made by a newer doohable (this one knows up to "
            f"{head_revision()!r}): upgrade doohable; a database is never downgraded"
        )
    return rev


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url``, migrated to the latest schema on first use."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = make_engine(url)
            if check_not_newer(engine) != head_revision():
                upgrade(engine)
            _engines[url] = engine
        return engine


def dispose_all() -> None:
    """Close every cached engine (tests, forks)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A transaction: commit on success, roll back on error."""
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session, session.begin():
        yield session
