"""The ``doohable`` command: one Typer command per job.

Each stage keeps its commands in its own module here (``store_cmds``, ``ranking_cmds``,
``model_cmds``, ``serve_cmds``); they register on :data:`app` when imported. Commands are
thin: parse, call a service, print with :func:`doohable.cli.common.emit`."""

from __future__ import annotations

# ruff: noqa: I001  (imports register commands; their order is the order of `doohable --help`)

# importing registers the commands, in the order `doohable --help` lists them (data flow)
from doohable.cli.common import app
from doohable.cli import store_cmds  # noqa: F401
from doohable.cli import ranking_cmds  # noqa: F401
from doohable.cli import model_cmds  # noqa: F401
from doohable.cli import loop_cmds  # noqa: F401
from doohable.cli import score_cmds  # noqa: F401
from doohable.cli import serve_cmds  # noqa: F401
from doohable.cli import backup_cmds  # noqa: F401


def main() -> None:
    try:
        app()
    except Exception as e:  # an infrastructure fault: a clear reason, not a traceback
        from doohable.cli.common import console
        from doohable.store.faults import unavailable_reason

        reason = unavailable_reason(e)
        if reason is None:
            raise
        console.print(f"[red]error:[/red] {reason}")
        raise SystemExit(3) from None


__all__ = ["app", "main"]
