"""Training: a head on cached frozen features, and full fine-tuning with k-fold CV.

Library code only (the CLI in ``doohable.cli.model_cmds`` and ``benchmarks/`` call it). Images
arrive as uint8 (N, R, R, 3) arrays squashed to ``runtime.resize_side(S)``; they are put on the
training device once, and cropped/flipped there (NIMA augmentation: 256 -> random 224 crop,
horizontal flip, :mod:`doohable.model.device`), so an epoch on a GPU takes seconds.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from doohable.model.device import (
    autocast,
    cpu_bf16_supported,
    crop_batch,
    pick_device,
    predict,
    seed_everything,
)
from doohable.model.metrics import mean_std_table, regression_metrics
from doohable.model.scorer import ScoringModel, build_model

__all__ = [
    "CVResult", "FinetuneConfig", "FitResult", "Progress", "cpu_bf16_supported", "crop_batch",
    "cross_validate", "cross_validate_head", "extract_features", "finetune", "fit_head",
    "fit_head_pairs", "head_scores", "inner_split", "nn_param_count", "param_groups", "pick_device",
    "predict", "save_checkpoint", "seed_everything",
]

F = TypeVar("F", bound=Callable[..., Any])
Progress = Callable[[str, int, int, dict[str, float]], None]  # (stage, done, total, info)


# ---------------------------------------------------------------- head on cached features


@torch.no_grad()
def extract_features(
    model: ScoringModel,
    pixels: np.ndarray,
    *,
    batch: int = 64,
    device: torch.device | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Frozen backbone features (N, C) of uint8 (N, R, R, 3) images, centre-cropped."""
    dev = device or torch.device("cpu")
    model.to(dev).eval()
    feats = []
    for i in range(0, len(pixels), batch):
        xb = crop_batch(torch.from_numpy(pixels[i : i + batch]).to(dev), model.input_size, train=False)
        feats.append(model.features(xb).float().cpu())
        if on_batch:
            on_batch(len(xb))
    return torch.cat(feats).numpy()


def _single_threaded(fn: F) -> F:
    """Run ``fn`` with one torch thread: a linear head's tiny matrices gain nothing from more, and
    on a busy machine OpenMP threads waiting for each other made it 100x slower."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        old = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kw)
        finally:
            torch.set_num_threads(old)

    return wrapper  # type: ignore[return-value]


def _fit_minibatches(
    head: torch.nn.Module,
    n: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch: int,
    seed: int,
    cosine: bool,
) -> list[float]:
    """The head-only training loop: shuffled minibatches of ``range(n)``, AdamW, optional cosine.

    ``batch_loss(idx)`` is the mean loss of the rows ``idx``; returns the mean loss per epoch.
    """
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs) if cosine else None
    gen = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            loss = batch_loss(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        if sched:
            sched.step()
        history.append(total / n)
    head.eval()
    return history


@_single_threaded
def fit_head(
    model: ScoringModel,
    feats: np.ndarray,
    scores: np.ndarray,
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch: int = 128,
    seed: int = 0,
) -> list[float]:
    """Train ``model.head`` alone on frozen features (N, C) with its own loss; returns loss per epoch."""
    seed_everything(seed)
    head = model.head.cpu().train()
    x = torch.from_numpy(np.asarray(feats, np.float32))
    target = head.target_from_score(torch.from_numpy(np.asarray(scores, np.float32)))
    return _fit_minibatches(
        head,
        len(x),
        lambda idx: head.loss(head(x[idx]), target[idx]),
        epochs=epochs, lr=lr, weight_decay=weight_decay, batch=batch, seed=seed, cosine=True,
    )


@_single_threaded
def fit_head_pairs(
    model: ScoringModel,
    feats: np.ndarray,
    winners: np.ndarray,
    losers: np.ndarray,
    *,
    epochs: int = 300,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch: int = 512,
    seed: int = 0,
) -> list[float]:
    """Train a pairwise head on frozen features from raw votes (row indices of winner and loser)."""
    seed_everything(seed)
    head = model.head.cpu().train()
    x = torch.from_numpy(np.asarray(feats, np.float32))
    w, lo = torch.as_tensor(winners, dtype=torch.long), torch.as_tensor(losers, dtype=torch.long)
    return _fit_minibatches(
        head,
        len(w),
        lambda idx: head.pair_loss(head(x[w[idx]]), head(x[lo[idx]])),  # type: ignore[operator]
        epochs=epochs, lr=lr, weight_decay=weight_decay, batch=batch, seed=seed, cosine=False,
    )


def head_scores(model: ScoringModel, feats: np.ndarray) -> np.ndarray:
    """Scores of cached features through ``model.head``."""
    model.head.cpu().eval()
    with torch.no_grad():
        return model.head.to_score(model.head(torch.from_numpy(np.asarray(feats, np.float32)))).numpy()


# ---------------------------------------------------------------- full fine-tuning


@dataclass
class FinetuneConfig:
    """Hyper-parameters of full fine-tuning (defaults: chosen once, not tuned to the folds)."""

    backbone: str = "mobilenet_v2"
    head: str = "regression"
    input_size: int = 224
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3  # head learning rate
    backbone_lr: float = 5e-4  # learning rate of the backbone's top group
    layer_decay: float = 0.75  # each lower group gets this factor more
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    dropout: float = 0.2
    patience: int = 6  # early stopping: epochs without validation improvement
    val_fraction: float = 0.1  # inner validation split carved from the training images
    tta_flip: bool = True
    seed: int = 0
    scale: tuple[float, float] = (1.0, 5.0)
    # the lowest backbone layer groups kept frozen: at 224 px they hold most of the activations,
    # so freezing the first (stem + first blocks) makes a CPU step ~2x faster (docs/model.md)
    freeze_groups: int = 0
    cpu_bf16: bool = True  # bf16 autocast on CPUs with native bf16 (AVX512-BF16/AMX); CUDA always



@dataclass
class FitResult:
    """Outcome of one fine-tuning run."""

    model: ScoringModel
    best_epoch: int  # 0-based epoch whose weights were kept
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def param_groups(model: ScoringModel, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """Layer-wise learning rates: the head at ``lr``, backbone groups decaying from the top.

    The lowest ``cfg.freeze_groups`` groups are frozen (``requires_grad`` off, so backward
    stops above them) and left out of the optimiser.
    """
    groups = model.backbone.layer_groups()
    if not 0 <= cfg.freeze_groups < len(groups):
        raise ValueError(f"freeze_groups must be in 0..{len(groups) - 1}, got {cfg.freeze_groups}")
    for k, params in enumerate(groups):
        for p in params:
            p.requires_grad_(k >= cfg.freeze_groups)
    out: list[dict[str, Any]] = [{"params": list(model.head.parameters()), "lr": cfg.lr}]
    for depth, params in enumerate(reversed(groups[cfg.freeze_groups :])):
        out.append({"params": params, "lr": cfg.backbone_lr * cfg.layer_decay**depth})
    return out


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@dataclass
class _Run:
    """What a fine-tuning run carries from epoch to epoch, and saves in its checkpoint."""

    cfg: FinetuneConfig
    model: ScoringModel
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    gen: torch.Generator
    state: dict[str, Any]

    @classmethod
    def start(cls, cfg: FinetuneConfig, model: ScoringModel, steps_per_epoch: int) -> _Run:
        """AdamW on :func:`param_groups`, linear warm-up then cosine, a seeded crop generator."""
        total = steps_per_epoch * cfg.epochs
        opt = torch.optim.AdamW(param_groups(model, cfg), weight_decay=cfg.weight_decay)
        warm = int(cfg.warmup_epochs * steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total, warm))
        gen = torch.Generator().manual_seed(cfg.seed)
        state = {"epoch": 0, "history": [], "best": None, "best_epoch": -1, "best_rmse": math.inf}
        return cls(cfg, model, opt, sched, gen, state)

    def resume(self, path: Path) -> None:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved["cfg"] != asdict(self.cfg):
            raise ValueError(f"{path} was written with other settings; remove it or use another path")
        self.model.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["opt"])
        self.sched.load_state_dict(saved["sched"])
        self.gen.set_state(saved["gen"])
        torch.set_rng_state(saved["torch_rng"])  # dropout draws from the global generator
        self.state = saved["state"]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "cfg": asdict(self.cfg),
                "model": self.model.state_dict(),
                "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(),
                "gen": self.gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "state": self.state,
            },
            path,
        )

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, steps: int, dev: torch.device) -> float:
        """``steps`` shuffled batches of random crops and flips; returns the mean training loss."""
        cfg, model = self.cfg, self.model
        model.train()
        perm = torch.randperm(len(x), generator=self.gen)
        run_loss = torch.zeros((), device=dev)
        for s in range(steps):
            idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size].to(dev)
            xb = crop_batch(x[idx], cfg.input_size, train=True, gen=self.gen)
            xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(dev, cfg.cpu_bf16):
                out = model(xb)
            loss = model.head.loss(out.float(), y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            run_loss += loss.detach()
        return float(run_loss) / steps

    def validate(self, epoch: int, vx: torch.Tensor, val_scores: np.ndarray) -> dict[str, float]:
        """Validation metrics of this epoch; its weights are kept when its RMSE is the best yet."""
        m = regression_metrics(val_scores, predict(self.model, vx), self.cfg.scale)
        if m["rmse"] < self.state["best_rmse"]:
            best = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self.state.update(best_rmse=m["rmse"], best_epoch=epoch, best=best)
        return {"val_rmse": m["rmse"], "val_pearson": m["pearson"], "val_mae": m["mae"]}

    def stop_early(self, epoch: int) -> bool:
        return epoch - int(self.state["best_epoch"]) >= self.cfg.patience

    def finish(self, t0: float) -> FitResult:
        """The model on the CPU with the best validation epoch's weights (the last without one)."""
        state = self.state
        if state["best"] is not None:
            self.model.load_state_dict(state["best"])
        best_epoch = state["best_epoch"] if state["best"] is not None else state["epoch"] - 1
        self.model.cpu().eval()
        return FitResult(self.model, best_epoch, state["history"], time.perf_counter() - t0)


def finetune(
    cfg: FinetuneConfig,
    train_pixels: np.ndarray,
    train_scores: np.ndarray,
    val_pixels: np.ndarray | None = None,
    val_scores: np.ndarray | None = None,
    *,
    device: torch.device | None = None,
    checkpoint: str | Path | None = None,
    progress: Progress | None = None,
    model: ScoringModel | None = None,
) -> FitResult:
    """Fine-tune backbone + head; keep the weights of the best validation epoch.

    Without a validation set the last epoch is kept. With ``checkpoint``, state is saved after
    every epoch and a later call with the same path resumes where it stopped.
    """
    dev = device or pick_device()
    seed_everything(cfg.seed)
    if model is None:
        model = build_model(
            cfg.backbone, cfg.head, scale=cfg.scale, input_size=cfg.input_size, dropout=cfg.dropout,
            tta_flip=cfg.tta_flip,
        )
    model.to(dev)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # faster on CPU and GPU
    x = torch.from_numpy(train_pixels).to(dev)
    y = model.head.target_from_score(torch.from_numpy(np.asarray(train_scores, np.float32))).to(dev)
    vx = torch.from_numpy(val_pixels) if val_pixels is not None and len(val_pixels) else None
    steps = max(1, len(x) // cfg.batch_size)  # drop the last partial batch (BatchNorm)
    run = _Run.start(cfg, model, steps)
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and ckpt.is_file():
        run.resume(ckpt)
    t0 = time.perf_counter()
    for epoch in range(run.state["epoch"], cfg.epochs):
        rec: dict[str, float] = {"epoch": epoch, "train_loss": run.train_epoch(x, y, steps, dev)}
        if vx is not None and val_scores is not None:
            rec.update(run.validate(epoch, vx, val_scores))
        run.state["history"].append(rec)
        run.state["epoch"] = epoch + 1
        if ckpt:
            run.save(ckpt)
        if progress:
            progress("epoch", epoch + 1, cfg.epochs, rec)
        if vx is not None and run.stop_early(epoch):
            break
    return run.finish(t0)


def inner_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, validation) index split of ``range(n)``; validation has ``fraction`` of it."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    k = int(round(n * fraction))
    return np.sort(perm[k:]), np.sort(perm[:k])


@dataclass
class CVResult:
    """k-fold cross-validation: per-fold metrics, their mean +- std, out-of-fold predictions."""

    folds: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]
    oof: np.ndarray  # out-of-fold predicted score per image (NaN where not predicted)
    histories: list[list[dict[str, float]]]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "folds": self.folds,
            "summary": self.summary,
            "oof": [float(v) for v in self.oof],
            "histories": self.histories,
            "seconds": self.seconds,
        }


def cross_validate(
    cfg: FinetuneConfig,
    pixels: np.ndarray,
    scores: np.ndarray,
    folds: np.ndarray,
    *,
    only_folds: list[int] | None = None,
    device: torch.device | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> CVResult:
    """Fine-tune on all folds but one, test on it, for each fold (the data's fixed split).

    Early stopping uses an inner validation split of the training folds, never the test fold.
    """
    t0 = time.perf_counter()
    oof = np.full(len(scores), np.nan)
    rows, histories = [], []
    for k in only_folds or sorted({int(f) for f in folds}):
        test = np.flatnonzero(folds == k)
        train_all = np.flatnonzero(folds != k)
        tr, va = inner_split(len(train_all), cfg.val_fraction, cfg.seed + k)
        tr, va = train_all[tr], train_all[va]
        ck = Path(checkpoint_dir) / f"{cfg.backbone}-fold{k}.pt" if checkpoint_dir else None
        fit = finetune(
            cfg,
            pixels[tr],
            scores[tr],
            pixels[va],
            scores[va],
            device=device,
            checkpoint=ck,
            progress=progress,
        )
        fit.model.to(device or pick_device())
        pred = predict(fit.model, torch.from_numpy(pixels[test]))
        oof[test] = pred
        row = {
            "fold": k,
            **regression_metrics(scores[test], pred, cfg.scale),
            "best_epoch": fit.best_epoch,
            "seconds": fit.seconds,
        }
        rows.append(row)
        histories.append(fit.history)
        if progress:
            progress("fold", k, len(set(folds.tolist())), {"pearson": row["pearson"], "rmse": row["rmse"]})
    return CVResult(rows, mean_std_table(rows), oof, histories, time.perf_counter() - t0)


def cross_validate_head(
    model: ScoringModel, feats: np.ndarray, scores: np.ndarray, folds: np.ndarray, **fit_kw: Any
) -> CVResult:
    """k-fold CV of a head on cached frozen features (no fine-tuning)."""
    t0 = time.perf_counter()
    oof = np.full(len(scores), np.nan)
    rows, histories = [], []
    for k in sorted({int(f) for f in folds}):
        test, train = folds == k, folds != k
        m = copy.deepcopy(model)
        hist = fit_head(m, feats[train], scores[train], **fit_kw)
        pred = head_scores(m, feats[test])
        oof[test] = pred
        rows.append({"fold": k, **regression_metrics(scores[test], pred, model.scale)})
        histories.append([{"epoch": i, "train_loss": v} for i, v in enumerate(hist)])
    return CVResult(rows, mean_std_table(rows), oof, histories, time.perf_counter() - t0)


def save_checkpoint(model: ScoringModel, path: str | Path, **meta: Any) -> Path:
    """Save ``{"config", "state_dict", **meta}`` (rebuild with ``scorer.model_from_checkpoint``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.config(), "state_dict": model.state_dict(), **meta}, path)
    return path


def nn_param_count(module: nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())
