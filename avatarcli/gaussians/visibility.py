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

Colour is held further by how squarely the camera sees the surface: with c = n . d (n the
unit normal of the Gaussian's bound triangle, d the unit vector from the Gaussian to the
camera; FLAME's triangles wind outwards),
    colour gate = max over cameras of gate(v) * clamp((c - facing_floor) / (facing_full - facing_floor), 0, 1)
(0 at and below n . d = 0.2, ~78 degrees, rising linearly to 1 at 0.9, ~26 degrees; the init colours
from the photo from 0.35; 0 for a triangle facing away, even where the transmittance lets some of
it through). A Gaussian seen at grazing incidence covers a sliver of a pixel in the photo but a
whole patch from the side; Adam gives it the same full-size steps as a Gaussian seen face-on, and
the side views fill with saturated streaks. The fit therefore adds a prior on what the photo does not see squarely,
    1 / P * sum_i S_i (k_i |rgb_i - rgb_start_i|^2 + [c_i < geometry_facing] rim_prior mu G_i),
    k_i = rim_prior where c_i < rim_facing, else colour_prior (1 - colour gate_i),
    G_i = (o_i - o_start_i)^2 + |log s_i - log s_start_i|^2 + |x_i - x_start_i|^2 + sin^2(turn_i / 2)
(c_i: the largest n . d over the target cameras; P: target 0's sum of L1 pixel weights; S_i the
Gaussian's face-on footprint in target 0's camera, o 2 pi s1 s2 fx fy / |d|^2: the pixels it covers
in any view that sees it squarely from that distance; x in triangle units, turn the rotation angle
from the start; mu = geometry_prior). Unlike a gate on Adam's step it sets where a value settles,
not how fast: the L1 term pulls a colour channel with (1 - lambda_dssim) C_i / (3 P) (C_i: its
contribution in pixels), so the colour settles (1 - lambda_dssim) C_i / (6 k_i S_i) from its start:
C_i / S_i is the share of its own surface the photo shows (transmittance and foreshortening
included), the same at every resolution and Gaussian count.
Bands of n . d, measured on the synthetic heads (bench/bench_unseen.py at 96 px,
tests/test_denoise_stage.py's 64 px photo) by putting one band's fitted values back to their start
and rendering again, and on obama_turned (bench/bench_real.py) by logging each band's moves:
  * below rim_facing (0.2: the rim, and the far side seen through the head): the photo's pull
    there only adds speckle; putting these colours back even raised the input view's PSNR
    (+0.15 to +0.37 dB per band at 64 px, +1.1 dB for all of them at 96 px). Held hard
    (rim_prior 20). On a turned head they also turned 30-40 degrees and opened gaps onto the face
    behind: below geometry_facing (0.1) their opacity, scale, position and rotation are held too.
  * rim_facing .. facing_full (0.2-0.9): held by colour_prior 0.7 x (1 - colour gate), from full at
    0.2 to none at 0.9. Their shape is free: holding it cost the 64 px input view 1-3 dB.
    A narrower ramp (0.25-0.45, colour_prior 1, earlier) left 0.45-0.7 free: on the astronaut
    portrait (bench/bench_real.py, defaults) that band alone made most of the fitted head's excess
    colour noise at yaw 90 (putting its colours back: 2.1x -> 1.47x the init's; with the earlier init
    1.84x -> 1.31x, the colours there had moved 0.09 rgb (median), more than the face-on ones, 0.07;
    their shape: no change): the colours of cheeks and fringe that the photo sees at 45-63 degrees
    took up pixel-scale detail, which a side view shows ~1.5-2x magnified. With this ramp the
    astronaut is at 1.46x and its photo view 0.35 dB better; colour_prior 1 gave 1.39x but the 64 px
    input view 29.98 dB, 0.5 gave 30.54 dB but 1.53x. The synthetic head's excess at yaw 90 is in
    0.2-0.45 (colour and shape; putting those colours back: 1.35x -> 1.12x): there this ramp measures
    1.47x against the earlier 1.35x (such figures move by ~0.1x with any setting; the 64 px input
    view 30.42 -> 30.30 dB).
  * above facing_full: free.
A Gaussian that alone makes up whole pixels of the photo's silhouette still matches them; every
parameter also has the visibility gate on Adam's step.
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
    # colour updates also ramp with the facing n . d of the bound triangle (d: unit vector to the camera)
    facing_floor: float = 0.2  # at or below this (~78 degrees, = rim_facing): the colour gate is 0
    facing_full: float = 0.9  # at or above this (~26 degrees): colour gate 1 (no colour prior)
    # the unseen-side prior (module docstring), per pixel of each Gaussian's face-on footprint S_i in target 0
    colour_prior: float = 0.7  # on colour, times (1 - colour gate), where some target sees n . d >= rim_facing
    rim_prior: float = 20.0  # on colour where every target sees n . d < rim_facing (the rim, the far side)
    rim_facing: float = 0.2  # ~78 degrees
    geometry_prior: float = (
        0.3  # mu: opacity, log-scale, position, rotation (x rim_prior) where n . d < geometry_facing
    )
    geometry_facing: float = 0.1  # ~84 degrees, and everything facing away

    def validate(self) -> None:
        if not 0.0 <= self.floor < self.full <= 1.0:
            raise ValueError(f"visibility gate needs 0 <= floor < full <= 1, got {self.floor}, {self.full}")
        if not -1.0 <= self.facing_floor < self.facing_full <= 1.0:
            raise ValueError(
                f"facing gate needs -1 <= facing_floor < facing_full <= 1, got {self.facing_floor}, {self.facing_full}"
            )
        if min(self.colour_prior, self.rim_prior, self.geometry_prior) < 0:
            raise ValueError("the unseen-side prior's weights must be >= 0")


@dataclass
class UpdateGate:
    """Per Gaussian: the fraction of its Adam update it takes (geometry, 0 frozen .. 1 free; every
    parameter) and how squarely a target sees it (colour, <= geometry; 1 - colour weighs the prior)."""

    geometry: Tensor  # [N]
    colour: Tensor  # [N]
    surface: Tensor | None = None  # [N] face-on footprint in the first camera (pixels; the prior's weight)
    facing: Tensor | None = None  # [N] the largest n . d over the cameras (the prior's bands)

    @property
    def n_frozen(self) -> int:
        """Gaussians that nothing moves (no target sees them)."""
        return int((self.geometry <= 0).sum())


@torch.no_grad()
def footprint(g: Gaussians, cam: Camera) -> Tensor:
    """Integral of each Gaussian's alpha over the image plane (pixels) -> [N] (0 where culled)."""
    c = cam.to(g.means.device, g.means.dtype)
    p = project(g.means, g.quats, g.scales, g.opacities, c.viewmat, c.K, c.width, c.height)
    det = torch.linalg.det(p.cov2d).clamp_min(0)  # [M]
    out = torch.zeros(g.n, dtype=g.means.dtype, device=g.means.device)
    out[p.ids] = p.opacities.clamp(max=0.999) * 2 * math.pi * det.sqrt()
    return out


@torch.no_grad()
def face_on_footprint(g: Gaussians, cam: Camera) -> Tensor:
    """Each Gaussian's alpha mass (pixels) if it faced `cam` squarely at its distance -> [N]:
    o 2 pi s1 s2 fx fy / |d|^2 (s1, s2 its two largest scales, d the vector to the camera centre)."""
    c = cam.to(g.means.device, g.means.dtype)
    s = g.scales.sort(dim=-1, descending=True).values  # [N, 3]
    d2 = (c.position.to(g.means) - g.means).pow(2).sum(-1).clamp_min(1e-12)  # [N]
    o = g.opacities.reshape(-1).clamp(max=0.999)
    return o * 2 * math.pi * s[:, 0] * s[:, 1] * c.K[0, 0] * c.K[1, 1] / d2


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


def facing(means: Tensor, normals: Tensor, cam: Camera) -> Tensor:
    """n . d for points `means` [N, 3] with normals [N, 3], d the unit vector to the camera -> [N] in [-1, 1]."""
    d = cam.position.to(means) - means  # [N, 3]
    cos = (normals * d).sum(-1) / (normals.norm(dim=-1) * d.norm(dim=-1)).clamp_min(1e-12)
    return cos.clamp(-1, 1)


def facing_gate(cos: Tensor, cfg: VisibilityConfig) -> Tensor:
    """Facing [N] -> fraction of its colour update a Gaussian takes from that camera [N]."""
    return ((cos - cfg.facing_floor) / (cfg.facing_full - cfg.facing_floor)).clamp(0, 1)


def gates(
    g: Gaussians,
    normals: Tensor,  # [N, 3] the bound triangles' normals
    cams: Sequence[Camera],
    render: RenderFn,
    cfg: VisibilityConfig,
    backend: str = "auto",
) -> UpdateGate:
    """The fit's update gates from `cams` (module docstring): geometry = max_c gate(v_c),
    colour = max_c gate(v_c) * facing_gate(n . d_c), surface = the face-on footprint in cams[0],
    facing = max_c n . d_c."""
    geo = torch.zeros(g.n, dtype=g.means.dtype, device=g.means.device)
    col = torch.zeros_like(geo)
    best = torch.full_like(geo, -1.0)
    for cam in cams:
        a = update_gate(visibility(g, [cam], render, backend), cfg)
        cos = facing(g.means, normals, cam)
        geo = torch.maximum(geo, a)
        col = torch.maximum(col, a * facing_gate(cos, cfg))
        best = torch.maximum(best, cos)
    surface = face_on_footprint(g, cams[0]) if cams else torch.zeros_like(geo)
    return UpdateGate(geometry=geo, colour=col, surface=surface, facing=best)


__all__ = [
    "VisibilityConfig",
    "UpdateGate",
    "footprint",
    "face_on_footprint",
    "contribution",
    "visibility",
    "update_gate",
    "facing",
    "facing_gate",
    "gates",
]
