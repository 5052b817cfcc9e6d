"""The stored scores of a scorer as the prior of the service's ratings and scheduler."""

from __future__ import annotations

import datetime as dt
import importlib
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


def test_a_new_prior_model_changes_the_served_ratings_without_a_vote(  # type: ignore[no-untyped-def]
    scored_voting_db,
) -> None:
    """A retrain's promotion (set_prior_model) refits the served BT ratings at once: the cache
    knows the prior model, not only the log's last id."""
    ratings_module = importlib.import_module("doohable.voting.ratings")  # `voting.ratings` is the function
    engine, images, voter = scored_voting_db
    with session_scope(engine) as s:
        store_scores(s, {i: float(k) for k, i in enumerate(images)}, "m", "v1")
        store_scores(s, {i: float(k * 5 % 8) for k, i in enumerate(images)}, "m", "v2")  # shuffled
        set_prior_model(s, "m", "v1")
    for _ in range(2):  # the voters agree with v1: the higher index wins
        for a, b in itertools.combinations(images[:6], 2):
            _vote(engine, voter, a, b, b)
    with session_scope(engine) as s:
        before = [(r.image_id, r.rating) for r in voting.ratings(s, voting.BT)]
        first = voting.bt_fit(s).prior
        assert first is not None and first.b > 0
    with session_scope(engine) as s:
        set_prior_model(s, "m", "v2")  # what a promotion writes
    with session_scope(engine) as s:
        after = [(r.image_id, r.rating) for r in voting.ratings(s, voting.BT)]
        second = voting.bt_fit(s).prior
        assert second is not None and not np.allclose(second.scores, first.scores)  # v2's scores
        ratings_module._bt_cache.clear()
        fresh = [(r.image_id, r.rating) for r in voting.ratings(s, voting.BT)]
    assert after != before
    assert [i for i, _ in after] == [i for i, _ in fresh]
    assert [r for _, r in after] == pytest.approx([r for _, r in fresh])


def test_new_images_join_the_live_state_without_a_replay(  # type: ignore[no-untyped-def]
    scored_voting_db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload adds the image to the running state at the model's estimate and a rejection
    hides one (the state object is kept: no replay of the log); past a quarter hidden, the state
    is rebuilt."""
    from doohable.store.models import Image

    engine, images, voter = scored_voting_db
    monkeypatch.setattr(live_states, "RECHECK_S", 0.0)
    with session_scope(engine) as s:
        store_scores(s, {i: float(k) for k, i in enumerate(images)}, "m", "v1")
    for _ in range(3):  # the voters agree with the model: the higher index wins
        for a, b in itertools.combinations(images, 2):
            _vote(engine, voter, a, b, b)
    with session_scope(engine) as s:
        live = live_states.live_state(s, "active")
        with live.lock:
            live.state.refit()  # what the background refit does
        before = live.state.mean.copy()
        assert live.state.prior is not None and live.state.prior.b > 0  # the model's weight, learned
    with session_scope(engine) as s:
        (new_id,) = add_images(s, 1, start=100)
        store_scores(s, {new_id: 10.0}, "m", "v1")  # the model's best image
    with session_scope(engine) as s:
        again = live_states.live_state(s, "active")
        assert again is live and new_id in again.index and again.state.n_items == 9
        assert np.allclose(again.state.mean[:8], before)  # the others are untouched
        new = again.index[new_id]
        assert again.state.prior is not None and again.state.mean[new] == again.state.prior.mean[new]
        assert again.state.mean[new] > before.max()  # entered at the model's estimate: the best
    _vote(engine, voter, images[0], new_id, new_id)  # and it is voted on like any other
    with session_scope(engine) as s:
        current = live_states.live_state(s, "active")
        with current.lock:
            current.catch_up(s)  # what the service does before choosing a pair
        assert current is live and int(current.state.counts[again.index[new_id]]) == 1
        s.get(Image, images[0]).status = "rejected"
    with session_scope(engine) as s:  # a rejected image stays in the ratings, never in a pair
        kept = live_states.live_state(s, "active")
        assert kept is live and kept.state.hidden == {kept.index[images[0]]}
        for _ in range(20):
            pair = voting.next_pair(s, voter)
            assert images[0] not in (pair.left.id, pair.right.id)
        for i in images[1:3]:
            s.get(Image, i).status = "rejected"
    with session_scope(engine) as s:  # a third of the state hidden: rebuilt without them
        rebuilt = live_states.live_state(s, "active")
        assert rebuilt is not live and rebuilt.state.n_items == 6 and not rebuilt.state.hidden
        assert not set(images[:3]) & set(rebuilt.index)
