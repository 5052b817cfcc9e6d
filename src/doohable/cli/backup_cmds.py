"""CLI commands of the operations stage: ``backup DEST`` and ``restore SRC`` (see
:mod:`doohable.store.backup`)."""

from __future__ import annotations

from pathlib import Path

import typer

from doohable.cli.common import JsonOpt, app, console, emit, fail, progress


def _run(job: str, path: Path, as_json: bool) -> dict[str, object]:
    from sqlalchemy.exc import SQLAlchemyError

    from doohable.services import Services
    from doohable.store import backup as bk

    services = Services.from_env()
    settings = services.settings
    with progress(disable=as_json) as bar:
        task = bar.add_task(job, total=None)

        def on_progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=f"{job}: {stage}", completed=done, total=total)

        try:
            blobs = services.blobs
            if job == "backup":
                summary = bk.backup(settings.resolved_database_url, blobs, path, on_progress)
            else:
                summary = bk.restore(path, settings.resolved_database_url, blobs, on_progress)
        except (bk.BackupError, ValueError, OSError, SQLAlchemyError) as e:
            raise fail(f"{job} failed: {e}") from e
    return summary.as_json()


@app.command()
def backup(
    dest: Path = typer.Argument(..., help="A new folder for the snapshot."),
    as_json: bool = JsonOpt,
) -> None:
    """Snapshot the database and the image bytes into DEST while the service runs."""
    out = _run("backup", dest, as_json)
    if as_json:
        emit(out, True)
    else:
        console.print(f"backed up {out['images']} image(s) and {out['votes']} vote(s) to {out['path']}")


@app.command()
def restore(
    src: Path = typer.Argument(..., help="A folder written by `doohable backup`."),
    as_json: bool = JsonOpt,
) -> None:
    """Restore a backup into an empty home (database and blob store of the current settings)."""
    out = _run("restore", src, as_json)
    if as_json:
        emit(out, True)
    else:
        console.print(f"restored {out['images']} image(s) and {out['votes']} vote(s) from {out['path']}")
