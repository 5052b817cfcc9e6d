"""Partial fine-tuning of EfficientNet-Lite0 for photo quality on live-challenge, on the CPU.

The frozen part of the network (stem .. block ``--freeze``) runs once per photo and per mirror
image; its output activations (fp16) and the multi-level pooled features (MLSP, the
``photo`` models' features) of its taps are cached. Only the tail (the later blocks and the
head conv) is trained, with the linear regression head of the ``photo`` models warm-started
from ridge on the frozen network's features (its penalty chosen by the inner CV of the training
part, as in ``photo_train.nested_cv``). One fixed recipe, declared before the run (``--epochs``,
``--lr``, ``--batch``): no setting is chosen on a test fold. The batch norms keep their
ImageNet statistics (eval mode); each step sees the photo or its mirror at random.

Reported: nested 5-fold CV on the fixed folds (SRCC, PLCC, RMSE on the MOS scale), for the
warm start alone (the frozen model) and after fine-tuning, per fold.

    PYTHONPATH=src:benchmarks/measure nice .venv/bin/python benchmarks/research/photo_finetune.py \\
        --policy native-crop224 --freeze 10 --epochs 6 --json-out /tmp/finetune.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from photo_features import POLICIES, cached, crops
from torch import nn

from doohable.model import photo
from doohable.model import photo_train as pt


def frozen_pass(net: photo.MultiLevel, pixels: np.ndarray, freeze: int, batch: int = 8) -> tuple:
    """Activations after block ``freeze`` (fp16) and pooled features of the taps up to it."""
    eff = net.backbone.net
    acts, pooled = [], []
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            x = net.backbone.normalize(torch.from_numpy(pixels[i : i + batch]).permute(0, 3, 1, 2).float())
            x = eff._swish(eff._bn0(eff._conv_stem(x)))
            feats: list[torch.Tensor] = []
            for j, block in enumerate(eff._blocks[: freeze + 1]):
                x = block(x, drop_connect_rate=None)
                if j in net.taps:
                    feats += photo._mean_std(x)
            acts.append(x.half().numpy())
            pooled.append(torch.cat(feats, 1).numpy())
    return np.concatenate(acts), np.concatenate(pooled)


class Tail(nn.Module):
    """Blocks ``freeze+1..`` and the head conv of a Lite0 -> pooled features of their taps."""

    def __init__(self, net: photo.MultiLevel, freeze: int) -> None:
        super().__init__()
        eff = net.backbone.net
        self.first = freeze + 1
        self.blocks = nn.ModuleList(eff._blocks[self.first :])
        self.conv_head, self.bn1, self.act = eff._conv_head, eff._bn1, eff._swish
        self.taps = net.taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled: list[torch.Tensor] = []
        for j, block in enumerate(self.blocks, start=self.first):
            x = block(x, drop_connect_rate=None)
            if j in self.taps:
                pooled += photo._mean_std(x)
        pooled += photo._mean_std(self.act(self.bn1(self.conv_head(x))))
        return torch.cat(pooled, 1)


def tail_features(tail: Tail, acts: np.ndarray, batch: int = 32) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate(
            [tail(torch.from_numpy(acts[i : i + batch]).float()).numpy() for i in range(0, len(acts), batch)]
        )


def run_fold(
    base: Tail,
    acts: np.ndarray,
    pooled: np.ndarray,
    labels: photo.PhotoLabels,
    tr: np.ndarray,
    te: np.ndarray,
    inner: list,
    args: argparse.Namespace,
) -> dict:
    """Warm start (ridge on the frozen features) and fine-tuning on ``tr``; metrics on ``te``.
    ``acts``/``pooled`` hold 2N rows: the photos, then their mirror images."""
    n = len(labels)
    feats0 = np.concatenate([pooled[:n], tail_features(base, acts[:n])], 1)
    sub = labels.subset(tr)
    fit = pt.head_fitter("regression")
    grid = pt.GRIDS["regression"]
    l2 = pt.choose(
        feats0[tr], sub, fit, grid, [(np.searchsorted(tr, a), np.searchsorted(tr, b)) for a, b in inner]
    )
    head = photo.fit_head(feats0[tr], sub.mos, sub.std, "regression", l2)
    warm = pt.metrics(photo.score_to_mos(photo.predict_head(head, feats0[te])), labels.mos[te])
    tail = copy.deepcopy(base).train()
    for m in tail.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    opt = torch.optim.AdamW(
        [
            {"params": tail.parameters(), "lr": args.lr},
            {"params": head.parameters(), "lr": args.lr * args.head_mult},
        ],
        weight_decay=1e-4,
    )
    y = torch.from_numpy((photo.mos_to_score(labels.mos) - 1.0) / 4.0).float()
    rng = np.random.default_rng(0)
    steps = args.epochs * int(np.ceil(len(tr) / args.batch))
    max_lr = [args.lr, args.lr * args.head_mult]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=steps, pct_start=0.1)
    for _ in range(args.epochs):
        order = rng.permutation(tr)
        for i in range(0, len(order), args.batch):
            idx = order[i : i + args.batch]
            rows = idx + n * rng.integers(0, 2, len(idx))  # the photo or its mirror
            f = torch.cat([torch.from_numpy(pooled[rows]), tail(torch.from_numpy(acts[rows]).float())], 1)
            loss = ((head(f) - y[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    tail.eval()
    feats1 = np.concatenate([pooled[te], tail_features(tail, acts[te])], 1)
    tuned = pt.metrics(photo.score_to_mos(photo.predict_head(head, feats1)), labels.mos[te])
    # the head refitted by ridge (same penalty) on the tuned tail's features of the training part
    feats_tr = np.concatenate([pooled[tr], tail_features(tail, acts[tr])], 1)
    refit = photo.fit_head(feats_tr, sub.mos, sub.std, "regression", l2)
    refitted = pt.metrics(photo.score_to_mos(photo.predict_head(refit, feats1)), labels.mos[te])
    return {"l2": l2, "warm": warm, "tuned": tuned, "refit": refitted}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", default="native-crop224", choices=sorted(POLICIES))
    ap.add_argument("--freeze", type=int, default=10, help="last frozen block (10: the end of stage 5)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--head-mult", type=float, default=0.0, help="head learning rate / tail learning rate")
    ap.add_argument("--folds", type=int, nargs="*", default=None, help="outer folds to run (default all)")
    ap.add_argument(
        "--dev",
        action="store_true",
        help="recipe development: train on folds 3-5, test on fold 2 (fold 1 never seen)",
    )
    ap.add_argument("--cache", type=Path, default=Path(".cache/photo-features"))
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    labels = photo.load_live()
    net = photo.multilevel("efficientnet_lite0")
    assert isinstance(net, photo.MultiLevel)
    t0 = time.perf_counter()

    key = f"lite0-{args.policy}-freeze{args.freeze}-{len(labels)}"
    fa, fp = args.cache / f"acts-{key}.npz", args.cache / f"pooled-{key}.npz"
    if not (fa.is_file() and fp.is_file()):
        px = crops(labels, args.policy)
        a, p = frozen_pass(net, np.concatenate([px, px[:, :, ::-1]]), args.freeze)
        cached(fa, lambda: a)
        cached(fp, lambda: p)
    acts, pooled = cached(fa, lambda: None), cached(fp, lambda: None)
    print(f"frozen pass: {acts.shape} {pooled.shape} in {time.perf_counter() - t0:.0f} s", flush=True)
    base = Tail(net, args.freeze).eval()
    rows = []
    splits = pt.fold_splits(labels.folds)
    if args.dev:  # fold 1 never used: train on folds 3-5, test on fold 2
        keep = np.flatnonzero(labels.folds != 1)
        tr, te, inner = next(
            s for s in pt.fold_splits(labels.folds[keep]) if labels.folds[keep][s[1][0]] == 2
        )
        splits = [(keep[tr], keep[te], [(keep[a], keep[b]) for a, b in inner])]
    for tr, te, inner in splits:
        k = int(labels.folds[te[0]])
        if args.folds and k not in args.folds:
            continue
        t = time.perf_counter()
        r = {"fold": k, **run_fold(base, acts, pooled, labels, tr, te, inner, args)}
        r["seconds"] = round(time.perf_counter() - t, 1)
        print(json.dumps(r), flush=True)
        rows.append(r)
    summary = {
        which: {
            m: [float(np.mean([r[which][m] for r in rows])), float(np.std([r[which][m] for r in rows]))]
            for m in ("srcc", "plcc", "rmse")
        }
        for which in ("warm", "tuned", "refit")
    }
    out = {"config": {k: str(v) for k, v in vars(args).items()}, "folds": rows, "summary": summary}
    print(json.dumps(summary, indent=1))
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
