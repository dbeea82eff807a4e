"""`avatar head-region`: the head region of a photo (face, hair, ears, neck) as a PNG, without weights."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from PIL import Image

from avatarcli.commands.common import existing_inputs
from avatarcli.io.atomic import atomic_path, check_output_path
from avatarcli.io.images import load_image
from avatarcli.landmarks.artifact import read_landmarks
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
    from avatarcli.segment.head_region import segment_head, write_region

    existing_inputs([image, landmarks])
    outs = [check_output_path(p) for p in ([output] + ([overlay] if overlay else []))]
    lm = read_landmarks(landmarks)
    photo = load_image(image)
    mask = segment_head(photo.rgb, photo.to_working(lm.landmarks))  # [h, w] at the working size
    H, W = photo.original_size
    if mask.shape != (H, W):
        mask = np.asarray(Image.fromarray(mask).resize((W, H), Image.Resampling.BILINEAR)) > 0.5
    write_region(outs[0], mask)
    if overlay is not None:
        full = load_image(image, max_side=max(H, W)).rgb.astype(np.float32)
        full[~(np.asarray(mask) > 0.5)] *= 0.3

        with atomic_path(outs[1]) as tmp:
            Image.fromarray(full.astype(np.uint8)).save(tmp, format="PNG")
    info(f"{output}: head region, {100 * float(np.mean(np.asarray(mask) > 0.5)):.0f}% of the photo")
    return 0


def register(app: typer.Typer) -> None:
    app.command("head-region", no_args_is_help=True)(head_region_command)
