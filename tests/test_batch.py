"""Batch scoring: the local pipeline, bounded memory, the ``score`` and ``demo`` commands."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from doohable.batch import best_first, expand_paths, prepare_bytes, score_items, score_paths
from doohable.config import Settings
from doohable.model.runtime import load_scorer
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Image as ImageRow
from doohable.store.models import Score
from scoring_fixtures import brightness_model, expected_score, jpeg_of_gray, photo_jpeg

DOOHABLE = [str(Path(sys.executable).with_name("doohable"))]


@pytest.fixture(scope="module")
def scorer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return brightness_model(tmp_path_factory.mktemp("model") / "brightness.onnx")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for lv in (30, 200, 120):
        (d / f"g{lv}.jpg").write_bytes(jpeg_of_gray(lv))
    (d / "sub" / "g250.png").write_bytes(_png(250))
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (d / "notes.txt").write_text("not an image, skipped by suffix")
    return d


def _png(level: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (level,) * 3).save(buf, "PNG")
    return buf.getvalue()


def test_score_paths_in_order_with_errors(folder: Path, scorer_path: Path) -> None:
    scorer = load_scorer(str(scorer_path))
    files, missing = expand_paths([folder, folder / "nope.jpg"])
    assert [f.name for f in files] == ["broken.jpg", "g120.jpg", "g200.jpg", "g30.jpg", "g250.png"]
    assert missing[0].error == "no such file or folder"
    res = list(score_paths(files, scorer, batch_size=2, workers=2))
    assert [Path(r.path).name for r in res] == [f.name for f in files]
    assert res[0].score is None and "JPEG" in (res[0].error or "")
    for r, lv in zip(res[1:], (120, 200, 30, 250), strict=True):
        assert r.score == pytest.approx(expected_score(lv), abs=0.02)
        assert r.sha256 and len(r.sha256) == 64
    ranked = best_first(res)
    assert [Path(r.path).name for r in ranked] == [
        "g250.png",
        "g200.jpg",
        "g120.jpg",
        "g30.jpg",
        "broken.jpg",
    ]


def test_draft_decode_scores_like_full_decode(scorer_path: Path, tmp_path: Path) -> None:
    """A big photo decoded at reduced JPEG scale scores (almost) as the full decode."""
    from skimage import data

    scorer = load_scorer(str(scorer_path))
    big = Image.fromarray(data.astronaut()).resize((1080, 1350))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    draft = prepare_bytes(buf.getvalue(), scorer)
    full = scorer.prepare(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert draft.shape == full.shape == (32, 32, 3)
    assert float(np.abs(draft.astype(int) - full.astype(int)).mean()) < 3.0
    assert scorer.score(draft[None])[0] == pytest.approx(scorer.score(full[None])[0], abs=0.02)


def test_pipeline_keeps_a_bounded_window_in_flight(scorer_path: Path) -> None:
    """Memory stays flat: reads never run more than the window + the batches in the model ahead."""
    scorer = load_scorer(str(scorer_path))
    data = jpeg_of_gray(100)
    lock = threading.Lock()
    reads = [0]
    ahead = []

    def read(_item: int) -> bytes:
        with lock:
            reads[0] += 1
        return data

    got = 0
    for _ in score_items(range(500), read, scorer, batch_size=8, workers=2, inference_threads=2, window=24):
        got += 1
        ahead.append(reads[0] - got)
    assert got == 500
    assert max(ahead) <= 24 + (2 + 1) * 8  # decoding window + batches in (or leaving) the model


def test_score_items_refuses_bad_batch_size(scorer_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        list(score_items([1], lambda _: b"", load_scorer(str(scorer_path)), batch_size=0))


def _cli(*args: str, env_model: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "DOOHABLE_MODEL": str(env_model)}
    return subprocess.run([*DOOHABLE, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_score_command_json_csv_gallery(
    folder: Path, scorer_path: Path, tmp_path: Path, settings: Settings
) -> None:
    out_csv, gallery = tmp_path / "s.csv", tmp_path / "g.html"
    p = _cli("score", str(folder), str(tmp_path / "missing.jpg"), "--json", "--csv", str(out_csv),
             "--gallery", str(gallery), "--batch-size", "2", env_model=scorer_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    scored = [x for x in lines if "score" in x]
    assert [Path(x["path"]).name for x in scored] == ["g250.png", "g200.jpg", "g120.jpg", "g30.jpg"]
    assert all(set(x) == {"path", "score"} for x in scored)
    errors = {Path(x["path"]).name: x["error"] for x in lines if "error" in x}
    assert set(errors) == {"broken.jpg", "missing.jpg"}
    rows = list(csv.DictReader(out_csv.open()))
    assert [Path(r["path"]).name for r in rows][:4] == ["g250.png", "g200.jpg", "g120.jpg", "g30.jpg"]
    page = gallery.read_text()
    assert page.index("g250.png") < page.index("g200.jpg") < page.index("g30.jpg")
    assert 'src="imgs/sub/g250.png"' in page


@pytest.mark.slow
def test_score_stores_scores_of_ingested_images(
    scorer_path: Path, tmp_path: Path, settings: Settings
) -> None:
    d = tmp_path / "in"
    d.mkdir()
    for k in range(3):
        (d / f"p{k}.jpg").write_bytes(photo_jpeg(k))
    assert (
        _cli("ingest", str(d / "p0.jpg"), str(d / "p1.jpg"), "--json", env_model=scorer_path).returncode == 0
    )
    p = _cli("score", str(d), "--json", env_model=scorer_path)
    assert p.returncode == 0, p.stderr
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        stored = s.query(Score.image_id, Score.model, Score.model_version).all()
        n_images = s.query(ImageRow).count()
    assert n_images == 2 and len(stored) == 2  # p2 is not ingested: scored but not stored
    assert {m for _, m, _ in stored} == {"brightness"}
    p = _cli("score", "--ingested", "--json", env_model=scorer_path)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["scored"] == 2 and report["model"] == "brightness" and report["errors"] == []
    with session_scope(engine) as s:
        assert s.query(Score).count() == 2  # re-scoring updates, one row per image and version
        assert all(im.nsfw is not None for im in s.query(ImageRow))  # the gate ran


@pytest.mark.slow
def test_score_command_without_inputs_fails_clearly(scorer_path: Path, settings: Settings) -> None:
    p = _cli("score", env_model=scorer_path)
    assert p.returncode == 2 and "give image files" in p.stderr
