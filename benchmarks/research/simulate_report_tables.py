"""The report's simulation tables (section 2.2), reproduced with its Elo and its scheduler.

1. Calibrate the noise: the voter accuracy at which Elo + random pairs (less-drawn images
   favoured, i.e. ``report`` with 100% random) reaches the report's 0.7455 at 1,000 images
   and 20 votes per image.
2. Table (a): votes per image for 75% pairwise accuracy at 1,000..5,000 images.
3. Table (b): accuracy at 20 votes per image with 100/75/50/25% random pairs.

Voters here are the report's: identical, no spammers, no side bias.

    nice -n 10 .venv/bin/python benchmarks/research/simulate_report_tables.py --seeds 3 \
        --out report_tables.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from doohable.ranking.simulate import CrowdConfig, SimulationResult, simulate

REPORT_B = {1000: (0.745519, 0.784162, 0.751630, 0.644485), 2000: (0.751015, 0.801088, 0.738721, 0.662126),
            3000: (0.753457, 0.788264, 0.739679, 0.658771), 4000: (0.750251, 0.784343, 0.736300, 0.658590),
            5000: (0.748543, 0.779992, 0.737368, 0.650132)}
SHARES = (1.0, 0.75, 0.5, 0.25)


def crowd(acc: float) -> CrowdConfig:
    return CrowdConfig(voter_accuracy=acc, spammers=0.0, left_bias=0.0, reliability=None)


def accuracy_at(acc: float, n: int, v: float, share: float, seeds: int,
                checkpoints: list[float] | None = None) -> SimulationResult:
    return simulate("report", n, v, crowd(acc), seeds, "elo", checkpoints, random_share=share)


def calibrate(seeds: int, target: float = 0.745519) -> tuple[float, list[tuple[float, float]]]:
    """Voter accuracy giving ``target`` (secant steps on a smooth, increasing curve)."""
    grid = [0.56, 0.62]
    seen = []
    for a in grid:
        seen.append((a, accuracy_at(a, 1000, 20, 1.0, seeds).summary()["pairwise_accuracy"]["mean"]))
    for _ in range(3):
        (a0, f0), (a1, f1) = seen[-2], seen[-1]
        a2 = float(np.clip(a1 + (target - f1) * (a1 - a0) / (f1 - f0), 0.51, 0.95))
        seen.append((a2, accuracy_at(a2, 1000, 20, 1.0, seeds).summary()["pairwise_accuracy"]["mean"]))
        print(f"  calibration: voter accuracy {a2:.4f} -> pairwise accuracy {seen[-1][1]:.4f}", flush=True)
        if abs(seen[-1][1] - target) < 0.002:
            break
    return seen[-1][0], seen


def votes_for(curve: list[dict], level: float) -> float | None:
    """Votes per image where the mean curve first reaches ``level`` (linear interpolation)."""
    xs = [c["votes_per_image"] for c in curve]
    ys = [c["pairwise_accuracy"]["mean"] for c in curve]
    for k in range(1, len(xs)):
        if ys[k] >= level > ys[k - 1]:
            return xs[k - 1] + (level - ys[k - 1]) * (xs[k] - xs[k - 1]) / (ys[k] - ys[k - 1])
    return xs[0] if ys and ys[0] >= level else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sizes", default="1000,2000,3000,4000,5000")
    ap.add_argument("--accuracy", type=float, default=None, help="skip calibration, use this voter accuracy")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t0 = time.time()
    if args.accuracy is None:
        acc, steps = calibrate(args.seeds)
    else:
        acc, steps = args.accuracy, []
    print(f"calibrated voter accuracy: {acc:.4f}", flush=True)
    out = {"voter_accuracy": acc, "calibration": steps, "seeds": args.seeds, "table_a": {}, "table_b": {}}
    for n in (int(s) for s in args.sizes.split(",")):
        row = []
        for share in SHARES:
            checkpoints = [float(v) for v in range(2, 31, 2)] if share == 1.0 else None
            budget = 30.0 if share == 1.0 else 20.0
            res = accuracy_at(acc, n, budget, share, args.seeds, checkpoints)
            s20 = res.summary(votes_per_image=20.0)["pairwise_accuracy"]
            row.append(s20)
            if share == 1.0:
                need = votes_for(res.to_json()["curve"], 0.75)
                out["table_a"][n] = need
                print(f"(a) {n} images: {need} votes/image for 75% accuracy (report: 20)", flush=True)
        out["table_b"][n] = row
        cells = "  ".join(f"{s['mean']:.4f} [{s['ci95'][0]:.3f},{s['ci95'][1]:.3f}] (report {r:.4f})"
                          for s, r in zip(row, REPORT_B[n], strict=True))
        print(f"(b) {n} images, 20 votes/image, 100/75/50/25% random: {cells}", flush=True)
    out["seconds"] = time.time() - t0
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
