"""``doohable users add/list/revoke/token`` as admins run them: real subprocesses on SQLite and
PostgreSQL; a new token kills the old one at once, a revoked user's token is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from doohable.config import Settings
from doohable.store.db import get_engine, session_scope
from doohable.store.users import user_for_token

pytestmark = pytest.mark.slow  # real subprocesses: the whole suite runs them

DOOHABLE = str(Path(sys.executable).with_name("doohable"))


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([DOOHABLE, *args], capture_output=True, text=True, timeout=300, env={**os.environ})
    assert (proc.returncode == 0) == ok, proc.stderr
    return proc


def valid(settings: Settings, token: str) -> bool:
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        return user_for_token(s, token) is not None


def test_users_list_revoke_and_new_token(settings: Settings) -> None:
    first = json.loads(run("users", "add", "mia", "--role", "moderator", "--json").stdout)["token"]
    run("users", "add", "dana", "--json")
    lines = [json.loads(x) for x in run("users", "list", "--json").stdout.splitlines()]
    assert [(x["name"], x["role"], x["revoked"]) for x in lines] == [
        ("mia", "moderator", False),
        ("dana", "voter", False),
    ]
    out = json.loads(run("users", "token", "mia", "--json").stdout)
    assert out["name"] == "mia" and out["token"] != first
    assert not valid(settings, first) and valid(settings, out["token"])
    assert json.loads(run("users", "revoke", "mia", "--json").stdout) == {"name": "mia", "revoked": True}
    assert not valid(settings, out["token"])
    lines = [json.loads(x) for x in run("users", "list", "--json").stdout.splitlines()]
    assert {x["name"]: x["revoked"] for x in lines} == {"mia": True, "dana": False}
    again = json.loads(run("users", "token", "mia", "--json").stdout)["token"]  # access restored
    assert valid(settings, again)
    bad = run("users", "revoke", "nobody", "--json", ok=False)
    assert bad.returncode == 2 and "no user named 'nobody'" in bad.stderr and bad.stdout == ""


def test_users_list_for_people_is_a_table(settings: Settings) -> None:
    run("users", "add", "mia", "--role", "moderator", "--json")
    run("users", "add", "dana", "--json")
    run("users", "revoke", "dana", "--json")
    proc = run("users", "list")
    assert proc.stdout == ""  # human output goes to stderr
    lines = proc.stderr.splitlines()
    mia = next(x for x in lines if "mia" in x)
    dana = next(x for x in lines if "dana" in x)
    assert "moderator" in mia and "yes" not in mia
    assert "voter" in dana and "yes" in dana
    assert "2 user(s)" in proc.stderr
