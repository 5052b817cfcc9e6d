"""Headline: votes per image the best strategy needs to match ``report`` at 20 votes/image.

N = 1,000 images, voter accuracy 0.75, 10% spammers (plus the simulator's default left
bias 0.2 and Beta(9, 1) reliabilities), the same campaigns (seeds) for every strategy.
The baseline (``report`` + Elo at 20 votes/image) is measured in the same run.

    nice -n 10 .venv/bin/python benchmarks/research/simulate_headline.py --seeds 20 --out headline.json
"""

from __future__ import annotations

import argparse
import json
import time

from doohable.ranking.simulate import CrowdConfig, simulate

CHECKPOINTS = [4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]


def crossing(curve: list[dict], level: float) -> float | None:
    """Votes per image where the mean accuracy curve reaches ``level`` (linear interpolation)."""
    pts = [(c["votes_per_image"], c["pairwise_accuracy"]["mean"]) for c in curve]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if y0 < level <= y1:
            return x0 + (level - y0) * (x1 - x0) / (y1 - y0)
    return pts[0][0] if pts[0][1] >= level else None


def fmt(s: dict) -> str:
    return f"{s['mean']:.4f} [{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--strategies", default="active,threshold")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    crowd = CrowdConfig(voter_accuracy=0.75, spammers=0.1)
    t0 = time.time()
    base = simulate("report", args.images, 20.0, crowd, args.seeds, "elo", extra_ratings=("crowd",))
    target = base.summary()["pairwise_accuracy"]["mean"]
    out: dict = {"seeds": args.seeds, "images": args.images, "baseline": base.to_json(),
                 "baseline_with_crowd_bt": base.summary("crowd")}
    print(f"baseline report+elo @20: accuracy {fmt(base.summary()['pairwise_accuracy'])}, "
          f"top third {fmt(base.summary()['top_third_precision'])}", flush=True)
    print(f"  (same votes ranked by crowd BT: {fmt(base.summary('crowd')['pairwise_accuracy'])})", flush=True)
    for name in args.strategies.split(","):
        res = simulate(name, args.images, max(CHECKPOINTS), crowd, args.seeds, None, CHECKPOINTS)
        doc = res.to_json()
        need = crossing(doc["curve"], target)
        at8 = res.summary(votes_per_image=8.0)
        out[name] = {"result": doc, "votes_per_image_to_match": need}
        print(f"{name}+{res.rating}: reaches {target:.4f} at {need} votes/image; @8: accuracy "
              f"{fmt(at8['pairwise_accuracy'])}, top third {fmt(at8['top_third_precision'])}", flush=True)
        for c in doc["curve"]:
            print(f"   {c['votes_per_image']:>5.1f}  acc {fmt(c['pairwise_accuracy'])}  "
                  f"top3 {fmt(c['top_third_precision'])}", flush=True)
    out["seconds"] = time.time() - t0
    print(f"{out['seconds']:.0f} s", flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
