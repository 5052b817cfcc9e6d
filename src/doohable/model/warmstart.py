"""A scorer from the votes that starts from a bundled photo model (``--from-model``).

The bundled photo models ship as ONNX only: a frozen ImageNet backbone, multi-level pooled
features, then a linear head (``(features - mu) / sd`` -> ``w . z + b`` -> ``1 + 4 * that``,
clipped to 1..5; see :mod:`doohable.model.photo`). The graph itself is the feature extractor:
its features tensor (the input of the head's standardisation) is read through ONNX Runtime,
so the features are exactly the bundled model's.

The new head keeps the bundled standardisation and intercept and is fitted to the decisive
votes by maximum a posteriori on the logit scale: each vote is a Bradley–Terry comparison of
the images' logit scores ``m = k * w0 . z + v . z``; ``k``, how far the voters follow the
bundled model, is its maximum-likelihood value on the votes (0 when they do not follow it);
the prior ``v ~ N(0, I / lambda)`` pulls the head toward the bundled one (ridge toward the
prior weights). ``lambda`` is the prior ``strength`` in votes: along any direction the votes
pull, the bundled head weighs as much as ``strength`` votes; chosen by 5-fold cross-validation
on the votes (held-out log-likelihood) from :data:`STRENGTHS` unless given. The exported head
is ``(k w0 + v) / max(k, 1 / std(u0))`` on the 0..1 scale. With no decisive vote (ties and
skips only) the head is the bundled one exactly; few votes move it little, many move it as
far as they agree; a model the voters contradict keeps none of its weight.

``default`` starts from the default scorer's photo part (the part every image gets), its
``other`` coefficients folded into the head; the face part does not carry over.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from scipy.special import expit

from doohable.ranking.votes import LogRow

Tick = Callable[[str, int, int], None]
STRENGTHS = (1.0, 4.0, 16.0, 64.0, 256.0)  # prior strengths (in votes) tried by the CV
CV_MIN_VOTES = 20  # fewer decisive votes: the strongest prior, no CV
HEAD = ("head.mu", "head.sd", "head.fc.weight", "head.fc.bias")
NOT_A_PHOTO_MODEL = ("--from-model takes a photo model with a linear head (photo, photo-hq, default, or an "
                     ".onnx trained by `doohable train --data live-challenge --head regression`)")


@dataclass(frozen=True)
class BundledHead:
    """A photo model's graph, where its features are, and its head on the 0..1 scale
    (``u = weight . (features - mu) / sd + bias``; score = 1 + 4 u)."""

    ref: str
    path: Path
    proto: onnx.ModelProto
    features: str
    mu: np.ndarray
    sd: np.ndarray
    weight: np.ndarray
    bias: float


def load_head(ref: str) -> BundledHead:
    """The photo model ``ref`` (``photo``, ``photo-hq``, ``default`` or a path) and its head."""
    from doohable.model.default import NAME, Combination
    from doohable.model.runtime import resolve_model_path

    slope, offset = 1.0, 0.0
    name = ref
    if ref == NAME or ref.endswith(".json"):
        from doohable.model.default import COMBINATION_PATH

        combo = Combination.load(COMBINATION_PATH if ref == NAME else ref)
        d0, d1 = combo.other  # score = d0 + d1 * photo = d0 + d1 * (1 + 4 u)
        slope, offset, name = d1, (d0 + d1 - 1.0) / 4.0, combo.photo_model
    path = resolve_model_path(name)
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others for a file that is not a model
        raise ValueError(f"{path}: not a loadable ONNX model ({exc})") from exc
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer if i.name in HEAD}
    sub = [n for n in proto.graph.node if n.op_type == "Sub" and "head.mu" in n.input]
    meta = {p.key: p.value for p in proto.metadata_props}
    if set(inits) != set(HEAD) or len(sub) != 1 or meta.get("head") != "regression":
        raise ValueError(f"{path}: {NOT_A_PHOTO_MODEL}")
    weight = inits["head.fc.weight"].astype(np.float64).reshape(-1)
    return BundledHead(ref, path, proto, sub[0].input[0], inits["head.mu"].astype(np.float64),
                       inits["head.sd"].astype(np.float64), slope * weight,
                       offset + slope * float(inits["head.fc.bias"].reshape(-1)[0]))


def features(head: BundledHead, images: Sequence[bytes], threads: int = 1,
             tick: Tick | None = None) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """The model's features (N, D) of the images that decode, their positions, and an error
    per image that does not."""
    from PIL import Image as PILImage

    from doohable.model.runtime import load_scorer, onnx_session

    prep = load_scorer(head.path, threads=threads)  # the model's own resize policy
    graph = onnx.ModelProto()
    graph.CopyFrom(head.proto)
    graph.graph.output.append(helper.make_tensor_value_info(head.features, onnx.TensorProto.FLOAT, None))
    session = onnx_session(graph.SerializeToString(), threads)
    crops, kept, errors = [], [], []  # errors: (position, message)
    for k, data in enumerate(images):
        try:
            with PILImage.open(io.BytesIO(data)) as img:
                crops.append(prep.prepare(img.convert("RGB")))
            kept.append(k)
        except (OSError, ValueError) as exc:
            errors.append((k, str(exc)))
    out = []
    for i in range(0, len(crops), 16):
        out.append(session.run([head.features], {"image": np.stack(crops[i : i + 16])})[0])
        if tick is not None:
            tick("features of the voted images", min(i + 16, len(crops)), len(crops))
    dim = head.mu.shape[0]
    return (np.concatenate(out).astype(np.float64) if out else np.zeros((0, dim))), kept, errors


@dataclass(frozen=True)
class Votes:
    """Decisive votes as positions into the images: ``winners[v]`` beat ``losers[v]``."""

    winners: np.ndarray
    losers: np.ndarray

    def __len__(self) -> int:
        return len(self.winners)

    def subset(self, mask: np.ndarray) -> Votes:
        return Votes(self.winners[mask], self.losers[mask])


def votes_of(rows: Sequence[LogRow], position: dict[int, int]) -> Votes:
    """The decisive votes among ``rows`` between images that have a position (ties left out)."""
    pairs = [(position[w], position[lo]) for r in rows
             if (w := r.winner_id) is not None and (lo := r.loser_id) is not None
             and w in position and lo in position]
    arr = np.asarray(pairs, dtype=int).reshape(-1, 2)
    return Votes(arr[:, 0], arr[:, 1])


def _sharpness(u0: np.ndarray, votes: Votes) -> float:
    """k: the maximum-likelihood logit scale of the bundled scores on the votes (Newton on one
    parameter, from one logit per standard deviation of ``u0``), in [0, 1000 / std(u0)]: 0 when
    the voters do not follow the bundled model at all."""
    spread = 1.0 / max(float(u0.std()), 1e-12)
    d = u0[votes.winners] - u0[votes.losers]
    k = spread
    for _ in range(50):
        p = expit(k * d)
        grad, hess = float(((1.0 - p) * d).sum()), float((p * (1.0 - p) * d * d).sum())
        if hess <= 1e-12:
            break
        k = float(np.clip(k + grad / hess, 0.0, 1e3 * spread))
    return k


def _margins(z: np.ndarray, m0: np.ndarray, v: np.ndarray, votes: Votes) -> np.ndarray:
    m = m0 + z @ v  # every image's logit score
    return np.asarray(m[votes.winners] - m[votes.losers])


def _map(z: np.ndarray, m0: np.ndarray, votes: Votes, lam: float) -> np.ndarray:
    """v maximising the votes' BT log-likelihood of the logit scores ``m0 + z v`` plus
    log N(v; 0, I / lam) (L-BFGS)."""
    from scipy.optimize import minimize

    def f(v: np.ndarray) -> tuple[float, np.ndarray]:
        m = _margins(z, m0, v, votes)
        g = -expit(-m)  # d loss / d margin
        per_image = np.bincount(votes.winners, g, len(m0)) - np.bincount(votes.losers, g, len(m0))
        return float(np.logaddexp(0.0, -m).sum()) + 0.5 * lam * float(v @ v), z.T @ per_image + lam * v

    res = minimize(f, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return np.asarray(res.x)


def _choose_strength(z: np.ndarray, m0: np.ndarray, votes: Votes, unit: float, seed: int) -> float:
    """The prior strength of :data:`STRENGTHS` with the best held-out log-likelihood (5 folds)."""
    if len(votes) < CV_MIN_VOTES:
        return STRENGTHS[-1]
    fold = np.random.default_rng(seed).permutation(len(votes)) % 5
    losses = []
    for s in STRENGTHS:
        total = 0.0
        for f in range(5):
            v = _map(z, m0, votes.subset(fold != f), s * unit)
            total += float(np.logaddexp(0.0, -_margins(z, m0, v, votes.subset(fold == f))).sum())
        losses.append(total)
    return STRENGTHS[int(np.argmin(losses))]


def fit_head(head: BundledHead, feats: np.ndarray, votes: Votes, strength: float | None = None,
             seed: int = 0, sharpness: float | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The new head's weights (on the bundled standardisation; the intercept stays) and what
    the fit found: ``{"votes", "sharpness", "strength", "shift"}``. ``sharpness``: ``k`` given
    instead of fitted.

    The fit is on the logit scale: scores ``k * w0 . z + v . z``, prior ``v ~ N(0, I / lambda)``;
    the exported head is ``(k w0 + v) / max(k, 1 / std(u0))``, so a bundled model the voters
    follow keeps its scale, and one they do not follow loses its weight in the new head."""
    z = (feats - head.mu) / head.sd
    u0 = z @ head.weight + head.bias
    info: dict[str, Any] = {"votes": len(votes)}
    if len(votes) == 0 or len(u0) < 2:
        return head.weight.copy(), info | {"sharpness": None, "strength": strength, "shift": 0.0}
    k = sharpness if sharpness is not None else _sharpness(u0, votes)
    m0 = k * (z @ head.weight)
    d = z[votes.winners] - z[votes.losers]
    unit = float((d * d).sum(1).mean()) / 4.0  # one vote's curvature along its direction
    s = strength if strength is not None else _choose_strength(z, m0, votes, unit, seed)
    v = _map(z, m0, votes, s * unit)
    weight = (k * head.weight + v) / max(k, 1.0 / max(float(u0.std()), 1e-12))
    shift = float(np.abs(z @ (weight - head.weight)).max())  # largest change of a voted image's score (0..1)
    return weight, info | {"sharpness": k, "strength": s, "shift": shift}


def export_head(head: BundledHead, weight: np.ndarray, out: Path, name: str, extra: dict[str, Any]) -> Path:
    """The bundled graph with the head's weight and intercept replaced, at ``out``."""
    proto = onnx.ModelProto()
    proto.CopyFrom(head.proto)
    values = {"head.fc.weight": weight.reshape(1, -1), "head.fc.bias": np.array([head.bias])}
    for init in proto.graph.initializer:
        if init.name in values:
            init.CopyFrom(numpy_helper.from_array(values[init.name].astype(np.float32), init.name))
    stale = ("l2", "cv_fixed_folds", "trained_on")  # the bundled head's fit, not this one's
    meta = {p.key: p.value for p in proto.metadata_props if p.key not in stale}
    meta |= {"name": name} | {k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()}
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    return out


@dataclass(frozen=True)
class WarmStartOptions:
    """A head fitted on votes from a bundled model (``train --from-db --from-model``, ``retrain``)."""

    from_model: str
    rows: Sequence[LogRow]  # the votes (ties and undone votes may be among them)
    images: dict[int, bytes]  # image id -> bytes, of the voted images
    out: Path
    name: str = "in-house"
    strength: float | None = None
    seed: int = 0
    threads: int = 1


def warmstart_job(opts: WarmStartOptions, tick: Tick | None = None) -> dict[str, Any]:
    """Fit and export the head: ``{"model", "metrics", "skipped"}`` like the ``train`` job."""
    head = load_head(opts.from_model)
    ids = sorted(opts.images)
    feats, kept, errors = features(head, [opts.images[i] for i in ids], opts.threads, tick)
    position = {ids[k]: p for p, k in enumerate(kept)}
    votes = votes_of(opts.rows, position)
    weight, info = fit_head(head, feats, votes, opts.strength, opts.seed)
    metrics = {"mode": "head from " + head.ref, "n_images": len(kept), **info}
    extra = {"from_model": head.ref, "trained_on": f"in-house votes ({len(votes)} decisive)",
             "prior_strength": info["strength"]}
    path = export_head(head, weight, opts.out, opts.name, extra)
    skipped = [{"source": f"image {ids[k]}", "error": e} for k, e in errors]
    return {"model": str(path), "metrics": metrics, "skipped": skipped}
