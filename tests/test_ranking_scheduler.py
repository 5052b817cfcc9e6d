"""Schedulers: one interface, found by name, pairs valid, distinct, never repeated to a voter."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from doohable.ranking import scheduler as sch
from doohable.ranking.state import RatingState
from doohable.ranking.votes import Comparisons

NAMES = sorted(sch.SCHEDULERS)


def _run(name: str, n: int, votes: int, seed: int = 0,
         spread: float = 2.0) -> tuple[sch.Scheduler, RatingState]:
    rng = np.random.default_rng(seed)
    q = np.linspace(-spread, spread, n)
    s = sch.create(name)
    s.plan(votes)
    state = RatingState(n)
    for t in range(votes):
        voter = t % 3
        a, b = s.next_pair(state, rng, voter=voter)
        s.observe(state, a, b, float(rng.random() < 1 / (1 + np.exp(-(q[a] - q[b])))), voter=voter)
    return s, state


def test_unknown_name_lists_known_and_close_matches() -> None:
    with pytest.raises(ValueError, match=r"known are active, random, report, threshold; did you mean active"):
        sch.create("activ")


@pytest.mark.parametrize("name", NAMES)
def test_pairs_valid_distinct_and_sides_random(name: str) -> None:
    s, state = _run(name, 30, 200)
    pairs = s.next_pairs(state, np.random.default_rng(1), 12, voter="new")
    keys = {frozenset(p) for p in pairs}
    assert len(keys) == 12 and all(len(k) == 2 for k in keys)
    lefts = [s.next_pair(state, np.random.default_rng(k), voter=f"v{k}")[0] for k in range(40)]
    rights = [s.next_pair(state, np.random.default_rng(k), voter=f"w{k}")[1] for k in range(40)]
    assert set(lefts) != set() and set(lefts) | set(rights) != set(lefts)


@pytest.mark.parametrize("name", NAMES)
def test_never_the_same_pair_twice_to_a_voter(name: str) -> None:
    n = 6  # 15 pairs in all
    s, state = _run(name, n, 20)
    rng = np.random.default_rng(2)
    shown = set()
    for _ in range(15):
        try:
            a, b = s.next_pair(state, rng, voter="ana")
        except sch.NoPairAvailable:
            break
        key = frozenset((a, b))
        assert key not in shown
        shown.add(key)
    with pytest.raises(sch.NoPairAvailable):
        s.next_pair(state, rng, voter="ana")


def test_report_favours_less_drawn_then_close_elo() -> None:
    s = sch.create("report", random_share=0.5, budget=400)
    state = RatingState(40)
    rng = np.random.default_rng(3)
    for _ in range(200):
        a, b = s.next_pair(state, rng)
        s.observe(state, a, b, 1.0 if a < b else 0.0)
    # balanced first phase: counts spread far less than uniform random pairs would give
    assert state.counts.max() - state.counts.min() <= 4
    gaps_close = []
    for _ in range(100):
        a, b = s.next_pair(state, rng, voter=1)
        gaps_close.append(abs(state.elo[a] - state.elo[b]))
    spread = np.abs(state.elo[:, None] - state.elo[None, :]).mean()
    assert np.mean(gaps_close) < spread / 3


def test_active_warms_up_every_image_then_prefers_informative_pairs() -> None:
    s, state = _run("active", 50, 75)  # warm-up needs 3 comparisons each: 75 votes
    assert state.counts.min() >= 2
    s, state = _run("active", 50, 400, spread=5.0)
    assert state.counts.min() >= 3
    rng = np.random.default_rng(4)
    chosen = [s.next_pair(state, rng, voter=k) for k in range(50)]
    gain = np.mean([sch.pair_information(state.mean[a] - state.mean[b], state.var[a] + state.var[b])
                    for a, b in chosen])
    a, b = np.triu_indices(50, 1)
    every = sch.pair_information(state.mean[a] - state.mean[b], state.var[a] + state.var[b])
    assert gain >= np.quantile(every, 0.9)  # near the best of all 1,225 pairs, without scanning them


@pytest.mark.parametrize("name", ["active", "threshold"])
def test_a_model_prior_shortens_the_warm_up_and_refits_sooner(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def state_after_one_round(slope: float | None) -> RatingState:
        state = RatingState(8)
        if slope is not None:
            state.set_prior(np.linspace(-1.0, 1.0, 8))
            assert state.prior is not None
            state.prior = replace(state.prior, b=slope)  # as a refit learns it from votes
        for a, b in ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2)):  # every image once, 0 and 2 twice
            state.record(a, b, 1.0, 0)
        return state

    warm_ups = []
    least = sch._least_compared
    monkeypatch.setattr(sch, "_least_compared", lambda *a: warm_ups.append(1) or least(*a))
    s = sch.create(name)
    rng = np.random.default_rng(0)
    s.next_pair(state_after_one_round(None), rng)
    assert len(warm_ups) == 1  # without a model: still warming up (3 comparisons each)
    s.next_pair(state_after_one_round(0.0), rng)
    assert len(warm_ups) == 2  # nor with a model the votes gave no weight
    s.next_pair(state_after_one_round(0.5), rng)
    assert len(warm_ups) == 2  # a model that counts places every image: pairs by information

    assert isinstance(s, sch.ActiveScheduler)
    big, big_prior = RatingState(64), RatingState(64)
    big_prior.set_prior(np.arange(64.0))
    for st in (big, big_prior):
        for t in range(4):
            st.record(t, t + 1, 1.0, 0)
    assert s.refit_due(big_prior) and not s.refit_due(big)  # 64 // 16 votes, against 64 // 4


def test_threshold_focuses_on_images_near_the_cut() -> None:
    s, state = _run("threshold", 60, 600)
    cut = np.quantile(state.mean, 2 / 3)
    rng = np.random.default_rng(5)
    pairs = [s.next_pair(state, rng, voter=k) for k in range(60)]
    firsts = [min(p, key=lambda i: abs(state.mean[i] - cut)) for p in pairs]
    near = np.abs(state.mean[firsts] - cut).mean()
    assert near < np.abs(state.mean - cut).mean() / 2


def test_pair_information_is_largest_for_close_uncertain_pairs() -> None:
    info = sch.pair_information(np.array([0.0, 2.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.1, 0.0]))
    assert info[0] > info[1] > 0 and info[0] > info[2] > 0 and info[3] == pytest.approx(0.0, abs=1e-9)


def test_state_from_log_replays_elo_and_fits_bt() -> None:
    comps = Comparisons(4, [0, 1, 2, 0], [1, 2, 3, 3], [1.0, 1.0, 1.0, 0.5], [0, 1, 0, 1], 2)
    state = RatingState.from_comparisons(comps)
    assert state.n_votes == 4 and list(state.counts) == [2, 2, 2, 2]
    assert state.mean[0] > state.mean[3] and state.elo[0] > state.elo[3]
    assert state.was_shown(1, 3, 0) and not state.was_shown(0, 0, 2)
    with pytest.raises(ValueError, match="bad pair"):
        state.record(0, 0, 1.0)
    with pytest.raises(ValueError, match="at least 2 images"):
        RatingState(1)


def test_online_updates_track_the_full_refit() -> None:
    s, state = _run("random", 40, 600)
    online = state.mean.copy()
    state.refit(crowd=False)
    assert np.corrcoef(online, state.mean)[0, 1] > 0.95
