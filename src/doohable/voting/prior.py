"""Which scorer's opinion is the ratings' prior, and its scores for a list of images.

The prior is the stored scores (table ``scores``) of one model: the one named by the
Setting ``prior_model`` (``{"name", "version"}``, written when ``doohable retrain`` promotes
a model), else the model of the newest stored score. No scores: no prior (plain BT). How
much the prior counts is learned from the votes (:mod:`doohable.ranking.prior`), so a
scorer the voters disagree with loses its weight by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from doohable.ranking.metrics import vote_agreement
from doohable.store.catalog import newest_scored_model
from doohable.store.models import Score, Setting
from doohable.voting.log import effective_votes, without_deleted_images

PRIOR_SETTING = "prior_model"


def prior_model(session: Session) -> tuple[str, str] | None:
    """(name, version) of the scorer whose scores are the prior, or None."""
    value = session.scalar(select(Setting.value).where(Setting.key == PRIOR_SETTING))
    if isinstance(value, dict) and value.get("name") and value.get("version"):
        return str(value["name"]), str(value["version"])
    return newest_scored_model(session)


def set_prior_model(session: Session, name: str, version: str) -> None:
    """Make this scorer's stored scores the prior of every rating from now on."""
    row = session.get(Setting, PRIOR_SETTING)
    if row is None:
        session.add(Setting(key=PRIOR_SETTING, value={"name": name, "version": version}))
    else:
        row.value = {"name": name, "version": version}
    session.flush()


def prior_scores(session: Session, image_ids: Sequence[int]) -> np.ndarray | None:
    """The prior model's score of each image (NaN where it has none), or None: no prior."""
    model = prior_model(session)
    if model is None or not image_ids:
        return None
    name, version = model
    rows = session.execute(
        select(Score.image_id, Score.score).where(Score.model == name, Score.model_version == version)
    )
    by_id = dict(rows.all())
    out = np.array([by_id.get(i, np.nan) for i in image_ids], dtype=np.float64)
    return out if np.isfinite(out).sum() >= 2 else None


def model_agreement(session: Session) -> dict[str, Any] | None:
    """How far the prior scorer agrees with the voters: ``{"model", "version", "agreement",
    "votes"}`` (share of counted decisive votes whose winner it scores higher), or None
    without a prior scorer or votes on scored images."""
    model = prior_model(session)
    if model is None:
        return None
    name, version = model
    q = select(Score.image_id, Score.score).where(Score.model == name, Score.model_version == version)
    votes, _ = without_deleted_images(session, effective_votes(session))
    share, n = vote_agreement(dict(session.execute(q).all()), votes)
    if share is None:
        return None
    return {"model": name, "version": version, "agreement": share, "votes": n}
