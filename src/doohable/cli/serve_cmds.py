"""CLI commands of the serve stage: ``serve``, ``ratings rebuild``, ``votes export``.

Heavy imports happen inside the commands, so that ``doohable --help`` stays fast."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from doohable.cli.common import JsonOpt, app, console, emit, fail

ratings_app = typer.Typer(help="Ratings derived from the vote log.", no_args_is_help=True)
votes_app = typer.Typer(help="The append-only vote log.", no_args_is_help=True)
app.add_typer(ratings_app, name="ratings")
app.add_typer(votes_app, name="votes")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    workers: int = typer.Option(1, "--workers", min=1, help="Server processes (share one database)."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log every request."),
    proxy_headers: bool = typer.Option(
        False, "--proxy-headers", help="Trust X-Forwarded-* (behind a reverse proxy) for absolute URLs."
    ),
) -> None:
    """Run the web app and JSON API (votes, pages, Slack events) with uvicorn."""
    import uvicorn

    from doohable.ingest import sweep_orphan_blobs
    from doohable.malloc import limit_arenas
    from doohable.services import Services
    from doohable.signing import secret_key
    from doohable.store.db import dispose_all

    limit_arenas()  # before the server's threads: a flat RSS over days (doohable.malloc)
    services = Services.from_env()  # each worker builds its own in create_app
    settings = services.settings
    try:
        engine = services.engine  # create or upgrade the schema once
        secret_key(settings)  # generate the key file once, before workers
    except Exception as e:
        raise fail(f"cannot open the store: {e}") from e
    try:  # crash recovery: blobs written by ingests that never committed (best effort)
        sweep_orphan_blobs(engine, services.blobs, settings.orphan_blob_grace_s)
    except Exception as e:
        console.print(f"[yellow]orphan blobs not swept: {e}[/yellow]")
    dispose_all()
    console.print(f"doohable on http://{host}:{port} (docs at /docs), {workers} worker(s)")
    uvicorn.run(
        "doohable.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        proxy_headers=proxy_headers,
        log_level="info",
    )


@ratings_app.command("rebuild")
def ratings_rebuild(as_json: bool = JsonOpt) -> None:
    """Recompute every rating from the vote log (Elo replayed exactly, Bradley-Terry refitted)."""
    from doohable import voting
    from doohable.services import Services

    with Services.from_env().transaction() as session:
        report = voting.rebuild_ratings(session)
    if report.deleted_votes:
        console.print(f"[yellow]{report.deleted_votes} vote(s) name images that were deleted; they are kept "
                      "in the log and not counted in Bradley-Terry; deleted images get no rating[/yellow]")
    emit(vars(report), as_json)


@votes_app.command("export")
def votes_export(
    output: Path | None = typer.Option(None, "--output", "-o", help="CSV file to write (default: stdout)."),
) -> None:
    """Write the vote log as CSV ``voter,winner,loser,created_at`` (decisive votes not undone)."""
    from doohable import voting
    from doohable.services import Services

    with Services.from_env().transaction() as session:
        lines = list(voting.export_votes_csv(session))
    if output is None:
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
    else:
        output.write_text("".join(lines))
        console.print(f"{len(lines) - 1} votes written to {output}")
