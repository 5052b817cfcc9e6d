"""``doohable train`` and ``doohable evaluate`` end to end on a few real SCUT-FBP5500 images."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from doohable.cli import app
from doohable.config import get_settings

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_scut(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """12 real images in the SCUT layout (3 per fold), plus one corrupt file with a label."""
    monkeypatch.setenv("DOOHABLE_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    src = shared_data / "scut-fbp5500"
    rows = list(csv.DictReader((src / "labels.csv").open()))
    keep = [r for f in "1234" for r in [r for r in rows if r["fold"] == f][:3]]
    root = tmp_path / "scut"
    (root / "images").mkdir(parents=True)
    for r in keep:
        shutil.copy(src / "images" / r["image"], root / "images" / r["image"])
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    keep.append({"image": "broken.jpg", "score": "3.0", "subset": "AF", "fold": "1"})
    with (root / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "score", "subset", "fold"])
        w.writeheader()
        w.writerows(keep)
    yield root
    get_settings.cache_clear()


def test_train_head_only_then_evaluate(tiny_scut: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    model = tmp_path / "m.onnx"
    res = runner.invoke(
        app, ["train", "--data", str(tiny_scut), "--head-only", "--out", str(model), "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["model"] == str(model) and model.is_file()
    m = out["metrics"]
    assert m["n_images"] == 12 and m["mode"] == "head"
    assert [f["fold"] for f in m["folds"]] == [1, 2, 3, 4] and set(m["cv"]) >= {"pearson", "rmse"}
    assert [s["source"].endswith("broken.jpg") for s in out["skipped"]] == [True]

    report = tmp_path / "r.html"
    res = runner.invoke(
        app, ["evaluate", "--model", str(model), "--data", str(tiny_scut), "--json", "--report", str(report)]
    )
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"pearson", "spearman", "rmse", "mae"} <= set(ev) and ev["n"] == 12
    assert set(ev["per_subset"]) <= {"AF", "AM", "CF", "CM"} and len(ev["error_per_bin"]) == 10
    assert 0.0 <= ev["top_third"]["sensitivity"] <= 1.0
    html = report.read_text()
    assert html.count("data:image/png;base64") >= 4 and "Youden" in html


def test_evaluate_scores_with_the_bundled_default_like_score(tiny_scut: Path) -> None:
    res = CliRunner().invoke(app, ["evaluate", "--data", str(tiny_scut), "--json"])
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout.strip().splitlines()[-1])
    assert ev["model"].startswith("default@") and ev["n"] == 12 and ev["pearson"] > 0.5
    assert [s["source"].endswith("broken.jpg") for s in ev["skipped"]] == [True]
    named = CliRunner().invoke(app, ["evaluate", "--model", "default", "--data", str(tiny_scut), "--json"])
    assert json.loads(named.stdout.strip().splitlines()[-1])["pearson"] == ev["pearson"]


def test_an_unknown_model_is_one_plain_line_naming_every_model() -> None:
    res = CliRunner().invoke(app, ["score", "--model", "no-such-model[x]", "any.jpg"])
    assert res.exit_code == 2
    line = "error: unknown model 'no-such-model[x]': not a file and not a bundled model (bundled: default,"
    assert res.output.startswith(line) and res.output.count("\n") == 1  # not wrapped, no markup eaten


def test_bad_label_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("image,score,subset,fold\nAF1.jpg,high,AF,1\n")
    res = CliRunner().invoke(app, ["evaluate", "--data", str(tmp_path), "--json"])
    assert res.exit_code == 2
    assert "labels.csv:2" in res.output


def test_unknown_backbone_is_a_clear_error(tiny_scut: Path) -> None:
    res = CliRunner().invoke(app, ["train", "--data", str(tiny_scut), "--backbone", "resnet", "--json"])
    assert res.exit_code == 2 and "known: efficientnet_lite0, mobilenet_v2" in res.output


def test_train_finetune_without_folds_resumes(tiny_scut: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = [
        "train",
        "--data",
        str(tiny_scut),
        "--finetune",
        "--no-folds",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
        "--out",
        str(tmp_path / "f.onnx"),
        "--json",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout.strip().splitlines()[-1])["metrics"]
    assert m["mode"] == "finetune" and m["final_epochs"] == 1 and "cv" not in m
    assert (tmp_path / "ck" / "mobilenet_v2-final.pt").is_file() and (tmp_path / "f.onnx").is_file()
    again = runner.invoke(app, args)  # the checkpoint says the run is complete: nothing is retrained
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1])["metrics"]["train"] == pytest.approx(m["train"])


def test_train_from_database_ratings(settings: object, shared_data: Path, tmp_path: Path) -> None:
    import hashlib

    from doohable.store.blobs import open_blobs
    from doohable.store.db import get_engine, session_scope
    from doohable.store.models import Image, Vote
    from doohable.store.users import add_user
    from voting_support import delete_image_unchecked

    blobs = open_blobs(settings.resolved_blob_url)  # type: ignore[attr-defined]
    files = sorted((shared_data / "scut-fbp5500" / "images").glob("AF1*.jpg"))[:7]
    with session_scope(get_engine(settings.resolved_database_url)) as s:  # type: ignore[attr-defined]
        voter, _ = add_user(s, "ann")
        ids = []
        for f in files:
            data = f.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            blobs.put(sha, data)
            img = Image(
                sha256=sha, phash="0" * 16, width=350, height=350, format="JPEG", size_bytes=len(data)
            )
            s.add(img)
            s.flush()
            ids.append(img.id)
        # labels come from the votes themselves (no ratings rebuild): the later image wins
        s.add_all(Vote(voter_id=voter.id, left_id=a, right_id=b, winner_id=b)
                  for k, a in enumerate(ids) for b in ids[k + 1:])
    # the last image is deleted outside doohable: its 6 votes stay in the log, out of the labels
    delete_image_unchecked(get_engine(settings.resolved_database_url), ids[-1])  # type: ignore[attr-defined]
    out = tmp_path / "db.onnx"
    res = CliRunner().invoke(app, ["train", "--from-db", "--head-only", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout.strip().splitlines()[-1])["metrics"]
    assert m["n_images"] == 6 and "cv" not in m and out.is_file()
    assert "1 voted image(s) are missing from the database (deleted): their 6 vote(s)" in res.stderr


def test_train_with_too_many_frozen_groups_is_a_clear_error(tiny_scut: Path, tmp_path: Path) -> None:
    args = ["train", "--data", str(tiny_scut), "--finetune", "--no-folds", "--epochs", "1",
            "--batch-size", "4", "--device", "cpu", "--freeze-groups", "6",
            "--out", str(tmp_path / "f.onnx"), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "freeze_groups must be in 0..5" in res.output
    assert not (tmp_path / "f.onnx").exists()
