"""``doohable demo --no-serve``: the README's first command, in a subprocess, with the bundled model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from doohable.config import Settings
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Decision, Image, Score

pytestmark = pytest.mark.slow

DOOHABLE = str(Path(sys.executable).with_name("doohable"))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_demo_ingests_scores_moderates_and_prints_a_login_link(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DOOHABLE_MODEL"}  # the bundled model
    p = subprocess.run([DOOHABLE, "demo", "--no-serve", "--json", "--port", "8123"],
                       capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["samples"] >= 10 and out["added"] == out["samples"]
    assert (Path(settings.home) / "samples" / "astronaut.jpg").is_file()
    scores = [i["score"] for i in out["queue"]]
    assert len(scores) == out["samples"] and scores == sorted(scores, reverse=True)  # best first
    assert out["threshold"] is not None and out["approved"] >= 1
    assert out["login_url"].startswith("http://127.0.0.1:8123/login?token=")
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        assert s.query(Score).filter(
            Score.model == out["model"], Score.model_version == out["version"]
        ).count() == len(scores)
        auto = s.query(Decision).filter(Decision.rule == "auto:threshold").count()
        approved = s.query(Image).filter(Image.status == "approved").count()
        assert auto == approved == out["approved"]
        assert all(im.nsfw is not None for im in s.query(Image))
    # a second run is idempotent: nothing new, a second admin link
    p2 = subprocess.run(
        [DOOHABLE, "demo", "--no-serve", "--json"], capture_output=True, text=True, env=env, timeout=300
    )
    assert p2.returncode == 0, p2.stderr
    again = json.loads(p2.stdout)
    assert again["added"] == 0 and again["duplicates"] == out["samples"] and again["admin"] == "admin-2"
    # for people: the sign-in link on a line of its own, whole (a wrapped link cannot be copied)
    p3 = subprocess.run([DOOHABLE, "demo", "--no-serve"], capture_output=True, text=True, env=env,
                        timeout=300)
    assert p3.returncode == 0, p3.stderr
    links = [line.strip() for line in p3.stderr.splitlines() if "/login?token=" in line]
    assert len(links) == 1 and links[0].startswith("http://") and "next=/moderation" in links[0], p3.stderr
