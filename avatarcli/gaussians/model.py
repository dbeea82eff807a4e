"""Gaussian containers.

`Gaussians` is a plain world-space cloud (what renderers take and any 3DGS
PLY holds). `BoundGaussians` lives in FLAME triangle frames (docs/architecture.md):
    world position = c + k * R @ local_xyz
    world rotation = R * local_rot          (quaternion product, wxyz)
    world scale    = k * exp(local_log_scale)
with c, R, k the centroid, orthonormal frame and size of triangle `binding`
(avatarcli.geometry.triangle_frames). Re-posing = one gather per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from avatarcli.render.sh import SH_C0, sh_coeffs  # the SH convention lives with the renderer

__all__ = [
    "SH_C0",
    "sh_coeffs",
    "sh_degree_of",
    "rgb_to_sh0",
    "sh0_to_rgb",
    "Gaussians",
    "BoundGaussians",
]


def sh_degree_of(n_coeffs: int) -> int:
    d = int(round(n_coeffs**0.5)) - 1
    if sh_coeffs(d) != n_coeffs:
        raise ValueError(f"{n_coeffs} is not a spherical-harmonics coefficient count")
    return d


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    return sh0 * SH_C0 + 0.5


@dataclass
class Gaussians:
    """World-space Gaussians (activated values, ready to render)."""

    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4] wxyz, unit
    scales: Tensor  # [N, 3] linear (not log)
    opacities: Tensor  # [N] in (0, 1)
    sh: Tensor  # [N, K, 3], K = (degree+1)^2; sh[:, 0] is the DC term

    @property
    def n(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return sh_degree_of(self.sh.shape[1])

    def to(self, device) -> "Gaussians":
        return Gaussians(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def detach(self) -> "Gaussians":
        return Gaussians(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def subset(self, idx: Tensor) -> "Gaussians":
        return Gaussians(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


@dataclass
class BoundGaussians:
    """Gaussians in FLAME triangle frames (raw, optimisable parameters)."""

    binding: Tensor  # [N] long, FLAME triangle index
    local_xyz: Tensor  # [N, 3] offset in the triangle frame, in units of the triangle size
    local_rot: Tensor  # [N, 4] wxyz (need not be unit; normalised when used)
    local_log_scale: Tensor  # [N, 3] log of scale in units of the triangle size
    opacity_logit: Tensor  # [N]
    sh: Tensor  # [N, K, 3]

    @property
    def n(self) -> int:
        return self.binding.shape[0]

    @property
    def sh_degree(self) -> int:
        return sh_degree_of(self.sh.shape[1])

    def to(self, device) -> "BoundGaussians":
        return BoundGaussians(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def detach(self) -> "BoundGaussians":
        return BoundGaussians(**{f.name: getattr(self, f.name).detach().clone() for f in fields(self)})

    def subset(self, idx: Tensor) -> "BoundGaussians":
        return BoundGaussians(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def cat(self, other: "BoundGaussians") -> "BoundGaussians":
        return BoundGaussians(
            **{f.name: torch.cat([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self)}
        )

    replace = replace
