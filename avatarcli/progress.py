"""Rich progress on stderr when it is a terminal; silent otherwise (scripts, CI, --quiet)."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

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

from avatarcli.errors import label_mentions

console = Console(stderr=True, highlight=False)


@dataclass(frozen=True)
class FitStep:
    """What an on_step callback receives after each Gaussian-fit step (fit_gaussians, denoise_head)."""

    loss: float  # the step's total loss
    psnr: float  # dB: target 0 inside its mask, from that step's render
    n: int  # Gaussians
    sh_degree: int  # active SH degree
    phase: str = ""  # denoise_head: "fit" or "round r/R"; fit_gaussians leaves it empty


StepCallback = Callable[[int, FitStep], None]  # on_step(step, info)

_quiet = False
_setting_label: Callable[[str], str] | None = None  # how warnings show a setting (the CLI: its flag)


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def interactive() -> bool:
    return not _quiet and sys.stderr.isatty() and os.environ.get("CI") is None


def info(msg: str) -> None:
    """A status line for humans (stderr), suppressed by --quiet."""
    if not _quiet:
        console.print(msg, soft_wrap=True)


def warn(msg: str, mentions: Iterable[str] = ()) -> None:
    """Warnings are always shown (stderr), even with --quiet. mentions: the settings `msg` names
    as `name` (as in AvatarError), shown as the current `setting_labels` shows them."""
    if _setting_label is not None:
        msg = label_mentions(msg, mentions, _setting_label)
    console.print(f"[yellow]warning:[/yellow] {msg}", soft_wrap=True)


def setting_label() -> Callable[[str], str] | None:
    """How settings are shown now (None: by their own names)."""
    return _setting_label


@contextlib.contextmanager
def setting_labels(label: Callable[[str], str]) -> Iterator[None]:
    """Within this block, warnings show each mentioned setting as `label(name)` (the CLI: its flag)."""
    global _setting_label
    outer, _setting_label = _setting_label, label
    try:
        yield
    finally:
        _setting_label = outer


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
