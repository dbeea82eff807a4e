"""Edge colours (avatarcli.segment.foreground): the band along a head mask's edge keeps the photo's
texture where the photo is pure head colour and loses the backdrop where it is mixed, on painted
heads whose truth is known."""

from __future__ import annotations

import numpy as np

from avatarcli.segment.foreground import edge_alpha, foreground, head_coloured


def _textured_disc(n: int = 64, radius: float = 22.0, aa: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A disc of skin with a 2-px checker texture (two tones 0.08 apart, like pores or hair strands) on a
    blue backdrop: (image [n, n, 3], the disc's alpha [n, n] (a 1 px antialiased edge when `aa`), the
    head's own colour [n, n, 3])."""
    yy, xx = np.mgrid[0:n, 0:n]
    r = np.hypot(xx - n / 2, yy - n / 2)
    a = np.clip(radius + 0.5 - r, 0, 1) if aa else (r < radius).astype(float)
    tone = ((xx // 2 + yy // 2) % 2)[..., None] * 0.08  # [n, n, 1]
    skin = np.array([0.78, 0.6, 0.5]) + tone  # [n, n, 3]
    blue = np.array([0.15, 0.3, 0.85])
    return a[..., None] * skin + (1 - a[..., None]) * blue, a, skin


def test_the_edge_band_keeps_the_photos_texture():
    """A hard-edged textured disc with its true mask: every band pixel is pure head, so the result there
    is the photo (the truth). The smooth foreground alone (keep_tol 0, the behaviour before) flattens the
    checker over the band."""
    img, a, skin = _textured_disc()
    mask = a > 0.5
    band = mask & (edge_alpha(mask, 4.0) < 1)  # within 4 px of the edge
    kept = foreground(img, mask, band_px=4.0)
    smooth = foreground(img, mask, band_px=4.0, keep_tol=0.0)
    err_kept = np.abs(kept[band] - skin[band]).mean()
    err_smooth = np.abs(smooth[band] - skin[band]).mean()
    assert err_kept < 1e-6, err_kept  # the photo itself
    assert err_smooth > 0.01, err_smooth  # measured ~0.03: the checker's 0.08 contrast is lost
    assert head_coloured(img, mask, 4.0, 5.0)[band].mean() == 1.0


def test_mixed_edge_pixels_still_lose_the_backdrop():
    """With a 1 px antialiased edge and the mask reaching into it, the mixed pixels (alpha 0.2-0.8) are
    no head colour: they are not kept, and come out nearer the head's colour than the photo is."""
    img, a, skin = _textured_disc(aa=True)
    mask = a > 0.05
    mixed = (a > 0.2) & (a < 0.8)
    assert mixed.sum() > 40
    assert not head_coloured(img, mask, 2.0, 5.0)[mixed].any()
    fg = foreground(img, mask, band_px=2.0)
    assert np.abs(fg[mixed] - skin[mixed]).mean() < 0.6 * np.abs(img[mixed] - skin[mixed]).mean()
