"""Synthetic video clips of known FLAME motion, for the tracker's tests and benches.

One identity (random shape), smooth motion (head yaw / pitch sinusoids, a jaw that opens and closes,
expressions fading in and out) and optionally a FAST head turn (`fast_turn_deg` over `fast_frames`
frames, a smoothstep in the middle of the clip): what a tracker must follow without lag. Landmarks
are the model's own, projected by the fit camera, with Gaussian pixel noise."""

from __future__ import annotations

import math

import numpy as np
import torch

from avatarcli.flame.forward import flame_forward
from avatarcli.flame.params import FlameParams
from avatarcli.geometry import axis_angle_to_matrix
from avatarcli.testing.synthetic_flame import random_flame_params, synthetic_landmarks


def clip_params(
    T: int,
    seed: int = 0,
    *,
    fast_turn_deg: float = 0.0,
    fast_frames: int = 4,
    jaw_max: float = 0.3,
    distance: float = 0.5,
    dtype=torch.float64,
):
    """FlameParams [T] of one person moving smoothly (periods of 1-2 s at 30 fps)."""
    p = random_flame_params(1, seed, distance=distance, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 1)
    t = torch.arange(T, dtype=dtype)
    ph = torch.rand(4, generator=g, dtype=dtype) * 2 * math.pi
    yaw = 0.35 * torch.sin(2 * math.pi * t / 60 + ph[0])
    pitch = 0.12 * torch.sin(2 * math.pi * t / 45 + ph[1])
    if fast_turn_deg:
        u = ((t - (T // 2 - fast_frames / 2)) / fast_frames).clamp(0, 1)
        yaw = yaw + math.radians(fast_turn_deg) * u * u * (3 - 2 * u)
    jaw = jaw_max * 0.5 * (1 - torch.cos(2 * math.pi * t / 40 + ph[2]))  # 0 .. jaw_max
    e = p.expr[0] * 1.5  # [E] one expression, fading in and out
    w = torch.sin(2 * math.pi * t / 50 + ph[3])  # [T]
    rep = lambda a: a.expand(T, -1).clone()  # noqa: E731
    glob = torch.stack([pitch, yaw, torch.zeros_like(t)], -1)
    jaw3 = torch.stack([jaw, torch.zeros_like(t), torch.zeros_like(t)], -1)
    trans = rep(p.translation) + torch.stack([0.01 * torch.sin(t / 20), 0.005 * torch.sin(t / 13), 0 * t], -1)

    return FlameParams(rep(p.shape), w[:, None] * e[None], glob, torch.zeros(T, 3, dtype=dtype), jaw3,
                       torch.zeros(T, 6, dtype=dtype), trans)  # fmt: skip


def clip_landmarks(model, params, image_size=(256, 256), noise_px: float = 1.0, seed: int = 0):
    """(noisy landmarks [T, 68, 2], noise-free [T, 68, 2]) seen by the fit camera (focal 1.2 x long side)."""
    marks, clean = synthetic_landmarks(model, params, image_size=image_size, noise_px=noise_px, seed=seed)
    return np.stack([m.landmarks for m in marks]).astype(np.float64), clean


def fit_params(fit, dtype=torch.float64):
    """A TrackFit as FlameParams [T] (its shared shape repeated)."""
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
    T = fit.n_frames
    return FlameParams(t(fit.shape)[None].expand(T, -1), t(fit.expr), t(fit.global_pose), t(fit.neck_pose),
                       t(fit.jaw_pose), t(fit.eyes_pose), t(fit.translation))  # fmt: skip


def posed_vertices(model, params) -> np.ndarray:
    """World vertices [T, V, 3] (metres)."""
    with torch.no_grad():
        return flame_forward(model.to(dtype=torch.float64), params.to(dtype=torch.float64), False).vertices.numpy()


def face_vertices(model, params) -> np.ndarray:
    """Vertices [T, V, 3] with the head pose removed (global, neck, translation 0): identity + expression + jaw."""
    z = torch.zeros_like(params.global_pose)
    return posed_vertices(model, FlameParams(params.shape, params.expr, z, z, params.jaw_pose, params.eyes_pose, z))


def head_rotation(params) -> np.ndarray:
    """R_global @ R_neck [T, 3, 3] (the head's rotation; the landmarks cannot tell the two apart)."""
    return (axis_angle_to_matrix(params.global_pose) @ axis_angle_to_matrix(params.neck_pose)).numpy()


def jitter_mm(vertices: np.ndarray) -> float:
    """Mean |v_{t-1} - 2 v_t + v_{t+1}| over frames and vertices, mm (vertices [T, V, 3] in metres)."""
    if vertices.shape[0] < 3:
        return 0.0
    return float(np.linalg.norm(vertices[:-2] - 2 * vertices[1:-1] + vertices[2:], axis=-1).mean() * 1000)


def rotation_error_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    """Angle of Ra^T Rb per frame [T], degrees."""
    c = (np.einsum("tij,tij->t", Ra, Rb) - 1) / 2
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def best_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 5) -> int:
    """The shift s (frames) minimising |a[t] - b[t - s]| over the overlap: > 0 means `a` lags `b`."""
    errs = {}
    for s in range(-max_lag, max_lag + 1):
        lo, hi = max(0, s), min(len(a), len(b) + s)
        errs[s] = float(np.abs(a[lo:hi] - b[lo - s : hi - s]).mean())
    return min(errs, key=lambda s: (errs[s], abs(s)))
