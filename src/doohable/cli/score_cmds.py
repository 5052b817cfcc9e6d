"""CLI commands of the moderation stage: ``score`` (batch scoring) and ``demo``.

Heavy imports happen inside the commands, so that ``doohable --help`` stays fast."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from doohable.cli.common import JsonOpt, app, console, emit, emit_line, fail, progress

if TYPE_CHECKING:
    from doohable.batch import ScoreResult

SAMPLES = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "camera", "coins", "moon", "brick", "grass", "page", "clock",
)  # fmt: skip


@app.command()
def score(
    paths: list[Path] = typer.Argument(None, help="Image files and folders (recursively)."),
    as_json: bool = JsonOpt,
    csv_out: Path | None = typer.Option(
        None, "--csv", help="Also write path,score,error as CSV, best first."
    ),
    gallery: Path | None = typer.Option(None, "--gallery", help="Also write an HTML gallery, best → worst."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per model call."),
    workers: int = typer.Option(0, "--workers", min=0, help="Decode threads (0 = number of cores)."),
    ray: bool = typer.Option(
        False, "--ray", help="Score on Ray Data (a local Ray, or RAY_ADDRESS's cluster)."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster to join (e.g. ray://head:10001); implies --ray."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Scorer name or .onnx path (default: DOOHABLE_MODEL)."
    ),
    ingested: bool = typer.Option(
        False, "--ingested", help="(Re-)score every stored image and apply the policy."
    ),
    store: bool = typer.Option(
        True, "--store/--no-store", help="Save scores of files that are ingested images and apply the policy."
    ),
) -> None:
    """Score images with the scorer, best first: JSON lines {"path", "score"} or {"path", "error"}."""
    from doohable.batch import best_first, expand_paths

    if ingested:
        _score_ingested(model, batch_size, as_json)
        return
    if not paths:
        raise fail("give image files or folders to score (or --ingested)")
    files, missing = expand_paths(paths)
    use_ray = ray_address or ("auto" if ray else None)
    results = best_first(_run(files, model, batch_size, workers, use_ray, quiet=as_json) + missing)
    if store:
        _store(results, model)
    if csv_out is not None:
        _write_csv(csv_out, results)
    if gallery is not None:
        _write_gallery(gallery, results)
    if as_json:
        for r in results:
            emit_line(r.as_json())
    else:
        _print_results(results)


def _run(
    files: list[Path], model: str | None, batch_size: int, workers: int, ray: str | None, quiet: bool
) -> list[ScoreResult]:
    from doohable.batch import cached_scorer, inference_threads_for, score_paths, score_paths_ray
    from doohable.config import get_settings

    settings = get_settings()
    name = model or settings.model
    if ray is not None:
        address = None if ray == "auto" else ray
        where = address or os.environ.get("RAY_ADDRESS") or "local"
        console.print(f"scoring {len(files)} images on Ray ({where})")
        return list(score_paths_ray(files, name, address=address, batch_size=batch_size))
    try:
        scorer = cached_scorer(name, settings.threads)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from e
    with progress(disable=quiet) as bar:
        task = bar.add_task(f"scoring with {scorer.name}", total=len(files))
        return list(
            score_paths(
                files,
                scorer,
                batch_size=batch_size,
                workers=workers,
                inference_threads=inference_threads_for(settings.threads),
                on_progress=lambda n: bar.advance(task, n),
            )
        )


def _store(results: list[ScoreResult], model: str | None) -> None:
    """Save the scores of files that are ingested images (by SHA-256), then apply the policy."""
    from doohable.moderation_service import moderate_scores, scorer_for, stored_ids, stored_parts
    from doohable.services import Services

    if not any(r.sha256 for r in results):
        return
    services = Services.from_env()
    scorer = scorer_for(services.settings, model)
    with services.transaction() as session:
        scores = stored_ids(session, results)
        if scores:
            counts = moderate_scores(
                session, services.blobs, scorer, services.settings, scores,
                parts=stored_parts(scores, results, session),
            )
            console.print(f"{len(scores)} ingested image(s) scored in the database: {counts}")


def _score_ingested(model: str | None, batch_size: int, as_json: bool) -> None:
    emit(moderate_stored(model, batch_size, quiet=as_json), as_json)


def moderate_stored(
    model: str | None, batch_size: int, image_ids: list[int] | None = None, *, quiet: bool = False
) -> dict[str, Any]:
    """Moderate stored images (all, or ``image_ids``) through the moderation service
    (:func:`~doohable.moderation_service.moderate_ingested`) with scorer ``model`` (None: the
    configured one), under a progress bar; return its report as a JSON-ready dict. Used by
    ``score --ingested`` and ``ingest --moderate``."""
    from doohable.moderation_service import moderate_ingested, scorer_for
    from doohable.services import NO_MODEL_ERRORS, Services

    services = Services.from_env()
    try:
        scorer = scorer_for(services.settings, model)
    except NO_MODEL_ERRORS as e:
        raise fail(str(e)) from e
    with services.transaction() as session, progress(disable=quiet) as bar:
        task = bar.add_task(f"scoring stored images with {scorer.name}", total=None)
        _, report = moderate_ingested(
            session,
            services.blobs,
            services.settings,
            image_ids,
            scorer=scorer,
            batch_size=batch_size,
            on_progress=lambda n: bar.advance(task, n),
        )
    return {"model": scorer.name, "version": scorer.version, **report.__dict__}


def _write_csv(path: Path, results: list[ScoreResult]) -> None:
    import csv

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "score", "error"])
        for r in results:
            w.writerow([r.path, "" if r.score is None else f"{r.score:.6f}", r.error or ""])
    console.print(f"CSV written to {path}")


def gallery_html(results: list[ScoreResult], base: Path) -> str:
    """A standalone HTML page of thumbnails best → worst (images linked relative to ``base``)."""
    cards = []
    for rank, r in enumerate(results, 1):
        if r.score is None:
            continue
        src = os.path.relpath(Path(r.path).resolve(), base.resolve())
        name = html.escape(Path(r.path).name)
        href = html.escape(Path(src).as_posix(), quote=True)
        cards.append(
            f'<figure><a href="{href}"><img src="{href}" loading="lazy" alt="{name}"></a>'
            f"<figcaption>#{rank} · {r.score:.3f}<br>{name}</figcaption></figure>"
        )
    errors = "".join(
        f"<li>{html.escape(r.path)}: {html.escape(r.error or '')}</li>" for r in results if r.score is None
    )
    return (
        "<!doctype html><meta charset=utf-8><title>doohable scores</title><style>"
        "body{font-family:system-ui,sans-serif;margin:1rem;background:#f6f5f2}"
        "main{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:.8rem}"
        "figure{margin:0;background:#fff;border-radius:8px;overflow:hidden}"
        "img{width:100%;height:180px;object-fit:cover;display:block}"
        "figcaption{padding:.3rem .5rem;font-size:.8rem}</style>"
        f"<h1>{len(cards)} images, best first</h1><main>{''.join(cards)}</main>"
        + (f"<h2>Not scored</h2><ul>{errors}</ul>" if errors else "")
    )


def _write_gallery(path: Path, results: list[ScoreResult]) -> None:
    path.write_text(gallery_html(results, path.parent), encoding="utf-8")
    console.print(f"gallery written to {path}")


def _print_results(results: list[ScoreResult], top: int = 20) -> None:
    from rich.table import Table

    table = Table("#", "score", "path")
    scored = [r for r in results if r.score is not None]
    for k, r in enumerate(scored[:top], 1):
        table.add_row(str(k), f"{r.score:.3f}", r.path)
    console.print(table)
    if len(scored) > top:
        console.print(f"… and {len(scored) - top} more (use --json or --csv for all)")
    for r in results:
        if r.error is not None:
            console.print(f"  [yellow]error[/yellow] {r.path}: {r.error}")


# --------------------------------------------------------------------------- demo


def write_samples(folder: Path) -> list[Path]:
    """Save scikit-image's bundled sample photos as JPEGs in ``folder`` (idempotent)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in SAMPLES:
        path = folder / f"{name}.jpg"
        if not path.exists():
            arr = np.asarray(getattr(data, name)())
            Image.fromarray(arr).convert("RGB").save(path, quality=92)
        out.append(path)
    return out


@app.command()
def demo(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface the app listens on."),
    port: int = typer.Option(8000, "--port", help="TCP port of the app."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Start the web app at the end."),
    as_json: bool = JsonOpt,
) -> None:
    """Ingest the sample photos, score them, apply the policy, print the queue and a login link, serve."""
    from doohable.config import get_settings

    settings = get_settings()
    try:
        out = run_demo(settings, host, port, quiet=as_json)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from e
    if as_json:
        emit(out, True)
    else:
        _print_demo(out)
    if serve:
        import uvicorn

        from doohable.api.app import create_app

        console.print(f"serving on http://{host}:{port} (Ctrl-C to stop)")
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


def run_demo(settings: Any, host: str, port: int, quiet: bool = True) -> dict[str, Any]:
    """The demo's work (no serving): returns the queue, the policy and the admin's login link."""
    from doohable import moderation
    from doohable.ingest import ingest_inputs
    from doohable.moderation_service import moderate_ingested
    from doohable.services import Services
    from doohable.store.users import UserError, add_user

    samples = write_samples(Path(settings.home) / "samples")
    report = ingest_inputs([str(p) for p in samples], settings)
    services = Services(settings)
    with services.transaction() as session:
        ids = [int(i) for (i,) in session.query(moderation.Image.id).all()]
        scorer, done = moderate_ingested(session, services.blobs, settings, ids)
        scores = moderation.latest_scores(session, scorer.name, scorer.version)
        approved = done.approved
        if moderation.get_policy(session, settings).threshold is None and len(scores) >= 3:
            # no threshold yet: start from the report's cut (the top third is "beautiful")
            moderation.set_policy(session, threshold=sorted(scores.values())[-(len(scores) // 3)])
            counts = moderation.apply_policy(session, ids, moderation.get_policy(session, settings), scores)
            approved += counts["approved"]
        policy = moderation.get_policy(session, settings)
        queue = [
            moderation.queue(session, scorer.name, moderation.QueueFilter(status=s, limit=500), policy)
            for s in ("approved", "pending")
        ]
        name, token = _demo_admin(session, add_user, UserError)
    items = sorted([i for q in queue for i in q], key=lambda i: -(i.score or 0.0))
    return {
        "samples": len(samples),
        "added": report.added,
        "duplicates": report.duplicates,
        "model": scorer.name,
        "version": scorer.version,
        "threshold": policy.threshold,
        "approved": approved,
        "flagged": done.flagged,
        "queue": [
            {"id": i.id, "score": i.score, "status": i.status, "nsfw": i.nsfw, "source": i.source}
            for i in items
        ],
        "admin": name,
        "login_url": f"http://{host}:{port}/login?token={token}&next=/moderation",
    }


def _demo_admin(session: Any, add_user: Any, user_error: type[Exception]) -> tuple[str, str]:
    for k in range(1, 100):
        name = "admin" if k == 1 else f"admin-{k}"
        try:
            user, token = add_user(session, name, "admin")
            return user.name, token
        except user_error:
            continue
    raise ValueError("could not create a demo admin user")


def _print_demo(out: dict[str, Any]) -> None:
    from rich.table import Table

    threshold = "off" if out["threshold"] is None else f"{out['threshold']:.3f}"
    console.print(
        f"{out['samples']} sample photos: {out['added']} added, {out['duplicates']} already there; "
        f"model {out['model']} ({out['version']}); auto-approve threshold {threshold}"
    )
    table = Table("#", "image", "score", "status", "nsfw")
    for k, i in enumerate(out["queue"], 1):
        nsfw = "–" if i["nsfw"] is None else f"{i['nsfw']:.2f}"
        table.add_row(
            str(k), str(i["id"]), f"{i['score']:.3f}" if i["score"] is not None else "–", i["status"], nsfw
        )
    console.print(table)
    console.print(f"admin user [bold]{out['admin']}[/bold]; sign in with:")
    console.print(f"  {out['login_url']}", markup=False)
