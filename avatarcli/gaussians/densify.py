"""Adaptive density control for FLAME-bound Gaussians (3DGS-style clone / split / prune).

Works in the triangle frames: a child always keeps its parent's `binding`, so
the head stays animatable. Split children are drawn from the parent's own
Gaussian (in local units: offset = rot(local_rot) @ (exp(local_log_scale) * eps)),
which is the same distribution as sampling in world space, because world
position = c + k R local_xyz, world rotation = R * local_rot and world
scale = k * exp(local_log_scale).

The result says where every new row came from (`source`) and whether it is a
new Gaussian (`fresh`), so the optimiser can carry its moments over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from avatarcli.gaussians.model import BoundGaussians
from avatarcli.geometry import quaternion_to_matrix


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
