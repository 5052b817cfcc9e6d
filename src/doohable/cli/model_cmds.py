"""CLI commands of the model stage: ``train`` and ``evaluate`` (``score`` lives in score_cmds).

Heavy imports (torch) happen inside the commands, so that ``doohable --help`` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from doohable.cli.common import JsonOpt, app, console, emit, fail, progress
from doohable.datasets import scut_fbp5500

SHARED_SCUT = scut_fbp5500()


def _tick_factory(bar: Any) -> Any:
    tasks: dict[str, Any] = {}

    def tick(what: str, done: int, total: int) -> None:
        if what not in tasks:
            tasks[what] = bar.add_task(what, total=total)
        bar.update(tasks[what], completed=done, total=total)

    return tick


def _votes_on_stored_images(session: Any) -> list[Any]:
    """The counted votes whose images are still in the database; says how many voted images
    were deleted (their votes stay in the log and are left out of the labels)."""
    from doohable.voting.log import effective_votes, without_deleted_images

    votes = effective_votes(session)
    rows, deleted = without_deleted_images(session, votes)
    if deleted:
        console.print(f"[yellow]{len(deleted)} voted image(s) are missing from the database (deleted): "
                      f"their {len(votes) - len(rows)} vote(s) are left out of the labels[/yellow]")
    return rows


def _db_labels(method: str, pairwise: bool) -> dict[str, Any]:
    """In-house labels from the configured database: ratings (or raw votes) + image bytes."""
    from sqlalchemy import select

    from doohable.model.data import blob_sources, ratings_from_db, vote_pairs_from_db
    from doohable.services import Services
    from doohable.store.models import Image

    services = Services.from_env()
    blobs = services.blobs
    with services.transaction() as s:
        _votes_on_stored_images(s)
        if pairwise:
            from doohable.model.data import ScoredImages

            pairs = vote_pairs_from_db(s)
            ids = sorted(set(pairs.winners.tolist()) | set(pairs.losers.tolist()))
            if not ids:
                raise ValueError("the database has no votes to train a pairwise head on")
            shas = dict(s.execute(select(Image.id, Image.sha256).where(Image.id.in_(ids))).all())
            import numpy as np

            data = ScoredImages(
                [f"blob:{shas[i]}" for i in ids],
                np.full(len(ids), 3.0),
                [""] * len(ids),
                np.zeros(len(ids), int),
            )
            return {"data": data, "pairs": pairs, "pair_ids": ids, "sources": blob_sources(data.paths, blobs)}
        data = ratings_from_db(s, method)
    return {"data": data, "sources": blob_sources(data.paths, blobs)}


def _photo_dataset(data: Path) -> Path | None:
    """``data`` (or the shared live-challenge folder for the name ``live-challenge``) when its
    labels.csv has a ``mos`` column, else ``None``."""
    from doohable import datasets
    from doohable.model.photo import is_photo_labels

    if str(data) == "live-challenge" and not data.exists():
        data = datasets.live_challenge()
    return data if is_photo_labels(data) else None


def _train_photo(
    data: Path, backbone: str, head: str, folds: bool, device: str, out: Path, as_json: bool
) -> None:
    """The photo quality model: frozen multi-level features, a head, nested CV on the folds."""
    from doohable.model.data import LabelError
    from doohable.model.photo_train import PhotoTrainOptions, train_photo_job

    opts = PhotoTrainOptions(data=data, out=out, backbone=backbone, head=head, folds=folds, device=device)
    try:
        result = _run_job(train_photo_job, opts, as_json)
    except (LabelError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    _report(result, as_json)


def _run_job(job: Any, opts: Any, as_json: bool) -> dict[str, Any]:
    """Run a training job under a progress bar (none with ``--json``)."""
    with progress(disable=as_json) as bar:
        return job(opts, _tick_factory(bar))  # type: ignore[no-any-return]


def _report(result: dict[str, Any], as_json: bool) -> None:
    """Name every skipped image, then print the job's result."""
    for e in result["skipped"]:
        console.print(f"[yellow]skipped[/yellow] {e['source']}: {e['error']}")
    emit(result, as_json)


def _train_from_model(
    from_model: str, from_db: bool, finetune: bool, seed: int, out: Path | None, as_json: bool
) -> None:
    """``train --from-db --from-model``: a bundled photo model's head fitted to the current votes."""
    if not from_db:
        raise typer.BadParameter("--from-model fits the head to the database's votes: it needs --from-db",
                                 param_hint="--from-model")
    if finetune:
        raise typer.BadParameter("--from-model fits the head only (the bundled models ship as ONNX)",
                                 param_hint="--from-model")
    from doohable.model.retrain import voted_bytes
    from doohable.model.warmstart import WarmStartOptions, warmstart_job
    from doohable.services import Services

    services = Services.from_env()
    settings = services.settings
    target = out or settings.home / "models" / f"in-house-from-{Path(from_model).stem}.onnx"
    try:
        with services.transaction() as s:
            rows = _votes_on_stored_images(s)
            images = voted_bytes(s, services.blobs, rows)
        if not images:
            raise ValueError("the database has no votes to train on")
        opts = WarmStartOptions(from_model, rows, images, target, seed=seed, threads=max(1, settings.threads))
        result = _run_job(warmstart_job, opts, as_json)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    _report(result, as_json)


@app.command()
def train(
    data: Path = typer.Option(
        SHARED_SCUT,
        "--data",
        help="Folder with labels.csv and images/: SCUT-FBP5500 layout (image,score,subset,fold) trains a "
        "face scorer; a quality dataset (image,mos,std,fold, e.g. live-challenge) trains the photo model.",
    ),
    from_db: bool = typer.Option(False, "--from-db", help="Train on in-house labels from the database."),
    method: str = typer.Option(
        "bt", "--method", help="With --from-db: which ratings (elo|bt) are the labels."
    ),
    backbone: str | None = typer.Option(
        None,
        "--backbone",
        help="mobilenet_v2 | efficientnet_lite0 (a quality dataset also takes a+b: both backbones, "
        "features concatenated). Default: mobilenet_v2 for faces, efficientnet_lite0 (the bundled "
        "photo model's) for a quality dataset.",
    ),
    head: str = typer.Option(
        "regression",
        "--head",
        help="regression | nima | pairwise (pairwise + --from-db trains on raw vote pairs) | kernel "
        "(a quality dataset: RBF kernel ridge)",
    ),
    finetune: bool = typer.Option(
        False,
        "--finetune/--head-only",
        help="Full fine-tuning, or a head on cached frozen features (minutes on CPU).",
    ),
    folds: bool = typer.Option(True, "--folds/--no-folds", help="k-fold CV on the data's fold column first."),
    epochs: int = typer.Option(
        20, "--epochs", min=1, help="Fine-tuning epochs (early stopping keeps the best)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=2),
    freeze_groups: int = typer.Option(
        0,
        "--freeze-groups",
        min=0,
        help="Keep the lowest N backbone layer groups frozen. 1 is the CPU recipe: about 2x faster a "
        "step, same accuracy (docs/model.md).",
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Use only the first N images of each fold."
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available) | cpu | cuda"),
    seed: int = typer.Option(0, "--seed"),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Where to write the .onnx (default: $DOOHABLE_HOME/models/<backbone>-<head>.onnx).",
    ),
    checkpoint_dir: Path | None = typer.Option(
        None, "--checkpoint-dir", help="Save every epoch here; rerunning the same command resumes."
    ),
    face_branch: bool = typer.Option(
        False,
        "--face-branch",
        help="Also fit a face branch (dlib face embedding + ridge, blended where a face is found; "
        "written beside the .onnx: my.onnx -> my.face.npz). Needs the k-fold CV (--folds, not --from-db) "
        "and at least 20 training images with a face.",
    ),
    face_net: bool = typer.Option(
        False,
        "--face-net",
        help="With --face-branch: also fine-tune dlib's face network for the branch and stack it with "
        "the CNN and the regressors, as the bundled selfie model does (one fine-tuning per fold, then one "
        "on every face: ~50 min for 4,400 faces on 2 CPU cores, much less on a GPU).",
    ),
    face_net_epochs: int = typer.Option(
        10, "--face-net-epochs", min=1, help="Epochs of each --face-net fine-tuning."
    ),
    from_model: str | None = typer.Option(
        None, "--from-model",
        help="With --from-db: start from a bundled photo model (photo, photo-hq, default: its photo part, "
        "or a photo .onnx): its features, and its head fitted to the votes themselves with shrinkage "
        "toward it (few votes stay close to it). Head only; --method and --head do not apply.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Train a scorer and export it to ONNX: {"model": path, "metrics": {...}}."""
    from doohable.model.jobs import (
        FACE_BRANCH_NEEDS_FOLDS,
        FACE_NET_NEEDS_BRANCH,
        TrainOptions,
        labelled_scut,
        train_job,
    )

    if face_net and not face_branch:  # before loading any labels
        raise typer.BadParameter(FACE_NET_NEEDS_BRANCH, param_hint="--face-net")
    if face_branch and (not folds or from_db):
        raise typer.BadParameter(FACE_BRANCH_NEEDS_FOLDS, param_hint="--face-branch")
    from doohable.config import get_settings
    from doohable.model.data import LabelError
    from doohable.model.train import FinetuneConfig

    settings = get_settings()
    if from_model is not None:
        _train_from_model(from_model, from_db, finetune, seed, out, as_json)
        return
    photo_root = None if from_db else _photo_dataset(data)
    if photo_root is not None:  # a quality dataset (labels.csv with mos): the photo model
        _train_photo(
            photo_root, backbone or "efficientnet_lite0", head, folds, device,
            out or settings.home / "models" / "photo.onnx", as_json,
        )  # fmt: skip
        return
    backbone = backbone or "mobilenet_v2"
    cfg = FinetuneConfig(
        backbone=backbone,
        head=head,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        freeze_groups=freeze_groups,
    )
    try:
        extra = (
            _db_labels(method, head == "pairwise") if from_db else {"data": labelled_scut(data, limit=limit)}
        )
        opts = TrainOptions(
            out=out or settings.home / "models" / f"{backbone}-{head}.onnx",
            cache_dir=settings.home / "cache",
            finetune=finetune,
            folds=folds and not from_db,
            config=cfg,
            device=device,
            checkpoint_dir=checkpoint_dir,
            face_branch=face_branch,
            face_net=face_net,
            face_net_epochs=face_net_epochs,
            **extra,
        )
        result = _run_job(train_job, opts, as_json)
    except (LabelError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    _report(result, as_json)


@app.command()
def evaluate(
    model: str | None = typer.Option(
        None, "--model", help="Exported model (.onnx) or bundled name; default: the bundled default."
    ),
    data: Path = typer.Option(SHARED_SCUT, "--data", help="Folder with labels.csv and images/."),
    fold: int | None = typer.Option(None, "--fold", help="Evaluate on this fold only."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="First N images of each fold only."),
    report: Path | None = typer.Option(None, "--report", help="Write an HTML report here."),
    cv_json: list[Path] = typer.Option(
        [], "--cv-json", help="k-fold results (cv_*.json) to add to the report."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Score labelled images with a model: {"pearson", "spearman", "rmse", "mae", ...}."""
    from doohable.model.data import LabelError
    from doohable.model.jobs import evaluate_job, labelled_scut

    try:
        labels = labelled_scut(data, fold=fold, limit=limit)
        with progress(disable=as_json) as bar:
            result = evaluate_job(
                model,
                labels,
                report=report,
                cv_json=cv_json,
                image_dir=data / "images",
                tick=_tick_factory(bar),
            )
    except (LabelError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    for e in result["skipped"]:
        console.print(f"[yellow]skipped[/yellow] {e['source']}: {e['error']}")
    emit(result, as_json)


@app.command()
def calibrate(
    from_votes: bool = typer.Option(
        False, "--from-votes", help="Refit on the database's votes (Bradley-Terry) and stored parts."
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the combination JSON."),
    model: str | None = typer.Option(None, "--model", help="Combined scorer to refit (default: default)."),
    as_json: bool = JsonOpt,
) -> None:
    """Refit the default scorer's combination of parts; serve it with DOOHABLE_MODEL=OUT."""
    from doohable.model.calibrate import fit_from_votes
    from doohable.model.default import CombinedScorer
    from doohable.model.load import load_any
    from doohable.services import Services

    if not from_votes:
        raise fail("say what to fit on: --from-votes (labelled sets: benchmarks/recipes/fit_default.py)")
    services = Services.from_env()
    try:
        scorer = load_any(model or "default", threads=services.settings.threads or 1)
        if not isinstance(scorer, CombinedScorer):
            raise ValueError(f"{scorer.name!r} is a single model, not a combined scorer")
        with services.transaction() as session:
            comb = fit_from_votes(session, scorer)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from e
    comb.save(out)
    emit({"model": str(out), "combination": comb.to_json()}, as_json)
