"""Synthetic video frames of a FLAME head with known gaze, for the gaze tracker's tests and bench.

The head is the synthetic model (avatarcli.testing.synthetic_flame) covered by the project's textured
ground-truth Gaussians and rendered with the torch rasterizer through the fit camera. FLAME's skin has
no eye: inside each eye's lid contour (iBUG 36-41 / 42-47, the model's own landmarks projected) the
frame shows an eyeball, ray-traced pixel by pixel: a sphere about the posed eye joint through the
posed pupil vertex (both from `flame_forward`, so the eye turns exactly as FLAME's eyes_pose turns
it), white sclera, a dark iris cap of IRIS_DEG and a black pupil cap about the gaze axis (joint ->
pupil vertex). The lids cut the iris as in a real eye; the iris outline is a foreshortened ellipse.
Closed eyes (blinks): `closed` frames get no eyeball, the lids are skin, and their upper-lid landmarks
are moved onto the lower lid.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from avatarcli.flame.artifact import FIT_VIEWMAT
from avatarcli.flame.forward import canonical_vertices, flame_forward
from avatarcli.flame.params import FlameParams
from avatarcli.gaussians.binding import world_gaussians
from avatarcli.render.api import render, to_uint8
from avatarcli.render.camera import Camera, intrinsics
from avatarcli.testing.synthetic_clip import clip_params
from avatarcli.testing.synthetic_flame import project_fit_camera, pupil_vertices
from avatarcli.testing.synthetic_scene import PHOTO_BACKGROUND, ground_truth_gaussians

IRIS_DEG = 30.0  # iris radius as seen from the eyeball centre (6 mm on a 12 mm eyeball)
PUPIL_DEG = 12.0
SCLERA = np.array([0.92, 0.90, 0.88])
IRIS = np.array([0.35, 0.22, 0.14])
PUPIL = np.array([0.04, 0.03, 0.03])
EYES = ((42, 3), (36, 4))  # (first iBUG point of the eye, FLAME eye joint): subject's left, right


def gaze_clip_params(T: int, seed: int = 0, *, distance: float = 0.3, amp_deg: float = 20.0) -> FlameParams:
    """clip_params (smooth head motion, jaw, expression) plus known gaze: yaw and pitch sinusoids of
    amp_deg and amp_deg / 2, the same for both eyes (a far target), a saccade-like step in the middle."""
    p = clip_params(T, seed, distance=distance, jaw_max=0.15)
    t = torch.arange(T, dtype=p.shape.dtype)
    g = torch.Generator().manual_seed(seed + 7)
    ph = torch.rand(2, generator=g, dtype=t.dtype) * 2 * math.pi
    a = math.radians(amp_deg)
    yaw = a * torch.sin(2 * math.pi * t / 36 + ph[0])
    pitch = 0.5 * a * torch.sin(2 * math.pi * t / 50 + ph[1])
    eye = torch.stack([pitch, yaw, torch.zeros_like(t)], -1)  # [T, 3]
    p.eyes_pose = torch.cat([eye, eye], -1)  # [T, 6]
    return p


def _eyeball_pixels(rgb: np.ndarray, poly: np.ndarray, centre: np.ndarray, pupil: np.ndarray, focal: float) -> None:
    """Ray-trace the eyeball (world centre [3], world pupil point [3]) into rgb [H, W, 3] float inside the
    lid polygon [6, 2] (pixels), 4x supersampled per pixel."""
    H, W = rgb.shape[:2]
    mask = np.zeros((H * 4, W * 4), np.uint8)
    cv2.fillPoly(mask, [np.round((poly + 0.5) * 4 - 0.5).astype(np.int32)], 1)
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return
    u, v = (xs + 0.5) / 4 - 0.5, (ys + 0.5) / 4 - 0.5
    d_cam = np.stack([(u - (W - 1) / 2) / focal, (v - (H - 1) / 2) / focal, np.ones_like(u)], -1)  # camera rays
    S = FIT_VIEWMAT[:3, :3].astype(np.float64)  # camera = S @ world (origin at the camera centre)
    d = d_cam @ S  # world directions (S is its own inverse)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = np.zeros(3)  # the camera centre in world coordinates (FIT_VIEWMAT has no translation)
    r = float(np.linalg.norm(pupil - centre))
    oc = o - centre
    b = d @ oc
    disc = b**2 - (oc @ oc - r**2)
    hit = disc > 0
    s = -b - np.sqrt(np.clip(disc, 0, None))
    n = (o + s[:, None] * d - centre) / r  # unit normal at the hit [N, 3]
    gaze = (pupil - centre) / r
    ang = np.degrees(np.arccos(np.clip(n @ gaze, -1, 1)))
    w_iris = np.clip((IRIS_DEG + 1.0 - ang) / 2.0, 0, 1)[:, None]
    w_pupil = np.clip((PUPIL_DEG + 1.0 - ang) / 2.0, 0, 1)[:, None]
    col = SCLERA * (1 - w_iris) + IRIS * w_iris
    col = col * (1 - w_pupil) + PUPIL * w_pupil
    col = np.where(hit[:, None], col, np.array([0.75, 0.45, 0.45]))  # beyond the eyeball: the lids' pink
    acc = np.zeros((H * 4, W * 4, 3))
    acc[ys, xs] = col
    big = cv2.resize(rgb, (W * 4, H * 4), interpolation=cv2.INTER_NEAREST)
    big[ys, xs] = acc[ys, xs]
    rgb[:] = cv2.resize(big, (W, H), interpolation=cv2.INTER_AREA)


def render_gaze_frames(
    model, params: FlameParams, size: tuple[int, int] = (256, 256), closed=()
) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 [T, H, W, 3] and the true landmarks [T, 68, 2] (pixels) of `params`, fit camera with
    focal 1.2 x the long side; frames listed in `closed` have their eyes shut (see the module doc)."""
    H, W = size
    focal = 1.2 * max(H, W)
    p64 = params.to(dtype=torch.float64)
    m64 = model.to(dtype=torch.float64)
    with torch.no_grad():
        out = flame_forward(m64, p64)
        canon = canonical_vertices(model, params.to(dtype=torch.float32)[0:1])[0]
    lmk = project_fit_camera(out.landmarks, focal, size)  # [T, 68, 2]
    truth = ground_truth_gaussians(canon, model.faces)
    cam = Camera(intrinsics(focal, W, H), torch.as_tensor(FIT_VIEWMAT), W, H)
    bg = torch.tensor(PHOTO_BACKGROUND, dtype=torch.float32)
    pupil_ids = pupil_vertices()  # the fixture's own pupils: subject's left, right
    frames = []
    for t in range(params.batch):
        with torch.no_grad():
            img = render(world_gaussians(truth, out.vertices[t].float(), model.faces), cam, bg, backend="torch")
        rgb = img.rgb.clamp(0, 1).numpy().astype(np.float64)
        for (first, j), k in zip(EYES, pupil_ids):
            if t in closed:
                continue
            poly = lmk[t, first : first + 6]
            _eyeball_pixels(rgb, poly, out.joints[t, j].numpy(), out.vertices[t, k].numpy(), focal)
        frames.append(to_uint8(torch.from_numpy(rgb).float()))
    lmk = lmk.copy()
    for t in closed:  # shut lids: the upper-lid points onto the lower lid
        for first, _ in EYES:
            lmk[t, first + 1], lmk[t, first + 2] = lmk[t, first + 5], lmk[t, first + 4]
    return np.stack(frames), lmk
