"""Fit the default scorer's combination (``doohable.model.default``) on data.

- :func:`fit_from_labels`: images with targets on the 1-5 scale (a labelled set: SCUT-FBP5500's
  beauty means, live-challenge's MOS as ``1 + 4 * MOS / 100``): the parts are scored, then the
  coefficients are fitted by least squares (``benchmarks/recipes/fit_default.py``).
- :func:`fit_from_votes`: in-house votes. The targets are the images' Bradley-Terry ratings,
  standardised and put on the current scores' mean and spread (votes fix an order and distances
  in logits, not a level on 1-5); the parts are those stored with the scores
  (``scores.parts``, by ``doohable score --ingested`` with the combined scorer).
  ``doohable calibrate --from-votes --out FILE.json`` runs it; ``DOOHABLE_MODEL=FILE.json``
  then serves the refitted combination.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from doohable.model.default import Combination, CombinedScorer, fit_combination

MIN_IMAGES = 10  # fewer rated images with stored parts: nothing is fitted


def fit_from_labels(
    scorer: CombinedScorer, photo: np.ndarray, face: np.ndarray, y: np.ndarray, *, data: str
) -> Combination:
    """The combination fitted on parts already scored by ``scorer`` and targets ``y`` (1-5)."""
    return fit_combination(photo, face, y, scorer.combination, fitted=_provenance(data, y))


def fit_from_votes(session: Session, scorer: CombinedScorer) -> Combination:
    """The combination refitted on the database's Bradley-Terry ratings (module docstring).

    Raises ValueError with fewer than ``MIN_IMAGES`` rated images that have stored parts."""
    from doohable.store.models import Score
    from doohable.voting import ratings

    rated = {r.image_id: r.rating for r in ratings(session, "bt")}
    q = select(Score.image_id, Score.score, Score.parts).where(
        Score.model == scorer.name, Score.parts.is_not(None), Score.image_id.in_(list(rated))
    )
    rows = {int(i): (float(s), p) for i, s, p in session.execute(q.order_by(Score.created_at, Score.id))}
    if len(rows) < MIN_IMAGES:
        raise ValueError(
            f"refitting needs {MIN_IMAGES}+ voted images scored by {scorer.name!r} with their parts "
            f"stored (doohable score --ingested); found {len(rows)}"
        )
    ids = sorted(rows)
    current = np.array([rows[i][0] for i in ids])
    r = np.array([rated[i] for i in ids])
    z = (r - r.mean()) / (r.std() or 1.0)
    y = current.mean() + current.std() * z
    photo = np.array([_part(rows[i][1], "photo") for i in ids])
    face = np.array([_part(rows[i][1], "face") for i in ids])
    return fit_combination(photo, face, y, scorer.combination,
                           fitted=_provenance(f"in-house votes (Bradley-Terry), {scorer.name}", y))


def _part(parts: Any, name: str) -> float:
    v = parts.get(name) if isinstance(parts, dict) else None
    return float("nan") if v is None else float(v)


def _provenance(data: str, y: np.ndarray) -> dict[str, Any]:
    return {"data": data, "images": int(len(y)), "date": dt.date.today().isoformat()}
