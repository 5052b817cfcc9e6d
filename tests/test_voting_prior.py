"""The stored scores of a scorer as the prior of the service's ratings and scheduler."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pytest

from doohable import voting
from doohable.moderation import store_scores
from doohable.store.db import get_engine, session_scope
from doohable.store.models import PairToken
from doohable.store.users import add_user
from doohable.voting import live as live_states
from doohable.voting.prior import prior_model, set_prior_model
from voting_support import add_images

_tokens = itertools.count()


def _vote(engine, voter: int, left: int, right: int, winner: int) -> None:  # type: ignore[no-untyped-def]
    with session_scope(engine) as s:
        token = f"prior-test-{next(_tokens)}"
        s.add(PairToken(token=token, voter_id=voter, left_id=left, right_id=right,
                        issued_at=dt.datetime.now(dt.UTC)))
        s.flush()
        voting.record_vote(s, voter, token, winner)


@pytest.fixture
def scored_voting_db(db_url: str):  # type: ignore[no-untyped-def]
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        images = add_images(s, 8)
        voter, _ = add_user(s, "carol")
        voter_id = voter.id
    return engine, images, voter_id


def test_no_scores_no_prior(scored_voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, images, voter = scored_voting_db
    _vote(engine, voter, images[0], images[1], images[0])
    with session_scope(engine) as s:
        assert prior_model(s) is None
        assert voting.bt_fit(s).prior is None
        assert live_states.live_state(s, "active").state.prior is None


def test_scores_are_the_prior_and_its_weight_is_learned(scored_voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, images, voter = scored_voting_db
    with session_scope(engine) as s:
        old = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 2.4, 2.6]  # the last two: no votes, in the middle
        store_scores(s, dict(zip(images, old, strict=True)), "old", "v1")
        store_scores(s, {i: float(-k) for k, i in enumerate(images)}, "new", "v2")  # the newest: the prior
        assert prior_model(s) == ("new", "v2")
        set_prior_model(s, "old", "v1")  # a promoted model wins over the newest scores
        assert prior_model(s) == ("old", "v1")
    for _ in range(6):  # the voters agree with "old": the higher index wins, among the first six
        for a, b in itertools.combinations(images[:6], 2):
            _vote(engine, voter, a, b, b)
    with session_scope(engine) as s:
        fit = voting.bt_fit(s)
        assert fit.prior is not None and fit.prior.b > 0
        assert list(np.argsort(fit.rating)) == list(range(6))
        state = live_states.live_state(s, "active").state
        assert state.prior is not None and state.prior.b > 0
        # images 6 and 7 have no votes: they enter at the model's estimate
        assert state.mean[5] > state.mean[7] > state.mean[6] > state.mean[0]
        assert voting.ratings(s, voting.BT)[0].image_id == images[5]  # served as before
