"""Moderation: the policy, the Youden threshold, previews, decisions, the queue and the audit CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from doohable import moderation
from doohable.config import Settings
from doohable.moderation import Policy, decide, threshold_preview, youden_threshold
from doohable.store.db import get_engine, session_scope
from doohable.store.models import Decision, Image, Source
from doohable.store.users import add_user

# --------------------------------------------------------------------------- pure functions


def test_decide_approves_above_threshold_only_when_checked_and_not_flagged() -> None:
    p = Policy(threshold=3.0, nsfw_threshold=0.8)
    assert decide(3.5, 0.1, p) == "approved"
    assert decide(3.0, 0.1, p) == "approved"  # at the threshold
    assert decide(2.9, 0.1, p) is None
    assert decide(4.9, 0.85, p) == "flagged"  # NSFW wins over a high score
    assert decide(4.9, None, p) is None  # never checked: never auto-approved
    assert decide(4.9, None, p, require_nsfw_check=False) == "approved"
    assert decide(None, 0.1, p) is None
    assert decide(4.9, 0.1, Policy(threshold=None)) is None  # no threshold: auto-approval off


def test_youden_threshold_matches_hand_computed_roc() -> None:
    # sklearn's documented example: thresholds inf, 0.8, 0.4, 0.35, 0.1
    s = youden_threshold([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    assert s.threshold == pytest.approx(0.8)  # first of the two J = 0.5 optima
    assert (s.tpr, s.fpr, s.youden_j) == pytest.approx((0.5, 0.0, 0.5))
    assert (s.positives, s.negatives) == (2, 2)


@pytest.mark.parametrize("seed", range(5))
def test_roc_points_equal_sklearn(seed: int) -> None:
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(3.0, 0.7, 200), 1)  # ties on purpose
    y = rng.random(200) < 1 / (1 + np.exp(-(scores - 3.0) * 2))
    fpr, tpr, thr = moderation.roc_points(scores, y)
    want = roc_curve(y, scores, drop_intermediate=False)
    for got, ref in zip((fpr, tpr, thr), want, strict=True):
        np.testing.assert_allclose(got, ref)
    j = want[1] - want[0]
    assert youden_threshold(scores, y).threshold == pytest.approx(want[2][int(np.argmax(j))])


def test_youden_threshold_separable_is_lowest_approved_score() -> None:
    rng = np.random.default_rng(0)
    rejected = rng.uniform(1.0, 2.9, 40)
    approved = rng.uniform(3.1, 5.0, 20)
    s = youden_threshold(np.r_[rejected, approved], [False] * 40 + [True] * 20)
    assert s.threshold == pytest.approx(approved.min())
    assert s.youden_j == pytest.approx(1.0)


def test_youden_threshold_needs_both_classes() -> None:
    with pytest.raises(moderation.ModerationError, match="both approved and rejected"):
        youden_threshold([3.0, 4.0], [True, True])
    with pytest.raises(moderation.ModerationError, match="same length"):
        youden_threshold([3.0, 4.0], [True])


def test_threshold_preview_counts() -> None:
    p = threshold_preview(3.0, [2.0, 3.0, 4.5], [1.0, 3.5, 2.5, 4.0], [False, False, True, True])
    assert p.would_approve == 2
    assert p.false_approvals == 1  # the rejected 3.5
    assert p.missed_approvals == 1  # the approved 2.5
    assert p.wrong == 2 and p.decided == 4


def test_percentile_of() -> None:
    assert moderation.percentile_of(3.0, [1.0, 2.0, 3.0, 4.0]) == pytest.approx(75.0)
    assert moderation.percentile_of(0.0, [1.0]) == 0.0
    assert moderation.percentile_of(1.0, []) is None


# --------------------------------------------------------------------------- with a database


def _image(
    session: Session, *, nsfw: float | None = 0.01, network: str | None = None, age_days: int = 0
) -> int:
    sha = uuid.uuid4().hex + uuid.uuid4().hex
    img = Image(
        sha256=sha,
        phash="0" * 16,
        width=10,
        height=10,
        format="JPEG",
        size_bytes=1,
        nsfw=nsfw,
        created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=age_days),
    )
    session.add(img)
    session.flush()
    session.add(
        Source(image_id=img.id, kind="userscript" if network else "file", uri=f"u{img.id}", network=network)
    )
    session.flush()
    return img.id


def test_apply_policy_logs_rule_decisions_and_respects_people(settings: Settings) -> None:
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        mod, _ = add_user(s, "mia", "moderator")
        hi, lo, nsfw, unchecked, human = (
            _image(s),
            _image(s),
            _image(s, nsfw=0.95),
            _image(s, nsfw=None),
            _image(s),
        )
        scores = {hi: 4.2, lo: 2.0, nsfw: 4.9, unchecked: 4.8, human: 4.5}
        moderation.store_scores(s, scores, "m", "v1")
        moderation.record_decision(s, human, "rejected", actor=mod, score=4.5)
        moderation.set_policy(s, threshold=3.5)
        policy = moderation.get_policy(s, settings)
        counts = moderation.apply_policy(s, list(scores), policy, scores)
        again = moderation.apply_policy(s, list(scores), policy, scores)
    assert counts == {"approved": 1, "flagged": 1, "pending": 2}
    assert again == {"approved": 0, "flagged": 1, "pending": 2}
    with session_scope(engine) as s:
        status = {i: s.get(Image, i).status for i in scores}  # type: ignore[union-attr]
        rows = s.scalars(select(Decision).order_by(Decision.id)).all()
    assert status == {hi: "approved", lo: "pending", nsfw: "pending", unchecked: "pending", human: "rejected"}
    auto = [(d.image_id, d.decision, d.rule, d.score) for d in rows if d.actor_id is None]
    assert auto == [
        (hi, "approved", "auto:threshold", 4.2),
        (nsfw, "flagged", "auto:nsfw", 4.9),
    ]  # flag logged once


def test_policy_setting_overrides_environment_default(settings: Settings) -> None:
    env = settings.model_copy(update={"auto_approve_threshold": 4.0})
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        assert moderation.get_policy(s, env).threshold == 4.0
        moderation.set_policy(s, threshold=3.2, nsfw_threshold=0.6)
        assert moderation.get_policy(s, env) == Policy(3.2, 0.6)
        moderation.set_policy(s, clear_threshold=True)
        assert moderation.get_policy(s, env).threshold == 4.0  # back to the environment's
        with pytest.raises(moderation.ModerationError, match="probability"):
            moderation.set_policy(s, nsfw_threshold=1.5)


def test_suggestion_preview_and_audit_from_people_decisions(settings: Settings) -> None:
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        mod, _ = add_user(s, "mo", "moderator")
        ids = [_image(s) for _ in range(8)]
        values = [1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
        moderation.store_scores(s, dict(zip(ids, values, strict=True)), "m", "v1")
        for i, v in zip(ids[:6], values[:6], strict=True):
            moderation.record_decision(s, i, "approved" if v >= 3.0 else "rejected", actor=mod, score=v)
        # a person changes their mind: only the latest decision counts
        moderation.record_decision(s, ids[3], "rejected", actor=mod, score=3.0)
        moderation.record_decision(s, ids[3], "approved", actor=mod, score=3.0)
        sug = moderation.suggest_threshold(s, "m")
        prev = moderation.preview(s, 3.7, "m")
        csv_text = moderation.audit_csv(s)
    assert sug.threshold == pytest.approx(3.0) and sug.youden_j == pytest.approx(1.0)
    assert (sug.positives, sug.negatives) == (3, 3)
    assert prev.would_approve == 2  # pending 4.5 and 5.0
    assert (prev.false_approvals, prev.missed_approvals, prev.decided) == (0, 2, 6)
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(rows) == 8 and list(rows[0]) == moderation.AUDIT_COLUMNS
    assert rows[-1]["by"] == "mo" and rows[-1]["decision"] == "approved" and rows[-1]["score"] == "3"


def test_queue_best_first_with_filters(settings: Settings) -> None:
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        a = _image(s, network="instagram")
        b = _image(s, age_days=10)
        c = _image(s, nsfw=0.99, network="twitter")
        d = _image(s)  # unscored: last
        done = _image(s)
        moderation.store_scores(s, {a: 3.0, b: 4.0, c: 2.0, done: 5.0}, "m", "v1")
        moderation.store_scores(s, {a: 4.5}, "m", "v2")  # newer version wins
        moderation.record_decision(s, done, "approved", rule="auto:threshold", score=5.0)
        q = moderation.queue(s, "m", moderation.QueueFilter())
        by_source = moderation.queue(s, "m", moderation.QueueFilter(source="instagram"))
        by_score = moderation.queue(s, "m", moderation.QueueFilter(min_score=2.5, max_score=4.2))
        recent = moderation.queue(
            s, "m", moderation.QueueFilter(since=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
        )
        approved = moderation.queue(s, "m", moderation.QueueFilter(status="approved"))
    assert [i.id for i in q] == [a, b, c, d]
    assert q[0].score == 4.5 and q[0].source == "instagram"
    assert [i.flagged for i in q] == [False, False, True, False]
    assert [i.id for i in by_source] == [a]
    assert [i.id for i in by_score] == [b]
    assert [i.id for i in recent] == [a, c, d]
    assert [i.id for i in approved] == [done]


def test_record_decision_rejects_bad_input(settings: Settings) -> None:
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        i = _image(s)
        with pytest.raises(moderation.ModerationError, match="unknown decision"):
            moderation.record_decision(s, i, "maybe", rule="x")
        with pytest.raises(moderation.ImageNotFound):
            moderation.record_decision(s, 999999, "approved", rule="x")
        with pytest.raises(moderation.ModerationError, match="person or a rule"):
            moderation.record_decision(s, i, "approved")


def test_collection_percentile(settings: Settings) -> None:
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        ids = [_image(s) for _ in range(4)]
        moderation.store_scores(s, dict(zip(ids, [1.0, 2.0, 3.0, 4.0], strict=True)), "m", "v1")
        assert moderation.collection_percentile(s, 3.0, "m", "v1") == pytest.approx(75.0)
        assert moderation.collection_percentile(s, 3.0, "m", "other") is None
