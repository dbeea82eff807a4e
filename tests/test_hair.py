"""Which Gaussians are hair (avatarcli.gaussians.hair) and the matted edge colours
(avatarcli.segment.foreground), on synthetic cases whose truth is painted in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation, distance_transform_edt

from avatarcli.flame.deform import DeformConfig
from avatarcli.gaussians.hair import split_hair_skin
from avatarcli.gaussians.init import InitConfig, init_with_details
from avatarcli.quality import nearer_share
from avatarcli.segment.foreground import foreground
from avatarcli.testing.synthetic_photo import make_synthetic_photo

SIZE = 96
HAIR, SKIN, BACKDROP = np.array([0.22, 0.16, 0.12]), np.array([0.82, 0.6, 0.48]), np.array([1.0, 1.0, 1.0])


def _painted(photo, hair: bool) -> tuple[np.ndarray, np.ndarray]:
    """A short-haired (or bald) head painted over the synthetic photo -> (uint8 photo, region [H, W]).

    The region: the head grown by ~6 % of the image above mid-height (hair volume). Colours: skin on the
    face and the neck, with shading (brighter towards the upper left), hair above the forehead (rows above
    the brows by more than 40 % of the brows' height over the head's top) and in the grown volume."""
    m = photo.mask[..., 0].numpy() > 0.5
    rows = np.nonzero(m.any(1))[0]
    mid = int(rows.min() + 0.5 * (rows.max() - rows.min()))
    region = binary_dilation(m, iterations=SIZE // 16)
    region[mid:] = m[mid:]
    top = np.nonzero(region.any(1))[0].min()
    brow = float(photo.landmarks[17:27, 1].mean())
    hairline = brow - 0.4 * (brow - top)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    shade = 0.85 + 0.3 * (1 - (xx + yy) / (2 * SIZE))  # [H, W] in 0.85..1.15
    img = np.where(region[..., None], SKIN * shade[..., None], BACKDROP)
    if hair:
        scalp = region & ((yy < hairline) | ~m)
        img[scalp] = HAIR * shade[scalp][:, None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), region.astype(np.float32)


@pytest.fixture(scope="module")
def turned(flame_model):
    return make_synthetic_photo(flame_model, size=SIZE, yaw_deg=30.0, pitch_deg=0.0)


def _init(photo, rgb, region):
    cfg = InitConfig(n_gaussians=4000, deform=DeformConfig(size=SIZE), mouth_fraction=0.0)
    return init_with_details(photo.model, photo.fit, rgb, cfg, region=region)[1]


def _parts(info):
    """(back of the head above the ears, neck) [N] bool, by the points' own extent (not the code's regions)."""
    p = info.points
    lo, hi = p.min(0).values, p.max(0).values
    unseen = ~info.colour.visible & ~info.colour.mirrored
    back = unseen & (p[:, 2] < lo[2] + 0.3 * (hi[2] - lo[2])) & (p[:, 1] > lo[1] + 0.55 * (hi[1] - lo[1]))
    neck = unseen & (p[:, 1] < lo[1] + 0.15 * (hi[1] - lo[1]))
    return back, neck


def test_the_unseen_back_of_a_short_haired_head_is_hair(turned):
    rgb, region = _painted(turned, hair=True)
    info = _init(turned, rgb, region)
    back, neck = _parts(info)
    assert back.sum() > 200 and neck.sum() > 50
    c = info.colour.rgb
    # on main at 96db1e5 this share was 0.69: the back took the mixed colours of all seen "scalp" points
    assert nearer_share(c[back], HAIR, SKIN) > 0.95  # no bald cap
    assert nearer_share(c[neck], HAIR, SKIN) < 0.05  # the neck below the nape stays skin
    # the seen forehead (between the brows and the painted hairline) keeps the photo's skin
    assert 0.05 < nearer_share(c[info.colour.visible], HAIR, SKIN) < 0.7  # the seen points: the photo's two colours


def test_a_bald_head_keeps_a_skin_back(turned):
    rgb, region = _painted(turned, hair=False)
    info = _init(turned, rgb, region)
    back, _ = _parts(info)
    assert nearer_share(info.colour.rgb[back], HAIR, SKIN) < 0.05


def test_split_hair_skin_labels_shaded_skin_and_dark_hair():
    g = np.random.default_rng(0)
    skin = SKIN * g.uniform(0.6, 1.15, (400, 1)) + g.normal(0, 0.02, (400, 3))  # shading along the skin colour
    hair = HAIR * g.uniform(0.7, 1.4, (150, 1)) + g.normal(0, 0.02, (150, 3))
    shadow = SKIN * 0.55 + g.normal(0, 0.02, (50, 3))  # skin in shadow: darker than any face point
    x = torch.from_numpy(np.concatenate([hair, skin[:200], shadow]))
    truth = np.r_[np.ones(150, bool), np.zeros(250, bool)]
    labels = split_hair_skin(x, torch.from_numpy(skin[200:])).numpy()
    assert (labels == truth).mean() > 0.95
    assert not split_hair_skin(torch.from_numpy(skin[:200]), torch.from_numpy(skin[200:])).any()  # bald


def test_matted_foreground_takes_a_backdrop_patch_out_of_the_edge():
    H = W = 64
    yy, xx = np.mgrid[0:H, 0:W]
    head = np.hypot(xx - 32, yy - 36) < 18
    patch = (np.hypot(xx - 32, yy - 14) < 9) & ~head  # backdrop the region took in on the crown, ~8 px deep
    hair, blue = np.array([0.25, 0.18, 0.15]), np.array([0.15, 0.25, 0.8])
    img = np.where(head[..., None], hair, blue) + 0.02 * np.sin(xx / 3.0)[..., None]
    mask = head | patch
    matted = foreground(img, mask, band_px=4.0, matte_px=12.0)
    ramped = foreground(img, mask, band_px=12.0, matte_px=0.0)  # the geometric ramp over the same depth

    def share_blue(f):
        return nearer_share(f[patch], blue, hair)

    assert share_blue(ramped) > 0.5  # the geometric ramp keeps the patch blue (measured 0.98)
    assert share_blue(matted) < 0.1  # the matte finds it is backdrop and carries the hair over it (0.0)
    inner = distance_transform_edt(mask) > 12.5
    assert np.array_equal(matted[inner], img[inner].astype(np.float32))  # the interior is the photo


def test_the_matte_leaves_a_head_with_a_true_mask_alone(flame_model):
    """On a synthetic head with its true mask the matte is unsure of some band pixels, but none is nearer
    the backdrop's colour than the head's: the result is the matte-free foreground exactly."""
    photo = make_synthetic_photo(flame_model, size=64)
    img, mask = photo.rgb / 255.0, photo.mask[..., 0].numpy() > 0.5
    np.testing.assert_array_equal(foreground(img, mask, 1.5), foreground(img, mask, 1.5, matte_px=0.0))
