"""Options and helpers shared by the subcommands (kept small: the library does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")
BackendOpt = typer.Option("auto", "--backend", help="Renderer: auto (gsplat on CUDA, else torch), gsplat or torch.")
BackgroundOpt = typer.Option("white", "--background", help="white, black, grey, #rrggbb or r,g,b.")
FlameOpt = typer.Option(
    None,
    "--flame",
    help="FLAME model file (.pkl/.npz) or a folder holding it and its landmark embedding. Default: $AVATAR_FLAME.",
    show_default=False,
)


def existing_inputs(paths: list[Path]) -> list[Path]:
    """Check every input path exists and is a file before any work starts."""
    from avatarcli.errors import InputError

    for p in paths:
        if not p.exists():
            raise InputError("file not found", path=p)
        if p.is_dir():
            raise InputError("is a folder, expected a file", path=p)
    return paths


def output_for(inputs: list[Path], out: Path, suffix: str) -> list[Path]:
    """One input -> `out` is the file; several -> `out` is a folder of NAME<suffix>.

    A folder is meant when `out` exists as a folder, ends with a path separator or has no suffix."""
    from avatarcli.errors import InputError

    as_dir = out.is_dir() or str(out).endswith(("/", "\\")) or (len(inputs) > 1)
    if not as_dir:
        return [out]
    if out.exists() and not out.is_dir():
        raise InputError("several inputs need an output folder, and this is a file", path=out)
    names = [p.stem for p in inputs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise InputError(f"inputs share the name(s) {sorted(dup)}: outputs would overwrite each other", path=out)
    return [out / f"{n}{suffix}" for n in names]


OptionalPath = Optional[Path]
