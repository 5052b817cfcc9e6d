"""Shared fixtures. Storage tests run on SQLite and on PostgreSQL (``db_url`` is parametrized).

PostgreSQL comes from ``DOOHABLE_TEST_POSTGRES_URL`` (CI: 127.0.0.1:5432/test); each test gets
its own schema, so tests and developers running at once never see each other's rows."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from doohable.config import Settings, get_settings
from doohable.datasets import shared_data as shared_data_dir
from doohable.store.db import dispose_all

PG_URL = os.environ.get("DOOHABLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SHARED_DATA = shared_data_dir()


def _pg_available() -> bool:
    try:
        eng = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_available() -> bool:
    ok = _pg_available()
    if not ok and os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI and is not reachable at {PG_URL}")
    return ok


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_available: bool) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a private schema on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'doohable.db'}"
        dispose_all()
        return
    if not pg_available:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    dispose_all()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def settings(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings on a fresh database and blob folder, also exported to the environment so
    that ``doohable`` subprocesses and ``get_settings()`` see the same ones."""
    home = tmp_path / "home"
    monkeypatch.setenv("DOOHABLE_HOME", str(home))
    monkeypatch.setenv("DOOHABLE_DATABASE_URL", db_url)
    monkeypatch.setenv("DOOHABLE_BLOB_URL", f"file://{home / 'blobs'}")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip with a clear message where it is missing (CI always has it)."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the shared data at {SHARED_DATA}")
        pytest.skip(f"needs the shared data at {SHARED_DATA}")
    return SHARED_DATA


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that runs on PostgreSQL (the ``db_url`` fixture's ``postgres`` case)
    with ``postgres``, so that ``-m "not postgres"`` runs the suite on SQLite alone."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("db_url") == "postgres":
            item.add_marker(pytest.mark.postgres)
