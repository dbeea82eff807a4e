"""avatarcli.quality: every metric against a case computed by hand (or in closed form)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from avatarcli import quality


def _region() -> np.ndarray:
    reg = np.zeros((4, 4), bool)
    reg[:, :2] = True  # 8 pixels: the left half
    return reg


def test_coverage_counts_region_pixels_above_half():
    alpha = np.zeros((4, 4))
    alpha[:2, :2] = 1.0  # 4 region pixels covered
    alpha[2, 0] = 0.6  # covered
    alpha[3, 0] = 0.4  # not covered (<= 0.5)
    alpha[:, 3] = 1.0  # outside the region: irrelevant to coverage
    assert quality.coverage(alpha, _region()) == pytest.approx(5 / 8)
    assert quality.coverage(torch.tensor(alpha)[..., None], torch.tensor(_region())) == pytest.approx(5 / 8)


def test_spill_is_alpha_mass_outside_over_total():
    alpha = np.zeros((4, 4))
    alpha[:2, :2] = 1.0
    alpha[2, 0], alpha[3, 0] = 0.6, 0.4  # inside: 5.0
    alpha[0, 3], alpha[1, 2] = 1.0, 0.5  # outside: 1.5
    assert quality.spill(alpha, _region()) == pytest.approx(1.5 / 6.5)
    assert quality.spill(np.zeros((4, 4)), _region()) == 0.0


def test_region_psnr_ignores_pixels_outside_region():
    render = np.full((4, 4, 3), 0.5)
    photo = render.copy()
    photo[..., 0][_region()] += 0.1  # every region pixel off by 0.1 in one of 3 channels
    photo[:, 2:] = 0.0  # outside: wildly different, must not count
    assert quality.region_psnr(render, photo, _region()) == pytest.approx(10 * math.log10(1 / (0.01 / 3)))


def test_region_psnr_exact_match_is_capped_and_nan_raises():
    img = np.random.default_rng(0).random((4, 4, 3))
    assert quality.region_psnr(img, img, _region()) == quality.PSNR_CAP
    bad = img.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        quality.region_psnr(bad, img, _region())
    with pytest.raises(ValueError, match="empty"):
        quality.region_psnr(img, img, np.zeros((4, 4), bool))


def test_over_white_composites():
    out = quality.over_white(np.full((2, 2, 3), 0.2), np.full((2, 2), 0.25))
    np.testing.assert_allclose(out, 0.2 * 0.25 + 0.75)


def test_chroma_of_grey_is_zero_and_of_red_is_bt601():
    np.testing.assert_allclose(quality.chroma(np.full((1, 1, 3), 0.7)), 0.0, atol=1e-12)
    red = np.zeros((1, 1, 3))
    red[..., 0] = 1.0
    np.testing.assert_allclose(quality.chroma(red)[0, 0], [-0.168736, 0.5])


def test_colour_noise_of_checkerboard_is_its_chroma_amplitude():
    # R = 0.5 +- a in a 1-px checkerboard: a Gaussian blur of sigma 2 px removes it (Nyquist gain ~e^-20),
    # so |chroma - blur| = |dCb| or |dCr| = 0.168736 a and 0.5 a; the mean over both channels is their mean.
    a = 0.1
    yy, xx = np.mgrid[:32, :32]
    img = np.full((32, 32, 3), 0.5)
    img[..., 0] += a * (-1.0) ** (xx + yy)
    inner = np.zeros((32, 32), bool)
    inner[8:24, 8:24] = True
    assert quality.colour_noise(img, inner) == pytest.approx((0.168736 + 0.5) / 2 * a, rel=1e-6)


def test_colour_noise_of_smooth_images_is_zero():
    inner = np.zeros((32, 32), bool)
    inner[8:24, 8:24] = True
    assert quality.colour_noise(np.full((32, 32, 3), [0.8, 0.3, 0.1]), inner) == pytest.approx(0.0, abs=1e-12)
    # a linear ramp is its own Gaussian blur away from the borders
    ramp = np.full((32, 32, 3), 0.5)
    ramp[..., 0] = np.linspace(0.2, 0.8, 32)[None, :]
    assert quality.colour_noise(ramp, inner) == pytest.approx(0.0, abs=1e-9)


def test_interior_erodes_by_margin():
    m = np.zeros((30, 30), bool)
    m[5:25, 5:25] = True  # 20 x 20
    inner = quality.interior(m, margin=3)
    assert inner.sum() == 14 * 14
    assert inner[8:22, 8:22].all()


def test_iou():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:5] = True  # 20 px
    b[2:6, 0:5] = True  # 20 px, 10 shared
    assert quality.iou(a, b) == pytest.approx(10 / 30)
    assert quality.iou(a, a) == 1.0
    with pytest.raises(ValueError, match="shape"):
        quality.iou(a, np.zeros((5, 5), bool))


def test_nearer_share_counts_colours_nearer_the_first():
    hair, skin = np.array([0.2, 0.15, 0.1]), np.array([0.8, 0.6, 0.5])
    img = np.zeros((4, 5, 3)) + skin
    img[:3, :2] = hair  # 6 hair pixels
    img[0, 4] = 0.49 * hair + 0.51 * skin  # just nearer skin
    img[1, 4] = 0.51 * hair + 0.49 * skin  # just nearer hair
    mask = np.ones((4, 5), bool)
    mask[3] = False  # 15 pixels counted, 7 of them nearer hair
    assert quality.nearer_share(img, hair, skin, mask) == pytest.approx(7 / 15)
    assert quality.nearer_share(img[:3].reshape(-1, 3), hair, skin) == pytest.approx(7 / 15)
    with pytest.raises(ValueError):
        quality.nearer_share(img, hair, skin, np.zeros((4, 5), bool))


def test_upper_part_keeps_the_top_rows_of_the_mask():
    m = np.zeros((10, 4), bool)
    m[2:8] = True  # rows 2..7: 6 rows
    up = quality.upper_part(m, 0.5)
    assert up[2:5].all() and not up[5:].any() and not up[:2].any()


def test_edge_backdrop_share_finds_backdrop_painted_on_the_edge():
    H = W = 64
    yy, xx = np.mgrid[0:H, 0:W]
    outline = np.hypot(xx - 32, yy - 32) < 20
    red, blue = np.array([0.8, 0.3, 0.2]), np.array([0.1, 0.2, 0.9])
    photo = np.where(outline[..., None], red, blue)
    alpha = outline.astype(float)
    band = np.maximum(ndimage.distance_transform_edt(outline), ndimage.distance_transform_edt(~outline)) <= 6
    counted = band & outline  # the render's pixels near the edge (alpha > 0.5 only inside)
    render = np.where(outline[..., None], red, 1.0)
    assert quality.edge_backdrop_share(render, alpha, photo, outline, band=6) == 0.0
    patch = counted & (xx < 24)  # a backdrop-coloured patch on the left of the edge band
    render[patch] = 0.9 * blue + 0.1 * red
    expected = patch.sum() / counted.sum()
    assert quality.edge_backdrop_share(render, alpha, photo, outline, band=6) == pytest.approx(expected)
    top = yy <= 32  # the outline's rows are 13..51: its top half is the rows < 13 + 0.5 x 39 = 32.5
    assert quality.edge_backdrop_share(render, alpha, photo, outline, band=6, top=0.5) == pytest.approx(
        (patch & top).sum() / (counted & top).sum()
    )


def test_edge_backdrop_share_knows_dark_hair_from_a_dark_backdrop():
    """A ring of dark hair round bright skin on a dark blue backdrop: the photo itself paints no backdrop,
    though its hair is nearer the backdrop's colour than the skin's (a single head colour would say so)."""
    H = W = 64
    yy, xx = np.mgrid[0:H, 0:W]
    r = np.hypot(xx - 32, yy - 32)
    outline = r < 20
    hair, skin, navy = np.array([0.18, 0.15, 0.14]), np.array([0.85, 0.6, 0.5]), np.array([0.12, 0.15, 0.35])
    photo = np.where((r < 14)[..., None], skin, np.where(outline[..., None], hair, navy))
    assert quality.edge_backdrop_share(photo, outline.astype(float), photo, outline, band=6) == 0.0
    painted = photo.copy()
    painted[outline & (r >= 17) & (xx < 32)] = navy  # the left half of the edge band in the backdrop's colour
    share = quality.edge_backdrop_share(painted, outline.astype(float), photo, outline, band=6)
    assert 0.2 < share < 0.5  # 3 of the 6 counted px rings, on half the circle


def test_hair_skin_colours_from_the_crown_and_the_face():
    hair, skin = np.array([0.2, 0.15, 0.1]), np.array([0.8, 0.6, 0.5])
    outline = np.zeros((80, 80), bool)
    outline[4:, 10:70] = True
    photo = np.where((np.arange(80) < 30)[:, None, None], hair, skin) * np.ones((80, 80, 3))
    photo[~outline] = (0.1, 0.2, 0.9)
    lm = np.zeros((68, 2))
    t = np.linspace(0, np.pi, 17)
    lm[0:17] = np.stack([40 - 20 * np.cos(t), 44 + 25 * np.sin(t)], -1)  # the jaw line, right ear to left ear
    lm[17:27] = np.stack([np.linspace(22, 58, 10), np.full(10, 44.0)], -1)  # the brows at row 44
    photo[60, 40] = (0.0, 1.0, 0.0)  # one odd face pixel: the median ignores it
    got_hair, got_skin = quality.hair_skin_colours(photo, outline, lm)
    np.testing.assert_allclose(got_hair, hair)
    np.testing.assert_allclose(got_skin, skin)
