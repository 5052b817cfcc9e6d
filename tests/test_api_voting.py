"""The JSON API of the voting stage, through the real app (TestClient), on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from doohable.api.app import create_app
from doohable.cli import app
from doohable.config import Settings
from doohable.store.blobs import open_blobs
from doohable.store.db import get_engine, session_scope
from doohable.store.users import add_user
from voting_support import add_images, delete_image_unchecked, jpeg_bytes


class VotingApp:
    def __init__(self, client: TestClient, tokens: dict[str, str], images: list[int]) -> None:
        self.client, self.tokens, self.images = client, tokens, images

    def auth(self, who: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture
def voting_app(settings: Settings) -> Iterator[VotingApp]:
    engine = get_engine(settings.resolved_database_url)
    tokens = {}
    with session_scope(engine) as s:
        images = add_images(s, 5, blobs=open_blobs(settings.resolved_blob_url))
        for name, role in (("alice", "voter"), ("bob", "voter"), ("root", "admin")):
            tokens[name] = add_user(s, name, role)[1]
    with TestClient(create_app(settings)) as client:
        yield VotingApp(client, tokens, images)


def test_health_and_openapi_docs(voting_app: VotingApp) -> None:
    c = voting_app.client
    assert c.get("/healthz").status_code == 200
    assert c.get("/docs").status_code == 200
    paths = c.get("/openapi.json").json()["paths"]
    api = ("/api/v1/images", "/api/v1/pairs/next", "/api/v1/votes", "/api/v1/ratings", "/api/v1/votes/export")
    for p in api:
        assert p in paths


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/pairs/next"), ("POST", "/api/v1/votes"), ("GET", "/api/v1/ratings"),
     ("GET", "/api/v1/votes/export"), ("GET", "/api/v1/images/1"), ("POST", "/api/v1/votes/undo")],
)
def test_every_api_route_needs_a_valid_token(voting_app: VotingApp, method: str, path: str) -> None:
    assert voting_app.client.request(method, path).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert voting_app.client.request(method, path, headers=bad).status_code == 401


def test_wrong_role_is_403(voting_app: VotingApp) -> None:
    assert (
        voting_app.client.post("/api/v1/ratings/rebuild", headers=voting_app.auth("alice")).status_code == 403
    )
    r = voting_app.client.post("/api/v1/ratings/rebuild", headers=voting_app.auth("root"))
    assert r.status_code == 200 and r.json()["max_elo_change"] == 0.0


def test_a_deleted_image_is_not_rated_and_the_rebuild_says_so(
    voting_app: VotingApp, settings: Settings
) -> None:
    """Votes for an image deleted outside doohable (foreign keys off) stay in the log; the
    rebuild, by API and CLI, succeeds and counts them; no rating lists the image."""
    c, auth = voting_app.client, voting_app.auth()
    pairs = []
    for _ in range(8):
        pair = c.get("/api/v1/pairs/next", headers=auth).json()
        body = {"pair_token": pair["pair_token"], "winner_id": pair["left"]["id"]}
        assert c.post("/api/v1/votes", json=body, headers=auth).status_code == 201
        pairs.append({pair["left"]["id"], pair["right"]["id"]})
    gone = pair["left"]["id"]
    naming = sum(gone in p for p in pairs)
    assert c.get("/api/v1/ratings?method=bt", headers=auth).status_code == 200  # a fit cached before
    delete_image_unchecked(get_engine(settings.resolved_database_url), gone)
    r = c.post("/api/v1/ratings/rebuild", headers=voting_app.auth("root"))
    assert r.status_code == 200 and r.json()["deleted_votes"] == naming and r.json()["log_rows"] == 8
    for method in ("elo", "bt"):
        rated = {x["image_id"] for x in c.get(f"/api/v1/ratings?method={method}", headers=auth).json()}
        assert rated and gone not in rated
    res = CliRunner().invoke(app, ["ratings", "rebuild", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["deleted_votes"] == naming
    assert f"{naming} vote(s) name images that were deleted; they are kept in the log" in res.stderr


def test_pair_vote_and_the_same_token_never_counts_twice(voting_app: VotingApp) -> None:
    c = voting_app.client
    pair = c.get("/api/v1/pairs/next", headers=voting_app.auth()).json()
    assert set(pair) == {"pair_token", "left", "right"}
    left, right = pair["left"]["id"], pair["right"]["id"]
    assert left != right and {left, right} <= set(voting_app.images)
    body = {"pair_token": pair["pair_token"], "winner_id": left}
    first = c.post("/api/v1/votes", json=body, headers=voting_app.auth())
    assert first.status_code == 201 and isinstance(first.json()["vote_id"], int)
    again = c.post("/api/v1/votes", json={**body, "winner_id": right}, headers=voting_app.auth())
    assert again.status_code == 200 and again.json() == first.json()
    other = c.post("/api/v1/votes", json=body, headers=voting_app.auth("bob"))
    assert other.status_code == 404  # another voter's pair
    elo = c.get("/api/v1/ratings?method=elo", headers=voting_app.auth()).json()
    assert [(r["image_id"], r["votes"]) for r in elo] == [(left, 1), (right, 1)]
    assert elo[0]["rating"] == pytest.approx(5.0) and elo[1]["rating"] == pytest.approx(-5.0)
    assert set(elo[0]) == {"image_id", "rating", "uncertainty", "votes"}


def test_bad_votes_are_refused_with_reasons(voting_app: VotingApp) -> None:
    c = voting_app.client
    pair = c.get("/api/v1/pairs/next", headers=voting_app.auth()).json()
    tok = pair["pair_token"]
    r = c.post("/api/v1/votes", json={"pair_token": tok, "winner_id": 10**6}, headers=voting_app.auth())
    assert r.status_code == 400 and "winner_id" in r.json()["detail"]
    r = c.post("/api/v1/votes", json={"pair_token": "nope", "winner_id": None}, headers=voting_app.auth())
    assert r.status_code == 404
    r = c.post("/api/v1/votes", json={"winner_id": 1}, headers=voting_app.auth())
    assert r.status_code == 422
    assert c.post(f"/api/v1/pairs/{pair['pair_token']}/skip", headers=voting_app.auth()).status_code == 204
    r = c.post("/api/v1/votes", json={"pair_token": tok, "winner_id": None}, headers=voting_app.auth())
    assert r.status_code == 409


def test_signed_image_urls(voting_app: VotingApp, settings: Settings) -> None:
    c = voting_app.client
    pair = c.get("/api/v1/pairs/next", headers=voting_app.auth()).json()
    url = pair["left"]["url"]
    assert url.startswith("http://testserver/img/")
    got = c.get(url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert got.content == jpeg_bytes(voting_app.images.index(pair["left"]["id"]))
    token = url.rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert c.get(f"/img/{tampered}").status_code == 403
    for evil in ("/img/..%2F..%2Fetc%2Fpasswd", "/img/%2e%2e", "/img/" + "a" * 64):
        assert c.get(evil).status_code in (403, 404)
    meta = c.get(f"/api/v1/images/{pair['left']['id']}", headers=voting_app.auth()).json()
    assert meta["sha256"] and c.get(meta["url"]).status_code == 200
    assert c.get("/api/v1/images/999999", headers=voting_app.auth()).status_code == 404
    expired = create_app(settings.model_copy(update={"signed_url_ttl_s": -1}))
    with TestClient(expired) as c2:
        url2 = c2.get("/api/v1/pairs/next", headers=voting_app.auth()).json()["right"]["url"]
        r = c2.get(url2)
        assert r.status_code == 403 and "expired" in r.json()["detail"]


def test_undo_stats_and_export(voting_app: VotingApp) -> None:
    c = voting_app.client
    for k in range(3):
        pair = c.get("/api/v1/pairs/next", headers=voting_app.auth()).json()
        winner = pair["left"]["id"] if k != 1 else None
        body = {"pair_token": pair["pair_token"], "winner_id": winner}
        assert c.post("/api/v1/votes", json=body, headers=voting_app.auth()).status_code == 201
    assert c.get("/api/v1/votes/stats", headers=voting_app.auth()).json()["today"] == 3
    undo = c.post("/api/v1/votes/undo", headers=voting_app.auth()).json()
    assert undo["undone"] is True
    stats = c.get("/api/v1/votes/stats", headers=voting_app.auth()).json()
    assert stats["total"] == 2 and 0.0 <= stats["settled"] <= 1.0
    r = c.get("/api/v1/votes/export", headers=voting_app.auth())
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["voter", "winner", "loser", "created_at"]
    assert len(rows) == 1 and rows[0]["voter"] == "alice"  # 3 votes - 1 tie - 1 undone
    bt = c.get("/api/v1/ratings?method=bt", headers=voting_app.auth()).json()
    assert bt and all(r["uncertainty"] > 0 for r in bt)
    assert c.get("/api/v1/ratings?method=glicko", headers=voting_app.auth()).status_code == 422


def test_cookie_auth_needs_the_csrf_header(voting_app: VotingApp) -> None:
    c = voting_app.client
    r = c.get(f"/login?token={voting_app.tokens['alice']}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/vote"
    page = c.get("/vote")
    assert page.status_code == 200 and 'name="csrf-token"' in page.text
    csrf = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    pair = c.get("/api/v1/pairs/next").json()  # GET with the cookie alone is fine
    body = {"pair_token": pair["pair_token"], "winner_id": pair["left"]["id"]}
    assert c.post("/api/v1/votes", json=body).status_code == 403
    assert c.post("/api/v1/votes", json=body, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert c.post("/api/v1/votes", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201


def test_upload_stores_once_and_refuses_bad_input(voting_app: VotingApp) -> None:
    c = voting_app.client
    data = jpeg_bytes(1000, size=160)
    files = {"file": ("photo.jpg", data, "image/jpeg")}
    assert c.post("/api/v1/images", files=files).status_code == 401
    first = c.post("/api/v1/images", files=files, headers=voting_app.auth())
    assert first.status_code == 201, first.text
    body = first.json()
    assert set(body) == {"id", "sha256", "duplicate"} and body["duplicate"] is False
    again = c.post("/api/v1/images", files=files, headers=voting_app.auth()).json()
    assert again == {**body, "duplicate": True}
    meta = c.get(f"/api/v1/images/{body['id']}", headers=voting_app.auth()).json()
    assert c.get(meta["url"]).content == data
    bad = c.post("/api/v1/images", files={"file": ("x.jpg", b"not an image", "image/jpeg")},
                 headers=voting_app.auth())
    assert 400 <= bad.status_code < 500 and bad.json()["detail"]
    assert c.post("/api/v1/images", headers=voting_app.auth()).status_code == 422
