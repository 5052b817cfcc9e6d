"""CPU fine-tuning time: time a few real training steps, extrapolate to an epoch and a run.

Usage:
    python benchmarks/measure/bench_train_cpu_epoch.py [--backbone mobilenet_v2] [--steps 4] \
        [--batch 64] [--ab]

``--ab`` times the CPU recipe's parts one by one in the same run (fp32 NCHW, channels_last,
+ bf16 autocast, + the lowest layer group frozen), on random pixels.

Runs ``train.finetune``'s step (crop + flip, forward, MSE, backward, AdamW) on real SCUT images
with the settings the shipped model used, and prints seconds per step, the extrapolated epoch
on 4,400 images, and the extrapolated final run (17 epochs) and 4-fold CV (4 x 20 epochs on
3,960 images). The GPU figures (H200) are printed by bench_train_finetune.py.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from doohable.datasets import scut_fbp5500
from doohable.model.data import load_images, load_scut
from doohable.model.preprocess import resize_side
from doohable.model.scorer import build_model
from doohable.model.train import FinetuneConfig, crop_batch, param_groups

SCUT = scut_fbp5500()


def ab(batch: int, steps: int) -> None:
    """Step time of each part of the CPU recipe, baseline first, in one run."""
    from doohable.model.train import cpu_bf16_supported

    for name, cl, bf16, freeze in (
        ("fp32, NCHW (baseline)", False, False, 0),
        ("channels_last", True, False, 0),
        ("channels_last + bf16 autocast", True, True, 0),
        ("channels_last + bf16 + lowest group frozen (the CPU recipe)", True, True, 1),
    ):
        cfg = FinetuneConfig(batch_size=batch, freeze_groups=freeze)
        model = build_model(cfg.backbone, cfg.head).train()
        opt = torch.optim.AdamW(param_groups(model, cfg), weight_decay=cfg.weight_decay)
        fmt = torch.channels_last if cl else torch.contiguous_format
        model = model.to(memory_format=fmt)  # type: ignore[call-overload]
        x = (torch.rand(batch, 3, cfg.input_size, cfg.input_size) * 255).contiguous(memory_format=fmt)
        y = torch.rand(batch)
        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and cpu_bf16_supported()):
                out = model(x)
            loss = model.head.loss(out.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:
                times.append(time.perf_counter() - t0)
        print(f"{name}: {np.median(times):.2f} s/step", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ab", action="store_true", help="time the CPU recipe's parts, baseline first")
    args = ap.parse_args()
    if args.ab:
        ab(args.batch, args.steps)
        return
    cfg = FinetuneConfig(backbone=args.backbone, batch_size=args.batch)
    data = load_scut(SCUT, limit=args.batch // 4 + 1)
    pix = torch.from_numpy(load_images(data.paths, resize_side(cfg.input_size)).pixels[: args.batch])
    y = torch.from_numpy(((data.scores[: args.batch] - 1) / 4).astype(np.float32))
    model = build_model(cfg.backbone, cfg.head).train()
    opt = torch.optim.AdamW(param_groups(model, cfg), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(args.steps + 1):  # the first step warms up and is not counted
        t0 = time.perf_counter()
        loss = model.head.loss(model(crop_batch(pix, cfg.input_size, train=True, gen=gen)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    step = float(np.median(times))
    per_epoch = step * 4400 / args.batch
    print(
        f"{args.backbone}: {step:.2f} s/step at batch {args.batch} on {torch.get_num_threads()} threads "
        f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})"
    )
    print(
        f"extrapolated: epoch on 4,400 images {per_epoch / 60:.1f} min; final model (17 epochs) "
        f"{17 * per_epoch / 60:.0f} min; 4-fold CV (4 x 20 epochs x 3,960 images) "
        f"{80 * per_epoch * 3960 / 4400 / 3600:.1f} h (plus evaluation passes)"
    )


if __name__ == "__main__":
    main()
