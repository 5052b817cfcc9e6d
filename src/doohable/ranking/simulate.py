"""Simulated labelling campaigns: how many votes a scheduler needs for a good ranking.

A campaign: ``n`` images with true qualities ``q ~ N(0, 1)``; a pool of voters, each vote
cast by one of them at random. Voters follow the Crowd-BT model: voter v votes by
Bradley–Terry, left with probability ``sigmoid((q_left - q_right) / s + b)`` (``b``: the left
bias, logit), with probability ``eta_v`` (their reliability, drawn from a Beta), and
flips a coin otherwise; a share of voters are spammers (``eta = 0``: always a coin flip).
The scale ``s`` is solved numerically so that one vote by a random voter on a random
pair is right with probability ``voter_accuracy`` (spammers, lapses and the bias
included): that one number sets the noise.

Each seed fixes the truth, the crowd and the voters' sequence, shared by all strategies
(common random numbers), so strategies are compared on the same campaigns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, ndtri

from doohable.ranking import bradley_terry, metrics
from doohable.ranking import prior as model_prior
from doohable.ranking.scheduler import Scheduler, create
from doohable.ranking.state import RatingState
from doohable.ranking.votes import FloatArray

RATINGS = ("elo", "bt", "crowd")
# |q_i - q_j| for random pairs (d ~ N(0, 2)) at 4,000 equal-probability midpoints: the
# integrands below have a kink at d = 0 that Gauss-Hermite nodes would miss
_ABS_D = np.sqrt(2.0) * ndtri(0.5 + 0.5 * (np.arange(4000) + 0.5) / 4000)


@dataclass(frozen=True)
class CrowdConfig:
    """How the simulated voters behave."""

    voter_accuracy: float = 0.75
    spammers: float = 0.0
    n_voters: int = 20
    left_bias: float = 0.2
    #: Beta(a, b) of honest voters' reliability; None: every honest voter always votes by the model
    reliability: tuple[float, float] | None = (9.0, 1.0)

    def __post_init__(self) -> None:
        if not 0.5 < self.voter_accuracy < 1.0:
            raise ValueError(f"voter accuracy must be in (0.5, 1), got {self.voter_accuracy}")
        if not 0.0 <= self.spammers < 1.0:
            raise ValueError(f"spammers must be a share in [0, 1), got {self.spammers}")
        if self.n_voters < 1:
            raise ValueError(f"need at least one voter, got {self.n_voters}")


@dataclass(frozen=True)
class Crowd:
    """A drawn crowd: the logit slope on quality differences; per voter reliability and bias."""

    slope: float
    eta: FloatArray
    bias: FloatArray

    def p_left(self, voter: int, diff: float) -> float:
        """Probability that ``voter`` votes left when ``diff = q_left - q_right``."""
        e = self.eta[voter]
        return float(e * expit(self.slope * diff + self.bias[voter]) + (1.0 - e) / 2.0)


#: Builds a campaign's scheduler from its true qualities and crowd: the hook for oracle
#: reference schedulers in benchmarks (the product's schedulers never see the truth)
SchedulerFactory = Callable[[FloatArray, Crowd], Scheduler]


def random_pair_accuracy(slope: float, eta: FloatArray, bias: FloatArray) -> float:
    """Mean single-vote accuracy on random pairs (sides random) over voters, by quadrature."""
    b = bias[:, None]
    right = 0.5 * (expit(slope * _ABS_D + b) + expit(slope * _ABS_D - b))  # by the model: (voters, nodes)
    acc = eta[:, None] * right + (1.0 - eta[:, None]) / 2.0
    return float(acc.mean())


def make_crowd(cfg: CrowdConfig, rng: np.random.Generator) -> Crowd:
    """Draw voters and solve the noise scale so that the crowd has ``cfg.voter_accuracy``."""
    n_spam = round(cfg.spammers * cfg.n_voters)
    if cfg.spammers > 0 and n_spam == 0:
        n_spam = 1
    spam = np.zeros(cfg.n_voters, dtype=bool)
    spam[rng.permutation(cfg.n_voters)[:n_spam]] = True
    eta = rng.beta(*cfg.reliability, size=cfg.n_voters) if cfg.reliability else np.ones(cfg.n_voters)
    eta = eta * ~spam
    bias = np.full(cfg.n_voters, cfg.left_bias)
    ceiling = random_pair_accuracy(1e6, eta, bias)
    if cfg.voter_accuracy >= ceiling - 1e-9:
        raise ValueError(
            f"voter accuracy {cfg.voter_accuracy} is out of reach with {n_spam} spammer(s) among "
            f"{cfg.n_voters} voters and their reliabilities (at most {ceiling:.3f})")
    log_slope = brentq(lambda g: random_pair_accuracy(float(np.exp(g)), eta, bias) - cfg.voter_accuracy,
                       -20.0, 20.0, xtol=1e-10)
    return Crowd(float(np.exp(log_slope)), eta, bias)


@dataclass(frozen=True)
class Point:
    """Quality of one rating method's ranking at one moment of one campaign."""

    votes_per_image: float
    rating: str
    pairwise_accuracy: float
    spearman: float
    top_third_precision: float


def estimate(state: RatingState, rating: str) -> FloatArray:
    """Final ratings by method: the report's Elo, plain BT, or BT with voter reliability."""
    if rating == "elo":
        return state.elo.copy()
    if rating in ("bt", "crowd"):
        comps = state.comparisons()
        if state.prior is not None:
            return model_prior.fit(comps, state.prior, crowd=rating == "crowd", init=state.mean)[0].ratings
        return bradley_terry.fit(comps, alpha=state.alpha, crowd=rating == "crowd", init=state.mean).ratings
    raise ValueError(f"unknown rating method {rating!r}: known are {', '.join(RATINGS)}")


def run_campaign(
    strategy: str | SchedulerFactory,
    n_images: int,
    votes_per_image: float,
    crowd: CrowdConfig,
    seed: int,
    checkpoints: Sequence[float] | None = None,
    ratings: Sequence[str] | None = None,
    prior_pearson: float | None = None,
    **scheduler_kw: Any,
) -> list[Point]:
    """Simulate one campaign; measure each rating method at each checkpoint (votes/image).

    ``strategy`` is a scheduler name, or a :data:`SchedulerFactory` called with the
    campaign's true qualities and crowd (an oracle; ``scheduler_kw`` are then ignored).
    ``prior_pearson`` R: the campaign has a model whose scores correlate R with the true
    qualities (``R q + sqrt(1 - R²) e``, own random stream: the campaign is otherwise the
    same), used as the ratings' prior (:mod:`doohable.ranking.prior`).
    """
    q = np.random.default_rng([seed, 0]).normal(size=n_images)
    prior = None if prior_pearson is None else model_scores(q, prior_pearson, seed)
    points: list[Point] = []
    for votes, state, sched in campaign(strategy, q, votes_per_image, crowd, seed, checkpoints, prior,
                                        **scheduler_kw):
        points.extend(_measure(q, state, votes, n_images, list(ratings or [sched.rating])))
    return points


def campaign(
    strategy: str | SchedulerFactory,
    q: FloatArray,
    votes_per_image: float,
    crowd: CrowdConfig,
    seed: int,
    checkpoints: Sequence[float] | None = None,
    prior_scores: FloatArray | None = None,
    **scheduler_kw: Any,
) -> Iterator[tuple[int, RatingState, Scheduler]]:
    """Play one campaign on true qualities ``q``; yield (votes so far, state, scheduler) at each
    checkpoint (votes per image) and at the end. ``prior_scores``: a model's opinion of each image."""
    n_images = len(q)
    total = round(votes_per_image * n_images)
    if total < 1:
        raise ValueError("votes per image x images must give at least one vote")
    stops = sorted({min(total, max(1, round(c * n_images))) for c in (checkpoints or [])} | {total})
    truth_rng, sched_rng, vote_rng = (np.random.default_rng([seed, k]) for k in range(3))
    truth_rng.normal(size=n_images)  # the stream's first draws are the default truth
    people = make_crowd(crowd, truth_rng)
    voters = vote_rng.integers(crowd.n_voters, size=total).tolist()
    coins = vote_rng.random(total).tolist()
    sched = create(strategy, **scheduler_kw) if isinstance(strategy, str) else strategy(q, people)
    sched.plan(total)
    state = RatingState(n_images)
    if prior_scores is not None:
        state.set_prior(prior_scores)
    for t in range(total):
        v = voters[t]
        a, b = sched.next_pair(state, sched_rng, voter=v)
        outcome = 1.0 if coins[t] < people.p_left(v, q[a] - q[b]) else 0.0
        sched.observe(state, a, b, outcome, voter=v)
        if t + 1 in stops:
            yield t + 1, state, sched


def model_scores(q: FloatArray, pearson: float, seed: int) -> FloatArray:
    """Scores of a simulated model with Pearson correlation ``pearson`` (in expectation) with ``q``."""
    if not -1.0 <= pearson <= 1.0:
        raise ValueError(f"prior Pearson must be in [-1, 1], got {pearson}")
    noise = np.random.default_rng([seed, 3]).normal(size=len(q))
    z = (q - q.mean()) / (q.std() or 1.0)
    return np.asarray(pearson * z + np.sqrt(1.0 - pearson**2) * noise, dtype=np.float64)


def _measure(q: FloatArray, state: RatingState, votes: int, n: int, methods: Sequence[str]) -> list[Point]:
    out = []
    for m in methods:
        est = estimate(state, m)
        out.append(Point(votes / n, m, metrics.pairwise_accuracy(q, est), metrics.spearman(q, est),
                         metrics.top_precision(q, est)))
    return out


@dataclass
class SimulationResult:
    """All points of a study of one strategy over seeds."""

    strategy: str
    images: int
    votes_per_image: float
    crowd: CrowdConfig
    seeds: int
    rating: str
    prior_pearson: float | None = None
    points: list[tuple[int, Point]] = field(default_factory=list)

    def summary(self, rating: str | None = None, votes_per_image: float | None = None) -> dict[str, Any]:
        """Mean and 95% CI over seeds of each metric, for one rating method at one moment."""
        r = rating or self.rating
        v = self.votes_per_image if votes_per_image is None else votes_per_image
        sel = [p for _, p in self.points if p.rating == r and abs(p.votes_per_image - v) < 1e-9]
        if not sel:
            raise ValueError(f"no measurement for rating {r!r} at {v} votes per image")
        out: dict[str, Any] = {}
        for key in ("pairwise_accuracy", "spearman", "top_third_precision"):
            mean, (lo, hi) = metrics.mean_ci95([getattr(p, key) for p in sel])
            out[key] = {"mean": mean, "ci95": [lo, hi]}
        return out

    def to_json(self) -> dict[str, Any]:
        """The CONTRACT.md document (plus the settings and, when measured, the curve)."""
        doc: dict[str, Any] = {
            "strategy": self.strategy, "images": self.images, "votes_per_image": self.votes_per_image,
            "voter_accuracy": self.crowd.voter_accuracy, "spammers": self.crowd.spammers,
            "seeds": self.seeds, "rating": self.rating, "prior_pearson": self.prior_pearson,
        }
        doc.update(self.summary())
        stops = sorted({p.votes_per_image for _, p in self.points if p.rating == self.rating})
        if len(stops) > 1:
            doc["curve"] = [{"votes_per_image": v, **self.summary(votes_per_image=v)} for v in stops]
        return doc

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per seed, moment and rating method (for CSV)."""
        return [{"strategy": self.strategy, "seed": s, "images": self.images, **p.__dict__}
                for s, p in self.points]


def simulate(
    strategy: str | SchedulerFactory,
    images: int,
    votes_per_image: float,
    crowd: CrowdConfig,
    seeds: int = 5,
    rating: str | None = None,
    checkpoints: Sequence[float] | None = None,
    extra_ratings: Sequence[str] = (),
    on_run: Callable[[int], None] | None = None,
    prior_pearson: float | None = None,
    **scheduler_kw: Any,
) -> SimulationResult:
    """Run ``seeds`` campaigns of one strategy; ``rating`` defaults to the strategy's own.

    ``checkpoints`` (votes per image) add points along the way (the curve); the strategy
    must not depend on the budget for those points to mean "stopping there" (``report``
    does: its intermediate points are in its random phase). A :data:`SchedulerFactory`
    ``strategy`` is recorded under its ``name`` attribute (else "oracle") and ranked by
    ``rating`` (default "crowd").
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if images < 2:
        raise ValueError(f"need at least 2 images, got {images}")
    if isinstance(strategy, str):
        label, main = strategy, rating or create(strategy, **scheduler_kw).rating
    else:
        label, main = str(getattr(strategy, "name", "oracle")), rating or "crowd"
    if main not in RATINGS:
        raise ValueError(f"unknown rating method {main!r}: known are {', '.join(RATINGS)}")
    methods = [main, *[m for m in extra_ratings if m != main]]
    result = SimulationResult(label, images, votes_per_image, crowd, seeds, main, prior_pearson)
    for s in range(seeds):
        pts = run_campaign(strategy, images, votes_per_image, crowd, s, checkpoints, methods,
                           prior_pearson=prior_pearson, **scheduler_kw)
        result.points.extend((s, p) for p in pts)
        if on_run is not None:
            on_run(s)
    return result
