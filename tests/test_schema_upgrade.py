"""Schema upgrades: a database made at the first schema revision, with data in every table
(tests/fixtures/schema_0001.db, written by tests/fixtures/make_schema_fixture.py), upgrades to
the current revision on first use and by ``doohable init`` without losing a row or changing a
rating; a database from a newer doohable is refused with a clear message. Both databases."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from doohable import voting
from doohable.store.db import dispose_all, get_engine, head_revision, make_engine, session_scope
from doohable.store.models import Base, Rating

FIXTURES = Path(__file__).with_name("fixtures")
sys.path.insert(0, str(FIXTURES))
from make_schema_fixture import FIRST, make  # noqa: E402

DOOHABLE = str(Path(sys.executable).with_name("doohable"))


@pytest.fixture
def old_database(db_url: str, tmp_path: Path) -> tuple[str, dict]:
    """A database at revision 0001 with the fixture's data: the committed SQLite file, or the
    same rows written by the fixture's script into PostgreSQL."""
    expected = json.loads((FIXTURES / "schema_0001.json").read_text())
    if db_url.startswith("sqlite"):
        shutil.copy(FIXTURES / "schema_0001.db", tmp_path / "doohable.db")
        return db_url, expected
    assert make(db_url) == expected
    return db_url, expected


def test_first_revision_upgrades_without_loss(old_database: tuple[str, dict]) -> None:
    url, expected = old_database
    raw = make_engine(url)
    with raw.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == FIRST
    raw.dispose()
    engine = get_engine(url)  # first use: upgraded to the current revision
    with session_scope(engine) as s:
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()
        for name, n in expected["rows"].items():
            assert s.scalar(select(func.count()).select_from(Base.metadata.tables[name])) == n, name
        elo = {r.image_id: r.rating for r in s.scalars(select(Rating).where(Rating.method == "elo"))}
        assert elo == {int(k): pytest.approx(v, abs=1e-9) for k, v in expected["elo"].items()}
        assert voting.rebuild_ratings(s).max_elo_change < 1e-9  # stored ratings = replay of the log
        s.rollback()


def test_init_upgrades_and_a_newer_database_is_refused(
    old_database: tuple[str, dict], tmp_path: Path
) -> None:
    url, _ = old_database
    env = {**os.environ, "DOOHABLE_DATABASE_URL": url, "DOOHABLE_HOME": str(tmp_path / "home")}
    done = subprocess.run([DOOHABLE, "init", "--json"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["revision"] == head_revision()
    dispose_all()
    raw = make_engine(url)
    with raw.begin() as conn:  # as if a newer doohable had upgraded it
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    raw.dispose()
    for args in (["init"], ["images", "list", "--json"]):
        done = subprocess.run([DOOHABLE, *args], capture_output=True, text=True, env=env, check=False)
        assert done.returncode != 0
        assert "newer doohable" in done.stderr and "never downgraded" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
