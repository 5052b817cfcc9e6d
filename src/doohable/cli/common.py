"""Shared CLI pieces: the Typer app, JSON/human output, progress bars."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

app = typer.Typer(
    name="doohable",
    help="Score the beauty of images: collect, label by pairwise votes, learn a scorer, serve.",
    no_args_is_help=True,
    add_completion=False,
)
# human output and progress go to stderr, so that --json leaves stdout to exactly one document
console = Console(stderr=True, soft_wrap=True)  # lines for people, never wrapped: a path or link stays whole

JsonOpt = typer.Option(False, "--json", help="Print exactly one JSON document (or JSON lines) on stdout.")


def emit(obj: Any, as_json: bool) -> None:
    """Print ``obj`` as one JSON document on stdout, or pretty for people on stderr."""
    if as_json:
        sys.stdout.write(json.dumps(obj, default=str) + "\n")
        sys.stdout.flush()
    else:
        console.print_json(json.dumps(obj, default=str))


def emit_line(obj: Any) -> None:
    """One JSON line on stdout (JSON-lines outputs)."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def progress(disable: bool = False) -> Progress:
    """A rich progress bar on stderr (disabled under --json if asked, or off a terminal)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
    )


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a clear error for people and return the exit to raise: one line however long (a
    script can grep it), the message printed as it is (never read as markup)."""
    console.print(Text.assemble(("error:", "red"), " ", message))
    return typer.Exit(code)
