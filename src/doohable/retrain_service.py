"""The in-house loop as a service: retrain, promote if better, rescore; in the foreground (the
CLI) or as one background job per home (the admin page and ``/api/v1/retrain``).

:func:`run_loop` is the whole loop: :func:`doohable.model.retrain.retrain` trains a candidate
on part of the votes and compares it with the current scorer on the rest; a better candidate
is installed atomically, every stored image is rescored with it (the moderation queue) and its
scores become the ratings' prior.

:func:`start_job` runs :func:`run_loop` on a thread. One job runs at a time per
``DOOHABLE_HOME``, across processes: the job holds an exclusive ``flock`` on
``$DOOHABLE_HOME/retrain/lock`` while it runs, and a second start is refused
(:class:`JobRunning`). Its state (``idle``, ``running``, ``done``, ``failed``), progress and
result live in ``$DOOHABLE_HOME/retrain/state.json`` (replaced atomically), so every worker
of the server reports the same job; a job whose process died is reported ``failed``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from doohable.config import Settings
from doohable.services import Services

Tick = Callable[[str, int, int], None]
INTERRUPTED = "interrupted: the process running the retrain stopped before it finished"


class JobRunning(RuntimeError):
    """A retrain is already running for this home."""


@dataclass(frozen=True)
class LoopOptions:
    """What a retrain was asked for (the CLI's flags, the API's body)."""

    holdout: float = 0.2
    seed: int = 0
    current: str | None = None  # the scorer to beat; None: the settings' model
    promote: bool = True
    promote_to: Path | None = None  # default: $DOOHABLE_HOME/models/in-house.onnx
    from_model: str | None = None  # start from a bundled photo model's head (see model.warmstart)


def run_loop(services: Services, opts: LoopOptions, tick: Tick | None = None) -> dict[str, Any]:
    """Retrain on the votes; promote and rescore when the candidate is better. Raises
    ``ValueError``/``FileNotFoundError`` with a clear message when nothing can be trained or
    ``opts.current`` names no scorer. A current scorer that exists but cannot load (the
    settings' model file missing or corrupt: nothing is being served) is beaten by any
    candidate that agrees with the held-out voters more often than chance."""
    from doohable.model.load import check_reference
    from doohable.model.retrain import RetrainOptions, retrain

    if opts.current is not None:
        check_reference(opts.current)  # a mistyped --current stops here, before any training
    settings = services.settings
    models = settings.home / "models"
    candidate = models / "candidate.onnx"  # the latest run's; replaced by the next
    ropts = RetrainOptions(out=candidate, current=opts.current or settings.model,
                           cache_dir=settings.home / "cache", holdout=opts.holdout, seed=opts.seed,
                           from_model=opts.from_model)
    with services.transaction() as s:
        result = retrain(s, services.blobs, ropts, tick)
    result["promoted"] = None
    if result["better"] and opts.promote:
        target = opts.promote_to or models / "in-house.onnx"
        result["promoted"], result["rescored"] = promote(services, candidate, target, tick)
    return result


def promote(
    services: Services, candidate: Path, target: Path, tick: Tick | None = None
) -> tuple[str, dict[str, Any]]:
    """Install ``candidate`` at ``target`` (atomically), rescore every stored image with it
    through the moderation service and make its scores the ratings' prior: (target, what the
    rescoring did). A process serving ``target`` serves the new model from then on."""
    from doohable.model.load import load_any
    from doohable.moderation_service import moderate_ingested
    from doohable.voting.prior import set_prior_model

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.onnx")
    shutil.copyfile(candidate, tmp)
    os.replace(tmp, target)
    services.forget_scorer(str(target))
    scorer = load_any(str(target), threads=services.settings.threads or 1)  # never an earlier file's
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        if tick is not None:
            tick("rescoring stored images", done[0], 0)

    with services.transaction() as s:
        settings = services.settings
        _, report = moderate_ingested(s, services.blobs, settings, scorer=scorer, on_progress=advance)
        set_prior_model(s, scorer.name, scorer.version)
    return str(target), {"model": scorer.name, "version": scorer.version, **report.__dict__}


# ---------------------------------------------------------------- the background job


def _dir(settings: Settings) -> Path:
    path = settings.home / "retrain"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _write(settings: Settings, state: dict[str, Any]) -> None:
    path = _dir(settings) / "state.json"
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(state, default=str))
    os.replace(tmp, path)


def _read(settings: Settings) -> dict[str, Any]:
    path = _dir(settings) / "state.json"
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError):
        return {"state": "idle"}


def _lock(settings: Settings) -> IO[str] | None:
    """The job's lock, held (the open file), or None when another job holds it."""
    fh = (_dir(settings) / "lock").open("a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def job_state(settings: Settings) -> dict[str, Any]:
    """The retrain job's state: ``{"state": idle|running|done|failed, ...}`` with, while it
    runs, ``stage``, ``done`` and ``total``; when done, ``result``; when failed, ``error``."""
    state = _read(settings)
    if state.get("state") != "running":
        return state
    fh = _lock(settings)
    if fh is None:
        return state  # the job holds the lock: it runs
    try:
        state = _read(settings)  # it may have finished between the two reads
        if state.get("state") == "running":
            state |= {"state": "failed", "error": INTERRUPTED, "finished_at": _now()}
            _write(settings, state)
    finally:
        fh.close()
    return state


def _begin(settings: Settings, opts: LoopOptions, started_by: str) -> tuple[dict[str, Any], IO[str]]:
    """Take the lock and record a running job: (its state, the lock); :class:`JobRunning` when
    a retrain already runs for this home."""
    fh = _lock(settings)
    if fh is None:
        raise JobRunning("a retrain is already running; wait for it to finish")
    state = {"state": "running", "started_at": _now(), "started_by": started_by, "stage": "starting",
             "done": 0, "total": 0, "options": {"holdout": opts.holdout, "seed": opts.seed,
                                                "from_model": opts.from_model, "promote": opts.promote}}
    try:
        _write(settings, state)
    except OSError:
        fh.close()
        raise
    return state, fh


def run_exclusive(services: Services, opts: LoopOptions, tick: Tick | None = None,
                  started_by: str = "the command line") -> dict[str, Any]:
    """:func:`run_loop` in the foreground, as the home's one retrain job (its state recorded)."""
    state, fh = _begin(services.settings, opts, started_by)
    return _run(services, opts, state, fh, tick)


def start_job(services: Services, opts: LoopOptions, started_by: str) -> dict[str, Any]:
    """Start :func:`run_loop` on a thread and return its first state; :class:`JobRunning` when a
    retrain already runs for this home."""
    state, fh = _begin(services.settings, opts, started_by)
    first = dict(state)

    def work() -> None:
        with contextlib.suppress(Exception):  # recorded in the job's state by _run
            _run(services, opts, state, fh)

    threading.Thread(target=work, name="doohable-retrain", daemon=True).start()
    return first


def _run(services: Services, opts: LoopOptions, state: dict[str, Any], fh: IO[str],
         outer: Tick | None = None) -> dict[str, Any]:
    """Run the loop as the job: progress in its state (at most every 0.5 s, and at each new
    stage), then the result or the error (raised again); the lock is released last."""
    settings, last = services.settings, [0.0]

    def tick(stage: str, done: int, total: int) -> None:
        if outer is not None:
            outer(stage, done, total)
        now = time.monotonic()
        if stage != state["stage"] or now - last[0] >= 0.5:
            last[0] = now
            state.update(stage=stage, done=done, total=total)
            _write(settings, state)

    try:
        result = run_loop(services, opts, tick)
        state.update(state="done", stage="finished", result=result)
        return result
    except Exception as exc:  # every failure is reported on the page, never lost in a log
        clear = isinstance(exc, ValueError | FileNotFoundError)
        state.update(state="failed", error=str(exc) if clear else f"{type(exc).__name__}: {exc}")
        raise
    finally:
        state["finished_at"] = _now()
        try:
            _write(settings, state)
        finally:
            fh.close()
