"""Pinhole cameras in the project's convention (OpenCV axes, world-to-camera viewmat).

Pixel convention: the centre of pixel (col j, row i) is at image coordinates
(x=j, y=i), i.e. pixel centres at integers (as landmarks.npz and flame.npz).
gsplat puts pixel centres at +0.5; its backend shifts cx, cy by +0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from avatarcli.geometry import look_at_viewmat


@dataclass
class Camera:
    K: Tensor  # [3, 3] pinhole intrinsics, pixel centres at integer coordinates
    viewmat: Tensor  # [4, 4] world-to-camera (OpenCV: x right, y down, z forward)
    width: int
    height: int

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "Camera":
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
