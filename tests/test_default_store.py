"""The default scorer's parts through the database and the API: stored with each score
(``scores.parts``), answered by ``POST /api/v1/score`` and the moderation queue, and the
combination refitted from real votes (SQLite and PostgreSQL). The photo part is a stand-in
(``standin_combination``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from doohable import voting
from doohable.api.app import create_app
from doohable.config import Settings, get_settings
from doohable.model.calibrate import MIN_IMAGES, fit_from_votes
from doohable.model.default import CombinedScorer
from doohable.model.load import load_any
from doohable.moderation_service import moderate_images
from doohable.store.blobs import open_blobs
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Score
from doohable.store.users import add_user
from scoring_fixtures import jpeg_of_gray, standin_combination
from voting_support import add_images


@pytest.fixture
def combined_settings(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DOOHABLE_MODEL", str(standin_combination(tmp_path)))
    get_settings.cache_clear()
    return get_settings()


def test_parts_are_stored_and_the_combination_refits_from_votes(combined_settings: Settings) -> None:
    scorer = load_any(combined_settings.model, threads=1)
    assert isinstance(scorer, CombinedScorer)
    engine = get_engine(combined_settings.resolved_database_url)
    blobs = open_blobs(combined_settings.resolved_blob_url)
    with session_scope(engine) as s:
        ids = add_images(s, 14, blobs)
        with pytest.raises(ValueError, match="refitting needs"):
            fit_from_votes(s, scorer)
        report = moderate_images(s, blobs, scorer, combined_settings, nsfw=False)
        assert report.scored == 14
        rows = s.scalars(select(Score).where(Score.model == scorer.name)).all()
        assert {r.image_id for r in rows} == set(ids)
        assert all(set(r.parts or {}) == {"photo", "face"} and r.parts["face"] is None for r in rows)
        photo = {r.image_id: r.parts["photo"] for r in rows}
        voter, _ = add_user(s, "v", "voter")
        voter_id = voter.id
    for _ in range(120):  # the voter prefers the higher photo part
        with session_scope(engine) as s:
            pair = voting.next_pair(s, voter_id)
            best = max((pair.left.id, pair.right.id), key=lambda i: photo[i])
            voting.record_vote(s, voter_id, pair.token, best)
    with session_scope(engine) as s:
        comb = fit_from_votes(s, scorer)
    assert comb.fitted["images"] >= MIN_IMAGES and comb.fitted["others"] == comb.fitted["images"]
    assert comb.other[1] > 0  # the refitted score rises with the photo part, as the votes do
    assert comb.portrait == scorer.combination.portrait  # no portrait among them: kept
    mean = float(np.mean([r for r in photo.values()]))
    assert abs(comb.other[0] + comb.other[1] * mean - mean) < 2.0  # on the scores' scale


def test_score_api_answers_the_parts(combined_settings: Settings) -> None:
    with session_scope(get_engine(combined_settings.resolved_database_url)) as s:
        _, token = add_user(s, "v", "voter")
    with TestClient(create_app(combined_settings)) as client:
        r = client.post("/api/v1/score", files={"file": ("g.jpg", jpeg_of_gray(200), "image/jpeg")},
                        headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "mine" and body["parts"]["face"] is None
    assert body["score"] == pytest.approx(0.1 + 0.9 * body["parts"]["photo"], abs=1e-4)


def test_queue_items_carry_the_parts_of_their_stored_score(combined_settings: Settings) -> None:
    engine = get_engine(combined_settings.resolved_database_url)
    blobs = open_blobs(combined_settings.resolved_blob_url)
    with session_scope(engine) as s:
        ids = add_images(s, 3, blobs)
        moderate_images(s, blobs, load_any(combined_settings.model, threads=1), combined_settings, nsfw=False)
        stored = {r.image_id: (r.score, r.parts) for r in s.scalars(select(Score))}
        _, token = add_user(s, "m", "moderator")
    with TestClient(create_app(combined_settings)) as client:
        r = client.get("/api/v1/moderation/queue", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    shown = {x["id"]: (x["score"], x["parts"]) for x in r.json()}
    assert shown == stored and set(shown) == set(ids)
    assert all(set(parts) == {"photo", "face"} and parts["face"] is None for _, parts in shown.values())
