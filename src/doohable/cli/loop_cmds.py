"""CLI command of the in-house loop: ``doohable retrain`` (votes -> new scorer -> promote if better).

Heavy imports (torch) happen inside the command, so that ``doohable --help`` stays fast."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import typer

from doohable.cli.common import JsonOpt, app, console, emit, fail, progress


@app.command()
def retrain(
    holdout: float = typer.Option(0.2, "--holdout",
                                  help="Share of decisive votes held out to compare the models."),
    seed: int = typer.Option(0, "--seed", help="Seed of the held-out split and of training."),
    current: str | None = typer.Option(
        None, "--current",
        help="The serving scorer to beat (name or .onnx); default: DOOHABLE_MODEL or bundled."),
    promote_to: Path | None = typer.Option(
        None, "--promote-to",
        help="Where a better model is installed (default: $DOOHABLE_HOME/models/in-house.onnx; serve it with "
        "DOOHABLE_MODEL=that path)."),
    promote: bool = typer.Option(True, "--promote/--no-promote", help="Promote and rescore when better."),
    as_json: bool = JsonOpt,
) -> None:
    """Train a scorer on the votes, compare it with the current one on held-out votes, and if it
    agrees with the voters more often: install it, rescore every stored image with it (the
    moderation queue) and make its scores the ratings' prior."""
    from doohable.cli.model_cmds import _tick_factory
    from doohable.model.retrain import RetrainOptions
    from doohable.model.retrain import retrain as retrain_job
    from doohable.services import Services

    services = Services.from_env()
    settings = services.settings
    models = settings.home / "models"
    candidate = models / f"candidate-{time.strftime('%Y%m%d-%H%M%S')}.onnx"
    opts = RetrainOptions(out=candidate, current=current or settings.model, cache_dir=settings.home / "cache",
                          holdout=holdout, seed=seed)
    try:
        with services.transaction() as s, progress(disable=as_json) as bar:
            result = retrain_job(s, services.blobs, opts, _tick_factory(bar))
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    result["promoted"] = None
    if result["better"] and promote:
        target = promote_to or models / "in-house.onnx"
        result["promoted"], result["rescored"] = _promote(candidate, target, as_json)
    if not as_json:
        _print(result)
    emit(result, as_json)


def _promote(candidate: Path, target: Path, quiet: bool) -> tuple[str, dict[str, object]]:
    """Install the candidate at ``target`` (atomically), rescore every stored image with it and
    make its scores the ratings' prior."""
    from doohable.cli.score_cmds import moderate_stored
    from doohable.services import Services
    from doohable.voting.prior import set_prior_model

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.onnx")
    shutil.copyfile(candidate, tmp)
    os.replace(tmp, target)
    report = moderate_stored(str(target), 32, quiet=quiet)
    with Services.from_env().transaction() as s:
        set_prior_model(s, str(report["model"]), str(report["version"]))
    return str(target), report


def _print(result: dict[str, object]) -> None:
    new, cur = result["new"], result["current"]
    assert isinstance(new, dict) and isinstance(cur, dict)
    console.print(f"held-out pairwise accuracy: new {new['pairwise_accuracy']}, "
                  f"current {cur['pairwise_accuracy']}"
                  + (f" (current model: {cur['error']})" if cur.get("error") else ""))
    console.print(f"promoted to {result['promoted']}" if result["promoted"] else "not promoted")
