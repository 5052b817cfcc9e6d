"""CLI commands of the store stage: ``init``, ``users add``, ``ingest``, ``images list``.

Heavy imports (SQLAlchemy models, Pillow, httpx) happen inside the commands, so that
``doohable --help`` stays fast."""

from __future__ import annotations

from typing import Any

import typer

from doohable.cli.common import JsonOpt, app, console, emit, emit_line, fail, progress

users_app = typer.Typer(help="Manage voters, moderators and admins.", no_args_is_help=True)
images_app = typer.Typer(help="Look at the stored images.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(images_app, name="images")


def _safe_url(url: str) -> str:
    """A database URL with its password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


@app.command()
def init(as_json: bool = JsonOpt) -> None:
    """Create or upgrade the database and the blob store."""
    from doohable.services import Services
    from doohable.store.blobs import LocalBlobStore
    from doohable.store.db import current_revision

    services = Services.from_env()
    settings = services.settings
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        blobs = services.blobs
        engine = services.engine
    except Exception as e:
        raise fail(f"cannot initialise the store: {e}") from e
    if isinstance(blobs, LocalBlobStore):
        blobs.root.mkdir(parents=True, exist_ok=True)
    emit(
        {
            "database": _safe_url(settings.resolved_database_url),
            "blobs": settings.resolved_blob_url,
            "revision": current_revision(engine),
        },
        as_json,
    )


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="The person's name (unique)."),
    role: str = typer.Option("voter", "--role", help="voter | moderator | admin"),
    as_json: bool = JsonOpt,
) -> None:
    """Add a user and print their API token (shown only this once)."""
    from doohable.services import Services
    from doohable.store.users import UserError, add_user

    try:
        with Services.from_env().transaction() as session:
            user, token = add_user(session, name, role)
            out = {"name": user.name, "role": user.role, "token": token}
    except UserError as e:
        raise fail(str(e)) from e
    emit(out, as_json)


def _user_row(user: Any) -> dict[str, Any]:
    from doohable.store.users import is_revoked

    return {"name": user.name, "role": user.role, "revoked": is_revoked(user),
            "slack_user_id": user.slack_user_id, "created_at": user.created_at}


@users_app.command("list")
def users_list(as_json: bool = JsonOpt) -> None:
    """List the users: name, role, whether revoked (JSON lines with --json)."""
    from doohable.services import Services
    from doohable.store.users import list_users

    with Services.from_env().transaction() as session:
        rows = [_user_row(u) for u in list_users(session)]
    if as_json:
        for row in rows:
            emit_line(row)
    else:
        _print_users(rows)


def _change_user(name: str, change: Any) -> Any:
    from doohable.services import Services
    from doohable.store.users import UserError

    try:
        with Services.from_env().transaction() as session:
            return change(session, name)
    except UserError as e:
        raise fail(str(e)) from e


@users_app.command("revoke")
def users_revoke(name: str = typer.Argument(..., help="The user's name."), as_json: bool = JsonOpt) -> None:
    """Revoke a user's token at once (their votes and decisions stay; `users token` restores access)."""
    from doohable.store.users import revoke_user

    user = _change_user(name, revoke_user)
    emit({"name": user.name, "revoked": True}, as_json)


@users_app.command("token")
def users_token(name: str = typer.Argument(..., help="The user's name."), as_json: bool = JsonOpt) -> None:
    """Give a user a new token (printed only this once); the old one stops working."""
    from doohable.store.users import new_token

    user, token = _change_user(name, new_token)
    emit({"name": user.name, "token": token}, as_json)


@app.command()
def ingest(
    inputs: list[str] = typer.Argument(..., help="Files, folders, http(s) URLs, .txt/.csv lists of them."),
    moderate: bool = typer.Option(
        False,
        "--moderate",
        help="Then score the images with the model, run the NSFW gate and apply the auto-approve policy.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Add images: decoded safely, stored by content hash, de-duplicated.

    A bad input is listed under "rejected" with its reason; it never stops the run. With
    --moderate the images are then scored and the auto-approve policy applied ("moderation")."""
    from sqlalchemy.exc import SQLAlchemyError

    from doohable.config import get_settings
    from doohable.ingest import ingest_inputs

    with progress(disable=as_json) as bar:
        task = bar.add_task("ingest", total=None)

        def on_progress(done: int, total: int, _source: str) -> None:
            bar.update(task, completed=done, total=total)

        try:
            report = ingest_inputs(inputs, get_settings(), on_progress=on_progress)
        except (ValueError, SQLAlchemyError) as e:  # bad blob URL, database unreachable
            raise fail(f"cannot open the store: {e}") from e
    out = report.as_json()
    if moderate and report.image_ids:
        from doohable.batch import BATCH_SIZE
        from doohable.cli.score_cmds import moderate_stored

        out["moderation"] = moderate_stored(None, BATCH_SIZE, report.image_ids, quiet=as_json)
    if as_json:
        emit(out, True)
        return
    console.print(
        f"added {report.added}, duplicates {report.duplicates}, "
        f"near-duplicates {report.near_duplicates}, rejected {len(report.rejected)}"
    )
    for r in report.rejected:
        console.print(f"  [yellow]rejected[/yellow] {r['source']}: {r['error']}")
    if "moderation" in out:
        m = out["moderation"]
        console.print(
            f"scored {m['scored']} with {m['model']}: approved {m['approved']}, "
            f"flagged {m['flagged']}, pending {m['pending']}"
        )


@images_app.command("list")
def images_list(
    limit: int = typer.Option(0, "--limit", min=0, help="At most this many (0 = all)."),
    as_json: bool = JsonOpt,
) -> None:
    """List stored images, oldest first (JSON lines with --json)."""
    from doohable.services import Services
    from doohable.store.catalog import iter_images

    rows: list[dict[str, Any]] = []
    with Services.from_env().transaction() as session:
        for row in iter_images(session, limit=limit or None):
            if as_json:
                emit_line(row)
            else:
                rows.append(row)
    if not as_json:
        _print_images(rows)


def _print_users(rows: list[dict[str, Any]]) -> None:
    """The users of :func:`_user_row` as a table for people."""
    from rich.table import Table

    table = Table("name", "role", "revoked", "slack user", "created (UTC)")
    for r in rows:
        created = r["created_at"].strftime("%Y-%m-%d %H:%M") if r["created_at"] else ""
        table.add_row(r["name"], r["role"], "yes" if r["revoked"] else "", r["slack_user_id"] or "", created)
    console.print(table)
    console.print(f"{len(rows)} user(s)")


def _print_images(rows: list[dict[str, Any]]) -> None:
    """The images of :func:`doohable.store.catalog.iter_images` as a table for people."""
    from rich.table import Table

    table = Table("id", "sha256", "size", "source")
    for r in rows:
        table.add_row(str(r["id"]), r["sha256"][:12], f"{r['width']}×{r['height']}", r["source"] or "")
    console.print(table)
    console.print(f"{len(rows)} image(s)")
