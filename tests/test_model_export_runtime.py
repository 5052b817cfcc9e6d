"""ONNX export of the whole scorer, and the torch-free runtime the serving side uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from doohable.model.export import ensemble_onnx, export_onnx, fp16_weights, max_abs_diff
from doohable.model.preprocess import center_crop, resize_side, resized_crop
from doohable.model.runtime import BUNDLED_DIR, load_scorer, prepare_image, read_metadata
from doohable.model.scorer import build_model


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", "regression", pretrained=False, input_size=64, tta_flip=True)
    for m in model.modules():  # non-trivial BatchNorm statistics, so a wrong normalisation would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["mobilenet_v2", "efficientnet_lite0"])
def test_onnx_matches_pytorch(backbone: str, tmp_path: Path) -> None:
    model = build_model(backbone, "regression", pretrained=False, input_size=64).eval()
    path = export_onnx(model, tmp_path / "m.onnx", name="tiny", extra={"note": "test"})
    batch = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    assert max_abs_diff(model, path, batch) <= 1e-4
    meta = read_metadata(path)
    assert meta["name"] == "tiny" and meta["input_size"] == "64" and json.loads(meta["scale"]) == [1.0, 5.0]
    assert meta["backbone"] == backbone and meta["resize_policy"] and meta["note"] == "test"


def test_runtime_contract(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    path = export_onnx(tiny_model, tmp_path / "m.onnx", name="tiny")  # type: ignore[arg-type]
    scorer = load_scorer(str(path), threads=1)
    assert (scorer.name, scorer.input_size, scorer.scale) == ("tiny", 64, (1.0, 5.0))
    assert len(scorer.version) == 12
    img = Image.fromarray(skdata.chelsea())
    prepared = scorer.prepare(img)
    assert prepared.dtype == np.uint8 and prepared.shape == (64, 64, 3)
    # dynamic batch: 1, 3 and 0 images, and a batch score equals the single scores
    one = scorer.score(prepared[None])
    three = scorer.score(np.stack([prepared, prepared[::-1].copy(), prepared]))
    assert (
        one.dtype == np.float32
        and three.shape == (3,)
        and scorer.score(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0,)
    )
    assert abs(float(three[0]) - float(one[0])) < 1e-4
    with torch.no_grad():
        ref = tiny_model.forward_uint8_nhwc(torch.from_numpy(prepared[None]))  # type: ignore[operator]
    assert abs(float(ref[0]) - float(one[0])) <= 1e-4
    with pytest.raises(ValueError, match=r"uint8 array of shape \(N, 64, 64, 3\)"):
        scorer.score(prepared.astype(np.float32)[None])


def _photos() -> list[np.ndarray]:
    return [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()]


@pytest.mark.slow
def test_ensemble_is_the_mean_of_its_members_and_fp16_weights_halve_it(tmp_path: Path) -> None:
    import onnx

    batch = np.stack([np.asarray(Image.fromarray(im).resize((64, 64))) for im in _photos()])
    paths, scores = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        # ImageNet features (scores that differ from image to image), a random head kept small,
        # so the regression stays inside the scale (it is clamped there)
        model = build_model("mobilenet_v2", "regression", pretrained=True, input_size=64).eval()
        with torch.no_grad():
            for p in model.head.parameters():
                p.mul_(0.05)
            list(model.head.parameters())[-1].add_(0.5)
        paths.append(export_onnx(model, tmp_path / f"m{seed}.onnx", name="tiny"))
        scores.append(load_scorer(str(paths[-1]), threads=1).score(batch))
    assert np.max(np.abs(scores[0] - scores[1])) > 1e-3 and np.ptp(scores[0]) > 1e-3  # not constant
    full = ensemble_onnx(paths, tmp_path / "ens.onnx", name="pair", extra={"cv": {"pearson": 0.9}})
    half = ensemble_onnx(paths, tmp_path / "ens16.onnx", name="pair", half=True)
    mean = (scores[0] + scores[1]) / 2
    got = load_scorer(str(full), threads=1).score(batch)
    assert np.max(np.abs(got - mean)) <= 1e-5
    got16 = load_scorer(str(half), threads=1).score(batch)
    assert np.max(np.abs(got16 - mean)) <= 1e-2  # only the weights' rounding differs
    assert half.stat().st_size < 0.6 * full.stat().st_size
    meta = read_metadata(full)
    assert meta["name"] == "pair" and json.loads(meta["members"]) == ["m0.onnx", "m1.onnx"]
    assert json.loads(meta["cv"]) == {"pearson": 0.9} and meta["backbone"] == "mobilenet_v2+mobilenet_v2"
    # a member stored in fp16 already: converting again changes nothing, small tensors stay fp32
    once = fp16_weights(onnx.load(str(paths[0])))
    n_half = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in once.graph.initializer)
    again = fp16_weights(once)
    n_again = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in again.graph.initializer)
    assert n_half > 0 and n_again == n_half
    assert any(t.data_type == onnx.TensorProto.FLOAT for t in again.graph.initializer)


def test_resize_policy_is_squash_then_centre_crop() -> None:
    img = Image.new("RGB", (400, 100), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 100))  # a white band on the left 5% is cropped away
    out = prepare_image(img, 224)
    assert out.shape == (224, 224, 3) and out[:, :5].max() < 40 and out.mean() < 5


@pytest.mark.parametrize("size", [(540, 675), (1080, 1350), (350, 350), (641, 480), (100, 60)])
def test_resized_crop_is_the_whole_resize_cropped(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(size[0])
    smooth = rng.integers(0, 256, (size[1] // 10 + 2, size[0] // 10 + 2, 3), dtype=np.uint8)
    img = Image.fromarray(smooth).resize(size, Image.Resampling.BICUBIC)  # photo-like: smooth
    side = resize_side(224)
    ref = center_crop(np.asarray(img.resize((side, side), Image.Resampling.BILINEAR)), 224)
    out = prepare_image(img, 224)
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert out.shape == (224, 224, 3) and out.flags.c_contiguous
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    w, h = size
    assert np.array_equal(resized_crop(img, (w, h), min(w, h)), center_crop(np.asarray(img), min(w, h)))
    with pytest.raises(ValueError, match="crop"):
        resized_crop(img, (100, 100), 224)


def test_load_scorer_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="bundled"):
        load_scorer("no-such-model")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        load_scorer(str(bad))


@pytest.mark.slow
def test_bundled_default_scores_without_importing_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from PIL import Image\n"
        "from skimage import data\n"
        "from doohable.model.runtime import load_scorer\n"
        "s = load_scorer()\n"
        "imgs = [Image.fromarray(data.astronaut()), Image.fromarray(data.chelsea())]\n"
        "out = s.score(np.stack([s.prepare(i) for i in imgs]))\n"
        "assert 'torch' not in sys.modules, 'runtime imported torch'\n"
        "print(s.name, s.version, s.input_size, s.scale, out.tolist())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    name, _version, size, *rest = res.stdout.split(" ", 3)
    assert name == "selfie" and int(size) == 224
    assert (BUNDLED_DIR / "selfie.onnx").is_file() and (BUNDLED_DIR / "MODEL_CARD.md").is_file()
    scores = json.loads(res.stdout.split(") ", 1)[1])
    assert all(1.0 <= s <= 5.0 for s in scores)
