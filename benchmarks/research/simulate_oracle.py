"""How far can pair choice go? Oracle schedulers that know the truth, on the headline's campaigns.

Reference schedulers for the headline (N = 1,000, voter accuracy 0.75, 10% spammers, the
same seeds = the same campaigns as ``simulate_headline.py``) that KNOW each campaign's
true qualities q (and, ``+voters``, each voter's true reliability). They are benchmarks
only, never in the product: they reach the simulator through its oracle hook
(``run_campaign`` accepts a factory called with the campaign's q and crowd). Each run is
ranked three ways at each checkpoint: crowd BT as shipped (prior precision 1); crowd BT
with a weak prior (0.01); and the *true vote model* (the crowd's true slope, reliabilities
and left bias; only q fitted, MAP with a weak N(0, 1000) prior): an oracle estimator.
A weak prior matters for oracle pairs: they depend on q, so the N(0, 1) prior times the
likelihood is not the posterior, and it ranks such designs badly. Families:

- ``rank<d>``: the least-compared image, against a partner at true-rank distance uniform
  in 1..d (either side). d = 1 is the partner of largest true Fisher information (with
  sides random, a vote's information is largest for equal images); d = 999 is a uniformly
  random partner, with balanced comparison counts.
- ``qwin<c>``: the least-compared image i, against a partner whose true quality is within
  ``c / sqrt(1 + n_i)`` of q_i (n_i: its comparisons so far): far partners while an image
  is new, closer ones as its estimate sharpens.
- ``mix<f>rank<d>``: a share f of uniformly random partners, the rest as ``rank<d>``.
- ``+voters``: also knows who the spammers are: they get "gold" pairs (one image from the
  true bottom tenth, one from the top tenth: cheap for crowd BT to spot a coin flipper),
  and only votes by honest voters count towards an image's comparisons.

Also printed: the exact information ratio (expected Fisher information about the quality
difference of a vote on a random pair, over the best pair, under the simulator's vote
model with each seed's drawn crowd: spammers, lapses and the left bias included), by
quadrature.

    nice -n 19 .venv/bin/python benchmarks/research/simulate_oracle.py --seeds 20 --out oracle.json

The extra rankings are measured only at EXTRA_AT (8-12 votes/image, around the crossings
that matter; the true-model fit is a dense solve per Fisher step): a 20-seed run of one
oracle takes ~3-6 min on the shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
from scipy import integrate, optimize
from scipy.special import expit
from simulate_headline import crossing, fmt

from doohable.ranking import bradley_terry, metrics
from doohable.ranking.scheduler import Scheduler, create
from doohable.ranking.simulate import Crowd, CrowdConfig, make_crowd, simulate
from doohable.ranking.state import RatingState

CHECKPOINTS = [4.0, 6.0, 8.0, 9.0, 10.0, 12.0, 14.0, 16.0]
#: where the extra (slower) estimators are measured: around the crossings that matter
EXTRA_AT = [8.0, 9.0, 10.0, 12.0]
HEADLINE = CrowdConfig(voter_accuracy=0.75, spammers=0.1)


class OracleScheduler(Scheduler):
    """Knows the true qualities (and, ``voter_aware``, reliabilities); see the module doc."""

    rating = "crowd"

    def __init__(self, q: np.ndarray, crowd: Crowd, rank_window: int | None = None,
                 q_window: float | None = None, voter_aware: bool = False, mix: float = 0.0) -> None:
        super().__init__()
        self.q, self.crowd, self.voter_aware = q, crowd, voter_aware
        self.rank_window, self.q_window, self.mix = rank_window, q_window, mix
        self.order = np.argsort(q)
        self.sorted_q = q[self.order]
        self.pos = np.empty(q.size, dtype=np.int64)
        self.pos[self.order] = np.arange(q.size)
        self.count = np.zeros(q.size)
        self._voter: Hashable = 0

    def next_pairs(self, state: RatingState, rng: np.random.Generator, k: int,
                   voter: Hashable = 0) -> list[tuple[int, int]]:
        self._voter = voter
        return super().next_pairs(state, rng, k, voter)

    def observe(self, state: RatingState, left: int, right: int, outcome: float, voter: Hashable = 0) -> None:
        state.record(left, right, outcome, voter, online=False)
        if not (self.voter_aware and self._spammer(voter)):
            self.count[[left, right]] += 1

    def _spammer(self, voter: Hashable) -> bool:
        return bool(self.crowd.eta[int(voter)] == 0.0)  # type: ignore[call-overload]

    def _propose(self, state: RatingState, rng: np.random.Generator, ok: Callable[[int, int], bool]
                 ) -> tuple[int, int]:
        n = self.q.size
        if self.voter_aware and self._spammer(self._voter):
            tenth = max(1, n // 10)
            return int(self.order[rng.integers(tenth)]), int(self.order[n - 1 - rng.integers(tenth)])
        low = np.flatnonzero(self.count == self.count.min())
        i = int(low[rng.integers(low.size)])
        p = int(self.pos[i])
        if self.mix and rng.random() < self.mix:  # a uniformly random partner
            return i, int((i + rng.integers(1, n)) % n)
        if self.rank_window is not None:
            d = min(self.rank_window, n - 1)
            k = int(rng.integers(1, d + 1)) * (1 if rng.random() < 0.5 else -1)
            j = p + k if 0 <= p + k < n else p - k
            if not 0 <= j < n:  # window wider than both sides: any other image
                j = (p + int(rng.integers(1, n))) % n
            return i, int(self.order[j])
        w = (self.q_window or 1.0) / math.sqrt(1.0 + self.count[i])
        lo = int(np.searchsorted(self.sorted_q, self.q[i] - w, "left"))
        hi = int(np.searchsorted(self.sorted_q, self.q[i] + w, "right"))
        if hi - lo < 2:
            lo, hi = max(0, p - 1), min(n, p + 2)
        j = p
        while j == p:
            j = int(rng.integers(lo, hi))
        return i, int(self.order[j])


def true_model_map(state: RatingState, crowd: Crowd, alpha: float = 1.0,
                   init: np.ndarray | None = None, mean: np.ndarray | None = None) -> np.ndarray:
    """MAP of q under the TRUE vote model and a N(mean, 1/alpha) prior (``mean`` 0 by default).

    Each vote by the simulator's exact model with the crowd's true slope, reliabilities and
    left bias (nothing fitted but q). Benchmarks only. ``alpha = 1`` is the true prior, but
    an oracle's pairs depend on q, so prior x likelihood is not the posterior: a weak prior
    ranks such designs much better (see the docs).
    """
    c = state.comparisons()
    keys = np.empty(len(state._voters), dtype=np.int64)  # dense voter index -> simulator voter
    for key, idx in state._voters.items():
        keys[idx] = int(key)  # type: ignore[call-overload]
    eta, bias = crowd.eta[keys][c.voter], crowd.bias[keys][c.voter]
    s, y, n = crowd.slope, c.outcome, c.n_items
    m = np.zeros(n) if mean is None else mean

    def parts(q: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        sig = expit(s * (q[c.left] - q[c.right]) + bias)
        p = eta * sig + (1.0 - eta) / 2.0
        r = q - m
        obj = -float(np.sum(y * np.log(p) + (1.0 - y) * np.log1p(-p))) + 0.5 * alpha * float(r @ r)
        dp = eta * sig * (1.0 - sig) * s  # d P(left) / d (q_left - q_right)
        g = (y / p - (1.0 - y) / (1.0 - p)) * dp
        grad = np.bincount(c.left, g, n) - np.bincount(c.right, g, n) - alpha * r
        return obj, grad, dp * dp / (p * (1.0 - p))

    # Fisher scoring: the expected Hessian is a weighted graph Laplacian + alpha I, solved
    # exactly (dense, n = 1,000); first-order methods stall on weak priors and chains of close pairs
    q = m.copy() if init is None else np.array(init, dtype=np.float64)
    obj, grad, w = parts(q)
    for _ in range(100):
        h = -np.bincount(c.left * n + c.right, w, n * n) - np.bincount(c.right * n + c.left, w, n * n)
        h[:: n + 1] += np.bincount(c.left, w, n) + np.bincount(c.right, w, n) + alpha
        step = np.linalg.solve(h.reshape(n, n), grad)
        t = 1.0
        while t > 1e-6:
            new = parts(q + t * step)
            if new[0] <= obj + 1e-12 * abs(obj):
                break
            t /= 2.0
        else:
            break
        q = q + t * step
        obj, grad, w = new
        if t * float(np.abs(step).max()) < 1e-6:
            break
    return q


#: the rankings measured at each checkpoint besides the shipped crowd BT (prior precision 1)
EXTRA_ESTIMATORS = ("crowd BT a=0.01", "true model a=0.001")


def extra_estimates(state: RatingState, crowd: Crowd,
                    last: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Crowd BT with a weak prior, and the true vote model with a weak prior (oracle estimator).

    ``last``: the previous checkpoint's answers, as warm starts (the optima do not depend on them).
    """
    last = last or {}
    weak = bradley_terry.fit(state.comparisons(), alpha=0.01, crowd=True, init=last.get("crowd BT a=0.01"))
    return {"crowd BT a=0.01": weak.ratings,
            "true model a=0.001": true_model_map(state, crowd, 0.001, last.get("true model a=0.001"))}


class Recording(Scheduler):
    """Runs ``inner`` unchanged; at each checkpoint calls ``at_checkpoint(state, votes/image)``."""

    rating = "crowd"

    def __init__(self, inner: Scheduler, stops: dict[int, float],
                 at_checkpoint: Callable[[RatingState, float], None]) -> None:
        super().__init__()
        self.inner, self.stops, self.at_checkpoint = inner, stops, at_checkpoint

    def plan(self, budget: int) -> None:
        self.inner.plan(budget)

    def next_pairs(self, state: RatingState, rng: np.random.Generator, k: int,
                   voter: Hashable = 0) -> list[tuple[int, int]]:
        return self.inner.next_pairs(state, rng, k, voter)

    def observe(self, state: RatingState, left: int, right: int, outcome: float, voter: Hashable = 0) -> None:
        self.inner.observe(state, left, right, outcome, voter)
        at = self.stops.get(state.n_votes)
        if at is not None:
            self.at_checkpoint(state, at)

    def _propose(self, state: RatingState, rng: np.random.Generator, ok: Callable[[int, int], bool]
                 ) -> tuple[int, int] | None:
        return self.inner._propose(state, rng, ok)


def recorded(name: str, make_inner: Callable[[np.ndarray, Crowd], Scheduler], n: int,
             sinks: list[dict[str, dict[float, float]]]) -> Callable[[np.ndarray, Crowd], Scheduler]:
    """A factory for :func:`simulate`: ``make_inner``'s scheduler, also ranked by
    :func:`extra_estimates` at each of ``EXTRA_AT``, into a new sink per campaign."""
    stops = {min(round(c * n), round(max(CHECKPOINTS) * n)): c for c in EXTRA_AT}

    def make(q: np.ndarray, crowd: Crowd) -> Scheduler:
        sink: dict[str, dict[float, float]] = {}
        sinks.append(sink)
        last: dict[str, np.ndarray] = {}

        def measure(state: RatingState, at: float) -> None:
            last.update(extra_estimates(state, crowd, last))  # warm starts for the next checkpoint
            for est, ratings in last.items():
                sink.setdefault(est, {})[at] = metrics.pairwise_accuracy(q, ratings)
        return Recording(make_inner(q, crowd), stops, measure)
    make.name = name  # type: ignore[attr-defined]
    return make


# -- information per vote, exactly -------------------------------------------------------------
def vote_information(d: float, crowd: Crowd) -> float:
    """Expected Fisher information about d = q_a - q_b of one vote on {a, b}: random voter, random sides."""
    s, eta, b = crowd.slope, crowd.eta, crowd.bias
    total = 0.0
    for x in (d, -d):  # a on the left, a on the right: same information about d
        sig = expit(s * x + b)
        p = eta * sig + (1.0 - eta) / 2.0
        slope = eta * s * sig * (1.0 - sig)
        total += float(np.mean(slope**2 / (p * (1.0 - p))))
    return total / 2.0


def information_ratio(crowd: Crowd) -> tuple[float, float, float, float]:
    """(random-pair information, best-pair information, ratio, best |d|) for one crowd."""
    dens = lambda d: math.exp(-d * d / 4.0) / math.sqrt(4.0 * math.pi)  # noqa: E731  d ~ N(0, 2)
    rnd = 2.0 * integrate.quad(lambda d: vote_information(d, crowd) * dens(d), 0.0, np.inf,
                               epsabs=1e-12, epsrel=1e-10, limit=200)[0]
    grid = np.linspace(0.0, 3.0, 301)
    g0 = grid[int(np.argmax([vote_information(d, crowd) for d in grid]))]
    res = optimize.minimize_scalar(lambda d: -vote_information(d, crowd),
                                   bounds=(max(0.0, g0 - 0.01), g0 + 0.01), method="bounded",
                                   options={"xatol": 1e-10})
    best = -float(res.fun)
    return rnd, best, rnd / best, float(res.x)


def crowd_of(seed: int, n: int, cfg: CrowdConfig) -> Crowd:
    """The crowd of campaign ``seed``, drawn exactly as ``run_campaign`` draws it."""
    truth_rng = np.random.default_rng([seed, 0])
    truth_rng.normal(size=n)
    return make_crowd(cfg, truth_rng)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--target", type=float, default=None,
                    help="accuracy to reach; default: measure report+Elo at 20 votes/image (same seeds)")
    ap.add_argument("--oracles", default="rank64,rank256,rank999,mix0.25rank64,mix0.1rank128,"
                    "qwin1,qwin1.5,qwin2,qwin3,qwin1.5+voters")
    ap.add_argument("--references", default="random,active",
                    help="product strategies on the same campaigns and checkpoints (crowd BT)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t0 = time.time()
    out: dict[str, Any] = {"seeds": args.seeds, "images": args.images, "checkpoints": CHECKPOINTS}

    ratios = [information_ratio(crowd_of(s, args.images, HEADLINE)) for s in range(args.seeds)]
    r = np.array(ratios)
    out["information"] = {"random_pair": r[:, 0].tolist(), "best_pair": r[:, 1].tolist(),
                          "ratio": r[:, 2].tolist(), "best_abs_d": r[:, 3].tolist()}
    print(f"information per vote (per unit quality difference^2): random pair {r[:, 0].mean():.4f}, "
          f"best pair {r[:, 1].mean():.4f} at |d| = {r[:, 3].mean():.3f}; ratio random/best "
          f"{r[:, 2].mean():.4f} (seeds: {r[:, 2].min():.4f}-{r[:, 2].max():.4f}) -> at most "
          f"{1 / r[:, 2].mean():.2f}x from choosing pairs, per vote", flush=True)

    if args.target is None:
        base = simulate("report", args.images, 20.0, HEADLINE, args.seeds, "elo")
        target = base.summary()["pairwise_accuracy"]["mean"]
        out["baseline"] = base.to_json()
        print(f"baseline report+elo @20: {fmt(base.summary()['pairwise_accuracy'])}", flush=True)
    else:
        target = args.target
    out["target"] = target

    runs: list[tuple[str, Callable[[np.ndarray, Crowd], Scheduler]]] = [
        (name, lambda q, crowd, name=name: create(name)) for name in args.references.split(",") if name]
    for spec in args.oracles.split(","):
        runs.append((f"oracle {spec}", _oracle_from_spec(spec)))
    for label, make_inner in runs:
        t = time.time()
        sinks: list[dict[str, dict[float, float]]] = []
        res = simulate(recorded(label, make_inner, args.images, sinks), args.images, max(CHECKPOINTS),
                       HEADLINE, args.seeds, "crowd", CHECKPOINTS)
        doc = res.to_json()
        entry: dict[str, Any] = {"crowd_bt": doc}
        curves = {"crowd BT": [(c["votes_per_image"], c["pairwise_accuracy"]) for c in doc["curve"]]}
        per_seed = {"crowd BT": _per_seed_crossings(
                        [{p.votes_per_image: p.pairwise_accuracy for s, p in res.points if s == k}
                         for k in range(args.seeds)], target)}
        for est in EXTRA_ESTIMATORS:
            curves[est] = [(v, metrics.mean_ci95_json([sk[est][v] for sk in sinks])) for v in EXTRA_AT]
            per_seed[est] = _per_seed_crossings([sk[est] for sk in sinks], target)
            entry[est] = [{"votes_per_image": v, "pairwise_accuracy": a} for v, a in curves[est]]
        print(f"{label}  [{time.time() - t:.0f} s]", flush=True)
        for est, curve in curves.items():
            need = crossing([{"votes_per_image": v, "pairwise_accuracy": a} for v, a in curve], target)
            ok = [x for x in per_seed[est] if x is not None]
            ci = ""
            if len(ok) == len(per_seed[est]) and len(ok) > 1:
                m, (lo, hi) = metrics.mean_ci95(ok)
                ci = f", per-seed crossings {m:.2f} [{lo:.2f}, {hi:.2f}]"
            at8 = dict(curve)[8.0]
            entry[f"{est}: crossing"] = {"votes_per_image_to_match": need, "per_seed_crossing": per_seed[est]}
            need_s = "not by 16" if need is None else f"{need:.2f}"
            print(f"   {est:<18} reaches {target:.4f} at {need_s} votes/image{ci}; @8: {fmt(at8)}",
                  flush=True)
            print("      " + "  ".join(f"{v:g}:{a['mean']:.4f}" for v, a in curve), flush=True)
        out[label] = entry
        if args.out:  # after every strategy: a long run keeps what it has measured
            with open(args.out, "w") as fh:
                json.dump(out, fh, indent=1)
    out["seconds"] = time.time() - t0
    print(f"{out['seconds']:.0f} s", flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


def _oracle_from_spec(spec: str) -> Callable[[np.ndarray, Crowd], Scheduler]:
    """``rank<d>``, ``qwin<c>``, ``mix<f>rank<d>``, each optionally ``+voters``."""
    base, _, extra = spec.partition("+")
    kw: dict[str, Any] = {"voter_aware": extra == "voters"}
    if base.startswith("mix"):
        f, _, base = base[3:].partition("rank")
        kw["mix"], base = float(f), "rank" + base
    if base.startswith("rank"):
        kw["rank_window"] = int(base[4:])
    elif base.startswith("qwin"):
        kw["q_window"] = float(base[4:])
    else:
        raise SystemExit(f"unknown oracle {spec!r}")
    return lambda q, crowd: OracleScheduler(q, crowd, **kw)


def _per_seed_crossings(curves: list[dict[float, float]], target: float) -> list[float | None]:
    """Each seed's own crossing of ``target`` (linear interpolation between checkpoints)."""
    return [crossing([{"votes_per_image": v, "pairwise_accuracy": {"mean": a}} for v, a in sorted(c.items())],
                     target) for c in curves]


if __name__ == "__main__":
    main()
