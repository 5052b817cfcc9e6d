"""Speed of the ranking engine on this machine: full refits and next-pair latency.

Prints, in one run: the Bradley–Terry refit on 10,000 images / 200,000 votes (plain, with
voter reliability + position bias, and with a scorer's prior whose weight is learned by EM:
``--prior-pearson``; cold, and warm after 1 % more votes as a running campaign refits), with
choix's ILSR (same prior) as the baseline,
and the p50/p99 latency of ``next_pair`` at 10,000 images for every scheduler (the
``random`` scheduler is the baseline), plus the per-vote cost of ``observe``.

    nice -n 10 .venv/bin/python benchmarks/measure/bench_ranking.py
"""

from __future__ import annotations

import argparse
import os
import time

import choix
import numpy as np
from scipy.special import expit

from doohable.ranking import bradley_terry, scheduler
from doohable.ranking import prior as model_prior
from doohable.ranking.state import RatingState
from doohable.ranking.votes import Comparisons


def votes(n: int, v: int, seed: int = 0, n_voters: int = 20,
          truth: np.ndarray | None = None) -> tuple[Comparisons, np.ndarray]:
    """``v`` votes on ``n`` images of qualities ``truth`` (drawn from ``seed`` if not given)."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=n)
    if truth is not None:
        q = truth
    left = rng.integers(0, n, v)
    right = (left + rng.integers(1, n, v)) % n
    voter = rng.integers(0, n_voters, v)
    p = np.where(voter < 2, 0.5, expit(1.5 * (q[left] - q[right]) + 0.2))  # 2 spammers, a left bias
    return Comparisons(n, left, right, (rng.random(v) < p).astype(float), voter, n_voters), q


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """Best wall time and its CPU time over ``repeat`` runs (the machine is shared)."""
    best = (float("inf"), 0.0, None)
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, (time.perf_counter() - w, time.process_time() - c, out), key=lambda t: t[0])
    return best


def model_scores(q: np.ndarray, pearson: float) -> np.ndarray:
    noise = np.random.default_rng(7).normal(size=len(q))
    return pearson * q + np.sqrt(1.0 - pearson**2) * noise


def _count_fits() -> list[int]:
    """Count the MAP fits from now on (EM runs one per step): a list holding the count."""
    calls = [0]
    fit = getattr(bradley_terry.fit, "__wrapped__", bradley_terry.fit)

    def counted(*args, **kw):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return fit(*args, **kw)
    counted.__wrapped__ = fit  # type: ignore[attr-defined]
    bradley_terry.fit = counted  # model_prior calls it through the module
    return calls


def bench_refit(n: int, v: int, repeat: int, pearson: float) -> None:
    comps, q = votes(n, v)
    prior = model_prior.ModelPrior.from_scores(model_scores(q, pearson))
    fits = (("plain BT", lambda: bradley_terry.fit(comps, crowd=False)),
            ("crowd BT + bias", lambda: bradley_terry.fit(comps, crowd=True)),
            (f"+ prior R={pearson}", lambda: model_prior.fit(comps, prior)[0]))
    for label, fn in fits:
        calls = _count_fits()
        wall, cpu, res = timed(fn, repeat)
        r = np.corrcoef(res.ratings, q)[0, 1]
        print(f"refit {label:16s} {n} images / {v} votes: {wall:.2f} s wall ({cpu:.2f} s CPU), "
              f"{calls[0] // repeat} MAP fit(s), "
              f"corr with truth {r:.4f}, reliability of spammers {res.reliability[:2].round(2)}")
    # what a running campaign does: refit once the log has grown (here by 1 %), warm-started
    # from the last fit and the weight learned there
    _, learned = model_prior.fit(comps, prior)
    more, _ = votes(n, v // 100, seed=5, truth=q)
    grown = Comparisons(n, *(np.concatenate([getattr(comps, f), getattr(more, f)])
                             for f in ("left", "right", "outcome", "voter")), comps.n_voters)
    calls = _count_fits()
    wall, cpu, res = timed(lambda: model_prior.fit(grown, learned, init=res.ratings,
                                                   init_reliability=res.reliability)[0], repeat)
    print(f"refit + prior, warm, after 1% more votes: {wall:.2f} s wall ({cpu:.2f} s CPU), "
          f"{calls[0] // repeat} MAP fit(s)")
    # a new collection's first votes, one per image, fitted cold: EM until the weight settles
    # (as shipped) against a fixed three EM steps; quality only (it is cheap)
    few, fq = votes(n, n, seed=2)
    model = model_scores(fq, pearson)
    fresh = model_prior.ModelPrior.from_scores(model)
    settled = model_prior.fit(few, fresh)[0].ratings
    three = model_prior.fit(few, fresh, steps=3)[0].ratings
    print(f"first fit, {n} images / {n} votes, corr with truth: EM until settled "
          f"{np.corrcoef(settled, fq)[0, 1]:.4f}, three EM steps {np.corrcoef(three, fq)[0, 1]:.4f}, "
          f"the model alone {np.corrcoef(model, fq)[0, 1]:.4f}")
    pairs = [(int(a), int(b)) if y == 1 else (int(b), int(a))
             for a, b, y in zip(comps.left, comps.right, comps.outcome, strict=True)]
    wall, cpu, base = timed(lambda: choix.ilsr_pairwise(n, pairs, alpha=0.5, tol=1e-6), 1)
    print(f"baseline choix.ilsr_pairwise (same prior, no bias/reliability): {wall:.2f} s wall "
          f"({cpu:.2f} s CPU), "
          f"corr with truth {np.corrcoef(base, q)[0, 1]:.4f}")


def bench_next_pair(n: int, v: int, calls: int, pearson: float) -> None:
    comps, q = votes(n, v, seed=1)
    base_state = RatingState.from_comparisons(comps)
    for label in ("random", "report", "active", "threshold", "active+prior", "threshold+prior"):
        name, with_prior = label.split("+")[0], label.endswith("+prior")
        scores = model_scores(q, pearson) if with_prior else None
        state = RatingState.from_comparisons(comps, prior_scores=scores) if name != "random" else base_state
        sched = scheduler.create(name, **({"budget": 20 * n} if name == "report" else {}))
        rng = np.random.default_rng(0)
        lat, cpu, obs = [], [], []
        for t in range(calls):
            t0, c0 = time.perf_counter(), time.thread_time()
            a, b = sched.next_pair(state, rng, voter=t % 50)
            t1, c1 = time.perf_counter(), time.thread_time()
            state.record(a, b, float(rng.random() < 0.5), voter=t % 50)
            obs.append(time.perf_counter() - t1)
            lat.append(t1 - t0)
            cpu.append(c1 - c0)
        ms, cpu_ms = np.array(lat) * 1e3, np.array(cpu) * 1e3
        print(f"next_pair {label:15s} at {n} images: wall p50 {np.percentile(ms, 50):.3f} ms, "
              f"p99 {np.percentile(ms, 99):.3f} ms, max {ms.max():.2f} ms; "
              f"CPU p50 {np.percentile(cpu_ms, 50):.3f} ms, p99 {np.percentile(cpu_ms, 99):.3f} ms; "
              f"record+online update wall p99 "
              f"{np.percentile(np.array(obs) * 1e3, 99):.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--votes", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--skip-refit", action="store_true", help="only the next-pair latencies")
    ap.add_argument("--prior-pearson", type=float, default=0.9, help="the simulated scorer's Pearson R")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M')} UTC, load average {load:.1f} on {os.cpu_count()} CPUs")
    if not args.skip_refit:
        bench_refit(args.images, args.votes, args.repeat, args.prior_pearson)
    # a 10,000-image state past the active scheduler's warm-up (3 comparisons per image)
    bench_next_pair(args.images, 4 * args.images, args.calls, args.prior_pearson)


if __name__ == "__main__":
    main()
