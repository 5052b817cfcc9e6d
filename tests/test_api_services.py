"""The API layer's shape: every app works on its own :class:`Services` (no state shared through
module caches), every route keeps its path under its router's prefix, and a server without a
model answers a malformed score request with its 4xx, the 503 only a well-formed one (and
moderation, which scores nothing, as usual)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from doohable.api.app import create_app
from doohable.config import Settings
from doohable.services import Services
from doohable.store.db import dispose_all
from doohable.store.users import TokenCache, add_user, revoke_user
from scoring_fixtures import jpeg_of_gray

Auth = dict[str, str]


def _home_settings(root: Path) -> Settings:
    db, blobs = f"sqlite:///{root / 'doohable.db'}", f"file://{root / 'blobs'}"
    return Settings(home=root, database_url=db, blob_url=blobs)


def _token(services: Services, name: str, role: str = "voter") -> dict[str, str]:
    with services.transaction() as s:
        _, token = add_user(s, name, role)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def two_homes(tmp_path: Path) -> Iterator[tuple[FastAPI, FastAPI]]:
    apps = (create_app(_home_settings(tmp_path / "a")), create_app(_home_settings(tmp_path / "b")))
    yield apps
    dispose_all()


def test_two_apps_with_different_homes_share_nothing(two_homes: tuple[FastAPI, FastAPI]) -> None:
    app_a, app_b = two_homes
    sa, sb = app_a.state.services, app_b.state.services
    assert sa is not sb and sa.tokens is not sb.tokens and sa.blobs is not sb.blobs
    auth_a = _token(sa, "ana")
    with TestClient(app_a) as a, TestClient(app_b) as b:
        image = {"file": ("g.jpg", jpeg_of_gray(120), "image/jpeg")}
        up = a.post("/api/v1/images", files=image, headers=auth_a)
        assert up.status_code == 201, up.text
        sha, image_id = up.json()["sha256"], up.json()["id"]
        assert sa.blobs.exists(sha) and not sb.blobs.exists(sha)  # each app its own blob folder
        signed = a.get(f"/api/v1/images/{image_id}", headers=auth_a).json()["url"]
        path = signed.split("testserver", 1)[1]
        assert a.get(path).status_code == 200
        assert b.get(path).status_code == 403  # another home: another signing key
        assert b.get(f"/api/v1/images/{image_id}", headers=auth_a).status_code == 401  # A's user
        auth_b = _token(sb, "bo")
        assert b.get(f"/api/v1/images/{image_id}", headers=auth_b).status_code == 404  # A's image


def test_token_cache_belongs_to_its_app(tmp_path: Path) -> None:
    """App A caches a token; after the user is revoked, a second app on the same database lets
    it in no more (a process-wide cache would answer from A's entry)."""
    settings = _home_settings(tmp_path / "home")
    first = Services(settings)
    first.tokens = TokenCache(ttl_s=3600.0)  # A's entry outlives the test
    app_a, app_b = create_app(services=first), create_app(settings)
    auth = _token(first, "ana")
    try:
        with TestClient(app_a) as a, TestClient(app_b) as b:
            assert a.get("/api/v1/votes/stats", headers=auth).status_code == 200
            with first.transaction() as s:
                revoke_user(s, "ana")
            assert a.get("/api/v1/votes/stats", headers=auth).status_code == 200  # A's cache, within its TTL
            assert b.get("/api/v1/votes/stats", headers=auth).status_code == 401
    finally:
        dispose_all()


def test_every_router_keeps_its_paths_under_its_prefix() -> None:
    """JSON routers live in api/routers under /api/v1, page routers in api/pages outside it
    and out of the OpenAPI document (but for the signed image bytes at /img, documented); every
    router has a prefix but the one of the site's root pages."""
    from doohable.api import pages, routers
    from doohable.api.pages import img, moderation, pages_router, site, userscript
    from doohable.api.routers import API_PREFIX, api_router

    for module in (routers.images, routers.pairs, routers.votes, routers.ratings, routers.score,
                   routers.moderation, routers.userscript, img, moderation, userscript):
        router = module.router
        assert router.prefix and router.tags, module.__name__
        assert all(getattr(r, "path", "").startswith(router.prefix) for r in router.routes)
    assert site.router.prefix == "" and pages.__name__ == "doohable.api.pages"
    api = {(r.path, r.name) for r in iter_route_contexts(api_router.routes)}
    assert all(path.startswith(API_PREFIX + "/") for path, _ in api)
    assert {("/api/v1/score", "score_image"), ("/api/v1/score/batch", "score_batch"),
            ("/api/v1/moderation/queue", "get_queue"), ("/api/v1/images/url", "add_by_url")} <= api
    page_routes = list(iter_route_contexts(pages_router.routes))
    page_paths = {r.path for r in page_routes}
    assert {"/login", "/vote", "/leaderboard", "/moderation", "/userscript/doohable.user.js"} <= page_paths
    assert not any(p.startswith("/api/") for p in page_paths)
    assert {r.path for r in page_routes if r.include_in_schema} == {"/img/{token}"}


@pytest.fixture
def no_model(settings: Settings, tmp_path: Path) -> Iterator[tuple[TestClient, Auth, Auth]]:
    """A server whose model file does not exist, a voter's and a moderator's auth headers."""
    services = Services(settings.model_copy(update={"model": str(tmp_path / "missing.onnx")}))
    with pytest.raises((FileNotFoundError, ValueError)):
        services.scorer()
    with TestClient(create_app(services=services)) as client:
        yield client, _token(services, "v"), _token(services, "m", "moderator")


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"params": {"nsfw": "maybe"}, "json": {"image_id": 1}}, 422),
        ({"files": {"file": ("x.jpg", b"not an image at all", "image/jpeg")}}, 422),
        ({"json": {"image_id": 424242}}, 404),
        ({"json": {"image_id": "abc"}}, 400),
        ({"json": {"url": "ftp://x/y.jpg"}}, 400),
        ({"json": {}}, 400),
        ({"content": b"raw", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"content": b"{", "headers": {"Content-Type": "application/json"}}, 400),
    ],
)
def test_without_a_model_a_malformed_score_request_gets_its_4xx(
    no_model: tuple[TestClient, Auth, Auth], kwargs: dict, code: int
) -> None:
    client, voter, _moderator = no_model
    kwargs = dict(kwargs)
    headers = {**voter, **kwargs.pop("headers", {})}
    r = client.post("/api/v1/score", headers=headers, **kwargs)
    assert r.status_code == code, r.text


def test_without_a_model_only_a_well_formed_request_gets_503(
    no_model: tuple[TestClient, Auth, Auth],
) -> None:
    client, voter, moderator = no_model
    good = {"file": ("g.jpg", jpeg_of_gray(80), "image/jpeg")}
    assert client.post("/api/v1/score", files=good).status_code == 401  # who asks comes first
    r = client.post("/api/v1/score", files=good, headers=voter)
    assert r.status_code == 503 and "no scoring model" in r.json()["detail"]
    batch = "/api/v1/score/batch"
    assert client.post(batch, json={"image_ids": 3}, headers=voter).status_code == 400
    assert client.post(batch, json={}, headers=voter).status_code == 400
    assert client.post(batch, json={"image_ids": list(range(1, 66))}, headers=voter).status_code == 413
    bad_flag = client.post(batch, params={"nsfw": "maybe"}, json={"image_ids": [1]}, headers=voter)
    assert bad_flag.status_code == 422
    assert client.post(batch, files=[("files", good["file"])], headers=voter).status_code == 503
    queue = "/api/v1/moderation/queue"
    assert client.get(queue, params={"limit": 0}, headers=moderator).status_code == 422
    assert client.get(queue, params={"status": "lost"}, headers=moderator).status_code == 422
    assert client.get(queue, headers=moderator).status_code == 200  # moderation needs no model
    assert client.get("/api/v1/moderation/preview", headers=moderator).status_code == 422  # no threshold
    assert client.get("/api/v1/moderation/preview?threshold=3", headers=moderator).status_code == 200
    assert client.get("/healthz").status_code == 200
