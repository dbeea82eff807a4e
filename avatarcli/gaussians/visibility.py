"""How much of each Gaussian the target cameras see, and the gate that limits its updates by it.

A Gaussian i seen by a camera composites, at every pixel p, the weight
w_i(p) = alpha_i(p) T_i(p) (its alpha times the transmittance in front of it). Its
*contribution* is C_i = sum_p w_i(p); its *footprint* is what the same sum would be with
nothing in front, A_i = sum_p alpha_i(p) ~ o_i 2 pi sqrt(det Sigma2d_i) (the integral of
o exp(-d^T Sigma2d^-1 d / 2) over the image plane, with the renderers' eps2d blur in Sigma2d).
The visibility v_i = C_i / A_i in [0, 1] is the alpha-weighted mean transmittance in front of
the Gaussian: ~1 on the front surface, ~0 behind it, on the far side or off-screen.

C_i is read off the renderer itself, whichever backend: with every colour at 0.5 (SH DC 0),
d(sum of the rendered rgb) / d(SH DC_i) = 3 SH_C0 C_i.

The fit (avatarcli.gaussians.fit) scales each Gaussian's Adam update by
gate(v) = clamp((v - floor) / (full - floor), 0, 1) (max over the fit's target cameras), so
what no target sees keeps its init (or what a previous fit gave it), and Adam, which turns the
tiny gradients that reach hidden Gaussians through semi-transparent front layers into
full-size steps, cannot paint the unseen sides. Scaling the gradients instead would do
nothing: Adam divides each parameter's gradient by its own running magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from avatarcli.gaussians.model import SH_C0, Gaussians
from avatarcli.render.api import RenderOutput
from avatarcli.render.camera import Camera
from avatarcli.render.torch_raster import project

RenderFn = Callable[..., RenderOutput]


@dataclass
class VisibilityConfig:
    enabled: bool = True
    every: int = 50  # steps between refreshes (also refreshed whenever densification changes the set)
    # On a fresh init head (opacity 0.9, neighbours overlapping) the front surface has v ~ 0.05-0.3
    # (each Gaussian is partly behind its coplanar neighbours), the far side v ~ 0.001.
    floor: float = 0.005  # visibility at or below this: the Gaussian does not move
    full: float = 0.03  # visibility at or above this: full Adam steps

    def validate(self) -> None:
        if not 0.0 <= self.floor < self.full <= 1.0:
            raise ValueError(f"visibility gate needs 0 <= floor < full <= 1, got {self.floor}, {self.full}")


@torch.no_grad()
def footprint(g: Gaussians, cam: Camera) -> Tensor:
    """Integral of each Gaussian's alpha over the image plane (pixels) -> [N] (0 where culled)."""
    c = cam.to(g.means.device, g.means.dtype)
    p = project(g.means, g.quats, g.scales, g.opacities, c.viewmat, c.K, c.width, c.height)
    det = torch.linalg.det(p.cov2d).clamp_min(0)  # [M]
    out = torch.zeros(g.n, dtype=g.means.dtype, device=g.means.device)
    out[p.ids] = p.opacities.clamp(max=0.999) * 2 * math.pi * det.sqrt()
    return out


def contribution(g: Gaussians, cam: Camera, render: RenderFn, backend: str = "auto") -> Tensor:
    """sum over pixels of alpha_i T_i for each Gaussian seen by `cam` -> [N] (pixels)."""
    probe = torch.zeros(g.n, 1, 3, dtype=g.means.dtype, device=g.means.device, requires_grad=True)
    flat = Gaussians(g.means.detach(), g.quats.detach(), g.scales.detach(), g.opacities.detach(), probe)
    with torch.enable_grad():
        out = render(flat, cam, None, backend=backend, sh_degree=0)
        (grad,) = torch.autograd.grad(out.rgb.sum(), probe)
    return grad[:, 0].sum(-1) / (3 * SH_C0)


def visibility(g: Gaussians, cams: Sequence[Camera], render: RenderFn, backend: str = "auto") -> Tensor:
    """Max over `cams` of contribution / footprint, in [0, 1] -> [N]."""
    vis = torch.zeros(g.n, dtype=g.means.dtype, device=g.means.device)
    for cam in cams:
        a = footprint(g, cam)
        c = contribution(g, cam, render, backend)
        v = torch.where(a > 1e-6, c / a.clamp_min(1e-6), torch.zeros_like(a)).clamp(0, 1)
        vis = torch.maximum(vis, v)
    return vis


def update_gate(vis: Tensor, cfg: VisibilityConfig) -> Tensor:
    """Visibility [N] -> fraction of its Adam update a Gaussian takes [N] (0 unseen .. 1 seen)."""
    return ((vis - cfg.floor) / (cfg.full - cfg.floor)).clamp(0, 1)


__all__ = ["VisibilityConfig", "footprint", "contribution", "visibility", "update_gate"]
