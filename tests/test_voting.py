"""The voting service on SQLite and PostgreSQL: pair tokens, votes, undo, skip, ratings, replay."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from doohable import voting
from doohable.ranking import elo
from doohable.ranking.votes import Comparisons
from doohable.store.db import get_engine, session_scope
from doohable.store.models import PairToken, Rating, Vote
from doohable.store.users import add_user
from doohable.voting import live as live_states
from voting_support import add_images, delete_image_unchecked


@pytest.fixture
def voting_db(db_url: str):  # type: ignore[no-untyped-def]
    """An engine with 6 images and two voters."""
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        images = add_images(s, 6)
        alice, _ = add_user(s, "alice")
        bob, _ = add_user(s, "bob")
        ids = (alice.id, bob.id)
    return engine, images, ids


def elo_table(engine) -> dict[int, tuple[float, int]]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as s:
        rows = s.execute(select(Rating.image_id, Rating.rating, Rating.votes).where(Rating.method == "elo"))
        return {i: (r, n) for i, r, n in rows}


def vote(engine, voter: int, pick: str | None) -> voting.VoteResult:  # type: ignore[no-untyped-def]
    with session_scope(engine) as s:
        pair = voting.next_pair(s, voter)
    winner = None if pick is None else getattr(pair, pick).id
    with session_scope(engine) as s:
        return voting.record_vote(s, voter, pair.token, winner)


def test_pair_token_is_stored_and_single_use(voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, images, (alice, bob) = voting_db
    with session_scope(engine) as s:
        pair = voting.next_pair(s, alice)
    assert pair.left.id != pair.right.id and {pair.left.id, pair.right.id} <= set(images)
    with session_scope(engine) as s:
        stored = s.get(PairToken, pair.token)
        assert stored is not None and stored.voter_id == alice and stored.used_at is None
    with session_scope(engine) as s, pytest.raises(voting.NotFoundError):
        voting.record_vote(s, bob, pair.token, pair.left.id)  # not bob's pair
    with session_scope(engine) as s, pytest.raises(voting.VotingError, match="winner_id must be"):
        voting.record_vote(s, alice, pair.token, max(images) + 99)
    with session_scope(engine) as s:
        first = voting.record_vote(s, alice, pair.token, pair.left.id)
    with session_scope(engine) as s:
        again = voting.record_vote(s, alice, pair.token, pair.right.id)
    assert first.created and not again.created and again.vote_id == first.vote_id
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Vote)) == 1
        assert s.get(Vote, first.vote_id).winner_id == pair.left.id  # type: ignore[union-attr]


def test_first_vote_moves_elo_as_the_report(voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, _images, (alice, _bob) = voting_db
    with session_scope(engine) as s:
        pair = voting.next_pair(s, alice)
    with session_scope(engine) as s:
        voting.record_vote(s, alice, pair.token, pair.right.id)
    table = elo_table(engine)
    assert table[pair.right.id] == (pytest.approx(5.0), 1)  # K/2 from equal ratings
    assert table[pair.left.id] == (pytest.approx(-5.0), 1)


def test_tie_scores_half_and_skip_consumes_the_token(voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, _images, (alice, _bob) = voting_db
    vote(engine, alice, "left")
    before = elo_table(engine)
    with session_scope(engine) as s:
        pair = voting.next_pair(s, alice)
    with session_scope(engine) as s:
        voting.record_vote(s, alice, pair.token, None)
    after = elo_table(engine)
    ra, rb = before.get(pair.left.id, (0.0, 0))[0], before.get(pair.right.id, (0.0, 0))[0]
    assert after[pair.left.id][0] == pytest.approx(elo.update_scores(ra, rb, 0.5)[0])
    with session_scope(engine) as s:
        skipped = voting.next_pair(s, alice)
    with session_scope(engine) as s:
        voting.skip_pair(s, alice, skipped.token)
    with session_scope(engine) as s, pytest.raises(voting.ConflictError, match="skipped"):
        voting.record_vote(s, alice, skipped.token, skipped.left.id)


def test_undo_appends_a_row_and_restores_ratings(voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, _images, (alice, bob) = voting_db
    vote(engine, alice, "left")
    vote(engine, bob, "right")
    before = elo_table(engine)
    last = vote(engine, alice, "right")
    with session_scope(engine) as s:
        undo_id = voting.undo_last(s, alice)
    assert undo_id is not None and undo_id > last.vote_id
    after = elo_table(engine)
    for image_id, (rating, n) in after.items():
        assert rating == pytest.approx(before.get(image_id, (0.0, 0))[0], abs=1e-9)
        assert n == before.get(image_id, (0.0, 0))[1]
    with session_scope(engine) as s:
        undo_row = s.get(Vote, undo_id)
        assert undo_row is not None and undo_row.undoes_vote_id == last.vote_id
        assert s.get(Vote, last.vote_id) is not None  # never deleted
        second = voting.undo_last(s, alice)  # the vote before, not the same one again
        assert s.get(Vote, second).undoes_vote_id not in (None, last.vote_id)  # type: ignore[union-attr]
    with session_scope(engine) as s:
        assert voting.undo_last(s, alice) is None  # nothing left to undo


def test_replay_of_the_log_equals_incremental_ratings(voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, _images, voters = voting_db
    rng = np.random.default_rng(7)
    for k in range(60):
        voter = voters[k % 2]
        roll = rng.random()
        if roll < 0.1:
            with session_scope(engine) as s:
                voting.undo_last(s, voter)
        else:
            vote(engine, voter, None if roll < 0.2 else ("left" if roll < 0.6 else "right"))
    incremental = elo_table(engine)
    with session_scope(engine) as s:
        replayed = voting.replay_elo(voting.log_rows(s))
        report = voting.rebuild_ratings(s)
    assert report.max_elo_change == 0.0
    assert {i: (r, n) for i, r in replayed.ratings.items() for n in [replayed.votes[i]]} == incremental
    assert elo_table(engine) == incremental


def test_rebuild_repairs_a_corrupted_rating(voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, _images, (alice, _bob) = voting_db
    for _ in range(5):
        vote(engine, alice, "left")
    good = elo_table(engine)
    some = next(iter(good))
    with session_scope(engine) as s:
        row = s.get(Rating, (some, "elo"))
        assert row is not None
        row.rating += 123.0
    with session_scope(engine) as s:
        report = voting.rebuild_ratings(s)
    assert report.max_elo_change == pytest.approx(123.0)
    assert elo_table(engine) == good


def test_votes_for_a_deleted_image_stay_in_the_log_and_get_no_rating(  # type: ignore[no-untyped-def]
    voting_db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image deleted with foreign keys off: the rebuild succeeds and counts its votes, no
    rating names it, voting goes on."""
    engine, _images, (alice, bob) = voting_db
    monkeypatch.setattr(live_states, "RECHECK_S", 0.0)  # the scheduler sees the deletion at once
    for k in range(12):
        vote(engine, (alice, bob)[k % 2], "left" if k % 3 else None)
    with session_scope(engine) as s:
        counted = voting.effective_votes(s)
        assert voting.rebuild_ratings(s).deleted_votes == 0  # BT rows stored, a fit cached
    gone = counted[-1].left_id  # bob's last vote names it
    naming = sum(gone in (r.left_id, r.right_id) for r in counted)
    delete_image_unchecked(engine, gone)
    with session_scope(engine) as s:
        report = voting.rebuild_ratings(s)
    assert report.deleted_votes == naming and report.log_rows == 12 and report.max_elo_change == 0.0
    assert report.images == 5
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Vote)) == 12  # nothing lost
        for method in ("elo", "bt"):
            rated = {r.image_id for r in voting.ratings(s, method)}
            assert rated and gone not in rated
        bt_rows = set(s.scalars(select(Rating.image_id).where(Rating.method == "bt")))
        assert gone not in bt_rows
        assert sum(r.votes for r in voting.ratings(s, "bt")) == 2 * (12 - naming)
    vote(engine, alice, "right")  # pairs no longer show it
    with session_scope(engine) as s:
        assert voting.undo_last(s, alice) is not None
    with session_scope(engine) as s:
        assert voting.rebuild_ratings(s).max_elo_change < 1e-9


def test_replay_without_undo_matches_the_ranking_engine() -> None:
    rows = [voting.LogRow(i + 1, a, b, w, None) for i, (a, b, w) in enumerate(
        [(0, 1, 0), (1, 2, 2), (2, 0, None), (0, 1, 1), (1, 2, 1), (2, 0, 0)]
    )]
    mine = voting.replay_elo(rows).ratings
    comps = Comparisons(
        3, np.array([r.left_id for r in rows]), np.array([r.right_id for r in rows]),
        np.array([1.0 if r.winner_id == r.left_id else 0.5 if r.winner_id is None else 0.0 for r in rows]),
    )
    ref = elo.ratings_from_comparisons(comps)
    np.testing.assert_allclose([mine[i] for i in range(3)], ref, rtol=0, atol=1e-12)


def test_bt_ratings_order_the_consistent_winner_first(voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, images, (alice, bob) = voting_db
    best = None
    for k in range(40):
        voter = (alice, bob)[k % 2]
        with session_scope(engine) as s:
            pair = voting.next_pair(s, voter)
        ids = (pair.left.id, pair.right.id)
        best = images[0]
        winner = best if best in ids else min(ids)  # a strict order: lower id wins
        with session_scope(engine) as s:
            voting.record_vote(s, voter, pair.token, winner)
    with session_scope(engine) as s:
        bt = voting.ratings(s, "bt")
        stats = voting.voter_stats(s, alice)
    assert bt[0].image_id == best
    assert all(r.uncertainty is not None and r.uncertainty > 0 for r in bt)
    assert sum(r.votes for r in bt) == 80
    assert stats["today"] == 20 and stats["total"] == 20
    assert 0.0 <= stats["settled"] <= 1.0


def test_export_lists_decisive_votes_not_undone(voting_db) -> None:  # type: ignore[no-untyped-def]
    engine, _images, (alice, bob) = voting_db
    kept = vote(engine, alice, "left")
    vote(engine, bob, None)  # a tie: not in the export
    vote(engine, bob, "right")
    with session_scope(engine) as s:
        voting.undo_last(s, bob)
        lines = "".join(voting.export_votes_csv(s)).splitlines()
        kept_row = s.get(Vote, kept.vote_id)
        assert kept_row is not None
    assert lines[0] == "voter,winner,loser,created_at"
    assert len(lines) == 2
    voter, winner, loser, created = lines[1].split(",")
    assert voter == "alice" and int(winner) == kept_row.winner_id
    assert int(loser) in (kept_row.left_id, kept_row.right_id) and int(loser) != int(winner)
    assert created.endswith("+00:00")


def test_no_pair_with_fewer_than_two_images(db_url: str) -> None:
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        add_images(s, 1)
        user, _ = add_user(s, "carol")
        with pytest.raises(voting.ConflictError, match="fewer than two"):
            voting.next_pair(s, user.id)


def test_settled_share_counts_confident_pairs() -> None:
    assert voting.settled_share(np.array([0.0, 10.0]), np.array([0.1, 0.1])) == 1.0
    assert voting.settled_share(np.array([0.0, 0.1]), np.array([1.0, 1.0])) == 0.0
    assert voting.settled_share(np.array([0.0]), np.array([1.0])) == 0.0
