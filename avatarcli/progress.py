"""Rich progress on stderr when it is a terminal; silent otherwise (scripts, CI, --quiet)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False)

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def interactive() -> bool:
    return not _quiet and sys.stderr.isatty() and os.environ.get("CI") is None


def info(msg: str) -> None:
    """A status line for humans (stderr), suppressed by --quiet."""
    if not _quiet:
        console.print(msg, soft_wrap=True)


def warn(msg: str) -> None:
    """Warnings are always shown (stderr), even with --quiet."""
    console.print(f"[yellow]warning:[/yellow] {msg}", soft_wrap=True)


@contextlib.contextmanager
def progress() -> Iterator[Progress]:
    """A Rich Progress that draws only on a terminal. Use p.add_task / p.update as usual."""
    p = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not interactive(),
        transient=False,
    )
    with p:
        yield p
