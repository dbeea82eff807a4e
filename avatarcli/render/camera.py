"""Pinhole cameras in the project's convention (OpenCV axes, world-to-camera viewmat).

Pixel convention: the centre of pixel (col j, row i) is at image coordinates
(x=j, y=i), i.e. pixel centres at integers (as landmarks.npz and flame.npz).
gsplat puts pixel centres at +0.5; its backend shifts cx, cy by +0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from avatarcli.geometry import axis_angle_to_matrix, look_at_viewmat


@dataclass
class Camera:
    K: Tensor  # [3, 3] pinhole intrinsics, pixel centres at integer coordinates
    viewmat: Tensor  # [4, 4] world-to-camera (OpenCV: x right, y down, z forward)
    width: int
    height: int

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Camera:
        return Camera(self.K.to(device, dtype), self.viewmat.to(device, dtype), self.width, self.height)

    @property
    def position(self) -> Tensor:
        """Camera centre in world coordinates [3]."""
        R = self.viewmat[:3, :3]
        return -R.T @ self.viewmat[:3, 3]

    def project(self, X: Tensor) -> Tensor:
        """World points [..., 3] -> pixel coordinates [..., 2]."""
        Xc = X @ self.viewmat[:3, :3].T + self.viewmat[:3, 3]
        uvw = Xc @ self.K.T
        return uvw[..., :2] / uvw[..., 2:3]


def intrinsics(focal: float, width: int, height: int) -> Tensor:
    """K [3, 3] with square pixels and the principal point at the image centre."""
    return torch.tensor(
        [[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float32
    )


def orbit_camera(
    yaw_deg: float,
    pitch_deg: float = 0.0,
    *,
    distance: float = 0.6,
    target: tuple[float, float, float] = (0.0, 0.0, 0.0),
    fov_deg: float = 20.0,
    width: int = 512,
    height: int = 512,
) -> Camera:
    """A camera on a sphere around `target` (FLAME space: y up, +z out of the face).

    yaw 0, pitch 0 looks at the face from the front (camera on +z); positive yaw
    moves the camera towards +x (the head's left side), positive pitch raises it.
    """
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    t = torch.tensor(target, dtype=torch.float32)
    eye = t + distance * torch.tensor(
        [math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)], dtype=torch.float32
    )
    V = look_at_viewmat(eye, t, torch.tensor([0.0, 1.0, 0.0]))
    focal = 0.5 * height / math.tan(math.radians(fov_deg) / 2.0)
    return Camera(intrinsics(focal, width, height), V, width, height)


def scaled_camera(cam: Camera, long_side: int | None, *, upscale: bool = True) -> Camera:
    """The same view for the image resized so that its long side is `long_side` pixels
    (None or 0: unchanged; upscale=False: never larger than the camera's own size).

    Pixel centres stay at integers: x' = (x + 0.5) s - 0.5, per axis s = new size / old size."""
    if not long_side:
        return cam
    s = long_side / max(cam.width, cam.height)
    if not upscale and s >= 1.0:
        return cam
    W, H = max(1, round(cam.width * s)), max(1, round(cam.height * s))
    sx, sy = W / cam.width, H / cam.height
    K = cam.K.clone()
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return Camera(K, cam.viewmat.clone(), W, H)


def cropped_camera(cam: Camera, x0: int, y0: int, width: int, height: int) -> Camera:
    """The same view restricted to the pixel window [x0, x0 + width) x [y0, y0 + height): pixel
    (x, y) of the crop is pixel (x + x0, y + y0) of `cam`'s image."""
    K = cam.K.clone()
    K[0, 2] -= x0
    K[1, 2] -= y0
    return Camera(K, cam.viewmat, int(width), int(height))


class PhotoFit(Protocol):
    """What photo_camera reads of a fitted head (avatarcli.flame.artifact.FlameFit)."""

    K: np.ndarray  # [3, 3]
    viewmat: np.ndarray  # [4, 4]
    global_pose: np.ndarray  # [3]
    translation: np.ndarray  # [3]
    image_size: tuple[int, int]  # (H, W)


def photo_camera(fit: PhotoFit, root_joint: np.ndarray | Tensor) -> Camera:
    """The photo's Camera for the CANONICAL head (global_pose = 0, translation = 0).

    The fitted head is X_photo = R_g (X_c - J0) + J0 + t with J0 = `root_joint` [3] of the fit's
    shaped template, so the canonical head seen by the photo camera has
    viewmat_eff = viewmat @ [[R_g, J0 - R_g J0 + t], [0, 1]]."""
    J0 = torch.as_tensor(
        np.asarray(root_joint.detach().cpu() if isinstance(root_joint, Tensor) else root_joint), dtype=torch.float64
    ).reshape(3)
    Rg = axis_angle_to_matrix(torch.as_tensor(np.asarray(fit.global_pose), dtype=torch.float64).reshape(3))
    t = torch.as_tensor(np.asarray(fit.translation), dtype=torch.float64).reshape(3)
    M = torch.eye(4, dtype=torch.float64)
    M[:3, :3] = Rg
    M[:3, 3] = J0 - Rg @ J0 + t
    V = torch.as_tensor(np.asarray(fit.viewmat), dtype=torch.float64) @ M
    H, W = fit.image_size
    return Camera(torch.as_tensor(np.asarray(fit.K), dtype=torch.float32), V.float(), int(W), int(H))
