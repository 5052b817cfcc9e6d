"""One decision per image (a repeat answers the first, a changed image refuses), undo of the
last decision, and the voting page's pair-again and progress services, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io

import pytest

from doohable import decisions, moderation, voting, voting_pages
from doohable.config import Settings
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Decision, Image
from doohable.store.users import add_user
from voting_support import add_images


def test_repeat_is_idempotent_and_a_changed_image_refuses(settings: Settings) -> None:
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        a, b = add_images(s, 2)
        mia, _ = add_user(s, "mia", "moderator")
        first = decisions.decide_once(s, a, "rejected", actor=mia, score=0.4, expected_status="pending")
        again = decisions.decide_once(s, a, "rejected", actor=mia, score=0.4, expected_status="pending")
        assert first.created and not again.created and again.decision.id == first.decision.id
        with pytest.raises(decisions.DecisionConflict):  # the page saw it pending; it is rejected now
            decisions.decide_once(s, a, "approved", actor=mia, score=0.4, expected_status="pending")
        decisions.decide_once(s, b, "approved", actor=mia, score=0.9)
        assert s.query(Decision).count() == 2
        assert moderation.human_decisions(s) == {a: False, b: True}


def test_undo_restores_the_status_before_and_keeps_the_audit_columns(settings: Settings) -> None:
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        a, b = add_images(s, 2)
        mia, _ = add_user(s, "mia", "moderator")
        decisions.decide_once(s, a, "approved", actor=mia, score=0.8)
        decisions.decide_once(s, b, "rejected", actor=mia, score=0.2)
        undone, row = decisions.undo_last_decision(s, mia) or (None, None)
        assert undone is not None and row is not None
        assert (undone.image_id, row.decision, row.rule) == (b, "pending", f"undo:{undone.id}")
        assert s.get(Image, b).status == "pending"  # type: ignore[union-attr]
        assert moderation.human_decisions(s) == {a: True}  # the undone rejection no longer counts
        second = decisions.undo_last_decision(s, mia)  # the one before
        assert second is not None and second[0].image_id == a
        assert decisions.undo_last_decision(s, mia) is None
        rows = list(csv.reader(io.StringIO(moderation.audit_csv(s))))
    assert rows[0] == moderation.AUDIT_COLUMNS
    assert [r[3] for r in rows[1:]] == ["approved", "rejected", "pending", "pending"]
    assert rows[3][5].startswith("undo:") and rows[3][4] == "mia"


def test_undo_refuses_when_the_image_was_decided_again(settings: Settings) -> None:
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        (a,) = add_images(s, 1)
        mia, _ = add_user(s, "mia", "moderator")
        ole, _ = add_user(s, "ole", "moderator")
        decisions.decide_once(s, a, "approved", actor=mia, score=None)
        decisions.decide_once(s, a, "rejected", actor=ole, score=None)
        with pytest.raises(decisions.DecisionConflict):
            decisions.undo_last_decision(s, mia)
        assert s.get(Image, a).status == "rejected"  # type: ignore[union-attr]


def test_undone_vote_and_skipped_pair_come_back_with_new_tokens(settings: Settings) -> None:
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        add_images(s, 4)
        dana, _ = add_user(s, "dana")
        assert voting_pages.compared_share(s) == (0, 4)
        pair = voting.next_pair(s, dana.id)
        voting.record_vote(s, dana.id, pair.token, pair.left.id)
        assert voting_pages.compared_share(s) == (2, 4)
        undo_id = voting.undo_last(s, dana.id)
        assert undo_id is not None
        again = voting_pages.undone_pair(s, dana.id, undo_id)
        assert (again.left.id, again.right.id) == (pair.left.id, pair.right.id) and again.token != pair.token
        assert voting.record_vote(s, dana.id, again.token, again.right.id).created
        skipped = voting.next_pair(s, dana.id)
        voting.skip_pair(s, dana.id, skipped.token)
        back = voting_pages.pair_again(s, dana.id, skipped.token)
        assert (back.left.id, back.right.id) == (skipped.left.id, skipped.right.id)
        with pytest.raises(voting.ConflictError):  # a voted pair comes back by undoing the vote
            voting_pages.pair_again(s, dana.id, again.token)
        other, _ = add_user(s, "eve")
        with pytest.raises(voting.NotFoundError):
            voting_pages.pair_again(s, other.id, skipped.token)
