"""A moderator's decisions made safe to repeat and to take back.

:func:`decide_once` ties a decision to the image's state the moderator saw: the same decision
twice answers the first one (no second row), a decision on an image that changed since is
refused. :func:`undo_last_decision` takes back the moderator's last decision with a new row
(rule ``undo:<id>``) that restores the status before it; nothing is deleted, so the audit
CSV keeps its columns and lists the undo as one more decision."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from doohable.moderation import UNDO_PREFIX, ImageNotFound, ModerationError, record_decision
from doohable.store.models import Decision, Image, Source, Status, User


class DecisionConflict(ModerationError):
    """The image is no longer in the state the decision was made on."""


@dataclass(frozen=True)
class Outcome:
    """A decision row and whether this call created it (False: a repeat of the same decision)."""

    decision: Decision
    created: bool


def _latest(session: Session, image_id: int, before: int | None = None) -> Decision | None:
    """The image's latest decision that set its status (flags do not), optionally before an id."""
    q = select(Decision).where(Decision.image_id == image_id, Decision.decision != "flagged")
    if before is not None:
        q = q.where(Decision.id < before)
    return session.scalars(q.order_by(Decision.id.desc()).limit(1)).first()


def decide_once(
    session: Session,
    image_id: int,
    decision: str,
    *,
    actor: User,
    score: float | None,
    expected_status: str | None = None,
) -> Outcome:
    """Record ``decision`` unless the image already has it; refuse it on a changed image.

    ``expected_status``: the status the moderator saw (the page sends it); when the image has
    another status now, other than ``decision`` itself, :class:`DecisionConflict` is raised."""
    image = session.get(Image, image_id, with_for_update=True)
    if image is None:
        raise ImageNotFound(f"no image with id {image_id}")
    if image.status == decision:
        latest = _latest(session, image_id)
        if latest is not None and latest.decision == decision:
            return Outcome(latest, created=False)
    if expected_status is not None and image.status not in (expected_status, decision):
        raise DecisionConflict(
            f"image {image_id} is {image.status} now, not {expected_status}; reload to see it"
        )
    return Outcome(record_decision(session, image_id, decision, actor=actor, score=score), created=True)


def _undone_ids(session: Session, actor_id: int) -> set[int]:
    rules = session.scalars(
        select(Decision.rule).where(Decision.actor_id == actor_id, Decision.rule.like(UNDO_PREFIX + "%"))
    )
    return {int(r[len(UNDO_PREFIX) :]) for r in rules if r and r[len(UNDO_PREFIX) :].isdigit()}


def undo_last_decision(session: Session, actor: User) -> tuple[Decision, Decision] | None:
    """Take back ``actor``'s last decision not taken back yet: (the undone row, the undo row).

    None when there is nothing to undo. Raises :class:`DecisionConflict` when the image was
    decided again by someone or something else since."""
    undone = _undone_ids(session, actor.id)
    rows = session.scalars(
        select(Decision)
        .where(Decision.actor_id == actor.id, Decision.rule.is_(None), Decision.decision != "flagged")
        .order_by(Decision.id.desc())
        .limit(len(undone) + 1)
    ).all()
    target = next((d for d in rows if d.id not in undone), None)
    if target is None:
        return None
    latest = _latest(session, target.image_id)
    if latest is None or latest.id != target.id:
        raise DecisionConflict(f"image {target.image_id} was decided again since; nothing undone")
    before = _latest(session, target.image_id, before=target.id)
    restored = before.decision if before is not None else Status.pending.value
    row = record_decision(
        session, target.image_id, restored, actor=actor, rule=f"{UNDO_PREFIX}{target.id}", score=target.score
    )
    return target, row


def card_details(session: Session, image_ids: list[int]) -> dict[int, dict[str, object]]:
    """What a moderation card shows beyond the queue item: file size, posted time, and who or
    which rule set the image's status (``decided_by``: a user name, ``auto`` for a rule)."""
    if not image_ids:
        return {}
    out: dict[int, dict[str, object]] = {
        i: {"size_bytes": size, "posted_at": None, "decided_by": None, "decided_rule": None}
        for i, size in session.execute(select(Image.id, Image.size_bytes).where(Image.id.in_(image_ids)))
    }
    q = (
        select(Decision.image_id, Decision.rule, User.name)
        .outerjoin(User, User.id == Decision.actor_id)
        .where(Decision.image_id.in_(image_ids), Decision.decision != "flagged")
        .order_by(Decision.id)
    )
    for image_id, rule, name in session.execute(q):  # later rows win
        out[image_id]["decided_by"] = name or "auto"
        out[image_id]["decided_rule"] = rule
    posted_q = select(Source.image_id, Source.posted_at).where(Source.image_id.in_(image_ids))
    for image_id, posted in session.execute(posted_q.order_by(Source.id.desc())):
        out[image_id]["posted_at"] = posted
    return out
