"""`avatar head-region`: the head region of a photo (face, hair, ears, neck) as a PNG, without weights."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from avatarcli.commands.common import existing_inputs
from avatarcli.progress import info


def head_region_command(
    image: Path = typer.Argument(..., help="The photo.", show_default=False),
    landmarks: Path = typer.Option(
        ..., "--landmarks", "-l", help="Its landmarks.npz (from `avatar landmarks`).", show_default=False
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="region.png to write (white = head), at the photo's size.", show_default=False
    ),
    overlay: Optional[Path] = typer.Option(
        None, "--overlay", help="Also write the photo with everything outside the region dimmed.", show_default=False
    ),
) -> int:
    """Segment the head (face, hair, ears, neck down to the collar) with a classical method seeded
    from the landmarks (OpenCV GrabCut: no downloaded weights). Check it with --overlay; correct it
    in any paint program and give it to `reconstruct`, `init-gaussians` or `denoise` as --mask.

    \b
    Examples:
      avatar head-region photo.jpg --landmarks photo.landmarks.npz -o photo.region.png
      avatar head-region photo.jpg -l photo.npz -o region.png --overlay check.png
    """
    from avatarcli.stages.head_region import write_head_region

    existing_inputs([image, landmarks])
    share = write_head_region(image, landmarks, output, overlay)
    info(f"{output}: head region, {100 * share:.0f}% of the photo")
    return 0


def register(app: typer.Typer) -> None:
    app.command("head-region", no_args_is_help=True)(head_region_command)
