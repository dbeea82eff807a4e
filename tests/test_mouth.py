"""The mouth interior added at init: an opened jaw shows a dark mouth (not the inside of the head),
a closed mouth looks as before; the interior follows skull and jaw like teeth. Rendered by the torch
rasterizer on the synthetic FLAME with a lip slit (avatarcli.testing.synthetic_mouth)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatarcli.flame.forward import flame_forward
from avatarcli.flame.params import FlameParams
from avatarcli.gaussians.binding import bind_to_mesh, world_gaussians
from avatarcli.gaussians.init import InitConfig, init_gaussians
from avatarcli.render.api import render
from avatarcli.render.camera import orbit_camera
from avatarcli.testing.synthetic_mouth import make_synthetic_flame_with_mouth, slit_outline
from avatarcli.testing.synthetic_photo import make_synthetic_photo

SIZE = 96


@pytest.fixture(scope="module")
def head():
    model = make_synthetic_flame_with_mouth()
    photo = make_synthetic_photo(model, size=SIZE, yaw_deg=0.0, pitch_deg=0.0, jaw_open=0.0, expr_scale=0.0)
    info: dict = {}
    ply = init_gaussians(model, photo.fit, photo.rgb, InitConfig(n_gaussians=20000, mouth_fraction=0.04), info=info)
    bound = bind_to_mesh(ply.gaussians, ply.binding, photo.vertices, model.faces.long())
    ns = info["points"].shape[0]
    return model, photo, bound, bound.subset(torch.arange(ns))  # with the mouth, surface only


def _posed(model, photo, jaw: float):
    p = FlameParams.zeros(1, int(np.asarray(photo.fit.shape).size), 0)
    p.shape = torch.as_tensor(np.asarray(photo.fit.shape), dtype=torch.float32)[None]
    p.jaw_pose[0, 0] = jaw
    return flame_forward(model, p, with_landmarks=False).vertices[0]


def _render(model, bound, verts) -> np.ndarray:
    cam = orbit_camera(0, 0, distance=0.3, target=(0, -0.035, 0.06), fov_deg=20, width=SIZE, height=SIZE)
    return render(world_gaussians(bound, verts, model.faces.long()), cam, torch.ones(3), backend="torch").rgb.numpy()


def _slit_mask(verts) -> np.ndarray:
    import cv2

    cam = orbit_camera(0, 0, distance=0.3, target=(0, -0.035, 0.06), fov_deg=20, width=SIZE, height=SIZE)
    poly = np.round(cam.project(slit_outline(verts)).numpy()).astype(np.int32)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(mask, [poly], 1)
    return cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0


def test_open_mouth_is_dark_inside(head):
    model, photo, with_mouth, plain = head
    v = _posed(model, photo, 0.3)
    mask = _slit_mask(v)
    assert mask.sum() > 150  # the lips have parted
    lum = lambda im: im[mask].mean(-1)  # noqa: E731 - per-pixel luminance inside the opening
    skin = float(np.median(_render(model, plain, _posed(model, photo, 0.0))[20:76, 20:76].mean(-1)))
    before, after = lum(_render(model, plain, v)), lum(_render(model, with_mouth, v))
    assert float(before.mean()) > 0.8 * skin  # before: the inside of the head, skin-coloured
    assert float(after.mean()) < 0.65 * skin  # now: a mouth (measured 0.56 x)
    assert float((after < 0.25).mean()) > 0.3  # much of it the dark cavity (the rest teeth and tongue)


def test_closed_mouth_looks_as_before(head):
    model, photo, with_mouth, plain = head
    v = _posed(model, photo, 0.0)
    a, b = _render(model, plain, v), _render(model, with_mouth, v)
    d = np.abs(a - b).mean(-1)
    assert float(d.mean()) < 0.005
    assert float(d[40:75, 25:71].mean()) < 0.02  # the mouth area too: the lips hide the interior


def test_interior_follows_skull_and_jaw(head):
    """Upper parts are rigid with the skull, lower parts with the jaw: under a jaw rotation the
    lower interior moves as the jaw joint's rigid transform, the upper one does not move."""
    model, photo, with_mouth, plain = head
    mouth = with_mouth.subset(torch.arange(plain.n, with_mouth.n))
    faces = model.faces.long()
    m0 = world_gaussians(mouth, _posed(model, photo, 0.0), faces).means
    m1 = world_gaussians(mouth, _posed(model, photo, 0.2), faces).means
    moved = (m1 - m0).norm(dim=-1)
    tris = torch.unique(mouth.binding)
    assert tris.numel() == 2
    up, lo = mouth.binding == tris[0], mouth.binding == tris[1]
    if moved[up].mean() > moved[lo].mean():
        up, lo = lo, up
    assert float(moved[up].max()) < 1e-4  # skull: still
    assert float(moved[lo].min()) > 2e-3  # jaw: every lower part moves (metres)
    # rigid: distances between lower-part points are kept
    i = torch.arange(int(lo.sum()))[:50]
    d0, d1 = torch.cdist(m0[lo][i], m0[lo][i]), torch.cdist(m1[lo][i], m1[lo][i])
    assert float((d0 - d1).abs().max()) < 2e-4
