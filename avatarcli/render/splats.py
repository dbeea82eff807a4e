"""What the renderers read: a world-space Gaussian cloud (avatarcli.gaussians.model.Gaussians is one).

A Protocol, so that rendering sits below the Gaussian package (which fits through it) and
never imports it back."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class Splats(Protocol):
    """Activated world-space Gaussians, ready to render."""

    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4] wxyz, unit
    scales: Tensor  # [N, 3] linear (not log)
    opacities: Tensor  # [N] in (0, 1)
    sh: Tensor  # [N, K, 3], K = (degree+1)^2

    @property
    def sh_degree(self) -> int: ...
