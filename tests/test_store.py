"""doohable.store: migrations on first use, SQLite pragmas, constraints, users, catalog — on
SQLite and PostgreSQL alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from doohable.store.catalog import iter_images
from doohable.store.db import current_revision, dispose_all, get_engine, head_revision, session_scope
from doohable.store.models import Image, Source, Vote
from doohable.store.users import UserError, add_user, has_role, user_for_token

TABLES = {"images", "sources", "users", "pair_tokens", "votes", "ratings", "scores", "decisions", "settings"}


def _image(n: int, **kw: object) -> Image:
    return Image(
        sha256=f"{n:064x}", phash=f"{n:016x}", width=10 + n, height=20, format="PNG", size_bytes=100, **kw
    )


def test_schema_is_created_on_first_use(db_url: str) -> None:
    engine = get_engine(db_url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    assert current_revision(engine) == head_revision() == "0002"
    assert get_engine(db_url) is engine  # one engine per URL, migrated once


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path}/x.db")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        dispose_all()


def test_sha256_is_unique_and_foreign_keys_hold(db_url: str) -> None:
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        s.add(_image(1))
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        s.add(_image(1))
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        s.add(Source(image_id=999, kind="file", uri="/nowhere"))
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        s.add(Vote(voter_id=12345, left_id=1, right_id=1, winner_id=1))


def test_rollback_leaves_nothing(db_url: str) -> None:
    engine = get_engine(db_url)
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        s.add(_image(2))
        s.flush()
        raise RuntimeError("boom")
    with session_scope(engine) as s:
        assert list(iter_images(s)) == []


def test_users_tokens_and_roles(db_url: str) -> None:
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        mod, token = add_user(s, " Mo ", "moderator")
        assert mod.name == "Mo"
        assert token not in (mod.token_hash, "") and len(mod.token_hash) == 64
    with session_scope(engine) as s:
        user = user_for_token(s, token)
        assert user is not None and user.name == "Mo"
        assert has_role(user, "voter") and has_role(user, "moderator") and not has_role(user, "admin")
        assert user_for_token(s, token + "x") is None and user_for_token(s, "") is None
        with pytest.raises(UserError, match="already exists"):
            add_user(s, "Mo")
        with pytest.raises(UserError, match="unknown role"):
            add_user(s, "Zed", "owner")
        with pytest.raises(UserError, match="1 to 100 characters"):
            add_user(s, "   ")


def test_catalog_lists_images_with_their_first_source(db_url: str) -> None:
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        a, b, c = _image(1), _image(2), _image(3)
        s.add_all([a, b, c])
        s.flush()
        s.add_all(
            [
                Source(image_id=a.id, kind="file", uri="/first/a.jpg"),
                Source(image_id=a.id, kind="url", uri="http://later/a.jpg"),
                Source(image_id=b.id, kind="upload", uri="b.png"),
            ]
        )
    with session_scope(engine) as s:
        rows = list(iter_images(s))
        assert [r["source"] for r in rows] == ["/first/a.jpg", "b.png", None]
        want = {"id": a.id, "sha256": f"{1:064x}", "width": 11, "height": 20, "source": "/first/a.jpg"}
        assert rows[0] == want
        assert [r["id"] for r in iter_images(s, limit=2)] == [a.id, b.id]
