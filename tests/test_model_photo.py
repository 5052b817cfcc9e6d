"""The ``photo`` quality model on real live-challenge photos: labels, input policy, export,
the bundled model, ``doohable train --data <quality dataset>`` and ``doohable score --model photo``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr
from typer.testing import CliRunner

from doohable.cli import app
from doohable.config import get_settings
from doohable.model import photo
from doohable.model.data import LabelError
from doohable.model.runtime import load_scorer, prepare_short_side, short_side_policy


@pytest.fixture
def live(shared_data: Path) -> Path:
    return shared_data / "live-challenge"


@pytest.fixture
def tiny_live(live: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """30 real photos in the live-challenge layout (6 per fold), a corrupt JPEG and a text file."""
    monkeypatch.setenv("DOOHABLE_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    rows = list(csv.DictReader((live / "labels.csv").open()))
    keep = [r for f in "12345" for r in [r for r in rows if r["fold"] == f][:6]]
    root = tmp_path / "live"
    (root / "images").mkdir(parents=True)
    for r in keep:
        shutil.copy(live / "images" / r["image"], root / "images" / r["image"])
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "images" / "notes.jpg").write_text("this is not an image\n")
    for name in ("broken.jpg", "notes.jpg"):
        keep.append({"image": name, "mos": "50", "std": "20", "fold": "1", "original": name})
    with (root / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "mos", "std", "fold", "original"])
        w.writeheader()
        w.writerows(keep)
    yield root
    get_settings.cache_clear()


def test_live_labels_load(live: Path) -> None:
    labels = photo.load_live(live)
    assert len(labels) == 929
    assert set(np.unique(labels.folds)) == {1, 2, 3, 4, 5}
    assert 0 <= labels.mos.min() < labels.mos.max() <= 100 and (labels.std > 0).all()
    assert Path(labels.paths[0]).is_file()


def test_bad_label_line_is_named(live: Path, tmp_path: Path) -> None:
    lines = (live / "labels.csv").read_text().splitlines()[:4]
    lines.insert(3, "12.jpg,not-a-number,20.1,3,12.bmp")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(LabelError, match=r"labels\.csv:4: bad mos"):
        photo.load_live(tmp_path)
    (tmp_path / "labels.csv").write_text("image,mos,std,fold\n12.jpg,140,20,1\n")
    with pytest.raises(LabelError, match=r"labels\.csv:2: mos 140"):
        photo.load_live(tmp_path)


def test_corrupt_and_non_image_files_are_reported_and_skipped(tiny_live: Path) -> None:
    labels = photo.load_live(tiny_live)
    got = photo.load_crops(labels.paths, 500, 224)
    assert len(got.pixels) == len(labels) - 2 and got.pixels.shape[1:] == (224, 224, 3)
    assert sorted(Path(e["source"]).name for e in got.errors) == ["broken.jpg", "notes.jpg"]


def test_short_side_policy_keeps_aspect_and_native_pixels(live: Path) -> None:
    assert short_side_policy("short-side-500-center-crop-224") == (500, 224)
    assert short_side_policy("squash-center-crop-0.875") is None
    with Image.open(next((live / "images").glob("*.jpg"))) as im:
        src = im.convert("RGB")
    big = src.resize((1000, 1500))
    out = prepare_short_side(big, 500, 224)
    ref = np.asarray(big.resize((500, 750), Image.Resampling.BILINEAR))[263:487, 138:362]
    # the crop's pixels alone are resampled: the whole resize's crop to within one grey level
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert out.shape == (224, 224, 3) and diff.max() <= 1 and (diff > 0).mean() < 0.01
    if src.size == (500, 500):  # at the training scale: the native pixels, untouched
        assert np.array_equal(prepare_short_side(src, 500, 224), np.asarray(src)[138:362, 138:362])


def test_opinion_distribution_matches_mos_and_std() -> None:
    p = photo.opinion_distribution(np.array([10.0, 50.0, 90.0]), np.array([15.0, 20.0, 15.0]))
    assert np.allclose(p.sum(1), 1.0)
    mean = p @ np.linspace(1, 5, photo.BINS)
    assert np.all(np.diff(mean) > 1.0) and abs(mean[1] - 3.0) < 0.05


def test_export_equals_torch_on_real_photos(live: Path, tmp_path: Path) -> None:
    from doohable.model.export import export_photo
    from doohable.model.photo_train import torch_scores

    labels = photo.load_live(live).subset(range(24))
    pix = photo.load_crops(labels.paths, 500, 224).pixels
    net = photo.multilevel("mobilenet_v2")
    head = photo.fit_head(photo.extract(net, pix), labels.mos, labels.std, "nima", 1e-3, steps=20)
    model = photo.PhotoScorer(net, head, 224)
    path = export_photo(model, tmp_path / "p.onnx", name="p", policy="short-side-500-center-crop-224")
    onnx_scores = load_scorer(path, threads=1).score(pix[:6])
    assert np.max(np.abs(onnx_scores - torch_scores(model, pix[:6]))) < 1e-4
    assert np.all((onnx_scores >= 1) & (onnx_scores <= 5)) and np.ptp(onnx_scores) > 0


def test_kernel_head_fits_its_photos_and_exports_like_torch(live: Path, tmp_path: Path) -> None:
    from doohable.model.export import export_photo
    from doohable.model.photo_train import torch_scores

    labels = photo.load_live(live).subset(range(24))
    pix = photo.load_crops(labels.paths, 500, 224).pixels
    net = photo.multilevel("mobilenet_v2")
    feats = photo.extract(net, pix)
    tight, loose = photo.fit_heads(feats, labels.mos, labels.std, "kernel", [(0.25, 1e-6), (0.25, 100.0)])
    target = photo.mos_to_score(labels.mos)
    # a vanishing penalty interpolates the training photos; a large one shrinks towards their mean
    assert np.max(np.abs(photo.predict_head(tight, feats) - target)) < 1e-2
    assert np.ptp(photo.predict_head(loose, feats)) < 0.5 * np.ptp(target)
    model = photo.PhotoScorer(net, tight, 224)
    path = export_photo(model, tmp_path / "k.onnx", name="k", policy="short-side-500-center-crop-224")
    scorer = load_scorer(path, threads=1)
    assert scorer.metadata["head"] == "kernel"
    assert np.max(np.abs(scorer.score(pix[:6]) - torch_scores(model, pix[:6]))) < 1e-3


def test_stacked_backbones_concatenate_their_features() -> None:
    both = photo.multilevel("mobilenet_v2+efficientnet_lite0", pretrained=False)
    assert isinstance(both, photo.Stacked) and both.name == "mobilenet_v2+efficientnet_lite0"
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    parts = np.concatenate([photo.extract(p, x, threads=1) for p in both.extractors], axis=1)
    got = photo.extract(both, x, threads=1)
    assert got.shape == (2, 3952 + 4096) and np.allclose(got, parts, rtol=1e-4, atol=1e-4)
    assert all(f"{n}: multi-level" in both.describe() for n in ("mobilenet_v2", "efficientnet_lite0"))


@pytest.mark.parametrize("name", ["photo", "photo-hq"])
def test_bundled_photo_model_scores_real_photos_sensibly(live: Path, name: str) -> None:
    scorer = load_scorer(name, threads=1)
    meta = scorer.metadata
    assert scorer.name == name and json.loads(meta["scale"]) == [1.0, 5.0]
    assert short_side_policy(meta["resize_policy"]) is not None
    assert {"backbone", "head", "features", "cv_fixed_folds"} <= set(meta)
    labels = photo.load_live(live)
    order = np.argsort(labels.mos)
    pick = np.concatenate([order[:8], order[len(order) // 2 - 4 : len(order) // 2 + 4], order[-8:]])
    imgs = []
    for i in pick:
        with Image.open(labels.paths[i]) as im:
            imgs.append(im.convert("RGB"))
    scores = scorer.score_images(imgs)
    assert np.all((scores >= 1) & (scores <= 5))
    assert spearmanr(scores, labels.mos[pick])[0] > 0.6
    assert scores[-8:].mean() > scores[8:16].mean() > scores[:8].mean()


def test_train_photo_cli_skips_bad_files(tiny_live: Path, tmp_path: Path) -> None:
    out = tmp_path / "photo-small.onnx"
    args = ["train", "--data", str(tiny_live), "--head", "regression", "--out", str(out), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["n"] == 30 and sorted(Path(e["source"]).name for e in doc["skipped"]) == [
        "broken.jpg",
        "notes.jpg",
    ]
    assert -1 <= doc["metrics"]["srcc"][0] <= 1 and doc["metrics"]["rmse"][0] > 0
    scorer = load_scorer(out)
    assert (
        scorer.metadata["resize_policy"].startswith("short-side-") and scorer.metadata["head"] == "regression"
    )
    assert scorer.metadata["backbone"] == "efficientnet_lite0"  # the bundled photo model's, by default


def test_train_photo_cli_bad_label_line(tiny_live: Path) -> None:
    with (tiny_live / "labels.csv").open("a") as fh:
        fh.write("x.jpg,55,oops,2,x.bmp\n")
    res = CliRunner().invoke(app, ["train", "--data", str(tiny_live)])
    assert res.exit_code == 2 and "labels.csv:34" in res.output.replace("\n", "")  # rich wraps lines


def test_score_cli_with_photo_model(live: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOOHABLE_HOME", str(tmp_path / "home"))  # never the working folder's home
    files = [str(p) for p in sorted((live / "images").glob("*.jpg"))[:3]]
    res = CliRunner().invoke(app, ["score", *files, "--model", "photo", "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    assert sorted(x["path"] for x in lines) == sorted(files)
    assert all(1 <= x["score"] <= 5 for x in lines)
