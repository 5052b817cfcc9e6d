"""The vote log as arrays: who compared which two images, and who won.

Every rating model (:mod:`~doohable.ranking.elo`, :mod:`~doohable.ranking.bradley_terry`)
and every scheduler reads votes in this one shape. Items and voters are dense indices
``0..n-1``; :class:`IdIndex` maps the database's sparse ids to them and back.
"""

from __future__ import annotations

import csv
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

LEFT_WON = 1.0
RIGHT_WON = 0.0
TIE = 0.5


def outcome_of(left: Hashable, right: Hashable, winner: Hashable | None) -> float:
    """Outcome of one vote from the left image's point of view.

    Parameters
    ----------
    left, right : ids of the two images shown.
    winner : the id voted for, or ``None`` for "can't decide" (a tie).

    Returns
    -------
    1.0 if left won, 0.0 if right won, 0.5 for a tie.

    Raises
    ------
    ValueError
        If ``winner`` is neither of the two images shown, or both are the same image.
    """
    if left == right:
        raise ValueError(f"a pair needs two different images, got {left!r} twice")
    if winner is None:
        return TIE
    if winner == left:
        return LEFT_WON
    if winner == right:
        return RIGHT_WON
    raise ValueError(f"winner {winner!r} is not in the pair ({left!r}, {right!r})")


@dataclass(frozen=True)
class LogRow:
    """One row of a vote log: a vote (``undoes_vote_id`` None) or an undo of an earlier vote."""

    id: int
    left_id: int
    right_id: int
    winner_id: int | None
    undoes_vote_id: int | None
    voter_id: int = 0

    @property
    def loser_id(self) -> int | None:
        """The image that lost (None for a tie)."""
        if self.winner_id is None:
            return None
        return self.right_id if self.winner_id == self.left_id else self.left_id


def effective(rows: Iterable[LogRow]) -> list[LogRow]:
    """The rows that count: votes (ties included) that are not undone; undo rows left out."""
    rows = list(rows)
    undone = {r.undoes_vote_id for r in rows if r.undoes_vote_id is not None}
    return [r for r in rows if r.undoes_vote_id is None and r.id not in undone]


class IdIndex:
    """A fixed mapping between outside ids (image or voter ids) and dense indices."""

    def __init__(self, ids: Iterable[Hashable]) -> None:
        self.ids: list[Hashable] = list(ids)
        self._pos = {v: i for i, v in enumerate(self.ids)}
        if len(self._pos) != len(self.ids):
            raise ValueError("ids must be unique")

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self, values: Iterable[Hashable], what: str = "image") -> IntArray:
        """Dense indices of ``values``; raises ``ValueError`` naming the unknown ids."""
        vals = list(values)
        unknown = sorted({repr(v) for v in vals if v not in self._pos})
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise ValueError(f"unknown {what} id(s): {shown}")
        return np.fromiter((self._pos[v] for v in vals), dtype=np.int64, count=len(vals))

    def decode(self, indices: Iterable[int]) -> list[Hashable]:
        """Outside ids of dense ``indices``."""
        return [self.ids[int(i)] for i in indices]


@dataclass(frozen=True)
class Comparisons:
    """An append-only log of pairwise votes, replayable in order.

    Attributes
    ----------
    n_items : number of images (indices ``0..n_items-1``).
    left, right : int arrays (V,), the images shown on the left and on the right.
    outcome : float array (V,), 1 = left won, 0 = right won, 0.5 = tie ("can't decide").
    voter : int array (V,), dense voter index of each vote (all 0 when unknown).
    n_voters : number of voters (>= 1).
    positions_known : whether left/right are the sides really shown; if not (a log of
        winner/loser only), the position bias is not fitted.
    """

    n_items: int
    left: IntArray
    right: IntArray
    outcome: FloatArray
    voter: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_voters: int = 1
    positions_known: bool = True

    def __post_init__(self) -> None:
        left = np.asarray(self.left, dtype=np.int64).reshape(-1)
        right = np.asarray(self.right, dtype=np.int64).reshape(-1)
        outcome = np.asarray(self.outcome, dtype=np.float64).reshape(-1)
        voter = np.asarray(self.voter, dtype=np.int64).reshape(-1)
        if voter.size == 0 and left.size:
            voter = np.zeros(left.size, dtype=np.int64)
        _check(self.n_items, left, right, outcome, voter, self.n_voters)
        for name, arr in (("left", left), ("right", right), ("outcome", outcome), ("voter", voter)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return int(self.left.size)

    @classmethod
    def from_winners(
        cls,
        n_items: int,
        winners: Sequence[int] | NDArray[Any],
        losers: Sequence[int] | NDArray[Any],
        voters: Sequence[int] | NDArray[Any] | None = None,
        n_voters: int | None = None,
    ) -> Comparisons:
        """A log of (winner, loser) votes whose screen sides are unknown."""
        w = np.asarray(winners, dtype=np.int64)
        v = np.zeros(w.size, dtype=np.int64) if voters is None else np.asarray(voters, dtype=np.int64)
        nv = n_voters if n_voters is not None else int(v.max()) + 1 if v.size else 1
        return cls(n_items, w, np.asarray(losers, dtype=np.int64), np.ones(w.size), v, nv, False)

    def subset(self, mask: NDArray[Any]) -> Comparisons:
        """The votes selected by a boolean mask or an index array (same items and voters)."""
        return Comparisons(
            self.n_items, self.left[mask], self.right[mask], self.outcome[mask],
            self.voter[mask], self.n_voters, self.positions_known,
        )

    def counts(self) -> IntArray:
        """Number of comparisons each image took part in, shape (n_items,)."""
        n = self.n_items
        return np.bincount(self.left, minlength=n) + np.bincount(self.right, minlength=n)


def _check(n_items: int, left: IntArray, right: IntArray, outcome: FloatArray, voter: IntArray,
           n_voters: int) -> None:
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    if n_voters < 1:
        raise ValueError(f"n_voters must be >= 1, got {n_voters}")
    if not (left.size == right.size == outcome.size == voter.size):
        raise ValueError("left, right, outcome and voter must have the same length")
    for name, arr in (("left", left), ("right", right)):
        bad = arr[(arr < 0) | (arr >= n_items)]
        if bad.size:
            raise ValueError(f"unknown image index in {name}: {int(bad[0])} (n_items={n_items})")
    if np.any(left == right):
        raise ValueError(f"an image cannot be compared with itself (index {int(left[left == right][0])})")
    if not np.all(np.isin(outcome, (LEFT_WON, RIGHT_WON, TIE))):
        raise ValueError("outcome must be 1 (left won), 0 (right won) or 0.5 (tie)")
    if voter.size and (voter.min() < 0 or voter.max() >= n_voters):
        raise ValueError(f"voter index out of range 0..{n_voters - 1}")


def read_votes_csv(path: str | Path, image_ids: Iterable[Hashable] | None = None
                   ) -> tuple[Comparisons, IdIndex, IdIndex]:
    """Read a ``voter,winner,loser[,...]`` CSV (the API's vote export) as winner/loser votes.

    Image ids are the CSV's integers; ``image_ids`` fixes the set of images (default: those
    in the file, sorted). Returns the comparisons and the image and voter indexes.
    """
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"voter", "winner", "loser"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    winners = [int(r["winner"]) for r in rows]
    losers = [int(r["loser"]) for r in rows]
    images = IdIndex(sorted(set(winners) | set(losers)) if image_ids is None else image_ids)
    voters = IdIndex(sorted({r["voter"] for r in rows}))
    who = voters.encode((r["voter"] for r in rows), what="voter")
    comps = Comparisons.from_winners(len(images), images.encode(winners), images.encode(losers), who,
                                     max(1, len(voters)))
    return comps, images, voters


def comparisons_from_log(
    rows: Sequence[LogRow], items: IdIndex, voters: IdIndex | None = None
) -> Comparisons:
    """Votes of a log as :class:`Comparisons` over ``items``; voters dense by ``voters``, or
    (None) the raw voter ids as indices. Every row must be a vote between two of ``items``."""
    voter = (voters.encode((r.voter_id for r in rows), "voter") if voters is not None
             else np.array([r.voter_id for r in rows], dtype=np.int64))
    return Comparisons(
        n_items=len(items),
        left=items.encode(r.left_id for r in rows),
        right=items.encode(r.right_id for r in rows),
        outcome=np.array([outcome_of(r.left_id, r.right_id, r.winner_id) for r in rows], dtype=np.float64),
        voter=voter,
        n_voters=len(voters) if voters is not None else max([r.voter_id for r in rows], default=0) + 1,
    )
