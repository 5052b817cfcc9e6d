"""The moderation service: score stored images, run the NSFW gate, store the scores with the
model version and apply the auto-approve policy.

:func:`moderate_ingested` is the one entry point for moderating stored images: ingest, then
moderate (``doohable ingest --moderate``, the userscript route, the demo), and re-scoring
(``doohable score --ingested``, ``doohable retrain``'s promotion) call it, with the configured
scorer or the one :func:`scorer_for` loads; it runs :func:`moderate_images`.
:func:`moderate_scores` stores scores already computed (``doohable score DIR`` on files that are
ingested images); :func:`evaluate` gives the API's scoring routes the score, percentile and
policy decision of images that need not be stored."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from doohable import moderation
from doohable.batch import (
    BATCH_SIZE,
    Parts,
    ScoreResult,
    ScorerLike,
    cached_scorer,
    inference_threads_for,
    score_batch,
    score_items,
)
from doohable.images import ImageError, decode

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from doohable.config import Settings


def stored_ids(session: Session, results: Iterable[ScoreResult]) -> dict[int, float]:
    """image id → score for the scored files that are also ingested images (same SHA-256)
    (their parts: :func:`stored_parts`)."""
    from sqlalchemy import select

    from doohable.store.models import Image as ImageRow

    by_sha = {r.sha256: float(r.score) for r in results if r.sha256 and r.score is not None}
    if not by_sha:
        return {}
    q = select(ImageRow.sha256, ImageRow.id).where(ImageRow.sha256.in_(list(by_sha)))
    return {int(i): by_sha[sha] for sha, i in session.execute(q)}


def stored_parts(
    ids: dict[int, float], results: Iterable[ScoreResult], session: Session
) -> dict[int, Parts | None]:
    """image id → a combined scorer's parts, for the ids of :func:`stored_ids`."""
    from sqlalchemy import select

    from doohable.store.models import Image as ImageRow

    by_sha = {r.sha256: r.parts for r in results if r.sha256 and r.parts is not None}
    if not by_sha or not ids:
        return {}
    q = select(ImageRow.sha256, ImageRow.id).where(ImageRow.id.in_(list(ids)))
    return {int(i): by_sha.get(sha) for sha, i in session.execute(q)}


@dataclass(frozen=True)
class ModerationReport:
    """What :func:`moderate_images` did."""

    scored: int
    errors: list[dict[str, Any]]
    approved: int
    flagged: int
    pending: int


def moderate_images(
    session: Session,
    blobs: Any,
    scorer: ScorerLike,
    settings: Settings,
    image_ids: Sequence[int] | None = None,
    *,
    nsfw: bool = True,
    batch_size: int = BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> ModerationReport:
    """Score stored images (all when ``image_ids`` is None), run the NSFW gate on those not yet
    checked, store scores with the model version and apply the auto-approve policy."""
    from sqlalchemy import select

    from doohable.store.models import Image as ImageRow

    q = select(ImageRow.id, ImageRow.sha256)
    if image_ids is not None:
        q = q.where(ImageRow.id.in_(list(image_ids)))
    rows = [(int(i), str(s)) for i, s in session.execute(q.order_by(ImageRow.id))]
    scores: dict[int, float] = {}
    parts_of: dict[int, Parts | None] = {}
    errors: list[dict[str, Any]] = []
    for (image_id, _), score, error, _, parts in score_items(
        rows,
        lambda r: blobs.get(r[1]),
        scorer,
        batch_size=batch_size,
        inference_threads=inference_threads_for(settings.threads),
        on_progress=on_progress,
    ):
        if score is None:
            errors.append({"image_id": image_id, "error": error})
        else:
            scores[image_id], parts_of[image_id] = score, parts
    counts = moderate_scores(session, blobs, scorer, settings, scores, nsfw=nsfw, parts=parts_of)
    return ModerationReport(len(scores), errors, counts["approved"], counts["flagged"], counts["pending"])


def moderate_scores(
    session: Session,
    blobs: Any,
    scorer: ScorerLike,
    settings: Settings,
    scores: dict[int, float],
    *,
    nsfw: bool = True,
    parts: dict[int, Parts | None] | None = None,
) -> dict[str, int]:
    """Store scores of stored images (and a combined scorer's ``parts``) with the model version,
    run the NSFW gate on those not yet checked (``nsfw``), then apply the auto-approve policy;
    return counts by outcome."""
    moderation.store_scores(session, scores, scorer.name, scorer.version, parts)
    if nsfw:
        check_nsfw(session, blobs, list(scores), settings)
    return moderation.apply_policy(session, list(scores), moderation.get_policy(session, settings), scores)


def check_nsfw(session: Session, blobs: Any, image_ids: Sequence[int], settings: Settings) -> int:
    """Run the NSFW gate on the given images that have no NSFW probability yet; return how many."""
    from sqlalchemy import select

    from doohable.nsfw import load_gate
    from doohable.store.models import Image as ImageRow

    todo = session.scalars(
        select(ImageRow).where(ImageRow.id.in_(list(image_ids)), ImageRow.nsfw.is_(None))
    ).all()
    if not todo:
        return 0
    gate = load_gate(settings.threads)
    for image in todo:
        try:
            img = decode(blobs.get(image.sha256), draft=(256, 256)).image
        except (ImageError, KeyError, OSError):  # unreadable, or blob store down: stays unchecked
            continue
        image.nsfw = gate.probability(img)
    session.flush()
    return len(todo)


def scorer_for(settings: Settings, model: str | None = None) -> ScorerLike:
    """The scorer ``model`` names (a bundled name or a path; None: ``DOOHABLE_MODEL``), loaded
    once per process. FileNotFoundError or ValueError when it cannot be loaded."""
    return cached_scorer(model or settings.model, settings.threads)


def moderate_ingested(
    session: Session,
    blobs: Any,
    settings: Settings,
    image_ids: Sequence[int] | None = None,
    *,
    scorer: ScorerLike | None = None,
    batch_size: int = BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[ScorerLike, ModerationReport]:
    """Moderate ingested images (all when ``image_ids`` is None; after an ingest, the images it
    stored) with ``scorer`` (None: the configured one, :func:`scorer_for`): scores stored with
    the model version, the NSFW gate, the auto-approve policy (:func:`moderate_images`)."""
    scorer = scorer if scorer is not None else scorer_for(settings)
    report = moderate_images(
        session, blobs, scorer, settings, image_ids, batch_size=batch_size, on_progress=on_progress
    )
    return scorer, report


def evaluate(
    session: Session,
    settings: Settings,
    scorer: ScorerLike,
    arrays: list[Any],
    nsfw: list[float | None],
) -> list[tuple[float, Parts | None, float | None, str]]:
    """Scores, their parts, percentiles and policy decisions for prepared images."""
    scores, parts = score_batch(scorer, arrays)
    policy = moderation.get_policy(session, settings)
    out = []
    for s, part, p in zip(scores, parts, nsfw, strict=True):
        pct = moderation.collection_percentile(session, float(s), scorer.name, scorer.version)
        decision = moderation.decide(float(s), p, policy, require_nsfw_check=False) or "pending"
        out.append((float(s), part, pct, decision))
    return out


def nsfw_probability(data: bytes, settings: Settings) -> float:
    """The NSFW gate's probability for encoded image ``data`` (ImageError when unreadable)."""
    from doohable.nsfw import load_gate

    return load_gate(settings.threads).probability(decode(data, draft=(256, 256)).image)
