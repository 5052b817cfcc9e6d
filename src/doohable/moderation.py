"""Moderation: the queue (best first), the auto-approve policy, thresholds, decisions, audit.

The math is pure (:func:`decide`, :func:`youden_threshold`, :func:`threshold_preview`); the rest
reads and writes the tables. Every decision is a new :class:`~doohable.store.models.Decision`
row (who or which rule, when, with the score at the time); ``Image.status`` mirrors the latest.

Policy (as the report ends): an image whose score reaches the threshold and that the NSFW gate
did not flag is approved automatically (rule ``auto:threshold``); a flagged image is never
approved automatically (rule ``auto:nsfw`` records the flag) and waits for a person. The
threshold is suggested from the decisions people already made (ROC curve, Youden's J) and set
by a moderator (``Setting`` table); ``DOOHABLE_AUTO_APPROVE_THRESHOLD`` is the default before
anyone sets it. No threshold at all means no auto-approval."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from doohable.config import Settings
from doohable.nsfw import DEFAULT_THRESHOLD as NSFW_DEFAULT
from doohable.nsfw import is_flagged
from doohable.store.catalog import latest_parts
from doohable.store.models import Decision, Image, Score, Setting, Source, Status, User, utcnow

THRESHOLD_KEY = "auto_approve_threshold"
NSFW_KEY = "nsfw_threshold"
RULE_THRESHOLD = "auto:threshold"
RULE_NSFW = "auto:nsfw"
UNDO_PREFIX = "undo:"  # rule of a row that takes back decision <id> (see doohable.decisions)
HUMAN_DECISIONS = (Status.approved.value, Status.rejected.value)


class ModerationError(ValueError):
    """A moderation request that cannot be honoured; the message says why."""


class ImageNotFound(ModerationError):
    """The request names an image that is not in the collection."""


# --------------------------------------------------------------------------- pure functions


@dataclass(frozen=True)
class Policy:
    """The auto-approve policy in force: score threshold (None = off) and NSFW threshold."""

    threshold: float | None
    nsfw_threshold: float = NSFW_DEFAULT


def decide(
    score: float | None, nsfw: float | None, policy: Policy, *, require_nsfw_check: bool = True
) -> str | None:
    """What the policy does with one image: ``"flagged"``, ``"approved"`` or None (stays pending).

    Parameters
    ----------
    score : the model's score (None = not scored yet).
    nsfw : NSFW probability (None = not checked).
    policy : the policy in force.
    require_nsfw_check : an image the NSFW gate has not checked is never approved (True when
        the decision is acted on; the scoring API passes False to report a hypothetical one).
    """
    if is_flagged(nsfw, policy.nsfw_threshold):
        return "flagged"
    if nsfw is None and require_nsfw_check:
        return None
    if policy.threshold is not None and score is not None and score >= policy.threshold:
        return Status.approved.value
    return None


@dataclass(frozen=True)
class ThresholdSuggestion:
    """Youden's optimum on the ROC curve of past decisions (approved = positive)."""

    threshold: float
    tpr: float  # share of approved images the threshold would approve
    fpr: float  # share of rejected images it would approve
    youden_j: float
    positives: int
    negatives: int


def roc_points(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve as ``sklearn.metrics.roc_curve(positive, scores, drop_intermediate=False)``:
    (fpr, tpr, thresholds), thresholds decreasing, the first one +inf (approve nothing).

    Plain NumPy, so the API need not import scikit-learn (seconds on a busy machine)."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / max(int(y.sum()), 1)]
    fpr = np.r_[0.0, fps / max(int((~y).sum()), 1)]
    return fpr, tpr, np.r_[np.inf, s[last]]


def youden_threshold(scores: Sequence[float], approved: Sequence[bool]) -> ThresholdSuggestion:
    """The score threshold maximising TPR − FPR (Youden's J) over past decisions.

    Raises ModerationError unless both approved and rejected examples exist."""
    y = np.asarray(approved, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ModerationError("scores and decisions must be two lists of the same length")
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        raise ModerationError(
            f"a threshold needs both approved and rejected decisions on scored images "
            f"(have {pos} approved, {neg} rejected)"
        )
    fpr, tpr, thr = roc_points(s, y)
    j = np.where(np.isfinite(thr), tpr - fpr, -np.inf)
    k = int(np.argmax(j))
    return ThresholdSuggestion(float(thr[k]), float(tpr[k]), float(fpr[k]), float(j[k]), pos, neg)


@dataclass(frozen=True)
class Preview:
    """What a threshold would do: pending images it approves, and its errors on past decisions."""

    threshold: float
    would_approve: int  # pending, scored, not flagged, score ≥ threshold
    false_approvals: int  # rejected by a person, yet score ≥ threshold
    missed_approvals: int  # approved by a person, yet score < threshold
    decided: int

    @property
    def wrong(self) -> int:
        """Past decisions the threshold would have gotten wrong (both kinds)."""
        return self.false_approvals + self.missed_approvals


def threshold_preview(
    threshold: float,
    pending_scores: Sequence[float],
    decided_scores: Sequence[float],
    decided_approved: Sequence[bool],
) -> Preview:
    """Count what ``threshold`` would approve now and how it would have done on past decisions."""
    p = np.asarray(pending_scores, dtype=np.float64)
    s = np.asarray(decided_scores, dtype=np.float64)
    y = np.asarray(decided_approved, dtype=bool)
    above = s >= threshold
    return Preview(
        threshold=float(threshold),
        would_approve=int((p >= threshold).sum()),
        false_approvals=int((above & ~y).sum()),
        missed_approvals=int((~above & y).sum()),
        decided=int(s.size),
    )


def percentile_of(score: float, collection: Sequence[float]) -> float | None:
    """Share (0–100) of the collection scoring at or below ``score``; None for an empty one."""
    arr = np.asarray(collection, dtype=np.float64)
    if arr.size == 0:
        return None
    return float(100.0 * (arr <= score).mean())


# --------------------------------------------------------------------------- settings


def get_setting(session: Session, key: str) -> object | None:
    """The ``value`` stored under ``key`` in the settings table, or None."""
    row = session.get(Setting, key)
    return None if row is None else row.value.get("value")


# the score API's hot path: one prebuilt Core statement each (no ORM compile, cached SQL)
_settings_t, _scores_t = Setting.__table__, Score.__table__
_POLICY_QUERY = select(_settings_t.c.key, _settings_t.c.value).where(
    _settings_t.c.key.in_((THRESHOLD_KEY, NSFW_KEY))
)
_PERCENTILE_QUERY = select(func.count().filter(_scores_t.c.score <= bindparam("score")), func.count()).where(
    _scores_t.c.model == bindparam("model"), _scores_t.c.model_version == bindparam("version")
)


def _autoflush(session: Session) -> None:
    """Core statements skip the ORM's autoflush: flush pending rows first (no-op when clean)."""
    if session.autoflush:
        session.flush()


def get_policy(session: Session, settings: Settings) -> Policy:
    """The policy in force: moderator-set values first, then the environment's defaults."""
    _autoflush(session)
    stored = {key: (value or {}).get("value") for key, value in session.execute(_POLICY_QUERY)}
    thr, nsfw = stored.get(THRESHOLD_KEY), stored.get(NSFW_KEY)
    threshold = float(thr) if isinstance(thr, int | float) else settings.auto_approve_threshold
    nsfw_thr = float(nsfw) if isinstance(nsfw, int | float) else NSFW_DEFAULT
    return Policy(threshold=threshold, nsfw_threshold=nsfw_thr)


def set_policy(
    session: Session,
    *,
    threshold: float | None = None,
    nsfw_threshold: float | None = None,
    clear_threshold: bool = False,
) -> None:
    """Store the moderator's threshold(s); ``clear_threshold`` turns auto-approval off."""
    if nsfw_threshold is not None and not 0.0 < nsfw_threshold <= 1.0:
        raise ModerationError("the NSFW threshold is a probability in (0, 1]")
    if threshold is not None and not np.isfinite(threshold):
        raise ModerationError("the threshold must be a finite number")
    for key, value in ((THRESHOLD_KEY, threshold), (NSFW_KEY, nsfw_threshold)):
        if value is None and not (clear_threshold and key == THRESHOLD_KEY):
            continue
        row = session.get(Setting, key)
        if row is None:
            session.add(Setting(key=key, value={"value": value}))
        else:
            row.value = {"value": value}
            row.updated_at = utcnow()
    session.flush()


# --------------------------------------------------------------------------- scores


def store_scores(
    session: Session, scores: dict[int, float], model: str, version: str,
    parts: dict[int, dict[str, float | None] | None] | None = None,
) -> int:
    """Save model scores for images (one row per image, model and version; updated if present),
    with a combined scorer's ``parts`` of each score when given."""
    if not scores:
        return 0
    parts = parts or {}
    existing = {
        row.image_id: row
        for row in session.scalars(
            select(Score).where(
                Score.model == model, Score.model_version == version, Score.image_id.in_(list(scores))
            )
        )
    }
    for image_id, value in scores.items():
        row = existing.get(image_id)
        if row is None:
            session.add(Score(image_id=image_id, model=model, model_version=version, score=float(value),
                              parts=parts.get(image_id)))
        else:
            row.score = float(value)
            row.parts = parts.get(image_id)
    session.flush()
    return len(scores)


def latest_scores(session: Session, model: str | None, version: str | None = None) -> dict[int, float]:
    """image id → score by ``model`` (one version, or the newest row of any version; None: no scores)."""
    q = select(Score.image_id, Score.score).where(Score.model == model)
    if version is not None:
        q = q.where(Score.model_version == version)
    out: dict[int, float] = {}
    for image_id, score in session.execute(q.order_by(Score.created_at, Score.id)):
        out[image_id] = score  # later rows win
    return out


def collection_percentile(session: Session, score: float, model: str, version: str) -> float | None:
    """Percentile of ``score`` among the stored scores of ``model`` at ``version``."""
    _autoflush(session)
    params = {"score": score, "model": model, "version": version}
    below, total = session.execute(_PERCENTILE_QUERY, params).one()
    return None if not total else 100.0 * float(below or 0) / float(total)


# --------------------------------------------------------------------------- decisions


def record_decision(
    session: Session,
    image_id: int,
    decision: str,
    *,
    actor: User | None = None,
    rule: str | None = None,
    score: float | None = None,
) -> Decision:
    """Log one decision (by a person or a rule) and mirror it on the image's status."""
    if decision not in (*HUMAN_DECISIONS, "flagged", Status.pending.value):
        raise ModerationError(f"unknown decision {decision!r}; choose approved, rejected or pending")
    image = session.get(Image, image_id)
    if image is None:
        raise ImageNotFound(f"no image with id {image_id}")
    if actor is None and rule is None:
        raise ModerationError("a decision needs a person or a rule")
    row = Decision(
        image_id=image_id, decision=decision, actor_id=actor.id if actor else None, rule=rule, score=score
    )
    session.add(row)
    if decision != "flagged":
        image.status = decision
    session.flush()
    return row


def apply_policy(
    session: Session,
    image_ids: Iterable[int],
    policy: Policy,
    scores: dict[int, float],
) -> dict[str, int]:
    """Apply the policy to pending images (on ingest and re-scoring); return counts by outcome.

    Only images still pending are touched: a person's decision is never overridden. A flag is
    logged once per image."""
    counts = {"approved": 0, "flagged": 0, "pending": 0}
    ids = list(image_ids)
    if not ids:
        return counts
    images = session.scalars(select(Image).where(Image.id.in_(ids))).all()
    already_flagged = set(
        session.scalars(
            select(Decision.image_id).where(Decision.image_id.in_(ids), Decision.rule == RULE_NSFW)
        )
    )
    for image in images:
        if image.status != Status.pending.value:
            continue
        score = scores.get(image.id)
        outcome = decide(score, image.nsfw, policy)
        if outcome == "flagged":
            if image.id not in already_flagged:
                record_decision(session, image.id, "flagged", rule=RULE_NSFW, score=score)
            counts["flagged"] += 1
        elif outcome == Status.approved.value:
            record_decision(session, image.id, outcome, rule=RULE_THRESHOLD, score=score)
            counts["approved"] += 1
        else:
            counts["pending"] += 1
    return counts


def human_decisions(session: Session) -> dict[int, bool]:
    """image id → approved? from each image's latest decision by a person (undone ones and
    images a person put back to pending left out)."""
    q = (
        select(Decision.id, Decision.image_id, Decision.decision, Decision.rule)
        .where(Decision.actor_id.is_not(None), Decision.decision != "flagged")
        .order_by(Decision.created_at, Decision.id)
    )
    rows = session.execute(q).all()
    undone = {int(r[len(UNDO_PREFIX) :]) for *_, r in rows if r and r.startswith(UNDO_PREFIX)}
    latest: dict[int, str] = {}
    for decision_id, image_id, decision, rule in rows:
        if rule is None and decision_id not in undone:
            latest[image_id] = decision
    return {i: d == Status.approved.value for i, d in latest.items() if d in HUMAN_DECISIONS}


def suggest_threshold(session: Session, model: str | None, version: str | None = None) -> ThresholdSuggestion:
    """Youden threshold from people's decisions on images scored by ``model``."""
    decided = human_decisions(session)
    scores = latest_scores(session, model, version)
    ids = [i for i in decided if i in scores]
    return youden_threshold([scores[i] for i in ids], [decided[i] for i in ids])


def preview(session: Session, threshold: float, model: str | None, version: str | None = None) -> Preview:
    """:func:`threshold_preview` on the stored scores and decisions."""
    scores = latest_scores(session, model, version)
    decided = human_decisions(session)
    pending = session.execute(select(Image.id, Image.nsfw).where(Image.status == Status.pending.value)).all()
    policy_nsfw = NSFW_DEFAULT
    setting = get_setting(session, NSFW_KEY)
    if isinstance(setting, int | float):
        policy_nsfw = float(setting)
    pending_scores = [scores[i] for i, nsfw in pending if i in scores and not is_flagged(nsfw, policy_nsfw)]
    ids = [i for i in decided if i in scores]
    return threshold_preview(threshold, pending_scores, [scores[i] for i in ids], [decided[i] for i in ids])


# --------------------------------------------------------------------------- queue and audit


@dataclass(frozen=True)
class QueueFilter:
    """Filters of the moderation queue (all optional)."""

    status: str = Status.pending.value
    source: str | None = None  # source kind (file, url, upload, userscript) or network (instagram, ...)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    min_score: float | None = None
    max_score: float | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True)
class QueueItem:
    """One image in the queue, with what a moderator needs to decide."""

    id: int
    sha256: str
    width: int
    height: int
    status: str
    score: float | None
    nsfw: float | None
    flagged: bool
    source: str | None
    author: str | None
    caption: str | None
    page_url: str | None
    created_at: dt.datetime
    parts: dict[str, float | None] | None = None  # a combined scorer's parts of the score


def queue(
    session: Session, model: str | None, flt: QueueFilter, policy: Policy | None = None
) -> list[QueueItem]:
    """Images of ``flt.status`` ordered by ``model``'s score, best first (unscored last)."""
    nsfw_thr = policy.nsfw_threshold if policy else NSFW_DEFAULT
    scores = latest_scores(session, model)
    q = select(Image).where(Image.status == flt.status)
    if flt.since is not None:
        q = q.where(Image.created_at >= flt.since)
    if flt.until is not None:
        q = q.where(Image.created_at <= flt.until)
    if flt.source:
        q = q.where(
            Image.id.in_(
                select(Source.image_id).where((Source.kind == flt.source) | (Source.network == flt.source))
            )
        )
    images = list(session.scalars(q))
    if flt.min_score is not None or flt.max_score is not None:
        lo = -np.inf if flt.min_score is None else flt.min_score
        hi = np.inf if flt.max_score is None else flt.max_score
        images = [im for im in images if im.id in scores and lo <= scores[im.id] <= hi]
    images.sort(key=lambda im: (im.id not in scores, -scores.get(im.id, 0.0), im.id))
    page = images[flt.offset : flt.offset + flt.limit]
    parts = latest_parts(session, model, [im.id for im in page])
    return [_queue_item(im, scores.get(im.id), nsfw_thr, parts.get(im.id)) for im in page]


def _queue_item(image: Image, score: float | None, nsfw_thr: float, parts: dict | None) -> QueueItem:
    src = image.sources[0] if image.sources else None
    return QueueItem(
        id=image.id,
        sha256=image.sha256,
        width=image.width,
        height=image.height,
        status=image.status,
        score=score,
        nsfw=image.nsfw,
        flagged=is_flagged(image.nsfw, nsfw_thr),
        source=(src.network or src.kind) if src else None,
        author=src.author if src else None,
        caption=src.caption if src else None,
        page_url=src.page_url if src else None,
        created_at=image.created_at,
        parts=parts,
    )


AUDIT_COLUMNS = ["decision_id", "image_id", "sha256", "decision", "by", "rule", "score", "created_at"]


def audit_csv(session: Session) -> str:
    """Every decision, oldest first, as CSV (who or which rule, when, score)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(AUDIT_COLUMNS)
    q = (
        select(Decision, Image.sha256, User.name)
        .join(Image, Image.id == Decision.image_id)
        .outerjoin(User, User.id == Decision.actor_id)
        .order_by(Decision.created_at, Decision.id)
    )
    for d, sha, name in session.execute(q):
        writer.writerow(
            [
                d.id,
                d.image_id,
                sha,
                d.decision,
                name or "",
                d.rule or "",
                "" if d.score is None else f"{d.score:.6g}",
                d.created_at.isoformat(),
            ]
        )
    return buf.getvalue()
