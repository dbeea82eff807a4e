"""Adaptive density control for FLAME-bound Gaussians (3DGS-style clone / split / prune).

Works in the triangle frames: a child always keeps its parent's `binding`, so
the head stays animatable. Split children are drawn from the parent's own
Gaussian (in local units: offset = rot(local_rot) @ (exp(local_log_scale) * eps)),
which is the same distribution as sampling in world space, because world
position = c + k R local_xyz, world rotation = R * local_rot and world
scale = k * exp(local_log_scale).

The result says where every new row came from (`source`) and whether it is a
new Gaussian (`fresh`), so the optimiser can carry its moments over.

The fit loop drives densification through a strategy (the shape of gsplat's
`DefaultStrategy`): `initialize_state` once, `step_pre_backward` on every view's
Gaussians before they are rendered (attaches a gradient probe to the means),
`step_post_backward` after the optimiser step (accumulates the view-space
gradients and clones / splits / prunes on schedule). `NoDensify` does nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from avatarcli.gaussians.model import BoundGaussians, Gaussians
from avatarcli.geometry import quaternion_to_matrix
from avatarcli.render.camera import Camera


@dataclass
class DensifyResult:
    bound: BoundGaussians  # the new set, N' rows
    source: Tensor  # [N'] long: the row of the old set each new row came from
    fresh: Tensor  # [N'] bool: a new Gaussian (clone or split child) -> fresh optimiser state
    n_cloned: int
    n_split: int
    n_pruned: int


SPLIT_SHRINK = 1.6  # a split child's scale = parent's / 1.6 (the 3DGS value)


def densify_and_prune(
    bound: BoundGaussians,
    grad: Tensor,  # [N] mean view-space positional gradient (NDC units, as 3DGS)
    world_max_scale: Tensor,  # [N] largest world-space axis of each Gaussian (metres)
    *,
    grad_threshold: float,
    split_scale: float,  # clone when world_max_scale <= this, split when above (metres)
    prune_opacity: float,
    prune_scale: float | None,  # prune Gaussians larger than this (metres); None: never
    max_gaussians: int,
    generator: torch.Generator | None = None,
) -> DensifyResult:
    """Prune weak/huge Gaussians, then clone small / split large ones with big gradients.

    Never exceeds `max_gaussians` through growth (candidates with the largest
    gradients win); pruning never removes every Gaussian."""
    b = bound.detach()
    n = b.n
    dev = b.local_xyz.device
    idx = torch.arange(n, device=dev)

    prune = torch.sigmoid(b.opacity_logit) < prune_opacity
    if prune_scale is not None:
        prune |= world_max_scale > prune_scale
    if bool(prune.all()):
        prune = torch.zeros_like(prune)
    keep = ~prune

    cand = keep & (grad >= grad_threshold)
    room = max(0, max_gaussians - int(keep.sum()))
    cand_idx = idx[cand]
    if cand_idx.numel() > room:  # every candidate adds one row (clone: +1, split: 2 children - parent)
        order = torch.argsort(grad[cand_idx], descending=True)
        cand_idx = cand_idx[order[:room]]
    chosen = torch.zeros(n, dtype=torch.bool, device=dev)
    chosen[cand_idx] = True
    split = chosen & (world_max_scale > split_scale)
    clone = chosen & ~split

    stay_idx = idx[keep & ~split]  # parents that stay as they are (incl. those being cloned)
    clone_idx = idx[clone]
    split_idx = idx[split]

    parts = [b.subset(stay_idx), b.subset(clone_idx)]
    sources = [stay_idx, clone_idx]
    fresh = [torch.zeros_like(stay_idx, dtype=torch.bool), torch.ones_like(clone_idx, dtype=torch.bool)]
    if split_idx.numel():
        parent = b.subset(split_idx)
        rot = quaternion_to_matrix(parent.local_rot)  # [S, 3, 3]
        children = []
        for _ in range(2):
            eps = torch.randn(split_idx.numel(), 3, generator=generator, device="cpu").to(dev)  # [S, 3]
            offset = (rot @ (parent.local_log_scale.exp() * eps)[..., None])[..., 0]  # [S, 3]
            children.append(
                BoundGaussians(
                    binding=parent.binding.clone(),
                    local_xyz=parent.local_xyz + offset,
                    local_rot=parent.local_rot.clone(),
                    local_log_scale=parent.local_log_scale - math.log(SPLIT_SHRINK),
                    opacity_logit=parent.opacity_logit.clone(),
                    sh=parent.sh.clone(),
                )
            )
        parts += children
        sources += [split_idx, split_idx]
        fresh += [torch.ones_like(split_idx, dtype=torch.bool)] * 2

    out = parts[0]
    for p in parts[1:]:
        out = out.cat(p)
    return DensifyResult(
        bound=out,
        source=torch.cat(sources),
        fresh=torch.cat(fresh),
        n_cloned=int(clone_idx.numel()),
        n_split=int(split_idx.numel()),
        n_pruned=int(prune.sum()),
    )


# ----------------------------------------------------------------------------- strategies


class Refinable(Protocol):
    """What a strategy needs of the optimised parameters (avatarcli.gaussians.fit's container)."""

    def bound(self) -> BoundGaussians: ...

    def replace(self, new: BoundGaussians, source: Tensor, fresh: Tensor) -> None: ...


@dataclass
class DensifyState:
    radius: float  # head radius (metres): split/prune scales are fractions of it
    grad_sum: Tensor  # [N] summed view-space positional gradient
    grad_count: Tensor  # [N] views in which each Gaussian got a gradient
    probes: list[tuple[Camera, Tensor]] = field(default_factory=list)  # this step's (camera, means probe [N, 3])
    n_cloned: int = 0
    n_split: int = 0
    n_pruned: int = 0


def view_space_grad(grad_world: Tensor, means: Tensor, cam: Camera) -> Tensor:
    """World gradient of the means [N, 3] -> |d loss / d (NDC position)| [N] for camera `cam`."""
    R, t = cam.viewmat[:3, :3], cam.viewmat[:3, 3]
    g_cam = grad_world @ R.T  # [N, 3]
    z = (means @ R.T + t)[:, 2].clamp_min(1e-6)  # [N]
    gx = g_cam[:, 0] * z / cam.K[0, 0] * (0.5 * cam.width)
    gy = g_cam[:, 1] * z / cam.K[1, 1] * (0.5 * cam.height)
    return torch.sqrt(gx * gx + gy * gy)


@dataclass
class DefaultStrategy:
    """3DGS adaptive density control on a schedule: every `refine_every` steps from `refine_start`
    to `refine_stop` (inclusive), Gaussians whose mean view-space gradient is at least
    `grad_threshold` are cloned (small) or split (large); weak or huge ones are pruned."""

    grad_threshold: float = 2e-4  # mean view-space positional gradient (NDC units, 3DGS)
    split_scale: float = 0.01  # fraction of the head radius: clone below, split above
    prune_opacity: float = 0.01
    prune_scale: float = 0.2  # fraction of the head radius; larger Gaussians are pruned
    max_gaussians: int = 30_000
    refine_start: int = 50
    refine_stop: int = 180
    refine_every: int = 50

    def initialize_state(self, n: int, radius: float, device: torch.device | str) -> DensifyState:
        grad_sum = torch.zeros(n, device=device)
        return DensifyState(radius=radius, grad_sum=grad_sum, grad_count=torch.zeros_like(grad_sum))

    def step_pre_backward(self, state: DensifyState, gaussians: Gaussians, camera: Camera) -> Gaussians:
        """The Gaussians to render for `camera`: means + a zero probe whose gradient is this view's."""
        probe = torch.zeros_like(gaussians.means, requires_grad=True)  # [N, 3]
        state.probes.append((camera, probe))
        g = gaussians
        return Gaussians(means=g.means + probe, quats=g.quats, scales=g.scales, opacities=g.opacities, sh=g.sh)

    def step_post_backward(
        self, params: Refinable, state: DensifyState, step: int, gaussians: Gaussians, generator: torch.Generator
    ) -> None:
        """Accumulate this step's view-space gradients; densify and prune when the schedule says so."""
        with torch.no_grad():
            means = gaussians.means.detach()
            for cam, probe in state.probes:
                assert probe.grad is not None
                vg = view_space_grad(probe.grad, means, cam)
                state.grad_sum += vg
                state.grad_count += (vg > 0).float()
            state.probes.clear()
            if (
                self.refine_every > 0
                and self.refine_start <= step <= self.refine_stop
                and step % self.refine_every == 0
            ):
                self._refine(params, state, gaussians, generator)

    def _refine(self, params: Refinable, state: DensifyState, gaussians: Gaussians, generator: torch.Generator) -> None:
        res = densify_and_prune(
            params.bound(),
            state.grad_sum / state.grad_count.clamp_min(1),
            gaussians.scales.detach().max(dim=-1).values,
            grad_threshold=self.grad_threshold,
            split_scale=self.split_scale * state.radius,
            prune_opacity=self.prune_opacity,
            prune_scale=self.prune_scale * state.radius,
            max_gaussians=self.max_gaussians,
            generator=generator,
        )
        params.replace(res.bound, res.source, res.fresh)
        state.n_cloned += res.n_cloned
        state.n_split += res.n_split
        state.n_pruned += res.n_pruned
        state.grad_sum = torch.zeros(res.bound.n, device=state.grad_sum.device)
        state.grad_count = torch.zeros_like(state.grad_sum)


@dataclass
class NoDensify:
    """A fixed set of Gaussians (the diffusion rounds): no probes, no densification."""

    def initialize_state(self, n: int, radius: float, device: torch.device | str) -> DensifyState:
        grad_sum = torch.zeros(0, device=device)
        return DensifyState(radius=radius, grad_sum=grad_sum, grad_count=grad_sum)

    def step_pre_backward(self, state: DensifyState, gaussians: Gaussians, camera: Camera) -> Gaussians:
        return gaussians

    def step_post_backward(
        self, params: Refinable, state: DensifyState, step: int, gaussians: Gaussians, generator: torch.Generator
    ) -> None:
        return None


Strategy = DefaultStrategy | NoDensify


__all__ = [
    "DensifyResult",
    "densify_and_prune",
    "DefaultStrategy",
    "NoDensify",
    "DensifyState",
    "Strategy",
    "view_space_grad",
]
