"""The vote hot path's shortcuts keep the guarantees: the bearer-token cache (TTL, unknown
tokens never cached, per database), a refused vote that leaves its token usable even when the
caller commits, the SQLite writer lock released on commit and on rollback, and the refit rate
limit. On SQLite and PostgreSQL (``settings`` follows the parametrized ``db_url``)."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from doohable import voting
from doohable.api.app import create_app
from doohable.config import Settings
from doohable.store.db import get_engine, session_scope
from doohable.store.models import PairToken, User, Vote
from doohable.store.users import TokenCache, add_user
from voting_support import add_images


@pytest.fixture
def voting_db(settings: Settings):  # type: ignore[no-untyped-def]
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        images = add_images(s, 4)
        (voter, token) = add_user(s, "ana", "voter")
        (admin, admin_token) = add_user(s, "boss", "admin")
    yield engine, images, voter.id, token, admin.id, admin_token


def test_token_cache_hits_expires_and_never_caches_unknown_tokens(settings: Settings, voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, _images, voter_id, token, _admin_id, _admin_token = voting_db
    url = settings.resolved_database_url
    cache = TokenCache(ttl_s=3600.0)
    assert cache.get(url, token) is None  # nothing cached yet
    user = cache.lookup(url, token)
    assert user is not None and (user.id, user.name, user.role) == (voter_id, "ana", "voter")
    with session_scope(engine) as s:  # promoted in the database ...
        s.execute(update(User).where(User.id == voter_id).values(role="admin"))
    hit = cache.get(url, token)
    assert hit is not None and hit.role == "voter"  # ... the cache answers until the TTL ...
    assert hit is not user  # (a fresh object each time: a route cannot alter the cached row)
    assert cache.get("sqlite:///another.db", token) is None  # ... and only for its own database
    expired = TokenCache(ttl_s=0.0)  # caches nothing
    first = expired.lookup(url, token)
    assert first is not None and first.role == "admin" and expired.get(url, token) is None

    assert cache.lookup(url, "not-a-token") is None and cache.get(url, "not-a-token") is None
    with session_scope(engine) as s:  # a user created after a failed lookup is let in at once
        _user, new_token = add_user(s, "late", "voter")
    assert cache.get(url, new_token) is None and cache.lookup(url, new_token) is not None


def test_token_cache_is_bounded(settings: Settings, voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, _images, _voter_id, token, _admin_id, admin_token = voting_db
    url = settings.resolved_database_url
    cache = TokenCache(ttl_s=3600.0, max_entries=1)
    assert cache.lookup(url, token) is not None and cache.get(url, token) is not None
    assert cache.lookup(url, admin_token) is not None  # full: the old entries are dropped
    assert cache.get(url, token) is None and cache.get(url, admin_token) is not None


def test_api_auth_follows_the_database_after_the_cache(settings: Settings, voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, _images, voter_id, token, _admin_id, _admin_token = voting_db
    app = create_app(settings)
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/v1/pairs/next", headers=auth).status_code == 200
        assert client.post("/api/v1/ratings/rebuild", headers=auth).status_code == 403  # a voter
        with session_scope(engine) as s:
            s.execute(update(User).where(User.id == voter_id).values(role="admin"))
        app.state.services.tokens.clear()  # what the TTL does a few seconds later
        assert client.post("/api/v1/ratings/rebuild", headers=auth).status_code == 200
        with session_scope(engine) as s:
            s.execute(update(User).where(User.id == voter_id).values(token_hash="0" * 64))
        app.state.services.tokens.clear()
        assert client.get("/api/v1/pairs/next", headers=auth).status_code == 401
        assert client.get("/api/v1/pairs/next", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_refused_vote_leaves_the_token_usable_even_if_the_caller_commits(voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, images, voter_id, _token, admin_id, _admin_token = voting_db
    with session_scope(engine) as s:
        pair = voting.next_pair(s, voter_id)
    with session_scope(engine) as s:  # like the Slack handler: the error is caught, then commit
        with pytest.raises(voting.VotingError, match="winner_id must be"):
            voting.record_vote(s, voter_id, pair.token, max(images) + 1)
        with pytest.raises(voting.NotFoundError):
            voting.record_vote(s, admin_id, pair.token, pair.left.id)  # not this voter's pair
    with session_scope(engine) as s:
        assert s.scalar(select(PairToken.used_at).where(PairToken.token == pair.token)) is None
        first = voting.record_vote(s, voter_id, pair.token, pair.right.id)
    with session_scope(engine) as s:  # a repeat with a bad winner is refused, the vote stays
        with pytest.raises(voting.VotingError, match="winner_id must be"):
            voting.record_vote(s, voter_id, pair.token, max(images) + 1)
        again = voting.record_vote(s, voter_id, pair.token, pair.left.id)
    assert first.created and not again.created and again.vote_id == first.vote_id
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Vote)) == 1
        skipped = voting.next_pair(s, voter_id)
        voting.skip_pair(s, voter_id, skipped.token)
    with session_scope(engine) as s, pytest.raises(voting.ConflictError, match="skipped"):
        voting.record_vote(s, voter_id, skipped.token, skipped.left.id)


def test_sqlite_writer_lock_is_released_on_commit_and_on_rollback(voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, _images, voter_id, _token, _admin_id, _admin_token = voting_db
    with session_scope(engine) as s:
        pair = voting.next_pair(s, voter_id)
        # SQLite: this process's writers queue on a lock; PostgreSQL needs none (row locks)
        assert ("doohable_writer" in s.info) == (engine.dialect.name == "sqlite")
    with pytest.raises(voting.ConflictError), session_scope(engine) as s:
        voting.record_vote(s, voter_id, pair.token, pair.left.id)
        raise voting.ConflictError("roll back after the write")
    done = threading.Event()

    def vote_elsewhere() -> None:  # another thread must get the lock: it was released twice
        with session_scope(engine) as s:
            voting.record_vote(s, voter_id, pair.token, pair.left.id)
        done.set()

    worker = threading.Thread(target=vote_elsewhere)
    worker.start()
    worker.join(timeout=30)
    assert done.is_set()


def test_background_refit_is_rate_limited(voting_db, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    engine, _images, voter_id, _token, _admin_id, _admin_token = voting_db
    from doohable.voting import live as live_states

    with session_scope(engine) as s:
        live = live_states.live_state(s, "active")
    live.state.n_votes, live.state.votes_at_refit = 1000, 0  # the scheduler's own rule says: refit
    live.refitted_at = time.monotonic()
    assert not live.refit_due()  # ... but one ran a moment ago
    monkeypatch.setattr(live_states, "REFIT_MIN_INTERVAL_S", 0.0)
    assert live.refit_due()


def test_only_cookieless_bearer_api_calls_skip_the_session() -> None:
    from doohable.api.security import cookieless_api_call

    def scope(path: str, *headers: tuple[bytes, bytes]) -> dict[str, object]:
        return {"type": "http", "path": path, "headers": list(headers)}

    bearer, cookie = (b"authorization", b"Bearer x"), (b"cookie", b"doohable_session=abc")
    assert cookieless_api_call(scope("/api/v1/votes", bearer))
    assert not cookieless_api_call(scope("/api/v1/votes", bearer, cookie))  # a page's JS: session kept
    assert not cookieless_api_call(scope("/api/v1/votes", cookie))
    assert not cookieless_api_call(scope("/vote", bearer))  # pages always get their session


def test_hot_routes_answer_the_documented_shapes_without_a_session_cookie(  # type: ignore[no-untyped-def]
    settings: Settings, voting_db
) -> None:
    _engine, images, _voter_id, token, _admin_id, _admin_token = voting_db
    ids = set(images)
    with TestClient(create_app(settings)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        pair = c.get("/api/v1/pairs/next")
        assert pair.status_code == 200 and "set-cookie" not in pair.headers
        body = pair.json()
        assert set(body) == {"pair_token", "left", "right"}
        assert {body["left"]["id"], body["right"]["id"]} <= ids
        assert body["left"]["url"].startswith("http://testserver/img/")
        vote = {"pair_token": body["pair_token"], "winner_id": body["left"]["id"]}
        first, again = c.post("/api/v1/votes", json=vote), c.post("/api/v1/votes", json=vote)
        assert first.status_code == 201 and again.status_code == 200 and "set-cookie" not in first.headers
        assert first.json() == again.json() and set(first.json()) == {"vote_id"}
        paths = c.get("/openapi.json").json()["paths"]
        assert "PairOut" in str(paths["/api/v1/pairs/next"]) and "VoteOut" in str(paths["/api/v1/votes"])
