"""gsplat (CUDA) backend: the same image as avatarcli.render.torch_raster, fast.

Calls gsplat.rasterization in "classic" mode with render_mode "RGB+ED"
(expected depth, normalised by alpha). Our K has pixel centres at integer
coordinates, gsplat's at +0.5, so cx and cy are shifted by +0.5 here.
gsplat is imported lazily: it is only needed (and only works) with CUDA.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from avatarcli.errors import EnvironmentProblem
from avatarcli.render.camera import Camera
from avatarcli.render.splats import Splats


def gsplat_intrinsics(K: Tensor) -> Tensor:
    """Our K (integer pixel centres) -> gsplat's K (centres at +0.5). [..., 3, 3]."""
    Kg = K.clone()
    Kg[..., 0, 2] += 0.5
    Kg[..., 1, 2] += 0.5
    return Kg


def _import_gsplat():
    if not torch.cuda.is_available():
        raise EnvironmentProblem("the gsplat backend needs a CUDA GPU (none found): use backend 'torch'")
    try:
        import gsplat
    except Exception as e:  # noqa: BLE001 - an install problem, shown as one line
        raise EnvironmentProblem(f"gsplat cannot be imported ({type(e).__name__}: {e})") from None
    return gsplat


def render_gsplat(
    gaussians: Splats,
    cameras: Sequence[Camera],  # C cameras of one size
    background: Tensor | None,  # [3]
    sh_degree: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """-> rgb [C, H, W, 3], alpha [C, H, W, 1], depth [C, H, W, 1]."""
    gsplat = _import_gsplat()
    dev = gaussians.means.device
    if dev.type != "cuda":
        raise EnvironmentProblem("the gsplat backend needs the Gaussians on a CUDA device")
    width, height = cameras[0].width, cameras[0].height
    if any((c.width, c.height) != (width, height) for c in cameras):
        raise ValueError("render_gsplat: all cameras must have the same size")
    f32 = torch.float32
    viewmats = torch.stack([c.viewmat.to(dev, f32) for c in cameras])  # [C, 4, 4]
    Ks = gsplat_intrinsics(torch.stack([c.K.to(dev, f32) for c in cameras]))  # [C, 3, 3]
    C = len(cameras)
    bg = None if background is None else background.to(dev, f32).reshape(1, 3).expand(C, 3).contiguous()
    n_sh = (sh_degree + 1) ** 2
    colors, alphas, _ = gsplat.rasterization(
        means=gaussians.means.float().contiguous(),
        quats=gaussians.quats.float().contiguous(),
        scales=gaussians.scales.float().contiguous(),
        opacities=gaussians.opacities.float().contiguous(),
        colors=gaussians.sh[:, :n_sh].float().contiguous(),  # [N, K, 3]
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
        near_plane=0.01,
        eps2d=0.3,
        sh_degree=sh_degree,
        packed=False,
        backgrounds=bg,
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )  # [C, H, W, 4], [C, H, W, 1]
    return colors[..., :3], alphas, colors[..., 3:4]
