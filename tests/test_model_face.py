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

from doohable.model.face import FaceBranch, FaceEmbedder, FaceRegressor
from doohable.model.runtime import BUNDLED_DIR, face_branch_path, load_scorer, prepare_image


def _crop(arr: np.ndarray) -> np.ndarray:
    return prepare_image(Image.fromarray(arr), 224)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    # a face (the astronaut), a cat and a cup of coffee: only the first has a human face
    return np.stack([_crop(skd.astronaut()), _crop(skd.chelsea()), _crop(skd.coffee())])


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
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a doohable face branch"):
        FaceBranch.load(tmp_path / "other.npz")


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


def test_the_bundled_default_has_its_face_branch() -> None:
    scorer = load_scorer()
    assert scorer.name == "selfie" and scorer.face is not None
    assert 0.0 < scorer.face.weight < 1.0
    assert load_scorer("selfie-fast").face is None  # the fast model stays CNN-only


def test_threads_share_one_embedder_and_agree(crops: np.ndarray) -> None:
    from concurrent.futures import ThreadPoolExecutor

    emb = FaceEmbedder()
    alone = emb.embed_one(crops[0])
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(emb.embed_one, [crops[0]] * 8))
    assert all(np.array_equal(o, alone) for o in outs)
