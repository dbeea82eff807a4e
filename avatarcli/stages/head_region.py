"""The head-region stage: a photo and its landmarks -> region.png (white = head), at the photo's size.

Usable from Python without the CLI:
    share = write_head_region("photo.jpg", "photo.landmarks.npz", "region.png", overlay="check.png")
The segmentation is `avatarcli.segment.head_region.segment_head` (classical, no downloaded weights);
every output is checked before any work and written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from avatarcli.io.atomic import atomic_path, check_output_path
from avatarcli.io.images import load_image
from avatarcli.landmarks.artifact import read_landmarks
from avatarcli.segment.head_region import segment_head, write_region


def write_head_region(image: Path | str, landmarks: Path | str, output: Path | str,
                      overlay: Path | str | None = None) -> float:  # fmt: skip
    """Segment the head of `image` seeded by `landmarks`; write the region PNG to `output` and, if
    given, the photo with everything outside the region dimmed to `overlay`. -> the share of the
    photo's pixels inside the region."""
    outs = [check_output_path(Path(p)) for p in ([output] + ([overlay] if overlay is not None else []))]
    lm = read_landmarks(Path(landmarks))
    photo = load_image(Path(image))
    mask = segment_head(photo.rgb, photo.to_working(lm.landmarks))  # [h, w] at the working size
    H, W = photo.original_size
    if mask.shape != (H, W):
        mask = np.asarray(Image.fromarray(mask).resize((W, H), Image.Resampling.BILINEAR)) > 0.5
    inside = np.asarray(mask) > 0.5  # [H, W]
    write_region(outs[0], mask)
    if overlay is not None:
        full = load_image(Path(image), max_side=max(H, W)).rgb.astype(np.float32)  # [H, W, 3]
        full[~inside] *= 0.3
        with atomic_path(outs[1]) as tmp:
            Image.fromarray(full.astype(np.uint8)).save(tmp, format="PNG")
    return float(np.mean(inside))
