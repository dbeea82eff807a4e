"""One render() over both backends: gsplat (CUDA) and the pure-torch rasterizer.

Both compute the same image (gsplat's "classic" mode, eps2d 0.3, near 0.01,
alpha clamp 0.999, 1/255 threshold, T cut-off 1e-4, SH colours clamp_min(+0.5, 0)).
depth is gsplat's "ED": the alpha-weighted camera z divided by alpha (0 where
alpha is 0). Camera K uses integer pixel centres (see avatarcli.render.camera).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from avatarcli.errors import EnvironmentProblem, InputError
from avatarcli.render.camera import Camera
from avatarcli.render.gsplat_backend import render_gsplat
from avatarcli.render.splats import Splats
from avatarcli.render.torch_raster import render_torch

BACKENDS = ("auto", "torch", "gsplat")


@dataclass
class RenderOutput:
    rgb: Tensor  # [H, W, 3]
    alpha: Tensor  # [H, W, 1]
    depth: Tensor  # [H, W, 1] expected depth (camera z), normalised by alpha


def check_backend_name(backend: str) -> str:
    """`backend` names one of BACKENDS (what the machine allows is check_backend's part)."""
    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}", setting="backend")
    return backend


def check_backend(backend: str, device: torch.device) -> str:
    """The one backend check: auto -> gsplat on a CUDA device, torch otherwise.

    An unknown name is an InputError (check_backend_name); gsplat on a machine without CUDA an
    EnvironmentProblem (exit 3); gsplat for a CPU device an InputError."""
    check_backend_name(backend)
    if backend == "gsplat":
        if not torch.cuda.is_available():
            raise EnvironmentProblem("the gsplat backend needs a CUDA GPU (none found): use backend 'torch'")
        if device.type != "cuda":
            raise InputError("the gsplat backend renders on the GPU: use a CUDA device (or auto), or backend 'torch'")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" else "torch"
    return backend


def resolve_backend(backend: str, device: torch.device) -> str:
    """auto -> gsplat for CUDA tensors, torch otherwise (check_backend for the tensors' device)."""
    return check_backend(backend, device)


def _check(gaussians: Splats, sh_degree: int | None) -> int:
    deg = gaussians.sh_degree if sh_degree is None else sh_degree
    if not 0 <= deg <= min(3, gaussians.sh_degree):
        raise ValueError(f"sh_degree {deg} is not available (the Gaussians have degree {gaussians.sh_degree}, max 3)")
    return deg


def render(
    gaussians: Splats,
    camera: Camera,
    background: Tensor | None = None,  # [3]
    backend: str = "auto",
    sh_degree: int | None = None,
    stats: dict | None = None,
) -> RenderOutput:
    """Render one view; differentiable w.r.t. every Gaussian parameter.

    background None = black (no blending term). `stats` (torch backend) collects
    fragment counts."""
    deg = _check(gaussians, sh_degree)
    name = resolve_backend(backend, gaussians.means.device)
    if name == "gsplat":
        rgb, alpha, depth = render_gsplat(gaussians, [camera], background, deg)
        return RenderOutput(rgb[0], alpha[0], depth[0])

    cam = camera.to(gaussians.means.device, gaussians.means.dtype)
    rgb, alpha, depth = render_torch(
        gaussians.means,
        gaussians.quats,
        gaussians.scales,
        gaussians.opacities,
        gaussians.sh,
        cam.viewmat,
        cam.K,
        cam.width,
        cam.height,
        background,
        deg,
        stats=stats,
    )
    return RenderOutput(rgb, alpha, depth)


def render_views(
    gaussians: Splats,
    cameras: Sequence[Camera],
    background: Tensor | None = None,
    backend: str = "auto",
    sh_degree: int | None = None,
) -> list[RenderOutput]:
    """Several views of one scene. gsplat renders same-sized cameras in one batched call."""
    deg = _check(gaussians, sh_degree)
    name = resolve_backend(backend, gaussians.means.device)
    sizes = {(c.width, c.height) for c in cameras}
    if name == "gsplat" and len(sizes) == 1 and cameras:
        rgb, alpha, depth = render_gsplat(gaussians, list(cameras), background, deg)
        return [RenderOutput(rgb[i], alpha[i], depth[i]) for i in range(len(cameras))]
    return [render(gaussians, c, background, name, deg) for c in cameras]


def to_uint8(rgb: Tensor) -> np.ndarray:
    """[H, W, 3] float in [0, 1] -> numpy uint8 [H, W, 3] (clamped, rounded)."""
    return (rgb.detach().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
