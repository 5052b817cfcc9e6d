"""CLI command of the in-house loop: ``doohable retrain`` (votes -> new scorer -> promote if better).

Heavy imports (torch) happen inside the command, so that ``doohable --help`` stays fast."""

from __future__ import annotations

from pathlib import Path

import typer

from doohable.cli.common import JsonOpt, app, console, emit, fail, progress

FROM_MODEL_HELP = (
    "Start from a bundled photo model instead of ImageNet alone: photo, photo-hq, default (its photo part) "
    "or a photo .onnx; its features, and a head fitted to the votes with shrinkage toward its own head."
)


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
    from_model: str | None = typer.Option(None, "--from-model", help=FROM_MODEL_HELP),
    as_json: bool = JsonOpt,
) -> None:
    """Train a scorer on the votes, compare it with the current one on held-out votes, and if it
    agrees with the voters more often: install it, rescore every stored image with it (the
    moderation queue) and make its scores the ratings' prior. One retrain runs at a time per
    DOOHABLE_HOME (the admin page's included)."""
    from doohable.cli.model_cmds import _tick_factory
    from doohable.retrain_service import JobRunning, LoopOptions, run_exclusive
    from doohable.services import Services

    opts = LoopOptions(holdout=holdout, seed=seed, current=current, promote=promote, promote_to=promote_to,
                       from_model=from_model)
    try:
        with progress(disable=as_json) as bar:
            result = run_exclusive(Services.from_env(), opts, _tick_factory(bar))
    except (ValueError, FileNotFoundError, JobRunning) as exc:
        raise fail(str(exc)) from exc
    if not as_json:
        _print(result)
    emit(result, as_json)


def _print(result: dict[str, object]) -> None:
    new, cur = result["new"], result["current"]
    assert isinstance(new, dict) and isinstance(cur, dict)
    console.print(f"held-out pairwise accuracy: new {new['pairwise_accuracy']}, "
                  f"current {cur['pairwise_accuracy']}"
                  + (f" (current model: {cur['error']})" if cur.get("error") else ""))
    console.print(f"promoted to {result['promoted']}" if result["promoted"] else "not promoted")
