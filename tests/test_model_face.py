"""The selfie scorer's face branch: embedding on real photos, the regressor, the blend in the runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skd
from sklearn.kernel_approximation import RBFSampler
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

from doohable.model.face.branch import FaceBranch, FaceRegressor, stack_scores
from doohable.model.face.embed import FaceEmbedder
from doohable.model.runtime import BUNDLED_DIR, face_branch_path, load_scorer, prepare_image


def _crop(arr: np.ndarray) -> np.ndarray:
    return prepare_image(Image.fromarray(arr), 224)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    # a face (the astronaut), a cat and a cup of coffee: only the first has a human face
    return np.stack([_crop(skd.astronaut()), _crop(skd.chelsea()), _crop(skd.coffee())])


@pytest.mark.slow
def test_embedding_finds_the_face_and_only_the_face(crops: np.ndarray) -> None:
    emb = FaceEmbedder().embed(crops)
    assert emb.shape == (3, 128) and emb.dtype == np.float32
    assert np.isfinite(emb[0]).all() and 0.5 < np.linalg.norm(emb[0]) < 1.5  # dlib's are ~unit length
    assert np.isnan(emb[1:]).all()
    again = FaceEmbedder().embed_one(crops[0])  # deterministic
    np.testing.assert_allclose(again, emb[0], atol=1e-6)
    flipped = FaceEmbedder().embed_one(np.ascontiguousarray(crops[0][:, ::-1]))
    assert np.linalg.norm(flipped - emb[0]) < 0.4  # the same person: dlib's match threshold is 0.6
    mirrored = FaceEmbedder().embed(crops, mirror=True)
    np.testing.assert_allclose(mirrored[0], (emb[0] + flipped) / 2, atol=1e-6)
    assert np.isnan(mirrored[1:]).all()


@pytest.mark.slow
def test_paddings_concatenate_descriptors_of_more_context(crops: np.ndarray) -> None:
    one = FaceEmbedder().embed_one(crops[0])
    multi = FaceEmbedder((0.25, 0.5, 0.8))
    assert multi.dim == 384
    emb = multi.embed(crops)
    assert emb.shape == (3, 384) and np.isnan(emb[1:]).all()
    np.testing.assert_allclose(emb[0, :128], one, atol=1e-6)  # padding 0.25 first: the default
    wider, widest = emb[0, 128:256], emb[0, 256:]
    assert np.linalg.norm(wider - one) > 0.05 and np.linalg.norm(widest - wider) > 0.05  # other views
    assert np.linalg.norm(wider - one) < 0.6  # ... of the same face (dlib's match threshold)
    for bad in ((), (-0.1,), (3.0,)):
        with pytest.raises(ValueError, match="paddings"):
            FaceEmbedder(bad)


def test_embedding_refuses_what_is_not_an_rgb_crop() -> None:
    with pytest.raises(ValueError, match="uint8"):
        FaceEmbedder().embed_one(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        FaceEmbedder().embed_one(np.zeros((64, 64), np.uint8))


def test_regressor_equals_scikit_learn_and_saves_no_training_embedding(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 128)) / np.sqrt(128)
    y = 3 + np.tanh(x[:, 0] * 5)
    reg = FaceRegressor.fit(x, y, gamma=1.0, alpha=0.1, n_components=500)
    ref = make_pipeline(RBFSampler(gamma=1.0, n_components=500, random_state=0), Ridge(alpha=0.1)).fit(x, y)
    np.testing.assert_allclose(reg.predict(x[:20]), ref.predict(x[:20]), atol=1e-8)
    assert np.corrcoef(reg.predict(x), y)[0, 1] > 0.9  # it learned something
    branch = FaceBranch(reg, 0.3, {"training": "synthetic"})
    path = branch.save(tmp_path / "m.face.npz")
    with np.load(path) as z:
        assert not any(z[k].shape[:1] == (200,) for k in z.files)  # nothing per training sample
    back = FaceBranch.load(path)
    assert back.weight == 0.3 and back.metadata == {"training": "synthetic"}
    np.testing.assert_allclose(back.regressor.predict(x[:5]), reg.predict(x[:5]), atol=1e-4)
    assert back.paddings == (0.25,)
    # the projection is drawn again from its seed, not saved: only the coefficients are
    assert reg.seed == 0 and reg.gamma == 1.0
    with np.load(path) as z:
        assert "weights" not in z.files and z["coef"].shape == (500,) and int(z["rff_seed"]) == 0
    np.testing.assert_array_equal(back.regressor.weights, reg.weights)
    np.testing.assert_array_equal(back.regressor.offset, reg.offset)
    with np.load(path) as z:
        tampered = {k: z[k] for k in z.files} | {"rff_seed": np.array(1)}
    np.savez(tmp_path / "t.face.npz", **tampered)
    with pytest.raises(ValueError, match="seed"):
        FaceBranch.load(tmp_path / "t.face.npz")
    # a projection that is not the seed's (another scikit-learn's draws) is saved in full
    unseeded = FaceRegressor(reg.weights, reg.offset, reg.coef, reg.intercept)
    FaceBranch(unseeded, 0.3, {}).save(tmp_path / "u.face.npz")
    with np.load(tmp_path / "u.face.npz") as z:
        assert z["weights"].shape == (128, 500) and "rff_seed" not in z.files
    np.testing.assert_allclose(
        FaceBranch.load(tmp_path / "u.face.npz").regressor.predict(x[:5]), reg.predict(x[:5]), atol=1e-4
    )
    x3 = rng.normal(size=(200, 384)) / np.sqrt(384)
    reg3 = FaceRegressor.fit(x3, 3 + np.tanh(x3[:, 0] * 5), gamma=0.3, alpha=0.1, n_components=200)
    FaceBranch(reg3, 0.4, {}, mirror=True, paddings=(0.25, 0.5, 0.8)).save(tmp_path / "p.face.npz")
    back3 = FaceBranch.load(tmp_path / "p.face.npz")
    assert (back3.paddings, back3.embedder.paddings, back3.mirror) == ((0.25, 0.5, 0.8),) * 2 + (True,)
    with pytest.raises(ValueError, match="384-d"):  # the regressor and the paddings must agree
        FaceBranch(reg3, 0.4, {}, paddings=(0.25,))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a doohable face branch"):
        FaceBranch.load(tmp_path / "other.npz")


@pytest.mark.slow
def test_scorer_blends_the_face_branch_where_a_face_is_found(crops: np.ndarray, tmp_path: Path) -> None:
    model = shutil.copy(BUNDLED_DIR / "selfie-fast.onnx", tmp_path / "m.onnx")
    cnn_only = load_scorer(model)
    assert cnn_only.face is None
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 128)) / np.sqrt(128)
    reg = FaceRegressor.fit(x, 4.5 + 0 * x[:, 0], gamma=1.0, alpha=1.0, n_components=300)  # says ~4.5
    FaceBranch(reg, 0.4, {}).save(face_branch_path(Path(model)))
    blended = load_scorer(model)
    assert blended.face is not None and blended.version != cnn_only.version
    assert blended.metadata["face_weight"] == "0.4"
    a, b = cnn_only.score(crops), blended.score(crops)
    face = reg.predict(FaceEmbedder().embed(crops[:1]))[0]
    assert b[0] == pytest.approx(0.6 * a[0] + 0.4 * face, abs=1e-4) and abs(b[0] - a[0]) > 0.05
    np.testing.assert_allclose(b[1:], a[1:], atol=1e-6)  # no face: the CNN's score unchanged


def test_a_face_the_gate_found_is_aligned_without_detecting_it_again(crops: np.ndarray) -> None:
    from doohable.model.default import FaceGate
    from doohable.model.face.embed import mirror_box

    portrait = _crop(skd.astronaut()[40:220, 150:330])  # the face fills the frame: the gate opens
    boxes = FaceGate().boxes(np.stack([portrait, crops[1]]))
    box = boxes[0]
    assert box is not None and boxes[1] is None
    assert 0 <= box.left() < box.right() < 224 and box.width() > 0.5 * 224  # in the crop's pixels
    assert mirror_box(mirror_box(box, 224), 224) == box and mirror_box(box, 224).width() == box.width()
    emb = FaceEmbedder()
    detected, given = emb.describe(emb.chips(portrait)), emb.describe(emb.chips(portrait, box))
    # the same face, aligned from either box: descriptors far closer than dlib's 0.6 identity threshold
    assert np.linalg.norm(detected - given, axis=1).max() < 0.2
    blank = np.zeros((224, 224, 3), np.uint8)  # no detection runs when the box is given
    assert emb.chips(blank) is None and emb.chips(blank, box) is not None
    branch = load_scorer().face
    assert branch is not None
    with pytest.raises(ValueError, match="2 face boxes for 1 crops"):
        branch.scores(portrait[None], [box, box])


def test_the_bundled_default_has_its_face_branch() -> None:
    scorer = load_scorer()
    assert scorer.name == "selfie" and scorer.face is not None
    assert 0.0 < scorer.face.weight < 1.0
    assert load_scorer("selfie-fast").face is None  # the fast model stays CNN-only


@pytest.mark.slow
def test_threads_share_one_embedder_and_agree(crops: np.ndarray) -> None:
    from concurrent.futures import ThreadPoolExecutor

    emb = FaceEmbedder()
    alone = emb.embed_one(crops[0])
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(emb.embed_one, [crops[0]] * 8))
    assert all(np.array_equal(o, alone) for o in outs)


# --- fitting: the library's choice (moved from benchmarks/recipes/bench_face_branch.py) -------------------


def _old_choose(
    embs: dict[bool, np.ndarray], y: np.ndarray, cnn: np.ndarray, folds: np.ndarray
) -> tuple[bool, float, float, float]:
    """benchmarks/recipes/bench_face_branch.py's ``choose`` before it moved into doohable.model.face (verbatim
    but for the grids, now the library's): a plain grid search, one fit per value."""
    import itertools

    from doohable.model.face.fit import ALPHAS as _OLD_ALPHAS
    from doohable.model.face.fit import GAMMAS as _OLD_GAMMAS
    from doohable.model.face.fit import WEIGHTS as _OLD_WEIGHTS

    best: tuple[float, tuple[bool, float, float, float]] | None = None
    for m, g, a in itertools.product(sorted(embs), _OLD_GAMMAS, _OLD_ALPHAS):
        emb, face = embs[m], np.zeros(len(y))
        for k in set(folds.tolist()):
            tr, te = folds != k, folds == k
            face[te] = FaceRegressor.fit(emb[tr], y[tr], gamma=g, alpha=a).predict(emb[te])
        for w in _OLD_WEIGHTS:
            r = float(np.sqrt(np.mean((y - ((1 - w) * cnn + w * face)) ** 2)))
            if best is None or r < best[0]:
                best = (r, (m, g, a, w))
    assert best is not None
    return best[1]


def _synthetic(informative: bool, n: int = 160, seed: int = 0) -> dict[str, np.ndarray]:
    """Unit-scale embeddings (as dlib's), a score, a CNN that misses what the face shows, 4 folds.

    The embeddings lie in 12 tight clusters (as one person's faces do). ``informative``: a part of
    the score is the cluster's value, which an RBF regression recovers and the CNN does not know;
    else that part is noise per image. A fifth of the rows have no face (NaN); 10 more lack a flip.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    who = rng.integers(0, 12, n)
    plain = (centres[who] + rng.normal(size=(n, 128)) * 0.3 / np.sqrt(128)).astype(np.float32)
    flipped = (plain + rng.normal(size=(n, 128)).astype(np.float32) * 0.02).astype(np.float32)
    hidden = rng.normal(size=12)[who] * 0.7 if informative else rng.normal(size=n) * 0.7
    cnn_part = rng.normal(size=n) * 0.6
    y = 3.0 + hidden + cnn_part
    cnn_oof = 3.0 + cnn_part  # knows its part exactly, nothing of the face's
    folds = np.arange(n) % 4 + 1
    plain[: n // 5] = np.nan
    flipped[: n // 5] = np.nan
    flipped[n // 5 : n // 5 + 10] = np.nan  # the mirror image's face is not found: plain only
    return {"plain": plain, "flipped": flipped, "y": y, "cnn": cnn_oof, "folds": folds}


@pytest.mark.slow
@pytest.mark.parametrize("informative", [True, False])
def test_choice_and_fit_equal_the_old_benchmark_code(informative: bool) -> None:
    from doohable.model.face.branch import N_FEATURES
    from doohable.model.face.fit import choose_face_branch, face_rows, fit_face_branch

    s = _synthetic(informative)
    plain, flipped, y, cnn, folds = s["plain"], s["flipped"], s["y"], s["cnn"], s["folds"]
    # the benchmark's preparation, as it was
    found_old = ~np.isnan(plain).any(axis=1)
    both = np.where(np.isnan(flipped), plain, (plain + flipped) / 2)
    embs_old = {False: np.nan_to_num(plain), True: np.nan_to_num(both)}
    found, embs = face_rows(plain, flipped)
    assert np.array_equal(found, found_old) and found.sum() == 128
    for b in (False, True):
        assert np.array_equal(embs[b], embs_old[b])
    old = _old_choose({b: e[found] for b, e in embs_old.items()}, y[found], cnn[found], folds[found])
    new = choose_face_branch({b: e[found] for b, e in embs.items()}, y[found], cnn[found], folds[found])
    assert new == old
    m, g, a, w = old
    if informative:  # the face carries what the CNN misses: a real weight, and better than the CNN
        assert w >= 0.3
    else:  # noise: the smallest weight the grid has
        assert w == 0.1
    # the final fit: the same regressor and weight as the benchmark's
    branch = fit_face_branch(
        plain, flipped, y, cnn, folds, metadata={"training": "synthetic"}, paddings=(0.25,)
    )
    ref = FaceRegressor.fit(embs_old[m][found], y[found], gamma=g, alpha=a)
    assert (branch.mirror, branch.weight) == (m, w)
    assert branch.metadata == {
        "mirror": str(m), "gamma": str(g), "alpha": str(a), "paddings": "0.25",
        "features": f"{N_FEATURES} random Fourier features", "training": "synthetic",
    }
    for f in ("weights", "offset", "coef"):
        np.testing.assert_array_equal(getattr(branch.regressor, f), getattr(ref, f))
    assert branch.regressor.intercept == ref.intercept


@pytest.mark.slow
def test_blend_oof_beats_the_cnn_where_the_face_carries_signal() -> None:
    from doohable.model.face.fit import blend_oof, fit_face_branch

    s = _synthetic(True)
    branch = fit_face_branch(
        s["plain"], s["flipped"], s["y"], s["cnn"], s["folds"], metadata={}, paddings=(0.25,)
    )
    blend = blend_oof(
        s["plain"], s["flipped"], s["y"], s["cnn"], s["folds"], mirror=branch.mirror,
        gamma=float(branch.metadata["gamma"]), alpha=float(branch.metadata["alpha"]), weight=branch.weight,
    )
    no_face = np.isnan(s["plain"]).any(axis=1)
    np.testing.assert_array_equal(blend[no_face], s["cnn"][no_face])  # no face: the CNN's own
    rmse = lambda p: float(np.sqrt(np.mean((s["y"] - p) ** 2)))  # noqa: E731
    assert rmse(blend) < rmse(s["cnn"]) - 0.05


def test_too_few_faces_is_a_clear_error() -> None:
    from doohable.model.face.fit import fit_face_branch

    s = _synthetic(True, n=40)  # 8 without a face: 32 left, so drop more
    s["plain"][:25] = np.nan
    with pytest.raises(ValueError, match="at least 20 training images with a face.*15 of 40"):
        fit_face_branch(s["plain"], s["flipped"], s["y"], s["cnn"], s["folds"], metadata={}, paddings=(0.25,))


@pytest.mark.slow
def test_embed_pairs_is_plain_and_mirror_embedding(crops: np.ndarray) -> None:
    emb = FaceEmbedder()
    ticks: list[tuple[int, int]] = []
    plain, flipped = emb.embed_pairs(list(crops), tick=lambda d, t: ticks.append((d, t)))
    assert ticks == [(1, 3), (2, 3), (3, 3)]
    np.testing.assert_array_equal(plain, emb.embed(crops))
    np.testing.assert_array_equal(flipped[0], emb.embed_one(np.ascontiguousarray(crops[0][:, ::-1])))
    assert np.isnan(flipped[1:]).all()


# --- the file's metadata --------------------------------------------------------------------------


def _tiny_branch(meta: dict[str, str]) -> FaceBranch:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 128)) / np.sqrt(128)
    return FaceBranch(FaceRegressor.fit(x, 3 + x[:, 0], gamma=1.0, alpha=0.1, n_components=50), 0.2, meta)


@pytest.mark.slow
def test_chip_embeddings_are_embed_pairs_plus_the_pooled_features(crops: np.ndarray) -> None:
    from doohable.model.face.branch import POOLED_SCALE
    from doohable.model.face.embed import DEFAULT_PADDINGS
    from doohable.model.face.train import chip_embeddings, chip_pairs

    emb = FaceEmbedder(DEFAULT_PADDINGS)
    ticks: list[tuple[int, int]] = []
    chips, found = chip_pairs(emb, list(crops), tick=lambda *t: ticks.append(t))
    assert chips.shape == (3, 2, 3, 150, 150, 3) and ticks[-1] == (3, 3)
    assert found.tolist() == [[True, True], [False, False], [False, False]]
    plain, flipped, pooled = chip_embeddings(chips, found, DEFAULT_PADDINGS)
    p2, f2 = emb.embed_pairs(list(crops))
    np.testing.assert_allclose(plain, p2, atol=1e-5)
    np.testing.assert_allclose(flipped, f2, atol=1e-5)
    assert np.isnan(plain[1:]).all() and (pooled[1:] == 0).all()  # no face: NaN / zeros
    both = emb.describe(chips[0].reshape(-1, 150, 150, 3), pooled=True)[1].reshape(2, -1)
    np.testing.assert_allclose(pooled[0], both.mean(axis=0) / POOLED_SCALE, rtol=1e-5, atol=1e-6)


def test_metadata_is_json_and_round_trips(tmp_path: Path) -> None:
    import json

    meta = {"training": "it's \"quoted\", with ünïcode", "cv_blend_rmse": "0.2807", "{": "}"}
    path = _tiny_branch(meta).save(tmp_path / "m.face.npz")
    with np.load(path) as z:
        assert json.loads(str(z["metadata"])) == meta
    assert FaceBranch.load(path).metadata == meta


def test_metadata_written_as_a_python_repr_still_loads(tmp_path: Path) -> None:
    meta = {"mirror": "True", "training": "it's old"}
    branch = _tiny_branch(meta)
    path = branch.save(tmp_path / "old.face.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["metadata"] = np.array(repr(meta))  # as FaceBranch.save wrote it before JSON
    np.savez_compressed(path, **arrays)
    assert FaceBranch.load(path).metadata == meta
    # a file of the first format (the second session's bundled branch): repr metadata, the
    # projection saved in full, no paddings (one descriptor, padding 0.25)
    r = branch.regressor
    arrays = {k: v for k, v in arrays.items() if not k.startswith("rff_") and k != "paddings"}
    arrays |= {"format": np.array("doohable-face-branch-1"), "weights": r.weights.astype(np.float32),
               "offset": r.offset.astype(np.float32)}
    np.savez_compressed(path, **arrays)
    old = FaceBranch.load(path)
    assert old.paddings == (0.25,) and old.metadata == meta and old.embedder.dim == 128
    np.testing.assert_allclose(old.regressor.weights, r.weights, rtol=1e-6)
    # and the shipped file
    bundled = FaceBranch.load(BUNDLED_DIR / "selfie.face.npz")
    assert bundled.metadata["mirror"] == str(bundled.mirror) and "licence" in bundled.metadata
    assert bundled.metadata["paddings"] == ",".join(map(str, bundled.paddings))


# --- doohable train --face-branch -----------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from doohable.config import get_settings

    monkeypatch.setenv("DOOHABLE_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


@pytest.mark.slow
def test_train_face_branch_writes_a_sidecar_the_scorer_loads(
    shared_data: Path, home: Path, tmp_path: Path, crops: np.ndarray
) -> None:
    import json

    from typer.testing import CliRunner

    from doohable.cli import app

    model = tmp_path / "m.onnx"
    args = ["train", "--data", str(shared_data / "scut-fbp5500"), "--limit", "8", "--head-only",
            "--face-branch", "--out", str(model), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout.strip().splitlines()[-1])["metrics"]
    fb = m["face_branch"]
    sidecar = face_branch_path(model)
    assert model.is_file() and sidecar.is_file() and fb["path"] == str(sidecar)
    assert m["n_images"] == 32 and fb["n_images"] == 32 and 20 <= fb["faces_found"] <= 32
    from doohable.model.face.embed import DEFAULT_PADDINGS
    from doohable.model.face.fit import GAMMAS, WEIGHTS

    assert fb["paddings"] == list(DEFAULT_PADDINGS) and load_scorer(model).face.paddings == DEFAULT_PADDINGS
    assert fb["weight"] in WEIGHTS and len(fb["calibration"]) == 2
    assert any(fb["gamma"] == pytest.approx(g / len(DEFAULT_PADDINGS)) for g in GAMMAS)
    assert set(fb["cv_cnn"]) == set(fb["cv_blend"]) == {"pearson", "rmse"}
    assert "optimistic" in fb["note"] and "same folds" in fb["note"]
    assert "oof" not in m  # the out-of-fold predictions are used, not printed

    scorer = load_scorer(model)
    assert scorer.face is not None and scorer.face.weight == fb["weight"]
    # too few faces (< MIN_CALIBRATION) for a calibration: none, and the report says so
    assert scorer.face.calibration == tuple(fb["calibration"]) == (0.0, 1.0)
    assert scorer.face.metadata["calibration"].startswith("none (fewer than 100")
    assert scorer.face.mirror == fb["mirror"] and scorer.face.metadata["gamma"] == str(fb["gamma"])
    cnn_only = load_scorer(shutil.copy(model, tmp_path / "cnn-only.onnx"))
    assert cnn_only.face is None
    a, b = cnn_only.score(crops[:2]), scorer.score(crops[:2])
    assert abs(b[0] - a[0]) > 1e-3  # the astronaut: blended
    assert b[1] == pytest.approx(a[1], abs=1e-6)  # the cat: no face, the CNN's score

    # retraining into the same path without --face-branch removes the old model's branch
    res = CliRunner().invoke(app, [a_ for a_ in args if a_ != "--face-branch"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])["metrics"]
    assert out["removed_stale_face_branch"] == str(sidecar) and not sidecar.exists()
    assert load_scorer(model).face is None


@pytest.mark.slow
def test_train_face_net_stacks_a_fine_tuned_network_the_scorer_loads(
    shared_data: Path, home: Path, tmp_path: Path, crops: np.ndarray
) -> None:
    """``--face-net``: the branch the benchmark ships (network, pooled regressor, 5-term stack),
    fitted by ``doohable train`` on the CV's out-of-fold predictions."""
    import json

    from doohable.model import jobs

    model = tmp_path / "m.onnx"
    opts = jobs.TrainOptions(
        data=jobs.labelled_scut(shared_data / "scut-fbp5500", limit=8),
        out=model,
        cache_dir=None,
        face_branch=True,
        face_net=True,
        face_net_epochs=1,
    )
    ticks: list[tuple[str, int, int]] = []
    res = jobs.train_job(opts, lambda *t: ticks.append(t))
    fb = res["metrics"]["face_branch"]
    # one fine-tuning per fold, then one on every face, each with its own progress bar
    assert {t[0] for t in ticks if t[0].startswith("face network")} == {
        "face network fold 1", "face network fold 2", "face network fold 3", "face network fold 4",
        "face network final",
    }
    assert ("face network final", 1, 1) in ticks and ("face chips", 32, 32) in ticks
    assert len(fb["stack"]) == 5 and fb["stack_terms"][-1] == "pooled"
    assert fb["net_onnx_vs_torch"] < 0.05  # float16 weights against the trained model
    assert 0 < fb["cv_stack"]["rmse"] < 1.5 and np.isfinite(fb["cv_stack"]["pearson"])
    json.dumps(res)  # the report is JSON
    scorer = load_scorer(model)
    face = scorer.face
    assert face is not None and face.net is not None and face.pooled is not None
    assert face.stack == pytest.approx(fb["stack"]) and "1 epochs" in face.metadata["face_net"]
    cnn_only = load_scorer(shutil.copy(model, tmp_path / "cnn-only.onnx"))
    a, b = cnn_only.score(crops[:2]), scorer.score(crops[:2])
    sc = face.scores(crops[:1])
    expect = stack_scores(face.stack, a[:1], sc["face"], sc["net"], sc["pooled"])
    assert b[0] == pytest.approx(float(expect[0]), abs=2e-3)  # the astronaut: the stack
    assert b[1] == pytest.approx(a[1], abs=1e-6)  # the cat: no face, the CNN's score


def test_face_net_without_face_branch_is_a_clear_error(shared_data: Path, home: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from doohable.cli import app

    res = CliRunner().invoke(app, ["train", "--data", str(shared_data / "scut-fbp5500"), "--limit", "2",
                                   "--head-only", "--face-net", "--out", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2 and "needs --face-branch" in res.output
    assert not (home / "cache").exists()  # failed before any image was loaded


@pytest.mark.parametrize("extra", [["--no-folds"], ["--from-db"]])
def test_train_face_branch_without_folds_is_a_clear_error(
    shared_data: Path, home: Path, tmp_path: Path, extra: list[str]
) -> None:
    from typer.testing import CliRunner

    from doohable.cli import app

    model = tmp_path / "m.onnx"
    args = ["train", "--data", str(shared_data / "scut-fbp5500"), "--limit", "2", "--head-only",
            "--face-branch", *extra, "--out", str(model), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert "--face-branch needs k-fold CV" in res.output
    assert not model.exists() and not face_branch_path(model).exists()
    assert not (home / "cache").exists()  # failed before any image was loaded


@pytest.mark.slow
def test_train_job_with_too_few_faces_fails_before_training(
    shared_data: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from doohable.model import jobs
    from doohable.model import train as T

    def no_training(*a: object, **k: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(T, "extract_features", no_training)
    monkeypatch.setattr(T, "cross_validate", no_training)
    opts = jobs.TrainOptions(
        data=jobs.labelled_scut(shared_data / "scut-fbp5500", limit=4),  # 16 images: too few faces
        out=tmp_path / "m.onnx",
        cache_dir=None,
        face_branch=True,
    )
    ticks: list[tuple[str, int, int]] = []
    with pytest.raises(ValueError, match="at least 20 training images with a face"):
        jobs.train_job(opts, lambda *t: ticks.append(t))
    assert ticks[-1] == ("face embeddings", 16, 16)
    assert not (tmp_path / "m.onnx").exists()
    no_folds = jobs.TrainOptions(data=opts.data, out=opts.out, cache_dir=None, face_branch=True, folds=False)
    with pytest.raises(ValueError, match="needs k-fold CV"):
        jobs.train_job(no_folds)


@pytest.mark.slow
def test_gamma_is_per_descriptor_when_paddings_are_concatenated() -> None:
    from doohable.model.face.fit import GAMMAS, choose_face_branch

    s = _synthetic(True)
    found = ~np.isnan(s["plain"]).any(axis=1)
    one = np.nan_to_num(s["plain"])[found]
    three = np.concatenate([one, one, one], axis=1)  # three "paddings": squared distances triple
    y, cnn, folds = s["y"][found], s["cnn"][found], s["folds"][found]
    g1 = choose_face_branch({False: one}, y, cnn, folds)[1]
    g3 = choose_face_branch({False: three}, y, cnn, folds)[1]
    assert g1 in GAMMAS
    assert any(g3 == pytest.approx(g / 3) for g in GAMMAS)  # the grid scaled: disjoint from GAMMAS


def test_one_fit_for_all_penalties_equals_one_fit_each() -> None:
    from doohable.model.face.fit import face_oof_alphas

    s = _synthetic(True)
    found = ~np.isnan(s["plain"]).any(axis=1)
    emb, y, folds = np.nan_to_num(s["plain"])[found], s["y"][found], s["folds"][found]
    together = face_oof_alphas(emb, y, folds, gamma=0.5, alphas=(0.01, 0.1, 1.0))
    for a, row in zip((0.01, 0.1, 1.0), together, strict=True):
        each = np.zeros(len(y))
        for k in (1, 2, 3, 4):
            reg = FaceRegressor.fit(emb[folds != k], y[folds != k], gamma=0.5, alpha=a)
            each[folds == k] = reg.predict(emb[folds == k])
        np.testing.assert_allclose(row, each, atol=1e-6)
    assert np.abs(together[0] - together[2]).max() > 0.01  # the penalties do differ


@pytest.mark.slow
def test_the_mirror_pass_can_be_forced() -> None:
    from doohable.model.face.fit import fit_face_branch

    s = _synthetic(True)
    args = (s["plain"], s["flipped"], s["y"], s["cnn"], s["folds"])
    for forced in (False, True):
        branch = fit_face_branch(*args, metadata={}, paddings=(0.25,), mirror=forced)
        assert branch.mirror is forced and branch.metadata["mirror"] == str(forced)


def test_serving_needs_the_face_in_the_crop_itself_as_fitting_does() -> None:
    from doohable.model.face.embed import mirrored
    from doohable.model.face.fit import face_rows

    plain = np.array([[np.nan] * 128, [0.1] * 128], np.float32)
    flipped = np.array([[0.2] * 128, [np.nan] * 128], np.float32)
    out = mirrored(plain, flipped)
    assert np.isnan(out[0]).all()  # only the mirror image had a face: no face score
    np.testing.assert_array_equal(out[1], plain[1])  # only the crop had one: its embedding
    found, _ = face_rows(plain, flipped)
    assert found.tolist() == [False, True]  # fitting leaves out the same rows


def test_error_model_is_exact_for_its_own_cnn_and_gives_a_stronger_cnn_less_face() -> None:
    from doohable.model.face.fit import WEIGHTS, blend_error_model

    rng = np.random.default_rng(3)
    y = rng.uniform(1, 5, 2000)
    shared = rng.normal(0, 0.2, 2000)  # errors the CNN and the face branch have in common
    cnn = y + shared + rng.normal(0, 0.25, 2000) + 0.05
    face = y + shared + rng.normal(0, 0.25, 2000)
    em = blend_error_model(y, cnn, face, [0.2])
    assert 0.3 < em["rho"] < 0.5
    own = em["for_cnn_rmse"][f"{em['cnn_rmse']:.4f}"]
    for w in WEIGHTS:  # the blend's RMSE, not an approximation of it, for the CNN measured
        blend = (1 - w) * cnn + w * face
        assert own["rmse_at_weight"][f"{w:.1f}"] == pytest.approx(np.sqrt(np.mean((y - blend) ** 2)))
    grid = np.linspace(0, 1, 1001)
    empirical = [np.sqrt(np.mean((y - ((1 - w) * cnn + w * face)) ** 2)) for w in grid]
    assert own["best_weight"] == pytest.approx(grid[int(np.argmin(empirical))], abs=1e-3)
    assert own["rmse_at_best"] == pytest.approx(min(empirical), abs=1e-6)
    on_grid = [np.sqrt(np.mean((y - ((1 - w) * cnn + w * face)) ** 2)) for w in WEIGHTS]
    assert own["best_grid_weight"] == WEIGHTS[int(np.argmin(on_grid))]
    stronger = em["for_cnn_rmse"]["0.2000"]
    assert stronger["best_weight"] < own["best_weight"]
    assert stronger["rmse_at_best"] < own["rmse_at_best"]


@pytest.mark.slow
def test_calibration_undoes_the_blends_shrinkage_and_round_trips(tmp_path: Path) -> None:
    from doohable.model.face.fit import blend_oof, fit_calibration, fit_face_branch

    rng = np.random.default_rng(5)
    truth = rng.uniform(1, 5, 500)
    assert fit_calibration(truth, (truth - 0.2) / 1.25) == pytest.approx((0.2, 1.25))
    s = _synthetic(True)
    # a CNN that shrinks its scores towards the mean, as an average of two predictors does
    shrunk = 3.0 + 0.6 * (s["cnn"] - 3.0)
    args = (s["plain"], s["flipped"], s["y"], shrunk, s["folds"])
    plain_branch = fit_face_branch(*args, metadata={}, paddings=(0.25,))
    branch = fit_face_branch(*args, metadata={}, paddings=(0.25,), calibrate=True)
    assert plain_branch.calibration == (0.0, 1.0) and "calibration" not in plain_branch.metadata
    a, b = branch.calibration
    assert b > 1.05 and branch.metadata["calibration"] == f"{a:.4f} + {b:.4f} * blend"
    # the same choice as without, and the calibration is the least-squares fit of the out-of-fold blend
    assert (branch.mirror, branch.weight) == (plain_branch.mirror, plain_branch.weight)
    g, al = float(branch.metadata["gamma"]), float(branch.metadata["alpha"])
    blend = blend_oof(*args, mirror=branch.mirror, gamma=g, alpha=al, weight=branch.weight)
    found = ~np.isnan(s["plain"]).any(axis=1)
    rmse = lambda p: float(np.sqrt(np.mean((s["y"][found] - p[found]) ** 2)))  # noqa: E731
    assert rmse(a + b * blend) < rmse(blend)
    back = FaceBranch.load(branch.save(tmp_path / "c.face.npz"))
    assert back.calibration == pytest.approx((a, b))
    # the scorer applies it where a face is found, and only there
    reg = FaceRegressor.fit(np.eye(128)[:40], np.full(40, 4.0), gamma=1.0, alpha=1.0, n_components=64)
    one = FaceBranch(reg, 0.5, {}, calibration=(0.5, 0.9))
    face_row = np.zeros(128, np.float32)
    cnn = np.array([3.0, 2.0], np.float32)
    want_face = float(reg.predict(face_row[None])[0])
    # the first crop has a face (this embedding), the second none
    one.scores = lambda batch, boxes=None: {  # type: ignore[method-assign]
        "face": np.array([want_face, np.nan]), "net": np.full(2, np.nan), "pooled": np.full(2, np.nan)}
    out = one.blend(cnn, np.zeros((2, 8, 8, 3), np.uint8))
    assert out[0] == pytest.approx(0.5 + 0.9 * (0.5 * 3.0 + 0.5 * want_face), abs=1e-5)
    assert out[1] == 2.0


def test_bundled_detector_file_is_dlibs_frontal_face_detector(crops: np.ndarray) -> None:
    import dlib

    from doohable.model.face.embed import DETECTOR_PATH, frontal_face_detector

    assert DETECTOR_PATH.is_file()
    built, loaded = dlib.get_frontal_face_detector(), frontal_face_detector()
    for crop in crops:
        for up in (0, 1):
            assert [(r.left(), r.top(), r.right(), r.bottom()) for r in built(crop, up)] == [
                (r.left(), r.top(), r.right(), r.bottom()) for r in loaded(crop, up)
            ]
