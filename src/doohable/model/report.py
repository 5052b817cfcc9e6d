"""HTML evaluation report with embedded matplotlib figures (one self-contained file).

Inputs are plain data: :class:`Run` objects (true and predicted scores of one model, e.g.
out-of-fold predictions of a k-fold run, with optional per-fold metrics and learning curves).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from doohable.model.metrics import error_per_bin, regression_metrics, top_fraction_roc  # noqa: E402

REPORT_ROC = {"precision_positive": 0.89, "precision_negative": 0.95}  # the internship report, top third


@dataclass
class Run:
    """One model's predictions on labelled images (a k-fold run's out-of-fold ones, or a test)."""

    name: str
    y_true: np.ndarray
    y_pred: np.ndarray
    paths: list[str] = field(default_factory=list)
    folds: list[dict[str, Any]] = field(default_factory=list)  # per-fold metric rows
    histories: list[list[dict[str, float]]] = field(default_factory=list)  # per fold, per epoch
    scale: tuple[float, float] = (1.0, 5.0)


def run_from_cv_json(name: str, path: str | Path, image_dir: str | Path | None = None) -> Run:
    """A :class:`Run` from a ``cv_<backbone>.json`` written by ``benchmarks/bench_train_*``."""
    d = json.loads(Path(path).read_text())
    oof = np.asarray(d["oof"], float)
    ok = ~np.isnan(oof)
    scores = np.asarray(d["scores"], float)
    names = d.get("images") or []
    paths = [str(Path(image_dir) / f"{n}.jpg") if image_dir else n for n in names]
    return Run(
        name,
        scores[ok],
        oof[ok],
        [p for p, k in zip(paths, ok, strict=False) if k],
        d.get("folds", []),
        d.get("histories", []),
    )


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _learning_curves(run: Run) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for k, hist in enumerate(run.histories):
        ep = [h["epoch"] + 1 for h in hist]
        axes[0].plot(ep, [h["train_loss"] for h in hist], label=f"fold {k + 1}")
        if hist and "val_rmse" in hist[0]:
            axes[1].plot(ep, [h["val_rmse"] for h in hist], label=f"fold {k + 1}")
    axes[0].set(title=f"{run.name}: training loss", xlabel="epoch")
    axes[1].set(title="validation RMSE (1-5 scale)", xlabel="epoch")
    for a in axes:
        a.legend(fontsize=7)
    return _png(fig)


def _distributions(run: Run) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    bins = np.linspace(run.scale[0], run.scale[1], 33)
    axes[0].hist(run.y_pred, bins=bins, color="tab:orange")
    axes[0].set(title=f"{run.name}: predicted scores")
    axes[1].hist(run.y_true, bins=bins, color="tab:blue")
    axes[1].set(title="true scores")
    axes[2].scatter(run.y_true, run.y_pred, s=3, alpha=0.4)
    axes[2].plot(run.scale, run.scale, "k--", lw=1)
    axes[2].set(title="true vs predicted", xlabel="true", ylabel="predicted")
    return _png(fig)


def _error_bins(runs: Sequence[Run]) -> str:
    fig, ax = plt.subplots(figsize=(10, 3.4))
    width = 0.8 / max(1, len(runs))
    for i, r in enumerate(runs):
        eb = error_per_bin(r.y_true, r.y_pred, bins=10, scale=r.scale)
        ax.bar(np.arange(10) + i * width, [b["mae"] for b in eb], width, label=r.name)
    eb = error_per_bin(runs[0].y_true, runs[0].y_pred, bins=10, scale=runs[0].scale)
    ax.set_xticks(
        np.arange(10) + 0.4 - width / 2,
        [f"{b['lo']:.1f}-{b['hi']:.1f}\n(n={b['n']})" for b in eb],
        fontsize=7,
    )
    ax.set(title="mean absolute error per true-score bin (the report's 10-bin comparison)", ylabel="MAE")
    ax.legend(fontsize=7)
    return _png(fig)


def _roc(runs: Sequence[Run]) -> tuple[str, list[list[Any]]]:
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    rows = []
    for r in runs:
        roc = top_fraction_roc(r.y_true, r.y_pred)
        ax.plot(roc["fpr"], roc["tpr"], label=f"{r.name} (AUC {roc['auc']:.3f})")
        ax.plot(1 - roc["specificity"], roc["sensitivity"], "o")
        rows.append(
            [
                r.name,
                roc["threshold"],
                roc["auc"],
                roc["sensitivity"],
                roc["specificity"],
                roc["precision_positive"],
                roc["precision_negative"],
            ]
        )
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(title="ROC: finding the top third (dot: Youden)", xlabel="1 - specificity", ylabel="sensitivity")
    ax.legend(fontsize=7)
    rows.append(
        [
            "the report (DenseNet201)",
            "",
            "",
            "",
            "",
            REPORT_ROC["precision_positive"],
            REPORT_ROC["precision_negative"],
        ]
    )
    return _png(fig), rows


def _grid(run: Run, idx: np.ndarray, title: str) -> str:
    ims = [(run.paths[i], run.y_true[i], run.y_pred[i]) for i in idx if Path(run.paths[i]).is_file()]
    if not ims:
        return ""
    fig, axes = plt.subplots(1, len(ims), figsize=(1.8 * len(ims), 2.2))
    for ax, (p, t, pr) in zip(np.atleast_1d(axes), ims, strict=False):
        with Image.open(p) as im:
            ax.imshow(np.asarray(im.convert("RGB").resize((128, 128))))
        ax.set_title(f"pred {pr:.2f}\ntrue {t:.2f}", fontsize=7)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _png(fig)


_METRICS = ("pearson", "rmse", "mae", "spearman")


def _comparison(runs: Sequence[Run]) -> list[str]:
    comp = []
    for r in runs:
        m = regression_metrics(r.y_true, r.y_pred, r.scale)
        keys = ("n", "pearson", "spearman", "rmse", "mae", "rmse_normalised", "mae_normalised")
        comp.append([r.name, *(m[k] for k in keys)])
    return [
        "<h2>Backbone comparison (all predictions pooled)</h2>",
        _table(
            ["run", "n", "Pearson", "Spearman", "RMSE", "MAE", "RMSE (normalised)", "MAE (normalised)"], comp
        ),
        "<p>Published (SCUT-FBP5500, 5-fold): ResNeXt-50 PC 0.8997, RMSE 0.3017, MAE 0.2291; "
        "the report (DenseNet201) PC 0.90, RMSE 0.30, MAE 0.224.</p>",
    ]


def _fold_table(r: Run) -> list[str]:
    """Per-fold metrics, their mean and their standard deviation (0 with one fold)."""
    rows: list[list[Any]] = [
        [f["fold"], f["pearson"], f["rmse"], f["mae"], f.get("spearman", float("nan"))] for f in r.folds
    ]
    columns = {k: [f[k] for f in r.folds] for k in _METRICS}
    rows.append(["mean", *(float(np.mean(columns[k])) for k in _METRICS)])
    rows.append(["std", *(float(np.std(columns[k], ddof=1)) if len(r.folds) > 1 else 0.0 for k in _METRICS)])
    return [
        f"<h2>k-fold table: {html.escape(r.name)}</h2>",
        _table(["fold", "Pearson", "RMSE", "MAE", "Spearman"], rows),
    ]


def _roc_section(runs: Sequence[Run]) -> list[str]:
    roc_png, roc_rows = _roc(runs)
    headers = [
        "run", "threshold", "AUC", "sensitivity", "specificity", "precision (top third)", "precision (rest)"
    ]
    return ["<h2>Top third: ROC and the Youden threshold</h2>", roc_png, _table(headers, roc_rows)]


def _image_grids(main: Run) -> list[str]:
    order = np.argsort(main.y_pred)
    err = np.abs(main.y_pred - main.y_true)
    return [
        "<h2>Best- and worst-scored images</h2>",
        _grid(main, order[::-1][:8], "highest predicted scores"),
        _grid(main, order[:8], "lowest predicted scores"),
        _grid(main, np.argsort(err)[::-1][:8], "largest errors"),
    ]


def _write_page(path: str | Path, title: str, parts: list[str]) -> Path:
    style = (
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style>"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"{style}</head><body>{''.join(parts)}</body></html>"
    )
    return out


def build_report(
    path: str | Path, runs: Sequence[Run], *, title: str = "doohable scorer report", notes: str = ""
) -> Path:
    """Write a self-contained HTML report comparing ``runs`` (the first is the main one)."""
    if not runs:
        raise ValueError("a report needs at least one run")
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(notes)}</p>" if notes else ""]
    parts += _comparison(runs)
    for r in runs:
        if r.folds:
            parts += _fold_table(r)
        if r.histories:
            parts += [f"<h3>Learning curves: {html.escape(r.name)}</h3>", _learning_curves(r)]
    main = runs[0]
    parts += [
        "<h2>Score distributions and scatter</h2>",
        _distributions(main),
        "<h2>Error per score bin</h2>",
        _error_bins(runs),
    ]
    parts += _roc_section(runs)
    if main.paths:
        parts += _image_grids(main)
    return _write_page(path, title, parts)
