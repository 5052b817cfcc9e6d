"""Fitting the face branch's stack: dlib's face network fine-tuned for the blend, the
pooled-feature regressor, and the linear stack of them with the CNN (training only: torch).

The data flow, shared by ``doohable train --face-branch --face-net`` and
``benchmarks/bench_face_branch.py --face-net``:

1. :func:`chip_pairs`: each prepared crop's aligned face chips, and its mirror image's.
2. :func:`chip_embeddings`: the descriptors (the face regressor's input, as
   ``FaceEmbedder.embed_pairs`` gives them) and the pooled features (the pooled regressor's).
3. ``face.fit_face_branch``: the descriptor regressor, chosen by CV on the CNN's out-of-fold
   predictions.
4. :func:`face_net_oof`: the network's out-of-fold scores, one fine-tuning per fold.
5. :func:`add_face_net`: the network fine-tuned on every face, the pooled regressor and the
   stack fitted on all out-of-fold scores, added to the branch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from doohable.model.face.branch import POOLED_SCALE, FaceBranch, FaceRegressor, stack_scores
from doohable.model.face.embed import FaceEmbedder, _model_dir, mirrored
from doohable.model.face.fit import choose_pooled, face_oof, face_rows, fit_stack

if TYPE_CHECKING:
    from doohable.model.face.dlibnet_torch import FaceScorer

NET_EPOCHS = 10
NET_TARGET_WEIGHT = 0.5  # the network learns (y - (1 - w) * cnn) / w: what a blend at w needs from it

Tick = Callable[[int, int], None]  # (done, total)
EpochTick = Callable[[str, int, int, float], None]  # (which fine-tuning, epoch, epochs, train rmse)


def dlib_net_path() -> Path:
    """dlib's face-recognition network (``face_recognition_models``), the one fine-tuned."""
    return _model_dir() / "dlib_face_recognition_resnet_model_v1.dat"


def chip_pairs(
    embedder: FaceEmbedder, crops: Sequence[np.ndarray], *, tick: Tick | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(chips, found): uint8 (N, 2, P, 150, 150, 3), the aligned chips of each crop and of its
    mirror image at the embedder's P paddings (``FaceEmbedder.chips``; zeros where no face),
    and bool (N, 2), where a face was found. ``tick(done, total)`` after each crop."""
    p = len(embedder.paddings)
    chips = np.zeros((len(crops), 2, p, 150, 150, 3), np.uint8)
    found = np.zeros((len(crops), 2), bool)
    for i, crop in enumerate(crops):
        for j, view in enumerate((crop, np.ascontiguousarray(crop[:, ::-1]))):
            c = embedder.chips(view)
            if c is not None:
                chips[i, j], found[i, j] = c, True
        if tick:
            tick(i + 1, len(crops))
    return chips, found


def chip_embeddings(
    chips: np.ndarray, found: np.ndarray, paddings: Sequence[float], *, tick: Tick | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(plain, flipped, pooled): the face embeddings of each crop and of its mirror image (NaN
    rows where no face was found, as ``FaceEmbedder.embed_pairs``), described from
    :func:`chip_pairs`'s chips, and the pooled-feature embedding (``FaceBranch.pooled``'s
    input: the mean of both views, the crop's alone where its mirror has none, /
    ``POOLED_SCALE``; zeros where no face)."""
    emb = FaceEmbedder(paddings)
    out = np.full((len(chips), 2, emb.dim), np.nan, np.float32)
    pooled = np.full((len(chips), 2, 256 * len(emb.paddings)), np.nan, np.float32)
    for a in range(0, len(chips), 50):
        c = np.asarray(chips[a:a + 50])
        desc, feats = emb.describe(c.reshape(-1, 150, 150, 3), pooled=True)
        out[a:a + 50], pooled[a:a + 50] = desc.reshape(len(c), 2, -1), feats.reshape(len(c), 2, -1)
        if tick:
            tick(min(a + 50, len(chips)), len(chips))
    out[~found], pooled[~found] = np.nan, np.nan
    return out[:, 0], out[:, 1], np.nan_to_num(mirrored(pooled[:, 0], pooled[:, 1])) / POOLED_SCALE


def net_target(y: np.ndarray, cnn: np.ndarray, weight: float = NET_TARGET_WEIGHT) -> np.ndarray:
    """What the face network learns: ``(y - (1 - w) * cnn) / w``, what a blend at weight ``w``
    with the CNN's (out-of-fold) predictions needs from it."""
    return (y - (1 - weight) * cnn) / weight


def face_net_oof(
    chips: np.ndarray,
    found: np.ndarray,
    target: np.ndarray,
    folds: np.ndarray,
    *,
    epochs: int = NET_EPOCHS,
    progress: EpochTick | None = None,
) -> np.ndarray:
    """Out-of-fold scores of the fine-tuned face network (NaN where the crop has no face): for
    each fold, ``finetune_face_scorer`` on the other folds' images whose crop has a face (and
    whose target is finite)."""
    from doohable.model.face.dlibnet_torch import face_scores, finetune_face_scorer

    oof = np.full(len(target), np.nan)
    for k in sorted(set(folds.tolist())):
        train = np.flatnonzero((folds != k) & found[:, 0] & np.isfinite(target))
        test = np.flatnonzero(folds == k)
        model = finetune_face_scorer(dlib_net_path(), chips, found, target, train, epochs=epochs,
                                     progress=_named(progress, f"fold {k}"))
        oof[test] = face_scores(model, np.asarray(chips[test]), found[test])
    return oof


def add_face_net(
    branch: FaceBranch,
    plain: np.ndarray,
    flipped: np.ndarray,
    pooled: np.ndarray | None,
    chips: np.ndarray,
    found: np.ndarray,
    y: np.ndarray,
    cnn: np.ndarray,
    folds: np.ndarray,
    net_oof: np.ndarray,
    *,
    epochs: int = NET_EPOCHS,
    target_weight: float = NET_TARGET_WEIGHT,
    progress: EpochTick | None = None,
) -> tuple[FaceBranch, np.ndarray]:
    """(branch, stacked): the branch with a face network fine-tuned on every image with a face, and the stack
    fitted on the out-of-fold scores of the CNN (``cnn``), of the regressor (at the branch's
    values) and of the network (``net_oof``, :func:`face_net_oof` with the same target); with
    ``pooled`` (:func:`chip_embeddings`), also the pooled-feature regressor (chosen by CV of
    the stack, ``face.choose_pooled``, fitted on every face) as the stack's fifth term.

    ``stacked``: the stack applied to the out-of-fold scores where they all exist, ``cnn``
    elsewhere (optimistic: the stack and the pooled regressor's values are chosen on these
    same folds). The metadata records the network's training and ``net_onnx_vs_torch``: the
    largest difference between the ONNX network (float16 weights) and the trained torch model
    on up to 64 training images' scores."""
    from doohable.model.face.dlibnet_torch import face_scorer_onnx, finetune_face_scorer

    target = net_target(y, cnn, target_weight)
    train = np.flatnonzero(found[:, 0] & np.isfinite(target))
    model = finetune_face_scorer(dlib_net_path(), chips, found, target, train,
                                 epochs=epochs, progress=_named(progress, "final"))
    net = face_scorer_onnx(model)
    onnx_vs_torch = _onnx_vs_torch(model, net, np.asarray(chips[train[:64]]))
    fr, embs = face_rows(plain, flipped)
    use = fr & np.isfinite(cnn) & np.isfinite(net_oof)
    g, a = float(branch.metadata["gamma"]), float(branch.metadata["alpha"])
    face = face_oof(embs[branch.mirror][use], y[use], folds[use], gamma=g, alpha=a)
    others = [cnn[use], face, net_oof[use]]
    meta = {
        **branch.metadata,
        "face_net": f"dlib's network fine-tuned {epochs} epochs on {len(train)} faces, target "
        f"(y - {1 - target_weight:g} * cnn) / {target_weight:g}",
        "net_onnx_vs_torch": f"{onnx_vs_torch:.4f}",
    }
    pooled_reg = None
    if pooled is not None:
        pg, pa = choose_pooled(pooled[use], y[use], folds[use], others)
        pooled_reg = FaceRegressor.fit(pooled[use], y[use], gamma=pg, alpha=pa)
        others.append(face_oof(pooled[use], y[use], folds[use], gamma=pg, alpha=pa))
        meta["pooled"] = f"ridge on {len(pooled_reg.coef)} random Fourier features, gamma {pg}, alpha {pa}"
    st = fit_stack(y[use], *others)
    meta["stack"] = " ".join(f"{v:.4f}" for v in st)
    stacked = np.asarray(cnn, np.float64).copy()
    stacked[use] = stack_scores(st, *others)
    return dataclasses.replace(branch, metadata=meta, net=net, stack=st, pooled=pooled_reg), stacked


def _onnx_vs_torch(model: FaceScorer, net: bytes, chips: np.ndarray) -> float:
    """The largest difference between the ONNX network's and the torch model's scores of
    these images' chips (every chip counted, as if each view had a face)."""
    from doohable.model.face.dlibnet_torch import face_scores
    from doohable.model.session import onnx_session

    x = chips.reshape(-1, 150, 150, 3).transpose(0, 3, 1, 2).astype(np.float32)
    onnx_scores = onnx_session(net, 0).run(None, {"chips": x})[0].reshape(len(chips), -1).mean(axis=1)
    torch_scores = face_scores(model, chips, np.ones((len(chips), 2), bool))
    return float(np.max(np.abs(onnx_scores - torch_scores)))


def _named(progress: EpochTick | None, what: str) -> Callable[[int, int, float], None] | None:
    if progress is None:
        return None

    def tick(epoch: int, epochs: int, rmse: float) -> None:
        progress(what, epoch, epochs, rmse)

    return tick
