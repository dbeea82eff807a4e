"""Options and helpers shared by the subcommands (kept small: the library does the work)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from avatarcli.errors import AvatarError, InputError

DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")


def _backend_name(value: str) -> str:
    """--backend names one of the renderers (what else the machine allows: render.api.check_backend)."""
    from avatarcli.render.api import BACKENDS

    if value not in BACKENDS:
        raise InputError(f"--backend {value!r}: expected one of {', '.join(BACKENDS)}")
    return value


BackendOpt = typer.Option(
    "auto", "--backend", help="Renderer: auto (gsplat on CUDA, else torch), gsplat or torch.", callback=_backend_name
)
BackgroundOpt = typer.Option("white", "--background", help="white, black, grey, #rrggbb or r,g,b.")
FlameOpt = typer.Option(
    None,
    "--flame",
    help="FLAME model file (.pkl/.npz) or a folder holding it and its landmark embedding. Default: $AVATAR_FLAME.",
    show_default=False,
)


def existing_inputs(paths: list[Path]) -> list[Path]:
    """Check every input path exists and is a file before any work starts."""
    for p in paths:
        if not p.exists():
            raise InputError("file not found", path=p)
        if p.is_dir():
            raise InputError("is a folder, expected a file", path=p)
    return paths


def output_for(inputs: list[Path], out: Path, suffix: str) -> list[Path]:
    """Each input's output under the one output rule (avatarcli.batch.output_paths)."""
    from avatarcli.batch import output_paths

    return output_paths([p.stem for p in inputs], out, suffix, several=len(inputs) > 1)


OptionalPath = Optional[Path]


def flag_for(setting: str) -> str:
    """The flag of a library setting by default: max_side -> --max-side."""
    return "--" + setting.replace("_", "-")


@contextmanager
def flag_names(**flags: str) -> Iterator[None]:
    """Library errors about a setting (AvatarError.setting) read as this command's flag where it
    is not the default one: `with flag_names(max_side="--size"): ...`."""
    try:
        yield
    except AvatarError as e:
        label = flags.get(e.setting) if e.setting is not None else None
        if label is None:
            raise
        raise e.named(label) from e
