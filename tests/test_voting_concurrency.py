"""No vote lost under concurrency: real ``doohable serve`` processes, 8 clients x 200 votes.

PostgreSQL: 2 server processes on one database; SQLite: 1 process on one file. Afterwards the
log has exactly 1,600 votes, no pair token used twice, and the Elo ratings stored vote by vote
equal a replay of the log."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from doohable import voting
from doohable.config import Settings
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Rating, Vote
from doohable.store.users import add_user
from server_support import start_server, stop_server
from voting_support import add_images

CLIENTS, VOTES_EACH = 8, 200


def client_run(url: str, token: str, seed: int, out: dict[int, list[int]], errors: list[str]) -> None:
    rng = np.random.default_rng(seed)
    ids: list[int] = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60.0) as c:
        try:
            for k in range(VOTES_EACH):
                pair = c.get("/api/v1/pairs/next").raise_for_status().json()
                roll = rng.random()
                winner = None if roll < 0.1 else pair["left" if roll < 0.55 else "right"]["id"]
                body = {"pair_token": pair["pair_token"], "winner_id": winner}
                r = c.post("/api/v1/votes", json=body)
                assert r.status_code == 201, r.text
                ids.append(r.json()["vote_id"])
                if k % 20 == 7:  # a client retry: the same token must give the same vote
                    again = c.post("/api/v1/votes", json=body)
                    assert again.status_code == 200 and again.json()["vote_id"] == ids[-1], again.text
                if k % 50 == 49:
                    assert c.post("/api/v1/votes/undo").json()["undone"] is True
        except Exception as e:  # reported by the test thread
            errors.append(f"client {seed}: {e!r}")
    out[seed] = ids


@pytest.mark.slow
def test_concurrent_votes_are_all_kept_once(settings: Settings, tmp_path: Path) -> None:
    url_db = settings.resolved_database_url
    engine = get_engine(url_db)
    with session_scope(engine) as s:
        add_images(s, 40)
        tokens = [add_user(s, f"voter{k}")[1] for k in range(CLIENTS)]
    n_servers = 1 if url_db.startswith("sqlite") else 2
    servers = [start_server(tmp_path / f"server{k}.log") for k in range(n_servers)]
    try:
        out: dict[int, list[int]] = {}
        errors: list[str] = []
        threads = [
            threading.Thread(target=client_run, args=(servers[k % n_servers][1], tokens[k], k, out, errors))
            for k in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
    finally:
        for proc, _url in servers:
            stop_server(proc)
    returned = [i for ids in out.values() for i in ids]
    assert len(returned) == CLIENTS * VOTES_EACH == len(set(returned))
    with session_scope(engine) as s:
        votes = s.scalar(select(func.count()).select_from(Vote).where(Vote.undoes_vote_id.is_(None)))
        tokens_used = s.scalar(select(func.count(func.distinct(Vote.pair_token))))
        undos = s.scalar(select(func.count()).select_from(Vote).where(Vote.undoes_vote_id.is_not(None)))
        stored = {i: (r, n) for i, r, n in s.execute(
            select(Rating.image_id, Rating.rating, Rating.votes).where(Rating.method == "elo"))}
        replay = voting.replay_elo(voting.log_rows(s))
    assert votes == 1600 and tokens_used == 1600
    assert undos == CLIENTS * (VOTES_EACH // 50)
    assert stored == {i: (replay.ratings[i], replay.votes[i]) for i in replay.ratings}
    assert sum(n for _r, n in stored.values()) == 2 * (1600 - undos)
