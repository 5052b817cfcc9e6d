"""Do whole-photo statistics add to the `photo` model's centre crop? (live-challenge, nested CV)

`photo` sees only the centre 224 px of a photo at its native scale. Here 21 cheap statistics of
the whole photo (grey-level mean, spread, percentiles and clipped shares; saturation;
colourfulness; Laplacian variance, median absolute Laplacian and mean gradient at three scales)
are stacked with its score: a ridge regression on [the crop model's prediction, the
statistics], where the crop model's predictions on the training part are out-of-fold (an inner
CV on the training part's folds) and its penalty is chosen there too. Also a gradient-boosted
tree on the same inputs. Nested 5-fold CV on the fixed folds.

    PYTHONPATH=src:benchmarks/measure nice .venv/bin/python benchmarks/research/photo_global_stats.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from photo_features import cached, features
from PIL import Image
from scipy import ndimage
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler

from doohable.model import photo
from doohable.model import photo_train as pt

CACHE = Path(".cache/photo-features")


def stats(path: str) -> np.ndarray:
    """21 statistics of the whole photo (at most 500 px)."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    rgb.thumbnail((500, 500))
    a = np.asarray(rgb).astype(np.float32)
    g = a @ np.array([0.299, 0.587, 0.114], np.float32)
    out = [g.mean(), g.std(), *np.percentile(g, [1, 5, 50, 95, 99]), (g < 8).mean(), (g > 247).mean()]
    mx, mn = a.max(2), a.min(2)
    sat = (mx - mn) / (mx + 1e-3)
    rg, yb = a[..., 0] - a[..., 1], 0.5 * (a[..., 0] + a[..., 1]) - a[..., 2]
    out += [sat.mean(), sat.std(), np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())]
    x = g
    for _ in range(3):
        lap = ndimage.laplace(x)
        grad = np.hypot(ndimage.sobel(x, 0), ndimage.sobel(x, 1))
        out += [np.log(lap.var() + 1e-3), np.log(np.median(np.abs(lap)) + 1e-3), np.log(grad.mean() + 1e-3)]
        h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
        x = x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    return np.array(out, np.float64)


def main() -> None:
    labels = photo.load_live()
    t = time.process_time()
    s = cached(CACHE / f"globalstats-{len(labels)}.npz", lambda: np.stack([stats(p) for p in labels.paths]))
    ms = (time.process_time() - t) / len(labels) * 1000
    print(f"statistics {s.shape}: {ms:.1f} CPU-ms per photo (about 0: cached)")
    x = features(labels, "efficientnet_lite0", "native-crop224", CACHE)
    fit, grid = pt.head_fitter("regression"), pt.GRIDS["regression"]
    alone = pt.nested_cv(x, labels, fit, grid, pt.fold_splits(labels.folds))
    rows: dict[str, list[dict[str, float]]] = {"ridge": [], "boosted trees": []}
    for tr, te, inner in pt.fold_splits(labels.folds):
        sub = labels.subset(tr)
        pos = [(np.searchsorted(tr, a), np.searchsorted(tr, b)) for a, b in inner]
        g = pt.choose(x[tr], sub, fit, grid, pos)
        oof = np.zeros(len(tr))
        for a, b in pos:
            part = sub.subset(a)
            oof[b] = fit(x[tr][a], part.mos, part.std, [g])[0](x[tr][b])
        z_tr = np.column_stack([oof, s[tr]])
        z_te = np.column_stack([fit(x[tr], sub.mos, sub.std, [g])[0](x[te]), s[te]])
        scale = StandardScaler().fit(z_tr)
        ridge = RidgeCV(alphas=np.logspace(-2, 3, 12)).fit(scale.transform(z_tr), sub.mos)
        rows["ridge"].append(pt.metrics(ridge.predict(scale.transform(z_te)), labels.mos[te]))
        trees = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, max_leaf_nodes=8,
                                              random_state=0)  # fmt: skip
        rows["boosted trees"].append(pt.metrics(trees.fit(z_tr, sub.mos).predict(z_te), labels.mos[te]))
    print(f"crop model alone: SRCC {alone['srcc'][0]:.4f} ± {alone['srcc'][1]:.4f}, "
          f"PLCC {alone['plcc'][0]:.4f} ± {alone['plcc'][1]:.4f}")  # fmt: skip
    for name, r in rows.items():
        srcc, plcc = [x["srcc"] for x in r], [x["plcc"] for x in r]
        print(f"+ statistics, {name}: SRCC {np.mean(srcc):.4f} ± {np.std(srcc):.4f}, "
              f"PLCC {np.mean(plcc):.4f} ± {np.std(plcc):.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
