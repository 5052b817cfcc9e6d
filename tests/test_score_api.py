"""The scoring API and the moderation API/page, through the real app, database and blob store."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from doohable.api.app import create_app
from doohable.config import Settings, get_settings
from doohable.ingest import SourceInfo, ingest_bytes
from doohable.store.blobs import open_blobs
from doohable.store.db import get_engine, session_scope
from doohable.store.users import add_user
from scoring_fixtures import brightness_model, expected_score, jpeg_of_gray, photo_jpeg


@pytest.fixture
def scoring_settings(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    model = brightness_model(tmp_path / "brightness.onnx")
    monkeypatch.setenv("DOOHABLE_MODEL", str(model))
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def client(scoring_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(scoring_settings)) as c:
        yield c


def _token(settings: Settings, name: str, role: str) -> dict[str, str]:
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        _, token = add_user(s, name, role)
    return {"Authorization": f"Bearer {token}"}


def _ingest(settings: Settings, data: bytes) -> int:
    blobs = open_blobs(settings.resolved_blob_url)
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        return ingest_bytes(s, blobs, data, source=SourceInfo("file", "x.jpg"), settings=settings).image_id


def test_score_upload_answers_score_model_percentile_decision(
    client: TestClient, scoring_settings: Settings
) -> None:
    auth = _token(scoring_settings, "v", "voter")
    r = client.post("/api/v1/score", files={"file": ("g.jpg", jpeg_of_gray(200), "image/jpeg")}, headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["score"] == pytest.approx(expected_score(200), abs=0.02)
    assert body["model"] == "brightness" and len(body["version"]) == 12
    assert body["percentile"] is None  # nothing stored yet for this model
    assert body["decision"] == "pending"  # no threshold set


def test_score_by_image_id_uses_collection_and_policy(client: TestClient, scoring_settings: Settings) -> None:
    auth = _token(scoring_settings, "m", "moderator")
    ids = [_ingest(scoring_settings, photo_jpeg(k)) for k in range(3)]
    dark = _ingest(scoring_settings, jpeg_of_gray(10))
    r = client.post("/api/v1/score/batch", json={"image_ids": ids + [dark]}, headers=auth)
    assert r.status_code == 200
    # store the collection's scores through the policy route path: PUT policy then score
    from doohable import moderation

    with session_scope(get_engine(scoring_settings.resolved_database_url)) as s:
        moderation.store_scores(
            s, {i["image_id"]: i["score"] for i in r.json()["results"]}, "brightness", r.json()["version"]
        )
    r = client.put("/api/v1/moderation/policy", json={"threshold": 1.5, "apply": False}, headers=auth)
    assert r.status_code == 200 and r.json()["threshold"] == 1.5
    r = client.post("/api/v1/score", json={"image_id": dark}, headers=auth)
    assert r.status_code == 200
    assert r.json()["percentile"] == pytest.approx(25.0)  # the darkest of four
    assert r.json()["decision"] == "pending" and r.json()["image_id"] == dark
    r = client.post("/api/v1/score?nsfw=true", data={"image_id": str(ids[0])}, headers=auth)
    assert r.status_code == 200 and 0.0 <= r.json()["nsfw"] < 0.8
    assert r.json()["decision"] == "approved"  # ≥ 1.5 and checked clean


@pytest.mark.parametrize(
    ("kwargs", "code", "reason"),
    [
        ({"files": {"file": ("x.jpg", b"not an image at all", "image/jpeg")}}, 422, "image"),
        ({"files": {"file": ("x.jpg", jpeg_of_gray(9)[:200], "image/jpeg")}}, 422, "truncated"),
        ({"json": {"image_id": 424242}}, 404, "no image"),
        ({"json": {"image_id": "abc"}}, 400, "integer"),
        ({"json": {"url": "ftp://x/y.jpg"}}, 400, "http"),
        ({"json": {}}, 400, "nothing to score"),
        ({"content": b"raw", "headers": {"Content-Type": "text/plain"}}, 415, "multipart"),
        ({"content": b"{", "headers": {"Content-Type": "application/json"}}, 400, "JSON"),
    ],
)
def test_bad_input_is_4xx_with_reason_and_server_stays_healthy(
    client: TestClient, scoring_settings: Settings, kwargs: dict, code: int, reason: str
) -> None:
    auth = _token(scoring_settings, "v", "voter")
    kwargs = dict(kwargs)  # the parameter dict is shared by the SQLite and PostgreSQL runs
    headers = {**auth, **kwargs.pop("headers", {})}
    r = client.post("/api/v1/score", headers=headers, **kwargs)
    assert r.status_code == code, r.text
    assert reason.lower() in r.json()["detail"].lower()
    ok = client.post("/api/v1/score", files={"file": ("g.jpg", jpeg_of_gray(50), "image/jpeg")}, headers=auth)
    assert ok.status_code == 200
    assert client.get("/healthz").status_code == 200


def test_too_large_upload_is_413(scoring_settings: Settings) -> None:
    small = scoring_settings.model_copy(update={"max_image_bytes": 500})
    with TestClient(create_app(small)) as c:
        auth = _token(small, "v", "voter")
        r = c.post("/api/v1/score", files={"file": ("g.jpg", photo_jpeg(1), "image/jpeg")}, headers=auth)
    assert r.status_code == 413 and "500" in r.json()["detail"]


def test_batch_keeps_order_and_per_item_errors(client: TestClient, scoring_settings: Settings) -> None:
    auth = _token(scoring_settings, "v", "voter")
    files = [
        ("files", ("a.jpg", jpeg_of_gray(30), "image/jpeg")),
        ("files", ("b.jpg", b"garbage", "image/jpeg")),
        ("files", ("c.jpg", jpeg_of_gray(220), "image/jpeg")),
    ]
    r = client.post("/api/v1/score/batch", files=files, headers=auth)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["index"] for x in res] == [0, 1, 2]
    assert res[0]["score"] == pytest.approx(expected_score(30), abs=0.02)
    assert res[1]["score"] is None and res[1]["error"]
    assert res[2]["score"] == pytest.approx(expected_score(220), abs=0.02)
    too_many = client.post("/api/v1/score/batch", json={"image_ids": list(range(65))}, headers=auth)
    assert too_many.status_code == 413


def test_auth_required(client: TestClient, scoring_settings: Settings) -> None:
    r = client.post("/api/v1/score", files={"file": ("g.jpg", jpeg_of_gray(50), "image/jpeg")})
    assert r.status_code == 401
    voter = _token(scoring_settings, "v", "voter")
    assert client.get("/api/v1/moderation/queue", headers=voter).status_code == 403
    assert client.get("/api/v1/moderation/audit.csv", headers=voter).status_code == 403


def test_moderation_api_queue_decide_policy_preview_audit(
    client: TestClient, scoring_settings: Settings
) -> None:
    from doohable import moderation

    auth = _token(scoring_settings, "mia", "moderator")
    levels = [40, 90, 140, 190, 240]
    ids = [_ingest(scoring_settings, jpeg_of_gray(lv, size=(100 + lv, 80))) for lv in levels]
    with session_scope(get_engine(scoring_settings.resolved_database_url)) as s:
        moderation.store_scores(
            s, {i: expected_score(lv) for i, lv in zip(ids, levels, strict=True)}, "brightness", "v"
        )
    q = client.get("/api/v1/moderation/queue", headers=auth).json()
    assert [x["id"] for x in q] == ids[::-1]  # best first
    assert q[0]["url"].startswith("http") and "/img/" in q[0]["url"]
    assert client.get(q[0]["url"]).status_code == 200
    for i, d in [(ids[0], "rejected"), (ids[1], "rejected"), (ids[4], "approved")]:
        r = client.post("/api/v1/moderation/decisions", json={"image_id": i, "decision": d}, headers=auth)
        assert r.status_code == 201 and r.json()["status"] == d
    assert (
        client.post(
            "/api/v1/moderation/decisions", json={"image_id": 99999, "decision": "approved"}, headers=auth
        ).status_code
        == 404
    )
    pol = client.get("/api/v1/moderation/policy", headers=auth).json()
    assert pol["threshold"] is None
    assert pol["suggested"]["threshold"] == pytest.approx(expected_score(240))
    prev = client.get("/api/v1/moderation/preview", params={"threshold": 2.0}, headers=auth).json()
    assert prev == {
        "threshold": 2.0,
        "would_approve": 2,
        "false_approvals": 1,
        "missed_approvals": 0,
        "wrong": 1,
        "decided": 3,
    }
    # the gate never checked these images, so setting a threshold approves none of them
    put = client.put("/api/v1/moderation/policy", json={"threshold": 2.0}, headers=auth).json()
    assert put["threshold"] == 2.0 and put["applied"] == {"approved": 0, "flagged": 0, "pending": 2}
    pending = client.get("/api/v1/moderation/queue", params={"min_score": 3.5}, headers=auth).json()
    assert [x["id"] for x in pending] == [ids[3]]
    audit = client.get("/api/v1/moderation/audit.csv", headers=auth)
    assert audit.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(audit.text)))
    assert [(int(r["image_id"]), r["decision"], r["by"]) for r in rows] == [
        (ids[0], "rejected", "mia"),
        (ids[1], "rejected", "mia"),
        (ids[4], "approved", "mia"),
    ]


@pytest.fixture(params=["missing", "corrupt"])
def no_model(settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings whose model cannot be loaded: a missing file, or a file that is no ONNX model."""
    path = tmp_path / f"{request.param}.onnx"
    if request.param == "corrupt":
        path.write_bytes(b"not an onnx model")
    return settings.model_copy(update={"model": str(path)})


def test_moderation_works_without_a_loadable_model(no_model: Settings) -> None:
    """Only scoring needs the model: with none that loads, moderators still see the stored scores
    best first, decide, and read and set the policy, which says whose scores these are."""
    from doohable import moderation
    from doohable.store.models import Decision, Image

    auth = _token(no_model, "mia", "moderator")
    ids = [_ingest(no_model, jpeg_of_gray(lv)) for lv in (40, 140, 240)]
    with session_scope(get_engine(no_model.resolved_database_url)) as s:
        moderation.store_scores(s, {ids[0]: 1.0, ids[1]: 2.0}, "old", "v")
        moderation.store_scores(s, dict(zip(ids, [1.5, 2.5, 3.5], strict=True)), "brightness", "v")
    with TestClient(create_app(no_model)) as client:
        client.get("/login", params={"token": auth["Authorization"].removeprefix("Bearer ")})
        page = client.get("/moderation")  # the page, whose policy box shows the model note
        assert page.status_code == 200 and 'id="model-note"' in page.text
        q = client.get("/api/v1/moderation/queue", headers=auth)
        assert q.status_code == 200, q.text
        assert [(x["id"], x["score"]) for x in q.json()] == [(ids[2], 3.5), (ids[1], 2.5), (ids[0], 1.5)]
        for i, d in [(ids[2], "approved"), (ids[0], "rejected")]:
            r = client.post("/api/v1/moderation/decisions", json={"image_id": i, "decision": d}, headers=auth)
            assert r.status_code == 201 and r.json()["status"] == d, r.text
        pol = client.get("/api/v1/moderation/policy", headers=auth)
        assert pol.status_code == 200, pol.text
        assert pol.json()["model"] == "brightness" and pol.json()["version"] is None
        assert "no scoring model" in pol.json()["model_note"] and "brightness" in pol.json()["model_note"]
        assert pol.json()["suggested"]["threshold"] == 3.5
        put = client.put("/api/v1/moderation/policy", json={"threshold": 3.0}, headers=auth)
        assert put.status_code == 200 and put.json()["applied"] == {"approved": 0, "flagged": 0, "pending": 1}
        prev = client.get("/api/v1/moderation/preview", params={"threshold": 2.0}, headers=auth)
        assert prev.status_code == 200 and prev.json()["would_approve"] == 1
        assert client.post("/api/v1/moderation/decisions/undo", headers=auth).json()["undone"]
        r = client.post("/api/v1/score", json={"image_id": ids[1]}, headers=auth)
        assert r.status_code == 503 and "no scoring model" in r.json()["detail"], r.text
        r = client.post("/api/v1/score/batch", json={"image_ids": [ids[1]]}, headers=auth)
        assert r.status_code == 503 and "no scoring model" in r.json()["detail"], r.text
    with session_scope(get_engine(no_model.resolved_database_url)) as s:
        rows = s.query(Decision.image_id, Decision.decision, Decision.score).order_by(Decision.id).all()
        assert [tuple(r) for r in rows] == [(ids[2], "approved", 3.5), (ids[0], "rejected", 1.5),
                                            (ids[0], "pending", 1.5)]  # the last one: the undo
        assert [s.get(Image, i).status for i in ids] == ["pending", "pending", "approved"]  # type: ignore[union-attr]


def test_url_ingest_without_a_loadable_model_stores_the_image_unscored(
    no_model: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("doohable.ingest.fetch_url", lambda url, settings: jpeg_of_gray(90))
    auth = _token(no_model, "v", "voter")
    with TestClient(create_app(no_model)) as client:
        r = client.post("/api/v1/images/url", json={"url": "https://example.org/a.jpg"}, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["score"] is None and r.json()["status"] == "pending" and not r.json()["duplicate"]


def test_moderation_page_for_moderators_only(client: TestClient, scoring_settings: Settings) -> None:
    assert client.get("/moderation", follow_redirects=False).status_code == 303
    with session_scope(get_engine(scoring_settings.resolved_database_url)) as s:
        _, vtoken = add_user(s, "v", "voter")
        _, mtoken = add_user(s, "m", "moderator")
    client.get(f"/login?token={vtoken}")
    assert client.get("/moderation").status_code == 403
    client.get(f"/login?token={mtoken}")
    page = client.get("/moderation")
    assert page.status_code == 200
    assert 'id="thr"' in page.text and "Audit CSV" in page.text and "approve" in page.text


def test_userscript_served_with_server_address(client: TestClient) -> None:
    r = client.get("/userscript/doohable.user.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert "// ==UserScript==" in r.text and "@grant        GM_xmlhttpRequest" in r.text
    assert 'const SERVER = "http://testserver";' in r.text and "@connect      testserver" in r.text
    assert "__DOOHABLE" not in r.text


def test_url_route_cors_and_errors(client: TestClient, scoring_settings: Settings) -> None:
    pre = client.options("/api/v1/images/url")
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "*"
    r = client.post("/api/v1/images/url", json={"url": "http://x/y.jpg"})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "*"
    auth = _token(scoring_settings, "v", "voter")
    r = client.post("/api/v1/images/url", json={"url": "file:///etc/passwd"}, headers=auth)
    assert r.status_code == 400 and "http" in r.json()["detail"]
    r = client.post("/api/v1/images/url", json={"url": "http://127.0.0.1:9/a.jpg"}, headers=auth)
    assert r.status_code == 400 and r.json()["detail"]  # private address refused by default


def test_scoring_slots_bound_concurrent_inference(
    client: TestClient, scoring_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most the app's scoring slots score at once; the other requests wait and then succeed."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from doohable.api.routers import score as score_router

    real, lock = score_router.evaluate, threading.Lock()
    running, peak = [0], [0]

    def counting(*args: object, **kwargs: object) -> object:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)  # long enough for the other requests to arrive meanwhile
        try:
            return real(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(score_router, "evaluate", counting)
    client.app.state.score_slots.total_tokens = 1  # type: ignore[attr-defined]
    auth = _token(scoring_settings, "v", "voter")
    files = {"file": ("g.jpg", jpeg_of_gray(120), "image/jpeg")}
    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda _: client.post("/api/v1/score", files=files, headers=auth).status_code,
                              range(6)))
    assert codes == [200] * 6 and peak[0] == 1
