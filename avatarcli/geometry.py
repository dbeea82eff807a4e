"""Rotation and triangle-frame geometry in plain torch (no pytorch3d).

Conventions: axis-angle vectors [..., 3] (radians, right-handed), rotation
matrices [..., 3, 3] acting on column vectors, quaternions [..., 4] in
w, x, y, z order (the 3DGS PLY order). Tested against scipy's Rotation.
"""

from __future__ import annotations

import torch
from torch import Tensor


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rodrigues' formula. aa [..., 3] -> R [..., 3, 3]; exact and smooth at 0."""
    theta2 = (aa * aa).sum(-1, keepdim=True)  # [..., 1]
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    # sin(t)/t and (1-cos t)/t^2 with Taylor series near zero
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    K = skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(K.shape)
    return eye + a[..., None] * K + b[..., None] * (K @ K)


def skew(v: Tensor) -> Tensor:
    """v [..., 3] -> the cross-product matrix [..., 3, 3] with skew(v) @ u = v x u."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """q [..., 4] (w, x, y, z; need not be unit) -> R [..., 3, 3]."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """R [..., 3, 3] -> unit q [..., 4] (w, x, y, z) with w >= 0.

    Picks, per matrix, the best-conditioned of the four standard formulas."""
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack(
        [
            torch.stack(
                [1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1
            ),
            torch.stack(
                [
                    m[..., 2, 1] - m[..., 1, 2],
                    1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                    m[..., 0, 1] + m[..., 1, 0],
                    m[..., 0, 2] + m[..., 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 0, 1] + m[..., 1, 0],
                    1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                    m[..., 1, 2] + m[..., 2, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 1, 0] - m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 1, 2] + m[..., 2, 1],
                    1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
                ],
                -1,
            ),
        ],
        dim=-2,
    )  # [..., 4 candidates, 4]
    diag = torch.stack([tr, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
    best = diag.argmax(-1)  # [...]
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[..., :1] < 0, -q, q)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """R [..., 3, 3] -> aa [..., 3] with angle in [0, pi]."""
    q = matrix_to_quaternion(R)
    w = q[..., :1].clamp(-1.0, 1.0)
    xyz = q[..., 1:]
    s = xyz.norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(s, w)  # [..., 1]
    small = s < 1e-8
    factor = torch.where(small, 2.0 / w.clamp_min(1e-12), angle / s.clamp_min(1e-12))
    return xyz * factor


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b of wxyz quaternions [..., 4] (rotation b first, then a)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def triangle_frames(vertices: Tensor, faces: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor, Tensor]:
    """Local frame of each triangle, as the binding uses it (docs/architecture.md).

    vertices [..., V, 3], faces [F, 3] (long) ->
      centroid [..., F, 3]
      R        [..., F, 3, 3]  orthonormal, columns (e1, e2, n): e1 along edge v0->v1,
                              n the unit normal (right-handed winding), e2 = n x e1
      scale    [..., F]        triangle size: mean length of the three edges
    """
    tri = vertices[..., faces, :]  # [..., F, 3, 3]
    v0, v1, v2 = tri.unbind(-2)
    centroid = (v0 + v1 + v2) / 3.0
    e01 = v1 - v0
    e02 = v2 - v0
    n = torch.cross(e01, e02, dim=-1)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(eps)
    e1 = e01 / e01.norm(dim=-1, keepdim=True).clamp_min(eps)
    e2 = torch.cross(n, e1, dim=-1)
    R = torch.stack([e1, e2, n], dim=-1)
    scale = (e01.norm(dim=-1) + e02.norm(dim=-1) + (v2 - v1).norm(dim=-1)) / 3.0
    return centroid, R, scale


def look_at_viewmat(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """World-to-camera matrix [4, 4] (OpenCV: x right, y down, z forward) for a
    camera at `eye` [3] looking at `target` [3] with world `up` [3]."""
    z = target - eye
    z = z / z.norm()
    x = torch.cross(-up, z, dim=-1)  # OpenCV: x = y x z with y pointing down
    x = x / x.norm()
    y = torch.cross(z, x, dim=-1)
    R = torch.stack([x, y, z], dim=0)  # rows: camera axes in world coordinates
    V = torch.eye(4, dtype=eye.dtype, device=eye.device)
    V[:3, :3] = R
    V[:3, 3] = -R @ eye
    return V
