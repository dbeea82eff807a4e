"""Region metrics: how well a render covers the real head, and how clean its unseen sides are.

One module for every bench and for the figures `denoise` prints. All inputs are numpy arrays or torch
tensors (converted to float64 numpy; nothing here takes gradients), images in [0, 1]:

  * `region` / masks: [H, W] bool (or 0/1), True = head (face, hair, ears, neck down to the collar);
  * `alpha`: [H, W] the render's accumulated opacity;
  * `rgb` / `photo`: [H, W, 3].

Definitions (the numbers the issues and benches quote):
  * coverage = |{region and alpha > 0.5}| / |region|
  * spill    = sum(alpha outside region) / sum(alpha)   (0 when nothing is rendered)
  * head-region PSNR = 10 log10(1 / MSE) over the region's pixels and channels, the render composited on
    WHITE against the photo (so a see-through head is penalised as white showing through); capped at
    PSNR_CAP dB for an exact match; non-finite inputs raise ValueError (never inf/NaN dB);
  * colour noise = mean over `interior` pixels and both chroma channels (BT.601 Cb, Cr) of
    |chroma - gaussian_blur(chroma, sigma)|, sigma = 2 px by default: speckle that a smooth surface lacks;
  * iou(a, b) = |a and b| / |a or b|.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

PSNR_CAP = 100.0  # dB: an exact match (MSE < 1e-10) reports this, never inf
NOISE_SIGMA = 2.0  # px: the Gaussian blur of the colour-noise metric

# BT.601 chroma rows (full range, as JPEG's YCbCr): Cb, Cr from R, G, B.
_CHROMA = np.array([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _mask(x: Any, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    m = _np(x)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 2:
        raise ValueError(f"{name}: expected [H, W], got {m.shape}")
    if shape is not None and m.shape != shape:
        raise ValueError(f"{name}: shape {m.shape} differs from {shape}")
    return m > 0.5


def _image(x: Any, name: str) -> np.ndarray:
    a = _np(x)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{name}: expected [H, W, 3], got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: holds NaN or inf")
    return a


def _alpha(x: Any, shape: tuple[int, ...]) -> np.ndarray:
    a = _np(x)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.shape != shape:
        raise ValueError(f"alpha: shape {a.shape} differs from the region's {shape}")
    if not np.isfinite(a).all():
        raise ValueError("alpha: holds NaN or inf")
    return a


def _nonempty(region: np.ndarray, name: str = "region") -> None:
    if not region.any():
        raise ValueError(f"{name} is empty")


def coverage(alpha: Any, region: Any) -> float:
    """Fraction of the head region's pixels where the render's alpha > 0.5."""
    reg = _mask(region, "region")
    _nonempty(reg)
    a = _alpha(alpha, reg.shape)
    return float((a[reg] > 0.5).mean())


def spill(alpha: Any, region: Any) -> float:
    """Fraction of the render's alpha mass that lies outside the head region (0 when nothing rendered)."""
    reg = _mask(region, "region")
    a = np.clip(_alpha(alpha, reg.shape), 0.0, 1.0)
    total = a.sum()
    return float(a[~reg].sum() / total) if total > 0 else 0.0


def over_white(rgb: Any, alpha: Any) -> np.ndarray:
    """[H, W, 3] a render's colour composited on white: rgb premultiplied by alpha plus (1 - alpha)."""
    c = _image(rgb, "rgb")
    a = np.clip(_alpha(alpha, c.shape[:2]), 0.0, 1.0)[..., None]
    return c * a + (1.0 - a)


def region_psnr(render: Any, photo: Any, region: Any) -> float:
    """PSNR (dB) over the head region between a render already composited on white and the photo."""
    r, p = _image(render, "render"), _image(photo, "photo")
    if r.shape != p.shape:
        raise ValueError(f"render {r.shape} and photo {p.shape} differ in shape")
    reg = _mask(region, "region", r.shape[:2])
    _nonempty(reg)
    mse = float(((r - p)[reg] ** 2).mean())
    return PSNR_CAP if mse < 1e-10 else float(10.0 * np.log10(1.0 / mse))


def chroma(rgb: Any) -> np.ndarray:
    """[H, W, 2] BT.601 (Cb, Cr) of an [H, W, 3] image in [0, 1] (0 for greys)."""
    return _image(rgb, "rgb") @ _CHROMA.T


def colour_noise(rgb: Any, interior: Any, sigma: float = NOISE_SIGMA) -> float:
    """Mean |chroma - Gaussian-blurred chroma| (sigma px) over the interior's pixels and both channels."""
    c = chroma(rgb)
    m = _mask(interior, "interior", c.shape[:2])
    _nonempty(m, "interior")
    blurred = np.stack([ndimage.gaussian_filter(c[..., k], sigma, mode="nearest") for k in range(2)], -1)
    return float(np.abs(c - blurred)[m].mean())


def interior(mask: Any, margin: int = 3 * int(NOISE_SIGMA)) -> np.ndarray:
    """[H, W] bool: `mask` eroded by `margin` px (a disc), so a blur of `sigma` barely reaches outside it."""
    m = _mask(mask, "mask")
    if margin <= 0:
        return m
    yy, xx = np.mgrid[-margin : margin + 1, -margin : margin + 1]
    return ndimage.binary_erosion(m, structure=(xx**2 + yy**2) <= margin**2, border_value=0)


def iou(a: Any, b: Any) -> float:
    """Intersection over union of two [H, W] masks (1.0 when both are empty)."""
    ma = _mask(a, "a")
    mb = _mask(b, "b", ma.shape)
    union = np.logical_or(ma, mb).sum()
    return float(np.logical_and(ma, mb).sum() / union) if union else 1.0


__all__ = [
    "PSNR_CAP",
    "NOISE_SIGMA",
    "coverage",
    "spill",
    "over_white",
    "region_psnr",
    "chroma",
    "colour_noise",
    "interior",
    "iou",
]
