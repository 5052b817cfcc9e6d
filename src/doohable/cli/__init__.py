"""The ``doohable`` command: one Typer command per job.

Each stage keeps its commands in its own module here (``store_cmds``, ``ranking_cmds``,
``model_cmds``, ``serve_cmds``); they register on :data:`app` when imported. Commands are
thin: parse, call a service, print with :func:`doohable.cli.common.emit`.

``doohable users ...`` registers only the store commands: it starts without importing the
ranking, model and scoring stacks (SciPy, ONNX Runtime, torch)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

#: command modules, in the order `doohable --help` lists them (data flow)
MODULES = ("store_cmds", "ranking_cmds", "model_cmds", "loop_cmds", "score_cmds", "serve_cmds", "backup_cmds")
LIGHT = {"users": ("store_cmds",)}  # first argument → the only modules it needs


def load(modules: tuple[str, ...] = MODULES) -> Any:
    """Import command modules (each registers its commands) and return the Typer app."""
    for name in modules:
        importlib.import_module(f"doohable.cli.{name}")
    from doohable.cli.common import app

    return app


def __getattr__(name: str) -> Any:
    if name == "app":  # `from doohable.cli import app`: every command registered
        return load()
    raise AttributeError(name)


def main() -> None:
    first = sys.argv[1] if len(sys.argv) > 1 else ""
    app = load(LIGHT.get(first, MODULES))
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


__all__ = ["app", "load", "main"]
