"""Batch scoring: many images through the scorer, fast, in bounded memory.

Local pipeline (:func:`score_items`): a thread pool reads and decodes images (JPEGs in draft
mode at the model's input size, so a 1080×1350 photo is decoded at 1/4 scale) and applies the
scorer's own ``prepare`` (the one resize policy); the calling thread gathers them into batches
and runs ONNX Runtime. Pillow and ONNX Runtime both release the GIL, so decoding overlaps with
inference on every core. At most ``window`` images are in flight, so memory stays flat however
many files there are.

Cluster pipeline (:func:`score_paths_ray`): Ray Data ``map_batches`` over a pool of scorer
actors; each actor loads the model once and decodes its own batch. Paths must be readable
from every Ray worker (a shared file system).

Moderation of stored images (scores stored with the model version, the NSFW gate, the
auto-approve policy) builds on this pipeline in :mod:`doohable.moderation_service`."""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from PIL import Image

from doohable.images import ImageError, decode, read_limited

if TYPE_CHECKING:  # SQLAlchemy loads only for stored images (`doohable score DIR` needs none)

    pass

# images per model call: bigger batches do not run faster on CPU (one ONNX Runtime thread per call)
# but hold more activations (peak RSS, bundled model: 733 MiB at 8, 2.9 GiB at 32)
BATCH_SIZE = 8
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
T = TypeVar("T")


Parts = dict[str, float | None]  # {"photo": 3.1, "face": None}: None where a part does not apply


class ScorerLike(Protocol):
    """What batch scoring needs from :class:`doohable.model.runtime.Scorer`."""

    name: str
    version: str

    @property
    def input_size(self) -> int: ...

    @property
    def decode_side(self) -> int: ...

    def prepare(self, img: Image.Image) -> Any: ...

    def score(self, batch: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class ScoreResult:
    """The score of one input, or why it has none."""

    path: str
    score: float | None = None
    error: str | None = None
    sha256: str | None = None
    parts: Parts | None = None  # a combined scorer's parts (None: a single model)
    model: str | None = None
    version: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The CLI's JSON line: ``{"path", "score"}`` or ``{"path", "error"}``; a combined
        scorer's lines also have ``"parts"``, ``"model"`` and ``"version"``."""
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        if self.parts is None:
            return {"path": self.path, "score": self.score}
        return {"path": self.path, "score": self.score, "parts": self.parts, "model": self.model,
                "version": self.version}


def expand_paths(inputs: Iterable[str | Path]) -> tuple[list[Path], list[ScoreResult]]:
    """Files and folders (recursively, image suffixes only) → files, plus errors for missing ones."""
    files: list[Path] = []
    errors: list[ScoreResult] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            )
        elif p.is_file():
            files.append(p)
        else:
            errors.append(ScoreResult(str(raw), error="no such file or folder"))
    return files, errors


def score_batch(scorer: ScorerLike, prepared: Sequence[Any]) -> tuple[np.ndarray, list[Parts | None]]:
    """Prepared images -> (scores, parts per image): a combined scorer (``stack`` and
    ``score_parts``, :class:`doohable.model.default.CombinedScorer`) gives its parts, NaN parts
    as None; a single model gives None."""
    if not prepared:
        return np.zeros(0, np.float32), []
    stack = getattr(scorer, "stack", np.stack)
    score_parts = getattr(scorer, "score_parts", None)
    if score_parts is None:
        scores = scorer.score(stack(prepared))
        return scores, [None] * len(scores)
    scores, parts = score_parts(stack(prepared))
    names = sorted(parts)
    return scores, [
        {k: (None if np.isnan(parts[k][i]) else float(parts[k][i])) for k in names}
        for i in range(len(scores))
    ]


def prepare_bytes(data: bytes, scorer: ScorerLike) -> Any:
    """Bytes → the scorer's uint8 S×S×3 input, decoding JPEGs at reduced size (draft mode)."""
    side = scorer.decode_side  # what prepare() first resizes to
    decoded = decode(data, draft=(side, side))
    return scorer.prepare(decoded.image)


def default_workers() -> int:
    """Decode threads, and batches in the model at once: as many as cores."""
    return max(1, os.cpu_count() or 1)


def _load_item(item: T, read: Callable[[T], bytes], scorer: ScorerLike) -> tuple[Any, str]:
    data = read(item)
    return prepare_bytes(data, scorer), hashlib.sha256(data).hexdigest()


Row = tuple[T, float | None, str | None, str | None, Parts | None]


def score_items(
    items: Sequence[T],
    read: Callable[[T], bytes],
    scorer: ScorerLike,
    *,
    batch_size: int = BATCH_SIZE,
    workers: int = 0,
    inference_threads: int = 0,
    window: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[Row[T]]:
    """Score items read by ``read`` (path → bytes, image id → blob, ...), in input order.

    Yields ``(item, score, error, sha256, parts)`` (parts: :func:`score_batch`); an unreadable
    or undecodable item gets its error and never stops the run. ``workers`` decode threads
    (0 = cores); ``inference_threads`` batches in the model at once (0 = cores; pair it with a
    one-thread scorer, see :func:`cached_scorer`); ``window`` images decoding at most (0 = 4 batches). At most
    ``window + (inference_threads + 1) * batch_size`` images are held, however many items."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    workers = workers or default_workers()
    inference_threads = inference_threads or default_workers()
    window = window or 4 * batch_size
    pending: deque[tuple[T, Future[tuple[Any, str]]]] = deque()
    running: deque[tuple[list[Row[T]], _Scoring | None]] = deque()
    it = iter(items)
    with (
        ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool,
        ThreadPoolExecutor(inference_threads, thread_name_prefix="infer") as infer,
    ):

        def fill() -> None:
            _fill(pending, it, window, lambda item: pool.submit(_load_item, item, read, scorer))

        fill()
        while pending:
            rows, arrays = _next_batch(pending, batch_size)
            fill()  # keep the decoders busy while the model runs
            running.append((rows, infer.submit(score_batch, scorer, arrays) if arrays else None))
            while len(running) > inference_threads:
                yield from _finished(*running.popleft(), on_progress)
        while running:
            yield from _finished(*running.popleft(), on_progress)


_Scoring = Future[tuple[np.ndarray, list[Parts | None]]]  # a batch in the model (score_batch)
_END: Any = object()


def _fill(
    pending: deque[tuple[T, Future[tuple[Any, str]]]],
    items: Iterator[T],
    window: int,
    submit: Callable[[T], Future[tuple[Any, str]]],
) -> None:
    """Start decoding the next items until ``window`` are pending (or the items run out)."""
    while len(pending) < window:
        item = next(items, _END)
        if item is _END:
            return
        pending.append((item, submit(item)))


def _next_batch(
    pending: deque[tuple[T, Future[tuple[Any, str]]]], batch_size: int
) -> tuple[list[Row[T]], list[Any]]:
    """(rows, arrays): the next pending items, waited for in input order until ``batch_size``
    decoded; rows hold each item's sha256 or its error, arrays the decoded images."""
    rows: list[Row[T]] = []
    arrays: list[Any] = []
    while pending and len(arrays) < batch_size:
        item, fut = pending.popleft()
        try:
            arr, sha = fut.result()
            rows.append((item, None, None, sha, None))
            arrays.append(arr)
        except (ImageError, OSError, KeyError, ValueError) as e:
            rows.append((item, None, _reason(e), None, None))
    return rows, arrays


def _finished(
    rows: list[Row[T]], fut: _Scoring | None, on_progress: Callable[[int], None] | None
) -> Iterator[Row[T]]:
    """The batch's rows with their scores and parts (once the model is done), in order."""
    scores, parts = fut.result() if fut is not None else (np.zeros(0), [])
    done = iter(zip(scores, parts, strict=True))
    for item, _, error, sha, _ in rows:
        if error is not None:
            yield (item, None, error, None, None)
        else:
            s, p = next(done)
            yield (item, float(s), None, sha, p)
    if on_progress is not None:
        on_progress(len(rows))


def _reason(e: BaseException) -> str:
    if isinstance(e, KeyError):
        return f"missing from the blob store: {e.args[0] if e.args else e}"
    return str(e) or type(e).__name__


def score_paths(
    paths: Sequence[Path],
    scorer: ScorerLike,
    *,
    batch_size: int = BATCH_SIZE,
    workers: int = 0,
    inference_threads: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[ScoreResult]:
    """Score image files (local pipeline), in input order; see :func:`score_items`."""
    for path, score, error, sha, parts in score_items(
        paths,
        read_limited,
        scorer,
        batch_size=batch_size,
        workers=workers,
        inference_threads=inference_threads,
        on_progress=on_progress,
    ):
        named = {"model": scorer.name, "version": scorer.version} if parts is not None else {}
        yield ScoreResult(str(path), score, error, sha, parts, **named)


def best_first(results: Iterable[ScoreResult]) -> list[ScoreResult]:
    """Scored results best first, then the errors (in input order)."""
    res = list(results)
    scored = sorted((r for r in res if r.score is not None), key=lambda r: -float(r.score or 0.0))
    return scored + [r for r in res if r.score is None]


# --------------------------------------------------------------------------- Ray


class RayScorerActor:
    """A Ray Data actor: loads the scorer once, then decodes and scores batches of paths."""

    def __init__(self, model: str | None = None, threads: int = 1) -> None:
        from doohable.model.load import load_any

        self.scorer = load_any(model, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        files = [Path(p) for p in paths]
        results = list(
            score_paths(files, self.scorer, batch_size=len(paths) or 1, workers=1, inference_threads=1)
        )
        return {
            "path": np.array(paths, dtype=object),
            "score": np.array([np.nan if r.score is None else r.score for r in results], dtype=np.float64),
            "error": np.array([r.error or "" for r in results], dtype=object),
            "sha256": np.array([r.sha256 or "" for r in results], dtype=object),
        }


def score_paths_ray(
    paths: Sequence[Path],
    model: str | None = None,
    *,
    address: str | None = None,
    batch_size: int = BATCH_SIZE,
    concurrency: int = 2,
    num_cpus: int | None = None,
) -> Iterator[ScoreResult]:
    """Score files on Ray Data (``address`` of a cluster, else ``RAY_ADDRESS``'s, else a local Ray).

    ``map_batches`` with a pool of ``concurrency`` :class:`RayScorerActor`; each actor runs
    ONNX Runtime with one thread, so the pool size is the parallelism."""
    import ray

    if not ray.is_initialized():
        if address or os.environ.get("RAY_ADDRESS"):  # a cluster (ray.init reads RAY_ADDRESS itself)
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    ds = ray.data.from_items([{"path": str(p)} for p in paths]).map_batches(
        RayScorerActor,
        fn_constructor_kwargs={"model": model},
        batch_size=batch_size,
        concurrency=concurrency,
        batch_format="numpy",
        num_cpus=1,
    )
    for row in ds.iter_rows():
        score = float(row["score"])
        if row["error"]:
            yield ScoreResult(str(row["path"]), error=str(row["error"]))
        else:
            yield ScoreResult(str(row["path"]), score=score, sha256=str(row["sha256"]) or None)


@lru_cache(maxsize=4)
def cached_scorer(model: str | None = None, threads: int = 0) -> ScorerLike:
    """The process-wide scorer for ``model`` (None = bundled default), loaded once.

    ``threads`` is ``DOOHABLE_THREADS``: 0 means one ONNX Runtime thread per call, with
    parallelism from several batches (:func:`score_items`) or requests (the API) at once; on a
    small machine this wastes no CPU on intra-op thread synchronisation."""
    from doohable.model.load import load_any

    return load_any(model, threads=threads or 1)


def inference_threads_for(threads: int) -> int:
    """Batches in the model at once for a ``DOOHABLE_THREADS`` value (cores / threads per call)."""
    return max(1, default_workers() // max(1, threads))
