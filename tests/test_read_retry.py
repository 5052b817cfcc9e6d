"""A read whose PostgreSQL connection is killed mid-request (``pg_terminate_backend`` from inside
the request, just before its query) is run once more on a fresh connection and answers 200; a
second kill gives the 503 with ``Retry-After``; a write is never replayed (503, nothing stored)."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event, func, select, text

from conftest import PG_URL
from doohable.api.app import create_app
from doohable.config import Settings
from doohable.store.blobs import open_blobs
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Decision
from doohable.store.users import add_user
from server_support import serve_in_thread
from voting_support import add_images


class Killer:
    """Terminates the backend of the connection about to run a statement containing
    ``self.table`` (while ``self.armed`` > 0), waiting until it is gone: the statement then
    runs on a dead connection, as when the database restarts under a request."""

    def __init__(self) -> None:
        self.admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
        self.table, self.armed, self.kills = "", 0, 0
        self.lock = threading.Lock()

    def arm(self, table: str, times: int) -> None:
        self.table, self.armed, self.kills = table, times, 0

    def __call__(self, _conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        with self.lock:
            if self.armed <= 0 or self.table not in statement:
                return
            self.armed -= 1
            self.kills += 1
        pid = cursor.connection.info.backend_pid
        with self.admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid}).scalar_one()


def test_read_is_retried_once_on_a_fresh_connection(settings: Settings) -> None:
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        image_id = add_images(s, 2, blobs=open_blobs(settings.resolved_blob_url))[0]
        _, token = add_user(s, "mod", "moderator")
    killer = Killer()
    event.listen(engine, "before_cursor_execute", killer)
    try:
        with serve_in_thread(create_app(settings)) as url, httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as c:
            killer.arm("FROM images", 1)
            r = c.get(f"/api/v1/images/{image_id}")
            assert (r.status_code, killer.kills) == (200, 1), r.text
            assert r.json()["id"] == image_id

            killer.arm("FROM images", 3)  # killed again on the retry: one retry only, then 503
            r = c.get(f"/api/v1/images/{image_id}")
            assert (r.status_code, killer.kills) == (503, 2), r.text
            assert r.headers["Retry-After"] and "unavailable" in r.json()["detail"]

            killer.arm("INSERT INTO decisions", 2)  # a write: answered 503 at once, not replayed
            r = c.post("/api/v1/moderation/decisions", json={"image_id": image_id, "decision": "approved"})
            assert (r.status_code, killer.kills) == (503, 1), r.text
            assert r.headers["Retry-After"]

            killer.arm("", 0)  # the same server serves the next requests normally
            assert c.get(f"/api/v1/images/{image_id}").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", killer)
        killer.admin.dispose()
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Decision)) == 0  # the failed write left nothing
