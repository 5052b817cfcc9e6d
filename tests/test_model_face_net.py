"""The fine-tuned face network: training on real SCUT faces, its ONNX export, and the face branch
that stacks it with the CNN and the face regressor."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from doohable.model.face.branch import POOLED_SCALE, FaceBranch, FaceRegressor, stack_scores
from doohable.model.face.dlibnet_torch import DlibFaceNet, face_scorer_onnx, face_scores, finetune_face_scorer
from doohable.model.face.embed import FaceEmbedder, _model_dir
from doohable.model.face.fit import fit_stack
from doohable.model.runtime import prepare_image

pytestmark = pytest.mark.slow

DAT = _model_dir() / "dlib_face_recognition_resnet_model_v1.dat"
PADDINGS = (0.25, 0.5, 0.8)


@pytest.fixture(scope="module")
def faces(shared_data: Path) -> dict[str, np.ndarray]:
    """24 SCUT faces: prepared crops, their chips (crop and mirror image), scores."""
    src = shared_data / "scut-fbp5500"
    rows = list(csv.DictReader((src / "labels.csv").open()))[:24]
    emb = FaceEmbedder(PADDINGS)
    crops, chips, found = [], np.zeros((24, 2, 3, 150, 150, 3), np.uint8), np.zeros((24, 2), bool)
    for i, r in enumerate(rows):
        crop = prepare_image(Image.open(src / "images" / r["image"]), 224)
        crops.append(crop)
        for j, view in enumerate((crop, np.ascontiguousarray(crop[:, ::-1]))):
            c = emb.chips(view)
            if c is not None:
                chips[i, j], found[i, j] = c, True
    y = np.array([float(r["score"]) for r in rows])
    return {"crops": np.stack(crops), "chips": chips, "found": found, "y": y}


def test_fine_tuned_network_fits_its_faces_and_exports(faces: dict[str, np.ndarray]) -> None:
    found, y = faces["found"], faces["y"]
    assert found[:, 0].all()  # SCUT's faces are all found
    rmses: list[float] = []
    model = finetune_face_scorer(DAT, faces["chips"], found, y, np.arange(24), epochs=2, batch=8, lr=1e-4,
                                 bf16=False, device="cpu", progress=lambda e, n, r: rmses.append(r))
    assert len(rmses) == 2 and all(np.isfinite(rmses))
    pred = face_scores(model, faces["chips"], found)
    # the head starts as ridge on the frozen network's features: the training faces are fitted
    assert np.corrcoef(pred, y)[0, 1] > 0.8 and np.sqrt(np.mean((pred - y) ** 2)) < 0.5
    # the ONNX export scores as the torch model, per chip
    x = faces["chips"][:4].reshape(-1, 150, 150, 3).transpose(0, 3, 1, 2).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for half, tol in ((False, 1e-4), (True, 2e-2)):
        net = face_scorer_onnx(model, half=half)
        got = ort.InferenceSession(net, providers=["CPUExecutionProvider"]).run(None, {"chips": x})[0]
        assert np.max(np.abs(got - ref)) < tol, half
    assert len(face_scorer_onnx(model)) < 0.6 * len(face_scorer_onnx(model, half=False))


def test_a_training_set_smaller_than_a_batch_still_trains(faces: dict[str, np.ndarray]) -> None:
    rmses: list[float] = []
    model = finetune_face_scorer(DAT, faces["chips"], faces["found"], faces["y"], np.arange(6), epochs=1,
                                 batch=32, bf16=False, device="cpu", progress=lambda e, n, r: rmses.append(r))
    fresh = DlibFaceNet.from_dat(DAT)
    assert any(not torch.equal(a, b) for a, b in zip(model.net.parameters(), fresh.parameters(), strict=True))
    assert len(rmses) == 1 and rmses[0] > 0  # one step over the 6 faces, its loss reported


def test_out_of_fold_network_skips_rows_without_a_target(faces: dict[str, np.ndarray]) -> None:
    from doohable.model.face.train import face_net_oof

    target = faces["y"].copy()
    target[:4] = np.nan  # e.g. images the CNN's CV gave no prediction
    folds = np.tile([1, 2], 12)
    ticks: list[tuple[str, int]] = []
    oof = face_net_oof(faces["chips"], faces["found"], target, folds, epochs=1,
                       progress=lambda what, e, n, r: ticks.append((what, e)))
    assert ticks == [("fold 1", 1), ("fold 2", 1)]
    assert np.isfinite(oof).all()  # NaN targets were not trained on, yet every face is scored
    assert np.std(oof) > 0.01  # scores, not a constant


def test_branch_with_a_network_scores_the_stack(faces: dict[str, np.ndarray], tmp_path: Path) -> None:
    from skimage import data as skd

    found, y = faces["found"], faces["y"]
    model = finetune_face_scorer(DAT, faces["chips"], found, y, np.arange(24), epochs=1, batch=8, lr=1e-4,
                                 bf16=False, device="cpu")
    desc = FaceEmbedder(PADDINGS)
    emb = np.stack([desc.describe(faces["chips"][i].reshape(-1, 150, 150, 3)).reshape(2, -1).mean(0)
                    for i in range(24)])
    reg = FaceRegressor.fit(emb, y, gamma=1 / 6, alpha=0.1, n_components=200)
    net_scores = face_scores(model, faces["chips"], found)
    cnn = y + np.random.default_rng(0).normal(0, 0.3, 24)
    stack = fit_stack(y, cnn, reg.predict(emb), net_scores)
    assert len(stack) == 4
    branch = FaceBranch(reg, 0.4, {"m": "1"}, mirror=True, paddings=PADDINGS, net=face_scorer_onnx(model),
                        stack=stack)
    loaded = FaceBranch.load(branch.save(tmp_path / "b.face.npz"))
    assert loaded.stack == branch.stack and loaded.net == branch.net
    cat = prepare_image(Image.fromarray(skd.chelsea()), 224)
    batch = np.concatenate([faces["crops"][:3], cat[None]])
    sc = loaded.scores(batch)
    face, net = sc["face"], sc["net"]
    assert np.isnan(sc["pooled"]).all()  # this branch has no pooled-feature regressor
    np.testing.assert_allclose(face[:3], reg.predict(emb[:3]), atol=1e-4)
    np.testing.assert_allclose(net[:3], net_scores[:3], atol=2e-2)  # float16 weights, float32 graph
    assert np.isnan(face[3]) and np.isnan(net[3])  # no face in the cat
    cnn4 = np.array([3.0, 2.5, 4.0, 3.3], np.float32)
    out = loaded.blend(cnn4, batch)
    np.testing.assert_allclose(out[:3], stack_scores(stack, cnn4[:3], face[:3], net[:3]), atol=1e-5)
    assert out[3] == pytest.approx(3.3)  # the CNN's score where there is no face
    with pytest.raises(ValueError, match="stack coefficients"):
        FaceBranch(reg, 0.4, {}, paddings=PADDINGS, net=branch.net)
    with pytest.raises(ValueError, match="4 coefficients"):
        FaceBranch(reg, 0.4, {}, paddings=PADDINGS, net=branch.net, stack=(1.0, 2.0))

    # the fifth term: a regressor on the network's pooled features of the same chips
    pooled_emb = np.stack([desc.describe(faces["chips"][i].reshape(-1, 150, 150, 3), pooled=True)[1]
                           .reshape(2, -1).mean(0) for i in range(24)]) / POOLED_SCALE
    assert pooled_emb.shape == (24, 768)
    pooled = FaceRegressor.fit(pooled_emb, y, gamma=2.0, alpha=0.01, n_components=200)
    stack5 = fit_stack(y, cnn, reg.predict(emb), net_scores, pooled.predict(pooled_emb))
    five = FaceBranch(reg, 0.4, {}, mirror=True, paddings=PADDINGS, net=branch.net, stack=stack5,
                      pooled=pooled)
    five = FaceBranch.load(five.save(tmp_path / "p.face.npz"))
    assert five.pooled is not None and five.pooled.seed == pooled.seed and len(five.stack or ()) == 5
    sc = five.scores(batch)
    np.testing.assert_allclose(sc["pooled"][:3], pooled.predict(pooled_emb[:3]), atol=1e-4)
    assert np.isnan(sc["pooled"][3])
    out = five.blend(cnn4, batch)
    np.testing.assert_allclose(out[:3], stack_scores(stack5, cnn4[:3], sc["face"][:3], sc["net"][:3],
                                                     sc["pooled"][:3]), atol=1e-5)
    with pytest.raises(ValueError, match="5 coefficients"):
        FaceBranch(reg, 0.4, {}, paddings=PADDINGS, net=branch.net, stack=stack, pooled=pooled)
    with pytest.raises(ValueError, match="only with a fine-tuned face network"):
        FaceBranch(reg, 0.4, {}, paddings=PADDINGS, pooled=pooled)
