"""Who can do what, table-driven over EVERY route of the app (enumerated from ``app.routes``,
so a new route fails :func:`test_every_route_is_in_the_matrix` until it is given a row).

API routes × {no token, bad token, voter, moderator, admin} → 401 / 403 / the route's 2xx;
pages (session cookie) by role; public routes for anyone; Slack signatures (bad, stale,
replayed); signed image URLs (expired, tampered); path traversal; URL ingest refusing
loopback, private, link-local and metadata addresses, directly, through DNS and redirects."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner
from pydantic import SecretStr
from sqlalchemy import func, select
from starlette.routing import Mount

from doohable.api.app import create_app
from doohable.config import Settings
from doohable.ingest import fetch
from doohable.signing import _serializer, image_url
from doohable.store.blobs import open_blobs
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Vote
from doohable.store.users import add_user
from scoring_fixtures import brightness_model
from test_slack_voting import SECRET, FakeSlack, click, command, signed
from voting_support import add_images, jpeg_bytes

IDENTITIES = ("none", "bad", "voter", "moderator", "admin")
RANK = {"voter": 0, "moderator": 1, "admin": 2}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app answers, routers included (HEAD left out); mounts as MOUNT."""
    out: set[tuple[str, str]] = set()
    for route in app.routes:
        if hasattr(route, "effective_route_contexts"):  # an included router (FastAPI ≥ 0.16x)
            out |= {(m, ctx.path) for ctx in route.effective_route_contexts() for m in ctx.methods}
        elif isinstance(route, Mount):
            out.add(("MOUNT", route.path))
        else:
            out |= {(m, route.path) for m in (getattr(route, "methods", None) or ()) if m != "HEAD"}  # type: ignore[attr-defined]
    return out


class AuthApp:
    """One app on a fresh SQLite store: three users, six images, a local image server."""

    def __init__(self, client: TestClient, settings: Settings, tokens: dict[str, str], images: list[int],
                 files_url: str) -> None:
        self.client, self.settings, self.tokens, self.images = client, settings, tokens, images
        self.files_url = files_url
        self.seed = 1000

    def auth(self, who: str) -> dict[str, str]:
        if who == "none":
            return {}
        token = "not-a-real-token" if who == "bad" else self.tokens[who]
        return {"Authorization": f"Bearer {token}"}

    def fresh_jpeg(self) -> bytes:
        self.seed += 1
        return jpeg_bytes(self.seed)

    def pair_token(self, who: str) -> str:
        r = self.client.get("/api/v1/pairs/next", headers=self.auth(who))
        return str(r.json()["pair_token"]) if r.status_code == 200 else "no-such-token"


class _Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        seed = int(self.path.strip("/").split(".")[0] or 0)
        body = jpeg_bytes(seed)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def auth_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthApp]:
    root = tmp_path_factory.mktemp("auth")
    settings = Settings(
        home=root / "home",
        database_url=f"sqlite:///{root / 'auth.db'}",
        blob_url=f"file://{root / 'blobs'}",
        model=str(brightness_model(root / "brightness.onnx")),
        url_allow_private=True,  # URL ingest from the local image server
        threads=1,
    )
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        images = add_images(s, 6, blobs=open_blobs(settings.resolved_blob_url))
        tokens = {role: add_user(s, role, role)[1] for role in RANK}
    files = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    with TestClient(create_app(settings)) as client:
        yield AuthApp(client, settings, tokens, images, f"http://127.0.0.1:{files.server_address[1]}")
    files.shutdown()


Call = Callable[[AuthApp, str], httpx.Response]


@dataclass(frozen=True)
class Row:
    """Who may call a route: ``level`` (public | voter | moderator | admin | page:ROLE | signed |
    slack), and a valid request for an identity (``call``) with the 2xx it must get."""

    level: str
    call: Call | None = None
    ok: int = 200


def _get(path: str) -> Call:
    return lambda w, who: w.client.get(path, headers=w.auth(who), follow_redirects=False)


def _post(path: str) -> Call:
    return lambda w, who: w.client.post(path, headers=w.auth(who))


def _image_meta(w: AuthApp, who: str) -> httpx.Response:
    return w.client.get(f"/api/v1/images/{w.images[0]}", headers=w.auth(who))


def _upload(path: str, field: str = "file") -> Call:
    return lambda w, who: w.client.post(path, headers=w.auth(who), files={field: ("x.jpg", w.fresh_jpeg())})


def _vote(w: AuthApp, who: str) -> httpx.Response:
    token = w.pair_token(who)
    return w.client.post("/api/v1/votes", headers=w.auth(who), json={"pair_token": token, "winner_id": None})


def _skip(w: AuthApp, who: str) -> httpx.Response:
    return w.client.post(f"/api/v1/pairs/{w.pair_token(who)}/skip", headers=w.auth(who))


def _skip_again(w: AuthApp, who: str) -> httpx.Response:
    token = w.pair_token(who)
    w.client.post(f"/api/v1/pairs/{token}/skip", headers=w.auth(who))  # 204, or 401 for no identity
    return w.client.post(f"/api/v1/pairs/{token}/again", headers=w.auth(who))


def _decide_and_undo(w: AuthApp, who: str) -> httpx.Response:
    """The caller's own decision on an image nobody else decides, then its undo."""
    body = {"image_id": w.images[-1], "decision": "rejected"}
    w.client.post("/api/v1/moderation/decisions", headers=w.auth(who), json=body)
    return w.client.post("/api/v1/moderation/decisions/undo", headers=w.auth(who))


def _url_ingest(w: AuthApp, who: str) -> httpx.Response:
    w.seed += 1
    body = {"url": f"{w.files_url}/{w.seed}.jpg"}
    return w.client.post("/api/v1/images/url", headers=w.auth(who), json=body)


MATRIX: dict[tuple[str, str], Row] = {
    # public
    ("GET", "/healthz"): Row("public", _get("/healthz")),
    ("GET", "/openapi.json"): Row("public", _get("/openapi.json")),
    ("GET", "/docs"): Row("public", _get("/docs")),
    ("GET", "/docs/oauth2-redirect"): Row("public", _get("/docs/oauth2-redirect")),
    ("GET", "/redoc"): Row("public", _get("/redoc")),
    ("MOUNT", "/static"): Row("public", _get("/static/app.css")),
    ("MOUNT", "/static-docs"): Row("public", _get("/static-docs/swagger-ui.css")),
    ("GET", "/favicon.ico"): Row("public", _get("/favicon.ico")),
    ("GET", "/userscript/doohable.user.js"): Row("public", _get("/userscript/doohable.user.js")),
    ("OPTIONS", "/api/v1/images/url"): Row(
        "public", lambda w, who: w.client.options("/api/v1/images/url", headers=w.auth(who)), 204
    ),
    ("GET", "/"): Row("public", _get("/"), 303),
    ("GET", "/login"): Row("public", _get("/login")),
    ("POST", "/login"): Row("login"),
    ("POST", "/logout"): Row("login"),
    # pages: the session cookie, never the bearer token
    ("GET", "/vote"): Row("page:voter"),
    ("GET", "/leaderboard"): Row("page:voter"),
    ("GET", "/moderation"): Row("page:moderator"),
    # signed and Slack routes have their own tests below
    ("GET", "/img/{token}"): Row("signed"),
    ("POST", "/slack/events"): Row("slack"),
    # voter
    ("POST", "/api/v1/images"): Row("voter", _upload("/api/v1/images"), 201),
    ("GET", "/api/v1/images/{image_id}"): Row("voter", _image_meta),
    ("POST", "/api/v1/images/url"): Row("voter", _url_ingest, 201),
    ("GET", "/api/v1/pairs/next"): Row("voter", _get("/api/v1/pairs/next")),
    ("POST", "/api/v1/pairs/{pair_token}/skip"): Row("voter", _skip, 204),
    ("POST", "/api/v1/pairs/{pair_token}/again"): Row("voter", _skip_again),
    ("POST", "/api/v1/votes"): Row("voter", _vote, 201),
    ("POST", "/api/v1/votes/undo"): Row("voter", _post("/api/v1/votes/undo")),
    ("GET", "/api/v1/votes/stats"): Row("voter", _get("/api/v1/votes/stats")),
    ("GET", "/api/v1/votes/export"): Row("voter", _get("/api/v1/votes/export")),
    ("GET", "/api/v1/ratings"): Row("voter", _get("/api/v1/ratings?method=bt")),
    ("POST", "/api/v1/score"): Row("voter", _upload("/api/v1/score")),
    ("POST", "/api/v1/score/batch"): Row("voter", _upload("/api/v1/score/batch", "files")),
    # moderator
    ("GET", "/api/v1/moderation/queue"): Row("moderator", _get("/api/v1/moderation/queue")),
    ("POST", "/api/v1/moderation/decisions"): Row(
        "moderator",
        lambda w, who: w.client.post(
            "/api/v1/moderation/decisions", headers=w.auth(who),
            # another decision each time: the same one again answers 200 (no second row)
            json={"image_id": w.images[1], "decision": "approved" if who != "admin" else "rejected"},
        ),
        201,
    ),
    ("POST", "/api/v1/moderation/decisions/undo"): Row("moderator", _decide_and_undo),
    ("GET", "/api/v1/moderation/policy"): Row("moderator", _get("/api/v1/moderation/policy")),
    ("PUT", "/api/v1/moderation/policy"): Row(
        "moderator",
        lambda w, who: w.client.put(
            "/api/v1/moderation/policy", headers=w.auth(who), json={"threshold": 4.5, "apply": False}
        ),
    ),
    ("GET", "/api/v1/moderation/preview"): Row("moderator", _get("/api/v1/moderation/preview?threshold=3")),
    ("GET", "/api/v1/moderation/audit.csv"): Row("moderator", _get("/api/v1/moderation/audit.csv")),
    # admin
    ("POST", "/api/v1/ratings/rebuild"): Row("admin", _post("/api/v1/ratings/rebuild")),
    ("GET", "/api/v1/retrain"): Row("admin", _get("/api/v1/retrain")),
    ("POST", "/api/v1/retrain"): Row("admin", _post("/api/v1/retrain"), 202),  # no votes: fails at once
}


def test_every_route_is_in_the_matrix(auth_app: AuthApp) -> None:
    slack = create_app(auth_app.settings.model_copy(update={"slack_signing_secret": SecretStr("s")}))
    routes = app_routes(slack)
    assert ("POST", "/slack/events") in routes and len(routes) > 30
    missing = routes - set(MATRIX)
    assert not missing, f"routes without a row in the auth matrix: {sorted(missing)}"
    assert not set(MATRIX) - routes, "rows for routes that no longer exist"


API = sorted(k for k, row in MATRIX.items() if row.level in RANK)


@pytest.mark.parametrize(("method", "path"), API, ids=[f"{m} {p}" for m, p in API])
def test_api_route_by_identity(auth_app: AuthApp, method: str, path: str) -> None:
    row = MATRIX[(method, path)]
    assert row.call is not None
    got = {who: row.call(auth_app, who) for who in IDENTITIES}
    for who, r in got.items():
        want = 401 if who in ("none", "bad") else row.ok if RANK[who] >= RANK[row.level] else 403
        assert r.status_code == want, (who, r.status_code, r.text[:300])
        if want in (401, 403):
            detail = r.json()["detail"]
            assert "token" in detail or "role" in detail, detail
    assert got["none"].headers.get("www-authenticate", "Bearer").startswith("Bearer")


@pytest.mark.parametrize("route", sorted(k for k, row in MATRIX.items() if row.level == "public"))
def test_public_routes_answer_everyone(auth_app: AuthApp, route: tuple[str, str]) -> None:
    row = MATRIX[route]
    assert row.call is not None
    for who in IDENTITIES:
        assert row.call(auth_app, who).status_code == row.ok, who


def _login(auth_app: AuthApp, who: str) -> TestClient:
    c = TestClient(auth_app.client.app)
    if who != "none":
        token = "not-a-real-token" if who == "bad" else auth_app.tokens[who]
        r = c.get(f"/login?token={token}", follow_redirects=False)
        assert r.status_code == (401 if who == "bad" else 303)
    return c


def test_pages_by_role_and_never_by_bearer_alone(auth_app: AuthApp) -> None:
    pages = sorted(p for (_, p), row in MATRIX.items() if row.level.startswith("page:"))
    for who in IDENTITIES:
        c = _login(auth_app, who)
        for path in pages:
            need = MATRIX[("GET", path)].level.split(":")[1]
            r = c.get(path, follow_redirects=False)
            if who in ("none", "bad"):
                assert r.status_code == 303 and r.headers["location"].startswith("/login"), (who, path)
            else:
                assert r.status_code == (200 if RANK[who] >= RANK[need] else 403), (who, path, r.status_code)
    bearer_only = auth_app.client.get("/moderation", headers=auth_app.auth("admin"), follow_redirects=False)
    assert bearer_only.status_code == 303


def test_login_and_logout_forms_need_the_csrf_token(auth_app: AuthApp) -> None:
    c = TestClient(auth_app.client.app)
    r = c.post("/login", data={"token": auth_app.tokens["admin"]}, follow_redirects=False)
    assert r.status_code == 403  # no CSRF field: not signed in
    assert c.get("/vote", follow_redirects=False).status_code == 303
    c = _login(auth_app, "voter")
    assert c.post("/logout", data={"csrf_token": "forged"}, follow_redirects=False).status_code == 403
    assert c.get("/vote", follow_redirects=False).status_code == 200  # still signed in
    # a cookie-authenticated API call without the CSRF header is refused
    assert c.post("/api/v1/votes/undo").status_code == 403


# ---------------------------------------------------------------- signed image URLs, traversal


def _signed_path(auth_app: AuthApp) -> str:
    pair = auth_app.client.get("/api/v1/pairs/next", headers=auth_app.auth("voter")).json()
    return str(pair["left"]["url"]).removeprefix("http://testserver")


def test_signed_image_urls_expired_or_tampered_are_403(
    auth_app: AuthApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _signed_path(auth_app)
    assert auth_app.client.get(good).status_code == 200
    token = good.removeprefix("/img/")
    flipped = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (flipped, token[:20], "x" + token, "", "a.b.c"):
        r = auth_app.client.get(f"/img/{bad}")
        assert r.status_code in (403, 404) if bad == "" else r.status_code == 403, (bad, r.status_code)
    # an old token: signed two hours ago with the real key
    real = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(real(self)) - 7200)
    with session_scope(get_engine(auth_app.settings.resolved_database_url)) as s:
        from doohable.store.models import Image

        img = s.get(Image, auth_app.images[0])
        assert img is not None
        old = image_url(img.sha256, img.format, auth_app.settings)
    monkeypatch.undo()
    r = auth_app.client.get(old)
    assert r.status_code == 403 and "expired" in r.json()["detail"]
    # a token signed with the real key but naming something that is not a blob hash
    forged = _serializer(auth_app.settings).dumps({"h": "../../../etc/passwd", "f": "JPEG"})
    assert auth_app.client.get(f"/img/{forged}").status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/img/../../../../etc/passwd",
        "/img/..%2f..%2f..%2fetc%2fpasswd",
        "/img/%2e%2e/%2e%2e/etc/passwd",
        "/static/../../../../etc/passwd",
        "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
        "/static/..\\..\\config.py",
        "/static/%252e%252e/%252e%252e/etc/passwd",
        "/userscript/..%2f..%2fconfig.py",
    ],
)
def test_path_traversal_is_refused(auth_app: AuthApp, path: str) -> None:
    r = auth_app.client.get(path, headers=auth_app.auth("admin"), follow_redirects=False)
    assert 400 <= r.status_code < 500, (path, r.status_code)
    assert b"root:" not in r.content and b"[project]" not in r.content and b"SecretStr" not in r.content


# ---------------------------------------------------------------- Slack


@pytest.fixture
def slack(auth_app: AuthApp) -> Iterator[tuple[TestClient, FakeSlack]]:
    fake = FakeSlack()
    s2 = auth_app.settings.model_copy(update={
        "slack_signing_secret": SecretStr(SECRET), "slack_bot_token": SecretStr("xoxb-test"),
        "slack_api_url": f"{fake.url}/api/",
    })
    with TestClient(create_app(s2), base_url="https://doohable.example") as client:
        yield client, fake
    fake.server.shutdown()


def _votes(auth_app: AuthApp) -> int:
    with session_scope(get_engine(auth_app.settings.resolved_database_url)) as s:
        return int(s.scalar(select(func.count()).select_from(Vote)) or 0)


def test_slack_bad_signature_stale_timestamp_and_replay(auth_app: AuthApp, slack: Any) -> None:
    client, fake = slack
    blocks = command(client, "UAUTH", fake)["blocks"]
    body = click(blocks, "vote_left", "UAUTH", fake)
    before = _votes(auth_app)
    refused = [
        client.post("/slack/events", content=body, headers={**FORM, **signed(body, secret="wrong")}),
        client.post("/slack/events", content=body, headers={**FORM, **signed(body, age_s=6 * 60)}),
        client.post("/slack/events", content=body, headers={**FORM, **signed(body, age_s=-6 * 60)}),
        client.post("/slack/events", content=body, headers=FORM),
    ]
    assert [r.status_code for r in refused] == [401] * 4
    assert _votes(auth_app) == before
    headers = {**FORM, **signed(body)}
    assert client.post("/slack/events", content=body, headers=headers).status_code == 200
    assert _votes(auth_app) == before + 1
    # the very same signed request replayed (within the 5 minutes): acknowledged, never counted
    for _ in range(3):
        assert client.post("/slack/events", content=body, headers=headers).status_code == 200
    assert _votes(auth_app) == before + 1
    # a replayed signature on a changed body is refused
    tampered = body.replace("vote_left", "vote_right")
    assert client.post("/slack/events", content=tampered, headers=headers).status_code == 401
    assert _votes(auth_app) == before + 1


# ---------------------------------------------------------------- URL ingest (SSRF)


def _fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, str], pinned: dict[str, str]) -> None:
    """``names``: host → address the resolver answers (checked as usual); ``pinned``: host →
    address used without the check (a "public" name that is really the local test server)."""
    real_getaddrinfo = socket.getaddrinfo
    real_resolve = fetch.resolve_public

    def getaddrinfo(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        if host in names:
            fam = socket.AF_INET6 if ":" in names[host] else socket.AF_INET
            return [(fam, socket.SOCK_STREAM, 6, "", (names[host], port))]
        return real_getaddrinfo(host, port, *args, **kw)

    def resolve(host: str, port: int, allow_private: bool) -> list[str]:
        return [pinned[host]] if host in pinned else real_resolve(host, port, allow_private)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(fetch, "resolve_public", resolve)


class _Redirect(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(302)
        self.send_header("Location", self.path.lstrip("/").replace("__", "://", 1))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def strict(auth_app: AuthApp) -> Iterator[tuple[TestClient, int]]:
    """The app with private addresses refused (production setting) and a redirecting server."""
    redirect = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    threading.Thread(target=redirect.serve_forever, daemon=True).start()
    s2 = auth_app.settings.model_copy(update={"url_allow_private": False})
    with TestClient(create_app(s2)) as client:
        yield client, int(redirect.server_address[1])
    redirect.shutdown()


REFUSED = [
    ("http://127.0.0.1/a.jpg", "loopback"),
    ("http://127.1.2.3:8080/a.jpg", "loopback"),
    ("http://[::1]/a.jpg", "loopback"),
    ("http://localhost/a.jpg", "loopback"),
    ("http://0x7f000001/a.jpg", "loopback"),
    ("http://10.1.2.3/a.jpg", "private"),
    ("http://192.168.0.1/a.jpg", "private"),
    ("http://172.16.5.5/a.jpg", "private"),
    ("http://[fd12::1]/a.jpg", "private"),
    ("http://169.254.10.10/a.jpg", "link-local"),
    ("http://[fe80::1]/a.jpg", "link-local"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://100.100.100.200/", "metadata"),
    ("http://0.0.0.0/a.jpg", "unspecified"),
    ("http://metadata.internal.test/computeMetadata/v1/", "metadata"),  # DNS → 169.254.169.254
    ("http://intranet.test/a.jpg", "private"),  # DNS → 10.0.0.7
    ("http://rebind.test/a.jpg", "loopback"),  # DNS → 127.0.0.1
    ("file:///etc/passwd", "http(s)"),
    ("gopher://127.0.0.1:6379/_INFO", "http(s)"),
]
DNS = {"metadata.internal.test": "169.254.169.254", "intranet.test": "10.0.0.7", "rebind.test": "127.0.0.1",
       "inside.test": "192.168.7.7"}


@pytest.mark.parametrize(("url", "why"), REFUSED, ids=[u for u, _ in REFUSED])
def test_url_ingest_refuses_internal_addresses(
    auth_app: AuthApp, strict: tuple[TestClient, int], monkeypatch: pytest.MonkeyPatch, url: str, why: str
) -> None:
    client, _ = strict
    _fake_dns(monkeypatch, DNS, {})
    r = client.post("/api/v1/images/url", headers=auth_app.auth("voter"), json={"url": url})
    assert r.status_code == 400, r.text
    assert why in r.json()["detail"], r.json()
    s = client.post("/api/v1/score", headers=auth_app.auth("voter"), json={"url": url})
    assert s.status_code == 400 and why in s.json()["detail"], s.text


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("http__127.0.0.1/x.jpg", "loopback"),
        ("http__169.254.169.254/latest/meta-data/", "metadata"),
        ("http__10.0.0.1/x.jpg", "private"),
        ("http__[fe80::1]/x.jpg", "link-local"),
        ("http__inside.test/x.jpg", "private"),  # the redirect names a host that resolves inside
        ("file__/etc/passwd", "http"),
    ],
)
def test_url_ingest_refuses_redirects_inside(
    auth_app: AuthApp, strict: tuple[TestClient, int], monkeypatch: pytest.MonkeyPatch, target: str, why: str
) -> None:
    client, port = strict
    # "public.test" passes the address check but is really the local redirecting server
    _fake_dns(monkeypatch, DNS, {"public.test": "127.0.0.1"})
    r = client.post(
        "/api/v1/images/url", headers=auth_app.auth("voter"), json={"url": f"http://public.test:{port}/{target}"}
    )
    assert r.status_code == 400, r.text
    assert why in r.json()["detail"], r.json()
    assert "refused" in r.json()["detail"] or "only http" in r.json()["detail"]


def test_url_ingest_from_an_allowed_server_still_works(auth_app: AuthApp) -> None:
    """The control: with private addresses allowed (tests only), the same route stores the image."""
    r = _url_ingest(auth_app, "voter")
    assert r.status_code == 201 and json.loads(r.text)["id"] > 0
