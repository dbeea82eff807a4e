"""Options and helpers shared by the subcommands (kept small: the library does the work)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional

import typer

from avatarcli.batch import one_line, output_paths
from avatarcli.errors import AvatarError, InputError, label_mentions
from avatarcli.progress import setting_label, setting_labels

DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")


def _backend_name(value: str) -> str:
    """--backend names one of the renderers, checked as it is parsed (render.api.check_backend_name;
    what else the machine allows: check_backend)."""
    from avatarcli.render.api import check_backend_name

    return check_backend_name(value)


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
    return output_paths([p.stem for p in inputs], out, suffix, several=len(inputs) > 1)


OptionalPath = Optional[Path]


SHORT_FLAGS = {"out": "-o"}  # the settings every command shows by a short flag


def flag_for(setting: str) -> str:
    """The flag of a library setting by default: max_side -> --max-side (out -> -o)."""
    return SHORT_FLAGS.get(setting) or "--" + setting.replace("_", "-")


@contextmanager
def flag_names(**flags: str) -> Iterator[None]:
    """Library errors and warnings that name a setting (AvatarError.setting / .mentions) read as this
    command's flag: `flags` where it is not the default one (`with flag_names(max_side="--size"): ...`),
    else the flag of an enclosing flag_names, else flag_for's."""
    outer = setting_label() or flag_for

    def label(setting: str) -> str:
        return flags.get(setting) or outer(setting)

    with setting_labels(label):
        try:
            yield
        except AvatarError as e:
            renamed = e.named(label)
            if renamed is e:
                raise
            raise renamed from e


def shown(e: AvatarError) -> AvatarError:
    """A library error as the CLI shows it: each setting it names as the flag (see flag_names)."""
    return e.named(setting_label() or flag_for)


def with_flags(text: str, mentions: Iterable[str]) -> str:
    """Library text naming settings (`name`, as AvatarError mentions) with the CLI's flags instead."""
    return label_mentions(text, mentions, setting_label() or flag_for)


def error_line(e: BaseException) -> str:
    """A failure of one batch input as the one line the CLI prints (settings shown as flags)."""
    return one_line(shown(e) if isinstance(e, AvatarError) else e)


# The route that needs no downloaded weights, as a command line (doctor and `weights list` print it).
WEIGHT_FREE_ROUTE = (
    "avatar reconstruct photo.jpg -o head.ply --no-diffusion --flame ~/flame, with --detector dlib "
    "(pip install 'avatarcli[dlib]') or --landmarks photo.txt"
)
