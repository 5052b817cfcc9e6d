"""The leaderboard shows how far the prior scorer agrees with the voters."""

from __future__ import annotations

import itertools
import json
import re

from fastapi.testclient import TestClient

from doohable.api.app import create_app
from doohable.config import Settings
from doohable.moderation import store_scores
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Vote
from doohable.store.users import add_user
from doohable.voting.prior import model_agreement
from voting_support import add_images


def test_leaderboard_shows_model_agreement(settings: Settings) -> None:
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        user, token = add_user(s, "fay")
        ids = add_images(s, 4)
        assert model_agreement(s) is None  # no scorer, no line
        store_scores(s, {i: float(k) for k, i in enumerate(ids)}, "house", "v1")
        # 5 of the 6 votes agree with the scores (the later image wins), one does not
        for a, b in itertools.combinations(ids, 2):
            winner = a if (a, b) == (ids[0], ids[1]) else b
            s.add(Vote(voter_id=user.id, left_id=a, right_id=b, winner_id=winner))
        s.flush()
        got = model_agreement(s)
        assert got is not None and got["votes"] == 6 and abs(got["agreement"] - 5 / 6) < 1e-9
    line = leaderboard_line(settings, token)
    assert "house" in line and "83.3% of 6 votes" in line and "held out" not in line  # no retrain promoted it
    # a retrain promoted house v1: its agreement on the votes it never saw is shown too
    result = {"promoted": "in-house.onnx", "rescored": {"model": "house", "version": "v1"},
              "new": {"pairwise_accuracy": 0.7}, "votes": {"measured": 10}}
    (settings.home / "retrain").mkdir(parents=True, exist_ok=True)
    (settings.home / "retrain" / "state.json").write_text(json.dumps({"state": "done", "result": result}))
    line = " ".join(leaderboard_line(settings, token).split())
    assert ("83.3% of 6 votes (it was trained on most of them; on the 10 held out from its training it "
            "agreed with 70.0%)") in line


def leaderboard_line(settings: Settings, token: str) -> str:
    """The leaderboard's model-agreement line, signed in with ``token``."""
    with TestClient(create_app(settings)) as client:
        form = client.get("/login").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert csrf
        client.post("/login", data={"token": token, "csrf_token": csrf.group(1)})
        page = client.get("/leaderboard")
    assert page.status_code == 200
    line = re.search(r'id="model-agreement">(.*?)</p>', page.text, re.S)
    assert line
    return line.group(1)
