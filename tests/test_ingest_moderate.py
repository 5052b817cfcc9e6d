"""`doohable ingest --moderate`: the auto-approve policy applied on ingest (issue 6 item 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from doohable.config import Settings
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Decision, Image, Score
from scoring_fixtures import brightness_model, jpeg_of_gray

pytestmark = pytest.mark.slow

DOOHABLE = [str(Path(sys.executable).with_name("doohable"))]


def test_ingest_moderate_scores_and_applies_the_threshold(tmp_path: Path, settings: Settings) -> None:
    model = brightness_model(tmp_path / "brightness.onnx")
    folder = tmp_path / "in"
    folder.mkdir()
    for level in (30, 250):
        (folder / f"g{level}.jpg").write_bytes(jpeg_of_gray(level))
    env = {**os.environ, "DOOHABLE_MODEL": str(model), "DOOHABLE_AUTO_APPROVE_THRESHOLD": "3.0"}
    p = subprocess.run(
        [*DOOHABLE, "ingest", str(folder), "--moderate", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["added"] == 2
    assert out["moderation"]["model"] == "brightness"
    assert out["moderation"]["scored"] == 2
    with session_scope(get_engine(settings.resolved_database_url)) as session:
        scores = {s.image_id: s.score for s in session.scalars(select(Score))}
        status = {i.id: i.status for i in session.scalars(select(Image))}
        decided = {d.image_id: d.rule for d in session.scalars(select(Decision))}
    assert len(scores) == 2
    bright = max(scores, key=lambda i: scores[i])
    dark = min(scores, key=lambda i: scores[i])
    # the bright image scores ~4.9 (above 3.0) and a flat gray is cleared by the NSFW gate
    assert status[dark] == "pending" and dark not in decided
    assert status[bright] == "approved"
    assert decided[bright] is not None and decided[bright].startswith("auto")
    assert out["moderation"]["approved"] == 1


def test_ingest_without_moderate_leaves_images_unscored(tmp_path: Path, settings: Settings) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "g30.jpg").write_bytes(jpeg_of_gray(30))
    cmd = [*DOOHABLE, "ingest", str(folder), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "moderation" not in json.loads(p.stdout)
    with session_scope(get_engine(settings.resolved_database_url)) as session:
        assert session.scalars(select(Score)).first() is None
