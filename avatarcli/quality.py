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
  * iou(a, b) = |a and b| / |a or b|;
  * nearer share = the fraction of `mask` pixels (or of a list of colours) whose RGB colour is nearer
    (Euclidean) colour `a` than colour `b` (the back of a head's hair: the seen hair vs the seen skin);
  * edge backdrop share = among the render's pixels (alpha > 0.5) within `band` px of the drawn head
    outline's edge (either side), the fraction whose colour is the local backdrop's and no local head
    colour: no photo pixel 4 px or more inside the outline within `radius` px has a colour within `tol`
    (CIELAB Delta E 1976; ~2 is just noticeable) of it, and one 3 px or more outside it is nearer:
    backdrop painted onto the head's edge (a 1-nearest-neighbour colour test against the photo's own
    samples around the pixel; dark hair next to a dark backdrop counts as hair).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from skimage.color import rgb2lab
from skimage.draw import polygon

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


def nearer_share(rgb: Any, a: Any, b: Any, mask: Any = None) -> float:
    """Fraction of the colours rgb [M, 3] (or of the `mask` [H, W] pixels of rgb [H, W, 3]) nearer a [3] than b [3]."""
    c = _np(rgb)
    if mask is not None:
        c = _image(c, "rgb")[_mask(mask, "mask", c.shape[:2])]
    c = c.reshape(-1, 3)
    if len(c) == 0:
        raise ValueError("no colours to compare")
    da = np.linalg.norm(c - _np(a).reshape(1, 3), axis=1)
    db = np.linalg.norm(c - _np(b).reshape(1, 3), axis=1)
    return float((da < db).mean())


def hair_skin_colours(photo: Any, outline: Any, landmarks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Reference (hair, skin) colours [3] of a portrait: hair, the median photo colour of the outline's
    pixels 4 px or more inside it in the top fifth of the rows between its top and the brows (iBUG
    landmarks 17-26); skin, the median inside the jaw line and the brows (landmarks [68, 2], x right)."""
    p = _image(photo, "photo")
    reg = _mask(outline, "outline", p.shape[:2])
    _nonempty(reg)
    lm = _np(landmarks).reshape(68, 2)
    poly = np.concatenate([lm[0:17], lm[17:27][::-1]])  # the jaw line, then the brows right to left
    rr, cc = polygon(poly[:, 1], poly[:, 0], shape=reg.shape)
    face = np.zeros_like(reg)
    face[rr, cc] = True
    top = np.nonzero(reg.any(1))[0][0]
    crown = (ndimage.distance_transform_edt(reg) >= 4) & (
        np.arange(reg.shape[0])[:, None] < top + 0.2 * (float(lm[17:27, 1].mean()) - top)
    )
    if not crown.any() or not face.any():
        raise ValueError("the outline's crown or the landmarks' face is empty")
    return np.median(p[crown], axis=0), np.median(p[face], axis=0)


def upper_part(mask: Any, share: float) -> np.ndarray:
    """[H, W] bool: the pixels of `mask` in the top `share` of its rows (from its first row to its last)."""
    m = _mask(mask, "mask")
    rows = np.nonzero(m.any(1))[0]
    if rows.size == 0:
        return m
    cut = rows[0] + share * (rows[-1] + 1 - rows[0])
    return m & (np.arange(m.shape[0])[:, None] < cut)


def _nearest_colour(c: np.ndarray, samples: np.ndarray) -> float:
    """Distance from colour c [3] to the nearest of samples [K, 3] (inf when there are none)."""
    return float(np.sqrt(((samples - c) ** 2).sum(-1).min())) if len(samples) else float("inf")


def edge_backdrop_share(render: Any, alpha: Any, photo: Any, outline: Any, band: int = 8, radius: int = 16,
                        tol: float = 10.0, top: float = 1.0) -> float:  # fmt: skip
    """The edge backdrop share (module docstring) of a render on white [H, W, 3] with its alpha [H, W]
    against the photo [H, W, 3] and its drawn outline [H, W], over the image rows in the top `top` share
    of the outline's rows (e.g. 0.35: the crown). nan when no pixel qualifies."""
    r, p = rgb2lab(np.clip(_image(render, "render"), 0, 1)), rgb2lab(np.clip(_image(photo, "photo"), 0, 1))
    reg = _mask(outline, "outline", r.shape[:2])
    _nonempty(reg)
    a = _alpha(alpha, reg.shape)
    d_in, d_out = ndimage.distance_transform_edt(reg), ndimage.distance_transform_edt(~reg)  # [H, W] px to the edge
    head, back = d_in >= 4, d_out >= 3  # the photo's sure head and sure backdrop pixels
    sel = (np.maximum(d_in, d_out) <= band) & (a > 0.5)
    rows = np.nonzero(reg.any(1))[0]
    sel &= np.arange(reg.shape[0])[:, None] < rows[0] + top * (rows[-1] + 1 - rows[0])
    counted = painted = 0
    for y, x in zip(*np.nonzero(sel)):
        win = np.s_[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
        d_head = _nearest_colour(r[y, x], p[win][head[win]])
        d_back = _nearest_colour(r[y, x], p[win][back[win]])
        if np.isinf(d_head) or np.isinf(d_back):
            continue
        counted += 1
        painted += int(d_head > tol and d_back < d_head)
    return painted / counted if counted else float("nan")


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
    "nearer_share",
    "hair_skin_colours",
    "upper_part",
    "edge_backdrop_share",
]
