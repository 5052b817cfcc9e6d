"""The photo quality candidates' accuracy-speed curve: SRCC (nested CV, fixed folds) against
CPU-ms per image, from ``benchmarks/results/photo-candidates.json`` (the table of
docs/benchmarks.md), to ``docs/figures/photo-accuracy-speed.png``.

    .venv/bin/python benchmarks/measure/plot_photo_candidates.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MARKERS = {"squash-224": "s", "native-crop224": "o", "native-crop320": "^", "native-full500": "D"}


def main() -> None:
    doc = json.loads((ROOT / "benchmarks" / "results" / "photo-candidates.json").read_text())
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    colours = {"mobilenet_v2": "tab:blue", "efficientnet_lite0": "tab:orange",
               "efficientnet_lite0+mobilenet_v2": "tab:purple"}  # fmt: skip
    for row in doc["rows"]:
        if row["cpu_ms"] is None:
            ax.axhline(row["srcc"], color="grey", lw=0.8, ls=":")
            ax.text(10.5, row["srcc"] + 0.003, f"{row['name']} {row['srcc']:.3f}", fontsize=8, color="grey")
            continue
        shipped = "shipped" in row
        marker = "*" if shipped else MARKERS[row["policy"]]
        ax.errorbar(row["cpu_ms"], row["srcc"], yerr=row["srcc_std"], fmt=marker, ms=14 if shipped else 7,
                    color=colours[row["backbone"]], capsize=2,
                    label=f"{row['name']}: {row['srcc']:.3f}")  # fmt: skip
    for name, (srcc, _) in doc["published"].items():
        if name != "BRISQUE":
            ax.axhline(srcc, color="green", lw=0.8, ls="--")
            ax.text(10.5, srcc - 0.009, f"published {name} {srcc:.3f}", fontsize=8, color="green")
    ax.axhline(doc["targets"]["srcc"], color="red", lw=1)
    ax.text(10.5, doc["targets"]["srcc"] + 0.004, f"target {doc['targets']['srcc']}", fontsize=8, color="red")
    ax.set_xscale("log")
    ax.set_xlim(10, 400)
    ax.set_ylim(0.55, 0.9)
    ax.set_xlabel("CPU-ms per image (ONNX Runtime, 2 threads, batch 16, shared 2-core AMD EPYC)")
    ax.set_ylabel("SRCC, nested 5-fold CV (fixed folds), mean ± std")
    ax.set_title("live-challenge: photo quality candidates (stars: shipped photo, photo-hq)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, title="backbone, input policy (head): SRCC", title_fontsize=8)
    out = ROOT / "docs" / "figures" / "photo-accuracy-speed.png"
    fig.tight_layout()
    fig.savefig(out)
    print(out)


if __name__ == "__main__":
    main()
