"""The GAN crop and camera: landmarks land on the stated layout, the crop and its inverse move
image content where the map says, and a FLAME point projects to the same normalised crop pixel
through the photo camera + crop and through the GAN camera (checked with scipy and OpenCV)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import scipy.optimize
import torch
from scipy.spatial.transform import Rotation

from avatarcli.diffusion.crop import CropAlign, apply_affine
from avatarcli.flame.artifact import FIT_VIEWMAT
from avatarcli.gan.align import GAN_ANCHORS, crop_tensor, gan_align, gan_anchors, uncrop
from avatarcli.gan.camera import FOCAL, RADIUS, gan_camera, gan_view, head_pivot
from avatarcli.render.camera import Camera


def _landmarks(five: np.ndarray, rng) -> np.ndarray:
    """68 points whose eye means, nose tip and mouth corners are `five` [5, 2]."""
    lm = rng.normal(size=(68, 2)) * 30 + 200
    for k, idx in enumerate((range(36, 42), range(42, 48))):
        pts = rng.normal(size=(6, 2)) * 4
        lm[list(idx)] = pts - pts.mean(0) + five[k]
    lm[30], lm[48], lm[54] = five[2], five[3], five[4]
    return lm


def test_landmarks_land_on_the_layout():
    rng = np.random.default_rng(0)
    size, s0, t0 = 64, 0.37, np.array([-20.0, 11.0])
    want = GAN_ANCHORS * size - 0.5  # the rule's target pixels
    lm = _landmarks((want - t0) / s0, rng)  # a photo whose face is the layout, scaled and shifted
    a = gan_align(lm, size)
    np.testing.assert_allclose(a.affine, [[s0, 0, t0[0]], [0, s0, t0[1]]], atol=1e-9)
    np.testing.assert_allclose(apply_affine(a.affine, gan_anchors(lm)), want, atol=1e-9)
    # a face that is not the layout: the least-squares scale + translation, found by scipy
    lm2 = lm + rng.normal(size=lm.shape) * 3
    a2 = gan_align(lm2, size)
    src = gan_anchors(lm2)
    res = scipy.optimize.least_squares(lambda p: (p[0] * src + p[1:] - want).ravel(), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(a2.affine[:, 2], res.x[1:], atol=1e-6)
    assert a2.affine[0, 0] == pytest.approx(res.x[0], abs=1e-8) and a2.affine[0, 1] == 0.0


def _blob(h: int, w: int, p) -> torch.Tensor:  # [1, 1, H, W]
    ys, xs = np.mgrid[0:h, 0:w]
    return torch.tensor(np.exp(-((xs - p[0]) ** 2 + (ys - p[1]) ** 2) / (2 * 2.5**2)))[None, None]


def _centroid(img: torch.Tensor) -> np.ndarray:
    a = img[0, 0].numpy()
    ys, xs = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    return np.array([(a * xs).sum(), (a * ys).sum()]) / a.sum()


def test_crop_and_uncrop_move_content_where_the_map_says():
    th = 0.3
    A = np.array([[0.5 * math.cos(th), -0.5 * math.sin(th), 3.0], [0.5 * math.sin(th), 0.5 * math.cos(th), -7.0]])
    align = CropAlign(affine=A, size=48, box=np.zeros(4))
    p = np.array([60.0, 41.0])
    crop = crop_tensor(_blob(90, 120, p), align)
    np.testing.assert_allclose(_centroid(crop), A[:, :2] @ p + A[:, 2], atol=0.05)
    back, inside = uncrop(crop, align, (90, 120))
    np.testing.assert_allclose(_centroid(back), p, atol=0.1)
    assert inside[0, 0, 41, 60] == 1 and inside[0, 0, 0, 119] == 0  # a far corner is outside the crop


def _photo_camera(rg: np.ndarray, j0: np.ndarray, t: np.ndarray, f: float, h: int, w: int) -> Camera:
    """The fit's camera for the canonical head, written out from flame/artifact.py's model."""
    R = Rotation.from_rotvec(rg).as_matrix()
    M = np.eye(4)
    M[:3, :3], M[:3, 3] = R, j0 - R @ j0 + t
    K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
    return Camera(torch.tensor(K, dtype=torch.float32), torch.tensor(FIT_VIEWMAT @ M, dtype=torch.float32), w, h)


def test_a_flame_point_lands_on_the_same_crop_pixel_through_the_gan_camera():
    rng = np.random.default_rng(1)
    rg, j0, t = np.array([0.1, 0.5, -0.08]), np.array([0.0, -0.03, -0.02]), np.array([0.02, 0.01, -0.8])
    cam = _photo_camera(rg, j0, t, 900.0, 480, 640)
    th = 0.2  # a crop with an in-plane rotation: it must become the camera's roll
    A = np.array([[0.4 * math.cos(th), -0.4 * math.sin(th), -30.0], [0.4 * math.sin(th), 0.4 * math.cos(th), 20.0]])
    align = CropAlign(affine=A, size=128, box=np.zeros(4))
    X = rng.normal(size=(50, 3)) * 0.08  # FLAME points around the head
    pivot = head_pivot(X)
    view = gan_view(cam, align, pivot)
    # expected: the photo pixel (pinhole of the fit's model), through the crop, normalised
    Xp = (Rotation.from_rotvec(rg).as_matrix() @ (X - j0).T).T + j0 + t
    xc = Xp @ FIT_VIEWMAT[:3, :3].T
    uv = xc[:, :2] / xc[:, 2:] * 900.0 + np.array([319.5, 239.5])
    want = (apply_affine(A, uv) + 0.5) / 128
    # got: OpenCV projecting the GAN-world points with the GAN camera
    pose = view.c[0, :16].reshape(4, 4).double().numpy()
    Kn = view.c[0, 16:].reshape(3, 3).double().numpy()
    w2c = np.linalg.inv(pose)
    got, _ = cv2.projectPoints(
        view.to_gan(torch.tensor(X)).numpy(), cv2.Rodrigues(w2c[:3, :3])[0], w2c[:3, 3], Kn, None
    )
    np.testing.assert_allclose(got[:, 0], want, atol=2e-5)
    # the rule for s: the camera's distance to the GAN origin over its focal is RADIUS / FOCAL
    assert np.linalg.norm(pose[:3, 3]) / Kn[0, 0] == pytest.approx(RADIUS / FOCAL, rel=1e-5)
    np.testing.assert_allclose(view.to_flame(view.to_gan(torch.tensor(X))).numpy(), X, atol=1e-9)


def test_a_frontal_centred_fit_is_the_trained_frontal_camera():
    f, size = 1000.0, 256
    cam = _photo_camera(np.zeros(3), np.zeros(3), np.array([0.0, 0.0, -0.6]), f, 512, 512)
    s = FOCAL * size / f  # the crop scale that gives the trained normalised focal
    A = np.array([[s, 0, (size - 1) / 2 - s * 255.5], [0, s, (size - 1) / 2 - s * 255.5]])
    view = gan_view(cam, CropAlign(affine=A, size=size, box=np.zeros(4)), torch.zeros(3))
    torch.testing.assert_close(view.c, gan_camera(0.0, 0.0), atol=1e-5, rtol=1e-5)
    assert view.scale == pytest.approx(RADIUS / 0.6)


def test_a_novel_view_renders_through_the_covering_square():
    """camera_to_gan for a non-square novel view: a FLAME point's GAN projection, mapped back from
    the square to the view's pixels, is where the view's own pinhole puts it."""
    from avatarcli.gan.camera import GanView, camera_to_gan
    from avatarcli.render.camera import orbit_camera

    cam = orbit_camera(70.0, 15.0, distance=0.7, width=80, height=50)
    view = GanView(c=torch.zeros(1, 25), scale=3.1, pivot=torch.tensor([0.01, 0.02, -0.03]))
    c, sq = camera_to_gan(cam, view, 32)
    X = torch.tensor(np.random.default_rng(2).normal(size=(20, 3)) * 0.05, dtype=torch.float32)
    want = cam.project(X).double().numpy()  # the view's pixels
    pose = c[0, :16].reshape(4, 4).double().numpy()
    Kn = c[0, 16:].reshape(3, 3).double().numpy()
    w2c = np.linalg.inv(pose)
    nrm, _ = cv2.projectPoints(view.to_gan(X).numpy(), cv2.Rodrigues(w2c[:3, :3])[0], w2c[:3, 3], Kn, None)
    sq_px = nrm[:, 0] * 32 - 0.5
    got = apply_affine(np.linalg.inv(np.vstack([sq.affine, [0, 0, 1]]))[:2], sq_px)
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert sq.box.tolist() == [0.0, -15.0, 80.0, 65.0]
