"""The ``train`` and ``evaluate`` jobs: labels -> images -> model -> metrics (the CLI calls these)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from doohable.model import train as T
from doohable.model.data import (
    ImageArray,
    ScoredImages,
    VotePairs,
    load_images,
    load_images_cached,
    load_scut,
)
from doohable.model.evaluate import Evaluation, score_dataset
from doohable.model.export import export_onnx
from doohable.model.load import load_any
from doohable.model.metrics import regression_metrics
from doohable.model.report import Run, build_report, run_from_cv_json
from doohable.model.runtime import center_crop, face_branch_path, resize_side
from doohable.model.scorer import build_model

Tick = Callable[[str, int, int], None]  # (what, done, total) for progress bars


@dataclass
class TrainOptions:
    """What ``doohable train`` was asked for."""

    data: ScoredImages
    out: Path
    cache_dir: Path | None
    finetune: bool = False
    folds: bool = True
    config: T.FinetuneConfig = field(default_factory=T.FinetuneConfig)
    device: str = "auto"
    checkpoint_dir: Path | None = None
    head_epochs: int = 300
    pairs: VotePairs | None = None  # raw votes for a pairwise head (image ids = data.paths' order)
    pair_ids: list[int] | None = None  # image id of each entry of data
    sources: list[str | bytes] | None = None  # bytes for database images
    name: str = "selfie"
    face_branch: bool = False  # also fit a face branch (needs k-fold CV: its out-of-fold predictions)
    face_net: bool = False  # with face_branch: also fine-tune dlib's face network for it (the stack)
    face_net_epochs: int = 10


FACE_NET_NEEDS_BRANCH = "--face-net is a part of the face branch: it needs --face-branch"
FACE_BRANCH_NEEDS_FOLDS = (
    "--face-branch needs k-fold CV (--folds, not --from-db, and labels with at least 2 folds): its "
    "blend weight is chosen on the CNN's out-of-fold predictions"
)


def _feature_cache(opts: TrainOptions, pixels: np.ndarray) -> Path | None:
    if opts.cache_dir is None:
        return None
    h = hashlib.sha256(pixels.tobytes()[:: max(1, pixels.size // 1_000_000)]).hexdigest()[:12]
    return opts.cache_dir / f"features-{opts.config.backbone}-{opts.config.input_size}-{len(pixels)}-{h}.npy"


def train_job(opts: TrainOptions, tick: Tick | None = None) -> dict[str, Any]:
    """Train (head on cached features, or full fine-tuning), optionally k-fold CV, then export.

    Returns ``{"model": path, "metrics": {...}, "skipped": [...]}``.

    ``opts.face_branch``: the training images' face embeddings are computed first (so too few
    faces fail before any training), the face branch is fitted on the CV's out-of-fold
    predictions (``face.fit_face_branch``) and saved beside the model (``face_branch_path``);
    ``metrics["face_branch"]`` reports it. Without it, a face branch left beside ``opts.out``
    by an earlier model is removed (it would be blended into the new model's scores).
    ``opts.face_net``: the branch also gets dlib's face network fine-tuned for it, the pooled
    regressor and their stack with the CNN (``face_train``: one fine-tuning per fold, then one
    on every face).
    """
    _check_face_options(opts)
    arr = _training_images(opts)
    data = opts.data.subset(arr.kept)
    metrics: dict[str, Any] = {"n_images": len(data), "mode": "finetune" if opts.finetune else "head"}
    use_folds = opts.folds and len(set(data.folds.tolist()) - {0}) > 1
    faces = _training_faces(opts, arr.pixels, data, use_folds, tick) if opts.face_branch else None
    if opts.finetune:
        model, info = _finetune(opts, arr.pixels, data, use_folds, tick)
    else:
        model, info = _head_only(opts, arr.pixels, data, arr.kept, use_folds, tick)
    oof = info.pop("oof", None)
    metrics.update(info)
    branch = _train_face_branch(opts, faces, data, oof, metrics, tick) if faces is not None else None
    extra = _export_metadata(metrics, len(data), opts.config)
    path = export_onnx(model, opts.out, name=opts.name, extra=extra)
    _save_face_branch(branch, Path(path), metrics)
    return {"model": str(path), "metrics": metrics, "skipped": arr.errors}


def _check_face_options(opts: TrainOptions) -> None:
    if opts.face_net and not opts.face_branch:
        raise ValueError(FACE_NET_NEEDS_BRANCH)
    if opts.face_branch and not opts.folds:
        raise ValueError(FACE_BRANCH_NEEDS_FOLDS)


def _training_images(opts: TrainOptions) -> ImageArray:
    """The training images at the model's resize side: files through the cache, or ``opts.sources``."""
    side = resize_side(opts.config.input_size)
    if opts.sources is None:
        return load_images_cached(opts.data.paths, side, opts.cache_dir)
    return load_images(opts.sources, side, names=opts.data.paths)


def _training_faces(
    opts: TrainOptions, pixels: np.ndarray, data: ScoredImages, use_folds: bool, tick: Tick | None
) -> _Faces:
    """The face branch's embeddings, computed (and too few faces refused) before any training."""
    if not use_folds:
        raise ValueError(FACE_BRANCH_NEEDS_FOLDS + f" (these {len(data)} images have too few folds)")
    faces = _face_embeddings(pixels, opts.config.input_size, tick, chips=opts.face_net)
    from doohable.model.face.fit import require_faces

    require_faces(~np.isnan(faces.plain).any(axis=1), data.folds)
    return faces


def _train_face_branch(
    opts: TrainOptions,
    faces: _Faces,
    data: ScoredImages,
    oof: np.ndarray | None,
    metrics: dict[str, Any],
    tick: Tick | None,
) -> Any:
    """The face branch fitted on the CNN's out-of-fold predictions (with the face network
    where asked); ``metrics["face_branch"]`` reports it."""
    if oof is None:
        raise ValueError(FACE_BRANCH_NEEDS_FOLDS)
    branch, metrics["face_branch"] = _fit_face_branch(faces, data, oof)
    if opts.face_net:
        report = metrics["face_branch"]
        branch = _add_face_net(branch, faces, data, oof, opts.face_net_epochs, report, tick)
    return branch


def _export_metadata(metrics: dict[str, Any], n_images: int, cfg: T.FinetuneConfig) -> dict[str, Any]:
    """The exported model's extra metadata: how it was trained and its CV figures."""
    return {
        "training": json.dumps({"mode": metrics["mode"], "n_images": n_images, "config": asdict(cfg)}),
        **(
            {"cv_pearson": metrics["cv"]["pearson"]["mean"], "cv_rmse": metrics["cv"]["rmse"]["mean"]}
            if "cv" in metrics
            else {}
        ),
    }


def _save_face_branch(branch: Any, model_path: Path, metrics: dict[str, Any]) -> None:
    """Save the branch beside the model, or remove an earlier model's branch left there."""
    sidecar = face_branch_path(model_path)
    if branch is not None:
        branch.save(sidecar)
        metrics["face_branch"]["path"] = str(sidecar)
    elif sidecar.is_file():
        sidecar.unlink()  # an earlier model's face branch: its weight was chosen for that CNN
        metrics["removed_stale_face_branch"] = str(sidecar)


@dataclass
class _Faces:
    """The training images' face descriptors (``FaceEmbedder.embed_pairs``) and, for a face
    network, their chips and pooled features (``face_train.chip_pairs`` / ``chip_embeddings``)."""

    plain: np.ndarray
    flipped: np.ndarray
    chips: np.ndarray | None = None
    found: np.ndarray | None = None
    pooled: np.ndarray | None = None


def _face_embeddings(pixels: np.ndarray, input_size: int, tick: Tick | None, *, chips: bool) -> _Faces:
    """Face descriptors of the training images' prepared centre crops and of their mirror
    images; ``chips``: keep the chips too (~0.4 MB an image) and the pooled features."""
    from doohable.model.face.embed import DEFAULT_PADDINGS, FaceEmbedder

    crops = [center_crop(p, input_size) for p in pixels]

    def ticker(what: str) -> Callable[[int, int], None]:
        def on(done: int, total: int) -> None:
            if tick:
                tick(what, done, total)

        return on

    emb = FaceEmbedder(DEFAULT_PADDINGS)
    if not chips:
        return _Faces(*emb.embed_pairs(crops, tick=ticker("face embeddings")))
    from doohable.model.face.train import chip_embeddings, chip_pairs

    c, found = chip_pairs(emb, crops, tick=ticker("face chips"))
    plain, flipped, pooled = chip_embeddings(c, found, DEFAULT_PADDINGS, tick=ticker("face embeddings"))
    return _Faces(plain, flipped, c, found, pooled)


def _fit_face_branch(faces: _Faces, data: ScoredImages, oof: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """Fit the face branch on the CV's out-of-fold CNN predictions; (branch, report)."""
    from doohable.model.face.embed import DEFAULT_PADDINGS
    from doohable.model.face.fit import blend_oof, fit_face_branch

    plain, flipped = faces.plain, faces.flipped
    found = ~np.isnan(plain).any(axis=1)
    branch = fit_face_branch(
        plain,
        flipped,
        data.scores,
        oof,
        data.folds,
        metadata={"training": f"doohable train: {int(found.sum())} of {len(data)} images with a face"},
        paddings=DEFAULT_PADDINGS,
        calibrate=True,
    )
    gamma, alpha = float(branch.metadata["gamma"]), float(branch.metadata["alpha"])
    blend = blend_oof(
        plain,
        flipped,
        data.scores,
        oof,
        data.folds,
        mirror=branch.mirror,
        gamma=gamma,
        alpha=alpha,
        weight=branch.weight,
        calibration=branch.calibration,
    )
    ok = np.isfinite(oof)
    cnn_m = regression_metrics(data.scores[ok], oof[ok], data.scale)
    blend_m = regression_metrics(data.scores[ok], blend[ok], data.scale)
    report = {
        "faces_found": int(found.sum()),
        "n_images": len(data),
        "mirror": branch.mirror,
        "paddings": list(branch.paddings),
        "gamma": gamma,
        "alpha": alpha,
        "weight": branch.weight,
        "calibration": list(branch.calibration),
        "cv_cnn": {"pearson": cnn_m["pearson"], "rmse": cnn_m["rmse"]},
        "cv_blend": {"pearson": blend_m["pearson"], "rmse": blend_m["rmse"]},
        "note": "cv_*: pooled out-of-fold predictions of the CV above (the blend: the CNN's where no "
        "face is found); the face branch's values were chosen on these same folds, so cv_blend is "
        "optimistic (benchmarks/recipes/bench_face_branch.py measures it with nested CV)",
    }
    return branch, report


def _add_face_net(
    branch: Any, faces: _Faces, data: ScoredImages, oof: np.ndarray, epochs: int,
    report: dict[str, Any], tick: Tick | None,
) -> Any:
    """The branch with dlib's face network fine-tuned for it and the stack (``face_train``);
    ``report`` gains the stack and its out-of-fold figures (``cv_stack``, optimistic as
    ``cv_blend``)."""
    from doohable.model.face.train import add_face_net, face_net_oof, net_target

    assert faces.chips is not None and faces.found is not None
    y, folds = data.scores, data.folds

    def on_epoch(what: str, epoch: int, total: int, rmse: float) -> None:
        if tick:
            tick(f"face network {what}", epoch, total)

    target = net_target(y, oof)
    net_oof = face_net_oof(faces.chips, faces.found, target, folds, epochs=epochs, progress=on_epoch)
    branch, stacked = add_face_net(
        branch, faces.plain, faces.flipped, faces.pooled, faces.chips, faces.found, y, oof, folds, net_oof,
        epochs=epochs, progress=on_epoch,
    )
    ok = np.isfinite(stacked)
    m = regression_metrics(y[ok], stacked[ok], data.scale)
    assert branch.stack is not None
    report |= {
        "stack": list(branch.stack),
        "stack_terms": ["intercept", "cnn", "face", "net", *(["pooled"] if branch.pooled else [])],
        "face_net": branch.metadata["face_net"],
        "net_onnx_vs_torch": float(branch.metadata["net_onnx_vs_torch"]),
        "cv_stack": {"pearson": m["pearson"], "rmse": m["rmse"]},
    }
    return branch


def _head_only(
    opts: TrainOptions,
    pixels: np.ndarray,
    data: ScoredImages,
    kept: np.ndarray,
    use_folds: bool,
    tick: Tick | None,
) -> tuple[Any, dict[str, Any]]:
    cfg = opts.config
    T.seed_everything(cfg.seed)  # the head's first weights are drawn here: same seed, same model
    model = build_model(
        cfg.backbone, cfg.head, scale=data.scale, input_size=cfg.input_size, dropout=cfg.dropout
    )
    fpath = _feature_cache(opts, pixels)
    if fpath is not None and fpath.is_file():
        feats = np.load(fpath)
    else:
        done = [0]

        def on_batch(n: int) -> None:
            done[0] += n
            if tick:
                tick("features", done[0], len(pixels))

        feats = T.extract_features(model, pixels, device=T.pick_device(opts.device), on_batch=on_batch)
        if fpath is not None:
            fpath.parent.mkdir(parents=True, exist_ok=True)
            np.save(fpath, feats)
    info: dict[str, Any] = {}
    if opts.pairs is not None and opts.pair_ids is not None:
        pos = {int(opts.pair_ids[k]): j for j, k in enumerate(kept)}
        keep = [
            (pos[w], pos[lo])
            for w, lo in zip(opts.pairs.winners, opts.pairs.losers, strict=True)
            if int(w) in pos and int(lo) in pos
        ]
        if not keep:
            raise ValueError("no vote pair has both images decodable")
        wi, li = (np.asarray(v) for v in zip(*keep, strict=True))
        hist = T.fit_head_pairs(model, feats, wi, li, epochs=opts.head_epochs, seed=cfg.seed)
        pred = T.head_scores(model, feats)
        info["train"] = {
            "pairs": len(wi),
            "pair_accuracy": float(np.mean(pred[wi] > pred[li])),
            "final_loss": hist[-1],
        }
        return model, info
    if use_folds:
        cv = T.cross_validate_head(
            model, feats, data.scores, data.folds, epochs=opts.head_epochs, seed=cfg.seed
        )
        info.update(cv=cv.summary, folds=cv.folds, cv_seconds=cv.seconds, oof=cv.oof)
    T.fit_head(model, feats, data.scores, epochs=opts.head_epochs, seed=cfg.seed)
    info["train"] = regression_metrics(data.scores, T.head_scores(model, feats), data.scale)
    return model, info


def _finetune(
    opts: TrainOptions, pixels: np.ndarray, data: ScoredImages, use_folds: bool, tick: Tick | None
) -> tuple[Any, dict[str, Any]]:
    cfg = replace(opts.config, scale=data.scale)
    dev = T.pick_device(opts.device)

    def progress(stage: str, done: int, total: int, info: dict[str, float]) -> None:
        if tick:
            tick(stage, done, total)

    info: dict[str, Any] = {"device": str(dev)}
    epochs = cfg.epochs
    if use_folds:
        cv = T.cross_validate(
            cfg,
            pixels,
            data.scores,
            data.folds,
            device=dev,
            checkpoint_dir=opts.checkpoint_dir,
            progress=progress,
        )
        info.update(cv=cv.summary, folds=cv.folds, cv_seconds=cv.seconds, oof=cv.oof)
        epochs = max(1, int(np.median([r["best_epoch"] + 1 for r in cv.folds])))
    ck = opts.checkpoint_dir / f"{cfg.backbone}-final.pt" if opts.checkpoint_dir else None
    fit = T.finetune(
        replace(cfg, epochs=epochs), pixels, data.scores, device=dev, checkpoint=ck, progress=progress
    )
    info["final_epochs"] = epochs
    info["train_seconds"] = fit.seconds
    fit.model.to(dev)
    info["train"] = regression_metrics(
        data.scores, T.predict(fit.model, torch.from_numpy(pixels)), data.scale
    )
    return fit.model, info


def evaluate_job(
    model: str | None,
    data: ScoredImages,
    *,
    report: Path | None = None,
    cv_json: list[Path] | None = None,
    image_dir: Path | None = None,
    sources: list[str | bytes] | None = None,
    tick: Tick | None = None,
) -> dict[str, Any]:
    """Score ``data`` with an exported model and compute every metric; optionally an HTML report
    that also shows k-fold runs saved as ``cv_*.json``."""
    scorer = load_any(model)
    done = [0]

    def on_progress(n: int) -> None:
        done[0] += n
        if tick:
            tick("scoring", done[0], len(data))

    ev: Evaluation = score_dataset(scorer, data, sources=sources, on_progress=on_progress)
    out = ev.metrics()
    if report is not None:
        runs = [
            Run(f"{scorer.name} ({Path(scorer.path).name})", ev.y_true, ev.y_pred, ev.paths, scale=ev.scale)
        ]
        for p in cv_json or []:
            runs.append(run_from_cv_json(f"{Path(p).stem} (out-of-fold)", p, image_dir))
        build_report(
            report,
            runs,
            title="doohable scorer evaluation",
            notes=f"model {scorer.name}@{scorer.version}, {len(ev.y_true)} images",
        )
        out["report"] = str(report)
    return out


def labelled_scut(root: Path, *, fold: int | None = None, limit: int | None = None) -> ScoredImages:
    """SCUT-FBP5500-layout labels, optionally one fold only."""
    data = load_scut(root, limit=limit)
    return data if fold is None else data.subset(np.flatnonzero(data.folds == fold))
