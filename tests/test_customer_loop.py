"""The loop a customer runs, end to end, as they run it: a folder of their own photos ingested
with the CLI, the bundled scorer's first opinion (``score --ingested``), staff voting over real
HTTP on a ``doohable serve`` process (its pairs chosen with the scores as the prior), ratings,
a scorer trained on the votes (``train --from-db``), and the admin's retrain from the API,
which measures the current scorer against the new one on votes it did not train on."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from scipy.stats import spearmanr
from sqlalchemy import select
from typer.testing import CliRunner

from doohable.cli import app
from doohable.config import Settings
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Image
from server_support import start_server, stop_server

pytestmark = pytest.mark.slow  # a real server, a scorer over every image and a retrain

N_IMAGES, VOTES_PER_IMAGE = 30, 8


def invoke(*args: str) -> dict:
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_own_photos_first_opinion_votes_ratings_and_retrain(
    settings: Settings, shared_data: Path, tmp_path: Path
) -> None:
    root = shared_data / "scut-fbp5500"
    labels = {r["image"]: float(r["score"]) for r in csv.DictReader((root / "labels.csv").open())}
    names = sorted(labels, key=labels.get)[:: len(labels) // N_IMAGES][:N_IMAGES]  # the whole range
    folder = tmp_path / "our-photos"
    folder.mkdir()
    for name in names:
        shutil.copy(root / "images" / name, folder / name)
    truth_by_sha = {hashlib.sha256((folder / n).read_bytes()).hexdigest(): labels[n] for n in names}

    assert invoke("ingest", str(folder))["added"] == N_IMAGES
    first = CliRunner().invoke(app, ["score", "--ingested", "--json"])
    assert first.exit_code == 0, first.output
    voter = invoke("users", "add", "vera", "--role", "voter")["token"]
    admin = invoke("users", "add", "ada", "--role", "admin")["token"]
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        truth = {i: truth_by_sha[sha] for i, sha in s.execute(select(Image.id, Image.sha256)).all()}

    proc, url = start_server(tmp_path / "server.log")
    try:
        rng = np.random.default_rng(0)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {voter}"}, timeout=60) as c:
            for _ in range(N_IMAGES * VOTES_PER_IMAGE // 2):
                pair = c.get("/api/v1/pairs/next").raise_for_status().json()
                a, b = pair["left"]["id"], pair["right"]["id"]
                p_a = 1.0 / (1.0 + np.exp(-3.0 * (truth[a] - truth[b])))  # a voter who mostly agrees
                winner = a if rng.random() < p_a else b
                c.post("/api/v1/votes", json={"pair_token": pair["pair_token"], "winner_id": winner})\
                    .raise_for_status()
            bt = c.get("/api/v1/ratings", params={"method": "bt"}).raise_for_status().json()
        # every image is ranked (the prior places those with few votes), close to the truth
        assert len(bt) == N_IMAGES
        rho = spearmanr([r["rating"] for r in bt], [truth[r["image_id"]] for r in bt]).statistic
        assert rho > 0.85, rho

        trained = invoke("train", "--from-db", "--head-only", "--out", str(tmp_path / "ours.onnx"))
        assert trained["metrics"]["n_images"] == N_IMAGES and (tmp_path / "ours.onnx").is_file()

        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as c:
            started = c.post("/api/v1/retrain", json={"seed": 1})
            assert started.status_code == 202, started.text
            deadline = time.monotonic() + 600
            while (state := c.get("/api/v1/retrain").json())["state"] == "running":
                assert time.monotonic() < deadline, state
                time.sleep(0.5)
            assert state["state"] == "done", state
            result = state["result"]
            # the current scorer is the one served (the bundled default), measured on the held-out votes
            assert result["current"]["model"] == "default" and "error" not in result["current"]
            assert result["votes"]["measured"] > 0 and result["current"]["pairwise_accuracy"] is not None
            new, old = result["new"]["pairwise_accuracy"], result["current"]["pairwise_accuracy"]
            assert result["better"] == (new > old) and (result["promoted"] is not None) == result["better"]
            queue = c.get("/api/v1/moderation/queue", params={"limit": 100}).raise_for_status().json()
        with httpx.Client(base_url=url, timeout=60, follow_redirects=True) as browser:  # the pages sign in
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/login").text)
            assert csrf
            browser.post("/login", data={"token": admin, "csrf_token": csrf.group(1)})
            page = browser.get("/leaderboard")
        scores = [q["score"] for q in queue]
        assert len(queue) == N_IMAGES and scores == sorted(scores, reverse=True)  # best first
        assert spearmanr(scores, [truth[q["id"]] for q in queue]).statistic > 0.8
        assert all(q["parts"] and "photo" in q["parts"] for q in queue)
        line = re.search(r'id="model-agreement">(.*?)</p>', page.text, re.S)
        assert page.status_code == 200 and line, page.text[:2000]
        if result["promoted"]:  # its scores are the ratings' prior now, measured on votes it never saw
            assert result["rescored"]["model"] in line.group(1)
            assert "held out from its training" in line.group(1)
        else:
            assert "default" in line.group(1) and "held out" not in line.group(1)
    finally:
        stop_server(proc)
