"""Gaussians bound to mesh triangles: triangle-frame <-> world conversion.

For a Gaussian bound to triangle f with frame (c, R, k) from
avatarcli.geometry.triangle_frames (centroid, orthonormal columns (e1, e2, n),
mean edge length):
    mean    = c + k * R @ local_xyz
    quat    = quat(R) * normalize(local_rot)      (Hamilton product, wxyz)
    scale   = k * exp(local_log_scale)
    opacity = sigmoid(opacity_logit);  sh unchanged.
`bind_to_mesh` is the exact inverse. Both are differentiable, loop-free: the
frames are computed once per triangle and gathered once per Gaussian.
"""

from __future__ import annotations

import torch
from torch import Tensor

from avatarcli.gaussians.model import BoundGaussians, Gaussians
from avatarcli.geometry import matrix_to_quaternion, quaternion_multiply, triangle_frames


def _frames(vertices: Tensor, faces: Tensor, binding: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-Gaussian frame: c [..., N, 3], R [..., N, 3, 3], q [..., N, 4], k [..., N]."""
    c, R, k = triangle_frames(vertices, faces)  # [..., F, 3], [..., F, 3, 3], [..., F]
    q = matrix_to_quaternion(R)  # [..., F, 4]
    b = binding.to(device=vertices.device, dtype=torch.long)
    return c[..., b, :], R[..., b, :, :], q[..., b, :], k[..., b]


def world_gaussians(bound: BoundGaussians, vertices: Tensor, faces: Tensor) -> Gaussians:
    """Bound Gaussians on the mesh `vertices` [V, 3] (or [B, V, 3]), `faces` [F, 3] -> world Gaussians.

    With batched vertices every field gets a leading B (sh is expanded, not copied)."""
    c, R, q, k = _frames(vertices, faces, bound.binding)  # [..., N, 3], [..., N, 3, 3], [..., N, 4], [..., N]
    means = c + k[..., None] * torch.einsum("...ij,...j->...i", R, bound.local_xyz)  # [..., N, 3]
    r = bound.local_rot / bound.local_rot.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # [N, 4]
    quats = quaternion_multiply(q, r.expand_as(q))  # [..., N, 4]
    scales = k[..., None] * torch.exp(bound.local_log_scale)  # [..., N, 3]
    batch = vertices.shape[:-2]
    opacities = torch.sigmoid(bound.opacity_logit).expand(*batch, bound.n)  # [..., N]
    sh = bound.sh.expand(*batch, *bound.sh.shape)  # [..., N, K, 3]
    return Gaussians(means=means, quats=quats, scales=scales, opacities=opacities, sh=sh)


def bind_to_mesh(gaussians: Gaussians, binding: Tensor, vertices: Tensor, faces: Tensor) -> BoundGaussians:
    """World Gaussians [N] + triangle index per Gaussian `binding` [N] on mesh `vertices` [V, 3],
    `faces` [F, 3] -> BoundGaussians, the inverse of `world_gaussians`.

    Opacities are clamped into (eps, 1 - eps) of their dtype so the logit stays finite."""
    c, R, q, k = _frames(vertices, faces, binding)  # [N, 3], [N, 3, 3], [N, 4], [N]
    k = k.clamp_min(1e-12)
    local_xyz = torch.einsum("nji,nj->ni", R, gaussians.means - c) / k[:, None]  # R^T (x - c) / k, [N, 3]
    q_conj = q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype, device=q.device)  # inverse of unit q
    quats = gaussians.quats / gaussians.quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    local_rot = quaternion_multiply(q_conj, quats)  # [N, 4]
    local_log_scale = torch.log(gaussians.scales / k[:, None])  # [N, 3]
    eps = torch.finfo(gaussians.opacities.dtype).eps
    opacity_logit = torch.logit(gaussians.opacities.clamp(eps, 1.0 - eps))  # [N]
    return BoundGaussians(
        binding=binding.to(device=vertices.device, dtype=torch.long),
        local_xyz=local_xyz,
        local_rot=local_rot,
        local_log_scale=local_log_scale,
        opacity_logit=opacity_logit,
        sh=gaussians.sh,
    )
