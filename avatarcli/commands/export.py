"""`avatar export`: a Gaussian PLY to .splat / SuperSplat compressed PLY / plain PLY (gsplat's exporter)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from avatarcli.commands.common import existing_inputs
from avatarcli.errors import InputError
from avatarcli.io.atomic import check_output_path
from avatarcli.progress import info


def export_command(
    ply: Path = typer.Argument(
        ..., help="A 3D Gaussian Splatting PLY (an avatarcli head or any other).", show_default=False
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="OUT.splat, OUT.compressed.ply or OUT.ply.", show_default=False
    ),
    fmt: Optional[str] = typer.Option(
        None, "--format", help="splat, compressed or ply (default: from the output's name).", show_default=False
    ),
) -> int:
    """Export a Gaussian PLY for web viewers, through gsplat's exporter (no GPU needed).

    .splat (antimatter15's viewer) keeps the base colour only; .compressed.ply (SuperSplat)
    quantises every parameter and drops Gaussians with opacity <= 1/255; .ply writes a plain
    3DGS PLY without avatarcli's binding and metadata (not animatable any more).

    \b
    Examples:
      avatar export head.ply -o head.splat
      avatar export head.ply -o head.compressed.ply
      avatar export head.ply -o plain.ply
      avatar export head.ply -o web/head.bin --format splat
    """
    from avatarcli.gaussians.export import export_file, format_for_path
    from avatarcli.gaussians.ply import read_gaussian_ply

    existing_inputs([ply])
    kind = format_for_path(output, fmt)
    check_output_path(output)
    if output.resolve() == ply.resolve():
        raise InputError("output is the input file: choose another name", path=output)
    head = read_gaussian_ply(ply)
    path, kind = export_file(head, output, kind)
    info(f"wrote {path} ({kind}, {head.gaussians.n} Gaussians in, {path.stat().st_size} bytes)")
    return 0


def register(app: typer.Typer) -> None:
    app.command("export", no_args_is_help=True)(export_command)
