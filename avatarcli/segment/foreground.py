"""Edge colours at the head's silhouette: the photo's foreground, without the backdrop.

Pixels along a head mask's edge mix the head with the backdrop (antialiasing, hair, blur), and an
automatic head region also takes in whole patches of backdrop along its edge (on obama_turned a patch
of the blue flag beside the crown, up to ~20 px deep). A fit or a colour lookup that takes them as they
are paints the backdrop onto the head. Here, for a mask and two widths (`band_px`, and `matte_px`,
3 x band_px by default):

1. Foreground: pymatting's multilevel foreground estimation (Germer et al. 2020,
   `estimate_foreground_ml`) solves I = alpha F + (1 - alpha) B for smooth F and B, alpha the
   geometric ramp `edge_alpha` (0 at the edge, 1 at `band_px` inside); within `band_px` of the edge
   F replaces the photo (the backdrop mixed into the edge pixels taken out).
2. Backdrop taken in: the band within `matte_px` of the edge is solved for the photo's own alpha by
   closed-form matting (Levin et al. 2008, pymatting's `estimate_alpha_cf`; trimap: the mask further
   inside is head, everything outside it backdrop). The matte alone is not enough (on obama it finds
   as many unsure pixels inside the drawn outline as in the flag patch, and on a synthetic head with
   a perfect mask it marks ~15 % of the band), so a pixel counts as backdrop when the matte says so
   (alpha < 0.5) AND its colour is nearer a backdrop pixel (2 px or more outside the mask) than a
   head pixel (deeper than `matte_px`) within 2 x matte_px of it (`backdrop_like`): 0 pixels on that
   synthetic head, ~60 % of obama's flag patch.
3. Those pixels take the head colour around them (`fill_from_head`: F averaged with weights
   alpha^2 over sigma = matte_px / 3; F alone is only the smooth extrapolation there and keeps the
   backdrop's hue). Elsewhere deeper than band_px inside the mask the photo itself. Outside the mask the result
   is an extrapolation (nothing should use it).
4. Texture kept (`head_coloured`): F is smooth (its solve smooths what the ramp calls unsure), so
   within band_px of the edge it loses the hair's and skin's texture even where the pixel is pure head
   (an edge the region gets right mixes 1 px, the ramp spans band_px). A band pixel whose colour lies
   within `keep_tol` (CIELAB Delta E 1976; ~2 is just noticeable) of a head pixel deeper than band_px
   nearby, and nearer that than any backdrop pixel (2 px or more outside the mask), keeps the photo's
   colour unless step 2 called it backdrop. On the drawn-outline benches F cost the head-region PSNR
   more than the fit did (astronaut: 26.2 dB with F over the edge band alone, 28.7 with step 4).

`matte_px=0` is step 1 alone (the behaviour before the matte); `keep_tol=0` leaves step 4 out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt, gaussian_filter
from skimage.color import rgb2lab

KEEP_TOL = 5.0  # CIELAB Delta E: a band pixel this near a head colour nearby keeps the photo (step 4)


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


def matte_alpha(image: np.ndarray, mask: np.ndarray, band_px: float) -> np.ndarray:
    """The photo's alpha [H, W] float64 in 0..1 along the mask's edge, by closed-form matting: 1 further
    than `band_px` inside the mask, 0 outside it, solved in between (pymatting's estimate_alpha_cf)."""
    m = np.asarray(mask)
    m = m > 0.5 if m.dtype != bool else m
    d = distance_transform_edt(m)  # [H, W] distance to the nearest pixel outside (0 outside)
    trimap = np.where(d >= band_px + 0.5, 1.0, np.where(m, 0.5, 0.0))
    if not ((trimap == 0.5).any() and (trimap == 1).any() and (trimap == 0).any()):
        return edge_alpha(m, band_px)  # nothing to solve, or no head / backdrop to learn the colours from
    with torch_threads_kept():
        from pymatting import estimate_alpha_cf

        alpha = estimate_alpha_cf(np.asarray(image, dtype=np.float64), trimap)
    return np.clip(np.where(trimap == 0.5, alpha, trimap), 0.0, 1.0)


def edge_alpha(mask: np.ndarray, band_px: float) -> np.ndarray:
    """Binary head mask [H, W] (bool or > 0.5) -> soft alpha [H, W] float64 (ramp over `band_px` inside)."""
    m = np.asarray(mask)
    m = m > 0.5 if m.dtype != bool else m
    if band_px <= 0:
        return m.astype(np.float64)
    d = distance_transform_edt(m)  # [H, W] distance to the nearest pixel outside (0 outside)
    return np.clip((d - 0.5) / float(band_px), 0.0, 1.0)


def backdrop_like(image: np.ndarray, mask: np.ndarray, candidates: np.ndarray, depth: float) -> np.ndarray:
    """[H, W] bool: the `candidates` (pixels of the mask) whose colour is nearer a backdrop pixel (2 px or
    more outside the mask) than a head pixel (further than `depth` inside) within 2 x depth px of them:
    the backdrop the mask took in, not head pixels the matte is unsure of."""
    head = distance_transform_edt(mask) > depth
    back = distance_transform_edt(~mask) >= 2
    out = np.zeros_like(candidates)
    R = max(1, int(np.ceil(2 * depth)))
    for y, x in zip(*np.nonzero(candidates)):
        win = np.s_[max(0, y - R) : y + R + 1, max(0, x - R) : x + R + 1]
        h, b = image[win][head[win]], image[win][back[win]]
        if len(h) and len(b):
            out[y, x] = ((b - image[y, x]) ** 2).sum(-1).min() < ((h - image[y, x]) ** 2).sum(-1).min()
    return out


def fill_from_head(colours: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """colours [H, W, 3] averaged over their neighbours with weights [H, W] (normalised Gaussian
    convolution, `sigma` px), so that pixels of weight ~0 take the nearby heavy pixels' colour; where no
    weight reaches, the nearest pixel of weight > 0.5."""
    w = np.asarray(weight, dtype=np.float64)
    num = np.stack([gaussian_filter(w * colours[..., k], sigma) for k in range(3)], -1)
    den = gaussian_filter(w, sigma)[..., None]
    out = num / np.maximum(den, 1e-300)
    if (den < 1e-12).any() and (w > 0.5).any():
        _, (iy, ix) = distance_transform_edt(w <= 0.5, return_indices=True)
        out = np.where(den < 1e-12, colours[iy, ix], out)
    return out


def nearer_head(lab: np.ndarray, cand: np.ndarray, head: np.ndarray, back: np.ndarray, R: int,
                tol: float = math.inf) -> np.ndarray:  # fmt: skip
    """[H, W] bool: the `cand` pixels whose colour (lab [H, W, 3]) is nearer a `head` pixel than any `back`
    pixel within R px of them (nearest neighbour, Euclidean), and within `tol` of that head colour (no
    `head` pixel near: False; no `back` pixel near: the tol test alone)."""
    out = np.zeros(cand.shape, bool)
    for y, x in zip(*np.nonzero(cand)):
        win = np.s_[max(0, y - R) : y + R + 1, max(0, x - R) : x + R + 1]
        h, b = lab[win][head[win]], lab[win][back[win]]
        if len(h):
            dh = ((h - lab[y, x]) ** 2).sum(-1).min()
            out[y, x] = dh < tol**2 and (not len(b) or dh < ((b - lab[y, x]) ** 2).sum(-1).min())
    return out


def head_coloured(image: np.ndarray, mask: np.ndarray, band_px: float, tol: float) -> np.ndarray:
    """[H, W] bool: the mask's pixels in its edge band (edge_alpha < 1) whose CIELAB colour is within `tol`
    (Delta E) of a head pixel deeper than the band and nearer that than a backdrop pixel (2 px or more
    outside the mask), among those within 2 x band_px of them (nearest neighbours): pure head colour,
    not a mix with the backdrop."""
    lab = rgb2lab(np.clip(image, 0.0, 1.0))  # [H, W, 3]
    head = edge_alpha(mask, band_px) >= 1.0  # deeper than the band (where foreground keeps the photo)
    back = distance_transform_edt(~mask) >= 2
    return nearer_head(lab, mask & ~head, head, back, max(1, int(np.ceil(2 * band_px))), tol)


def foreground(
    image: np.ndarray, mask: np.ndarray, band_px: float, matte_px: float | None = None, keep_tol: float = KEEP_TOL
) -> np.ndarray:
    """The photo's head colours with the backdrop taken out along the mask's edge (module docstring).

    image float [H, W, 3] in [0, 1]; mask [H, W] (head > 0.5) -> float32 [H, W, 3]: within `band_px`
    of the edge the estimated foreground except where the photo is pure head colour (`keep_tol`, step 4;
    0: off), within `matte_px` (default 3 x band_px; 0: no matting) the backdrop the mask took in
    replaced by the head colour around it; identical to `image` elsewhere inside the mask."""
    img = np.asarray(image, dtype=np.float64)
    m = np.asarray(mask)
    m = m > 0.5 if m.dtype != bool else m
    wide = 3.0 * band_px if matte_px is None else float(matte_px)
    ramp = edge_alpha(m, band_px)
    if not (ramp < 1).any() or not (ramp > 0).any():
        return img.astype(np.float32)
    alpha = matte_alpha(img, m, max(wide, band_px)) if wide > 0 else ramp  # [H, W] finds the backdrop
    fg = np.clip(_estimate_foreground(img, ramp), 0.0, 1.0)  # [H, W, 3]
    out = np.where((ramp >= 1.0)[..., None], img, fg)
    if keep_tol > 0:
        out = np.where(head_coloured(img, m, band_px, keep_tol)[..., None], img, out)
    if wide > 0:
        backdrop = backdrop_like(img, m, m & (alpha < 0.5), max(wide, band_px))  # [H, W] bool
        if backdrop.any():
            out = np.where(backdrop[..., None], fill_from_head(fg, (alpha * m) ** 2, max(wide, band_px) / 3.0), out)
    return out.astype(np.float32)


__all__ = [
    "KEEP_TOL",
    "backdrop_like",
    "edge_alpha",
    "fill_from_head",
    "foreground",
    "head_coloured",
    "matte_alpha",
    "nearer_head",
    "torch_threads_kept",
]
