"""Elo exactly as the original report (section 2.1): start at 0, K = 10, scale 200.

Expected score of image a against b: ``E_a = 1 / (1 + 10 ** ((R_b - R_a) / 200))``;
after a vote ``R <- R + K (S - E)`` with ``S`` = 1 for the winner, 0 for the loser
(0.5 each for a tie). The report's example: 25 beats 12 -> 29.62 and 7.37.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from doohable.ranking.votes import Comparisons, FloatArray

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
