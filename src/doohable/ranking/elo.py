"""Elo exactly as the original report (section 2.1): start at 0, K = 10, scale 200.

Expected score of image a against b: ``E_a = 1 / (1 + 10 ** ((R_b - R_a) / 200))``;
after a vote ``R <- R + K (S - E)`` with ``S`` = 1 for the winner, 0 for the loser
(0.5 each for a tie). The report's example: 25 beats 12 -> 29.62 and 7.37.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from doohable.ranking.votes import Comparisons, FloatArray, LogRow

START = 0.0  # the report's starting rating
K = 10.0
SCALE = 200.0


def expected(r_a: ArrayLike, r_b: ArrayLike, scale: float = SCALE) -> Any:
    """Probability that a beats b under Elo: ``1 / (1 + 10 ** ((r_b - r_a) / scale))``.

    Works on floats and on NumPy arrays (element-wise).
    """
    return 1.0 / (1.0 + np.power(10.0, (np.asarray(r_b) - np.asarray(r_a)) / scale))


def update_scores(r_a: float, r_b: float, s_a: float, k: float = K,
                  scale: float = SCALE) -> tuple[float, float]:
    """New ratings of a and b after one game where a scored ``s_a`` (1 win, 0 loss, 0.5 tie)."""
    e_a = 1.0 / (1.0 + 10.0 ** ((r_b - r_a) / scale))  # plain floats: called once per vote
    return r_a + k * (s_a - e_a), r_b + k * ((1.0 - s_a) - (1.0 - e_a))


def update(r_winner: float, r_loser: float, k: float = K, scale: float = SCALE) -> tuple[float, float]:
    """New ``(winner, loser)`` ratings after one vote (the report's equations 2-5)."""
    return update_scores(r_winner, r_loser, 1.0, k, scale)


def ratings_from_votes(
    n_items: int,
    winners: Sequence[int] | NDArray[Any],
    losers: Sequence[int] | NDArray[Any],
    k: float = K,
    scale: float = SCALE,
) -> FloatArray:
    """Replay (winner, loser) votes in order from all-zero ratings; returns shape (n_items,)."""
    return ratings_from_comparisons(Comparisons.from_winners(n_items, winners, losers), k, scale)


def ratings_from_comparisons(comps: Comparisons, k: float = K, scale: float = SCALE) -> FloatArray:
    """Replay a :class:`Comparisons` log in order (ties count half); returns shape (n_items,)."""
    r = np.zeros(comps.n_items)
    # Elo is sequential by definition; a plain loop over Python floats is the fast way
    rl = r.tolist()
    for a, b, s in zip(comps.left.tolist(), comps.right.tolist(), comps.outcome.tolist(), strict=True):
        rl[a], rl[b] = update_scores(rl[a], rl[b], s, k, scale)
    return np.asarray(rl, dtype=np.float64)


@dataclass
class EloState:
    """Elo ratings after replaying a log: ratings, vote counts and the change each vote made."""

    ratings: dict[int, float] = field(default_factory=dict)
    votes: dict[int, int] = field(default_factory=dict)
    deltas: dict[int, tuple[int, float, int, float]] = field(default_factory=dict)


def game(r_left: float, r_right: float, winner: str | None) -> tuple[float, float]:
    """New (left, right) ratings after one vote; ``winner`` is "left", "right" or None (tie)."""
    s_left = {"left": 1.0, "right": 0.0, None: 0.5}[winner]
    new_l, new_r = update_scores(r_left, r_right, s_left)
    return float(new_l), float(new_r)


def side(left_id: int, right_id: int, winner_id: int | None) -> str | None:
    """Which side of the pair ``winner_id`` is: "left", "right", or None (a tie)."""
    if winner_id is None:
        return None
    return "left" if winner_id == left_id else "right"


def replay_log(rows: Iterable[LogRow]) -> EloState:
    """Replay a vote log (in id order) into Elo ratings, exactly as the incremental path.

    A vote applies :func:`game` (a tie, "can't decide", scores half each); an undo row
    subtracts the change the undone vote made and its count.
    """
    state = EloState()
    r, n = state.ratings, state.votes
    for row in rows:
        if row.undoes_vote_id is not None:
            if row.undoes_vote_id in state.deltas:
                a, da, b, db = state.deltas[row.undoes_vote_id]
                r[a], r[b] = r[a] - da, r[b] - db
                n[a] -= 1
                n[b] -= 1
            continue
        a, b = row.left_id, row.right_id
        for i in (a, b):
            r.setdefault(i, 0.0)
            n[i] = n.get(i, 0) + 1
        new_a, new_b = game(r[a], r[b], side(a, b, row.winner_id))
        state.deltas[row.id] = (a, new_a - r[a], b, new_b - r[b])
        r[a], r[b] = new_a, new_b
    return state
