"""The pages: login by token link or form, session cookie, CSRF on every form, safe redirects."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from doohable.api.app import create_app
from doohable.config import Settings
from doohable.store.db import get_engine, session_scope
from doohable.store.users import add_user


@pytest.fixture
def client_token(settings: Settings) -> Iterator[tuple[TestClient, str]]:
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        token = add_user(s, "erin")[1]
    with TestClient(create_app(settings)) as client:
        yield client, token


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF field in the form"
    return m.group(1)


def test_pages_need_a_login(client_token: tuple[TestClient, str]) -> None:
    client, _ = client_token
    for path in ("/vote", "/leaderboard"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_login_form_checks_csrf_and_token(client_token: tuple[TestClient, str]) -> None:
    client, token = client_token
    form = client.get("/login")
    csrf = csrf_of(form.text)
    assert client.post("/login", data={"token": token, "csrf_token": "forged"}).status_code == 403
    r = client.post("/login", data={"token": "wrong", "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 401 and "not valid" in r.text
    r = client.post("/login", data={"token": token, "csrf_token": csrf, "next": "/leaderboard"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/leaderboard"
    page = client.get("/leaderboard")
    assert page.status_code == 200 and "erin" in page.text
    # signing out is a CSRF-checked form too
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    assert client.get("/vote", follow_redirects=False).status_code == 200
    r = client.post("/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/vote", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example", "/\\evil.example"])
def test_login_link_never_redirects_off_site(client_token: tuple[TestClient, str], target: str) -> None:
    client, token = client_token
    r = client.get("/login", params={"token": token, "next": target}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/vote"
    assert client.get("/login", params={"token": "bad"}).status_code == 401
