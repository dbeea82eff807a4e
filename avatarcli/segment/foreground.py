"""Edge colours at the head's silhouette: the photo's foreground, without the backdrop.

Pixels along a head mask's edge mix the head with the backdrop (antialiasing, hair, blur), so a
fit or a colour lookup that takes them as they are paints the backdrop onto the head (a pale or
dark band along ears, jaw and neck). Here the mask becomes a soft alpha that ramps from 0 at its
edge to 1 at `band_px` pixels inside (alpha = clip((d - 0.5) / band_px, 0, 1), d the Euclidean
distance to the nearest pixel outside the mask), and pymatting's multilevel foreground estimation
(Germer et al. 2020, `estimate_foreground_ml`) solves I = alpha F + (1 - alpha) B for smooth F
and B. Inside the band F is the head's colour carried out from the interior, the backdrop going
to B. Pixels with alpha 1 keep the photo's value exactly; outside the mask F is an extrapolation
(nothing should use it there).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Around any pymatting call: torch's CPU thread count is kept (importing numba's OpenMP layer
    resets it to the core count, which made the following fit several times slower)."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _estimate_foreground(img: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """pymatting's estimate_foreground_ml (torch's thread count kept)."""
    with torch_threads_kept():
        from pymatting import estimate_foreground_ml

        return estimate_foreground_ml(img, alpha)


def edge_alpha(mask: np.ndarray, band_px: float) -> np.ndarray:
    """Binary head mask [H, W] (bool or > 0.5) -> soft alpha [H, W] float64 (ramp over `band_px` inside)."""
    m = np.asarray(mask)
    m = m > 0.5 if m.dtype != bool else m
    if band_px <= 0:
        return m.astype(np.float64)
    d = distance_transform_edt(m)  # [H, W] distance to the nearest pixel outside (0 outside)
    return np.clip((d - 0.5) / float(band_px), 0.0, 1.0)


def foreground(image: np.ndarray, mask: np.ndarray, band_px: float) -> np.ndarray:
    """The photo's head colours with the backdrop taken out along the mask's edge.

    image float [H, W, 3] in [0, 1]; mask [H, W] (head > 0.5) -> float32 [H, W, 3]
    (identical to `image` where the soft alpha is 1, i.e. further than band_px + 0.5 inside)."""
    img = np.asarray(image, dtype=np.float64)
    alpha = edge_alpha(mask, band_px)
    if not (alpha < 1).any() or not (alpha > 0).any():
        return img.astype(np.float32)
    fg = _estimate_foreground(img, alpha)  # [H, W, 3]
    out = np.where((alpha >= 1.0)[..., None], img, np.clip(fg, 0.0, 1.0))
    return out.astype(np.float32)


__all__ = ["edge_alpha", "foreground", "torch_threads_kept"]
