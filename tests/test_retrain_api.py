"""``/api/v1/retrain``: admins start ``doohable retrain`` in the background, follow it and read
its result; one job at a time per home; everyone else is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from doohable import retrain_service
from doohable.api.app import create_app
from doohable.config import Settings
from doohable.model.runtime import read_metadata
from doohable.retrain_service import INTERRUPTED, LoopOptions, job_state
from doohable.store.db import get_engine, session_scope
from doohable.store.users import add_user
from loop_support import vote_collection

WAIT_POLLS = 600  # at most this many half-second polls for a job to finish (a stuck job fails the test)


def _tokens(settings: Settings) -> dict[str, str]:
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        return {role: add_user(s, f"{role}-1", role)[1] for role in ("voter", "moderator", "admin")}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _finished(client: TestClient, token: str) -> dict[str, Any]:
    import time

    for _ in range(WAIT_POLLS):
        state = client.get("/api/v1/retrain", headers=_auth(token)).json()
        if state["state"] != "running":
            return dict(state)
        time.sleep(0.5)
    pytest.fail(f"the retrain job still runs: {state}")


def test_retrain_routes_need_an_admin(settings: Settings) -> None:
    tokens = _tokens(settings)
    with TestClient(create_app(settings)) as client:
        for method in ("GET", "POST"):
            assert client.request(method, "/api/v1/retrain").status_code == 401
            assert client.request(method, "/api/v1/retrain", headers=_auth("wrong")).status_code == 401
            for role in ("voter", "moderator"):
                res = client.request(method, "/api/v1/retrain", headers=_auth(tokens[role]))
                assert res.status_code == 403, (method, role)
        assert client.get("/api/v1/retrain", headers=_auth(tokens["admin"])).json() == {"state": "idle"} | {
            k: None for k in ("started_at", "finished_at", "started_by", "stage", "done", "total", "options",
                              "result", "error")}
    assert job_state(settings)["state"] == "idle"  # nothing was started


def test_a_retrain_on_an_empty_log_fails_clearly_and_a_second_start_is_refused(settings: Settings) -> None:
    admin = _tokens(settings)["admin"]
    with TestClient(create_app(settings)) as client:
        started = client.post("/api/v1/retrain", headers=_auth(admin), json={"holdout": 0.3})
        assert started.status_code == 202, started.text
        assert started.json()["state"] == "running" and started.json()["started_by"] == "admin-1"
        done = _finished(client, admin)
        assert done["state"] == "failed" and "retraining needs at least 10" in done["error"]
        assert done["options"]["holdout"] == 0.3 and done["finished_at"]
        # another process holds the job: the API refuses a second start, and reports it running
        state, lock = retrain_service._begin(settings, LoopOptions(), "the command line")
        try:
            again = client.post("/api/v1/retrain", headers=_auth(admin))
            assert again.status_code == 409 and "already running" in again.json()["detail"]
            running = client.get("/api/v1/retrain", headers=_auth(admin)).json()
            assert running["state"] == "running" and running["started_by"] == "the command line"
        finally:
            lock.close()  # that process dies without finishing: the job is reported interrupted
        gone = client.get("/api/v1/retrain", headers=_auth(admin)).json()
        assert gone["state"] == "failed" and gone["error"] == INTERRUPTED
        bad = client.post("/api/v1/retrain", headers=_auth(admin), json={"from_model": "/etc/passwd"})
        assert bad.status_code == 422


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_retrain_from_the_photo_model_reports_accuracies(settings: Settings, shared_data: Path) -> None:
    ids = vote_collection(settings, shared_data)
    admin = _tokens(settings)["admin"]
    with TestClient(create_app(settings)) as client:
        body = {"from_model": "photo", "promote": False}
        res = client.post("/api/v1/retrain", headers=_auth(admin), json=body)
        assert res.status_code == 202, res.text
        done = _finished(client, admin)
    assert done["state"] == "done", done
    result = done["result"]
    assert result["votes"]["counted"] == len(ids) * (len(ids) - 1) // 2 and result["votes"]["measured"] > 0
    assert 0.0 <= result["new"]["pairwise_accuracy"] <= 1.0
    assert 0.0 <= result["current"]["pairwise_accuracy"] <= 1.0 and result["current"]["model"] == "default"
    assert result["promoted"] is None
    meta = read_metadata(Path(result["candidate"]))
    assert meta["from_model"] == "photo" and meta["name"] == "in-house"
    assert json.loads(meta["prior_strength"]) > 0


def test_a_promoted_model_is_served_at_once(settings: Settings, tmp_path: Path) -> None:
    from doohable.services import Services
    from scoring_fixtures import brightness_model

    target = tmp_path / "in-house.onnx"
    brightness_model(target, name="first")
    services = Services(settings.model_copy(update={"model": str(target)}))
    assert services.scorer().name == "first"
    candidate = brightness_model(tmp_path / "candidate.onnx", name="second")
    _, report = retrain_service.promote(services, candidate, target)
    assert report["model"] == "second" and services.scorer().name == "second"
