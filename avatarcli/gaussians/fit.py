"""Photometric fit of FLAME-bound Gaussians to target views ("fit the input view").

Optimises the bound parameters (local_xyz, local_rot, local_log_scale,
opacity_logit, sh) on a fixed canonical mesh with Adam (one learning rate per
group), against a list of `ViewTarget`s. Target 0 is the input photo (the hard
constraint, weight 1); the diffusion rounds add softer novel views (weight < 1).

Per view and step:
    target' = mask * image + (1 - mask) * background          (the head over the render background)
    w       = mask + outside_weight * (1 - mask)               (pixel weights)
    L_view  = weight * [(1 - l) L1_w + l (1 - SSIM_w)] + weight * alpha_out * mean(alpha * (1 - mask))
Regularisers keep each Gaussian near its triangle (tangent offset beyond
`offset_cap` and normal offset beyond `normal_cap` triangle sizes cost a
quadratic penalty) and its local scale below `log_scale_cap`.
Target 0 is in every step; the other targets are cycled through,
`views_per_step - 1` at a time. Densify/prune follows 3DGS (avatarcli.gaussians.densify).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from avatarcli.gaussians.binding import world_gaussians
from avatarcli.gaussians.densify import densify_and_prune
from avatarcli.gaussians.losses import dssim_l1, masked_ssim, psnr
from avatarcli.gaussians.model import BoundGaussians, sh_coeffs
from avatarcli.render.camera import Camera

RenderFn = Callable[..., object]  # render(gaussians, camera, background, backend=..., sh_degree=...) -> RenderOutput


@dataclass
class ViewTarget:
    camera: Camera  # camera for the CANONICAL head
    image: Tensor  # [H, W, 3] float in [0, 1]
    mask: Tensor  # [H, W, 1] float in [0, 1]: where the loss counts (head region)
    weight: float = 1.0  # the input view is 1.0 (hard constraint); soft novel views < 1


@dataclass
class FitConfig:
    steps: int = 300
    # Adam learning rates; positions and scales are in triangle-size units (binding frames)
    lr_xyz: float = 4e-3
    lr_xyz_final: float = 4e-4  # exponential decay of the position lr to this value
    lr_rot: float = 5e-3
    lr_scale: float = 1e-2
    lr_opacity: float = 5e-2
    lr_sh0: float = 1e-2
    lr_sh_rest: float = 5e-4
    # photometric loss
    lambda_dssim: float = 0.2
    outside_weight: float = 0.3  # weight of pixels outside the mask (target there = background)
    lambda_alpha_out: float = 0.1  # penalty on rendered alpha outside the mask
    # regularisers (binding frames: 1 = one triangle size)
    reg_offset: float = 1.0
    offset_cap: float = 1.0  # tangent offset allowed for free
    normal_cap: float = 0.5  # offset along the normal allowed for free
    reg_scale: float = 1.0
    log_scale_cap: float = 0.0  # local scale above exp(cap) triangle sizes costs
    # colour
    sh_degree: int = 1
    sh_increase_every: int | None = None  # steps per extra SH band; None: steps // (sh_degree + 1)
    # adaptive density control
    densify_from: int = 50
    densify_until: float = 0.6  # fraction of steps
    densify_every: int = 50
    densify_grad_threshold: float = 2e-4  # mean view-space positional gradient (NDC units, 3DGS)
    split_scale: float = 0.01  # fraction of the head radius: clone below, split above
    prune_opacity: float = 0.01
    prune_scale: float = 0.2  # fraction of the head radius; larger Gaussians are pruned
    max_gaussians: int = 30_000
    # rendering / bookkeeping
    views_per_step: int = 2  # target 0 + (views_per_step - 1) others, cycled
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    backend: str = "auto"
    seed: int = 0


_GROUPS = ("local_xyz", "local_rot", "local_log_scale", "opacity_logit", "sh0", "sh_rest")


def _default_render() -> RenderFn:
    from avatarcli.render.api import render

    return render


def _composite_target(t: ViewTarget, bg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """-> target over background [H, W, 3], pixel weights [H, W, 1], outside-mask [H, W, 1]."""
    m = t.mask.clamp(0, 1)
    return m * t.image + (1 - m) * bg, m, 1 - m


def _pad_sh(sh: Tensor, degree: int) -> Tensor:
    """sh [N, K, 3] -> [N, (degree+1)^2, 3] (extra bands zero, surplus bands dropped)."""
    k = sh_coeffs(degree)
    if sh.shape[1] >= k:
        return sh[:, :k].clone()
    return torch.cat([sh, sh.new_zeros(sh.shape[0], k - sh.shape[1], 3)], dim=1)


class _Params:
    """The optimised leaf tensors and their Adam, with state surgery for densification."""

    def __init__(self, bound: BoundGaussians, cfg: FitConfig):
        self.binding = bound.binding.clone()
        sh = _pad_sh(bound.sh.detach(), cfg.sh_degree)
        self.t = {
            "local_xyz": bound.local_xyz.detach().clone(),
            "local_rot": bound.local_rot.detach().clone(),
            "local_log_scale": bound.local_log_scale.detach().clone(),
            "opacity_logit": bound.opacity_logit.detach().clone(),
            "sh0": sh[:, :1].contiguous(),
            "sh_rest": sh[:, 1:].contiguous(),
        }
        for v in self.t.values():
            v.requires_grad_(True)
        lrs = {
            "local_xyz": cfg.lr_xyz,
            "local_rot": cfg.lr_rot,
            "local_log_scale": cfg.lr_scale,
            "opacity_logit": cfg.lr_opacity,
            "sh0": cfg.lr_sh0,
            "sh_rest": cfg.lr_sh_rest,
        }
        self.opt = torch.optim.Adam(
            [{"params": [self.t[k]], "lr": lrs[k], "name": k} for k in _GROUPS], lr=1e-3, eps=1e-15
        )

    def bound(self) -> BoundGaussians:
        return BoundGaussians(
            binding=self.binding,
            local_xyz=self.t["local_xyz"],
            local_rot=self.t["local_rot"],
            local_log_scale=self.t["local_log_scale"],
            opacity_logit=self.t["opacity_logit"],
            sh=torch.cat([self.t["sh0"], self.t["sh_rest"]], dim=1),
        )

    def set_lr(self, name: str, lr: float) -> None:
        for g in self.opt.param_groups:
            if g["name"] == name:
                g["lr"] = lr

    def replace(self, new: BoundGaussians, source: Tensor, fresh: Tensor) -> None:
        """Swap in a densified set; Adam moments follow `source`, zero for `fresh` rows."""
        values = {
            "local_xyz": new.local_xyz,
            "local_rot": new.local_rot,
            "local_log_scale": new.local_log_scale,
            "opacity_logit": new.opacity_logit,
            "sh0": new.sh[:, :1],
            "sh_rest": new.sh[:, 1:],
        }
        self.binding = new.binding.clone()
        for g in self.opt.param_groups:
            name = g["name"]
            old = g["params"][0]
            p = values[name].detach().clone().contiguous().requires_grad_(True)
            st = self.opt.state.pop(old, None)
            if st:
                keep = (~fresh).view(-1, *([1] * (p.ndim - 1)))
                for key in ("exp_avg", "exp_avg_sq"):
                    st[key] = torch.where(keep, st[key][source], torch.zeros_like(st[key][source])).contiguous()
                self.opt.state[p] = st
            g["params"][0] = p
            self.t[name] = p


def _regularisers(bound: BoundGaussians, cfg: FitConfig) -> Tensor:
    xyz = bound.local_xyz  # [N, 3] triangle units; axis 2 = normal
    tangent = xyz[:, :2].norm(dim=-1)
    reg = (
        torch.relu(tangent - cfg.offset_cap).pow(2).mean() + torch.relu(xyz[:, 2].abs() - cfg.normal_cap).pow(2).mean()
    )
    out = cfg.reg_offset * reg
    if cfg.reg_scale > 0:
        out = out + cfg.reg_scale * torch.relu(bound.local_log_scale - cfg.log_scale_cap).pow(2).mean()
    return out


def _view_space_grad(grad_world: Tensor, means: Tensor, cam: Camera) -> Tensor:
    """World gradient of the means [N, 3] -> |d loss / d (NDC position)| [N] for camera `cam`."""
    R, t = cam.viewmat[:3, :3], cam.viewmat[:3, 3]
    g_cam = grad_world @ R.T  # [N, 3]
    z = (means @ R.T + t)[:, 2].clamp_min(1e-6)  # [N]
    gx = g_cam[:, 0] * z / cam.K[0, 0] * (0.5 * cam.width)
    gy = g_cam[:, 1] * z / cam.K[1, 1] * (0.5 * cam.height)
    return torch.sqrt(gx * gx + gy * gy)


def _check_targets(targets: list[ViewTarget]) -> None:
    if not targets:
        raise ValueError("fit_gaussians needs at least one target view")
    for i, t in enumerate(targets):
        h, w = t.camera.height, t.camera.width
        if tuple(t.image.shape) != (h, w, 3) or tuple(t.mask.shape) != (h, w, 1):
            raise ValueError(
                f"target {i}: image {tuple(t.image.shape)} / mask {tuple(t.mask.shape)} do not match the camera ({h}x{w})"
            )


def fit_gaussians(
    bound: BoundGaussians,
    vertices: Tensor,  # [V, 3] canonical mesh
    faces: Tensor,  # [F, 3]
    targets: list[ViewTarget],
    config: FitConfig | None = None,
    on_step: Callable[[int, dict], None] | None = None,
    *,
    render_fn: RenderFn | None = None,
) -> tuple[BoundGaussians, dict]:
    """Fit `bound` to `targets`; returns the fitted (detached) Gaussians and a stats dict
    (loss, l1, psnr and ssim of target 0 inside its mask, n_gaussians, densify counts, seconds).

    `on_step(step, info)` is called after every step with info = {loss, psnr, n, sh_degree}
    (psnr: target 0 inside its mask, from that step's render). `render_fn` defaults to
    avatarcli.render.api.render."""
    cfg = config or FitConfig()
    _check_targets(targets)
    render = render_fn or _default_render()
    dev = bound.local_xyz.device
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    verts = vertices.detach().to(dev, torch.float32)
    faces = faces.to(dev)
    bg = torch.tensor(cfg.background, dtype=torch.float32, device=dev)
    cams = [t.camera.to(dev) for t in targets]
    comp = [
        _composite_target(ViewTarget(c, t.image.to(dev, torch.float32), t.mask.to(dev, torch.float32)), bg)
        for c, t in zip(cams, targets)
    ]
    weights = [float(t.weight) for t in targets]

    radius = float((verts - verts.mean(0)).norm(dim=-1).max())
    params = _Params(bound.to(dev), cfg)
    sh_every = cfg.sh_increase_every or max(1, cfg.steps // (cfg.sh_degree + 1))
    densify_until = int(cfg.densify_until * cfg.steps)
    grad_acc = torch.zeros(params.binding.shape[0], device=dev)
    grad_cnt = torch.zeros_like(grad_acc)
    others = list(range(1, len(targets)))
    order: list[int] = []
    stats = {"n_cloned": 0, "n_split": 0, "n_pruned": 0}
    last: dict = {}

    for step in range(1, cfg.steps + 1):
        frac = (step - 1) / max(1, cfg.steps - 1)
        params.set_lr("local_xyz", cfg.lr_xyz * (cfg.lr_xyz_final / cfg.lr_xyz) ** frac)
        active_sh = min(cfg.sh_degree, (step - 1) // sh_every)

        views = [0]
        for _ in range(min(cfg.views_per_step - 1, len(others))):
            if not order:
                order = [others[i] for i in torch.randperm(len(others), generator=gen).tolist()]
            views.append(order.pop())

        b = params.bound()
        g = world_gaussians(b, verts, faces)
        loss = torch.zeros((), device=dev)
        probes = []
        step_psnr = float("nan")
        for v in views:
            probe = torch.zeros_like(g.means, requires_grad=True)  # per-view gradient of the means
            probes.append((v, probe))
            gv = type(g)(means=g.means + probe, quats=g.quats, scales=g.scales, opacities=g.opacities, sh=g.sh)
            out = render(gv, cams[v], bg, backend=cfg.backend, sh_degree=active_sh)
            target, m, outside = comp[v]
            pix_w = m + cfg.outside_weight * outside
            lv = dssim_l1(out.rgb, target, pix_w, cfg.lambda_dssim)
            if cfg.lambda_alpha_out > 0:
                lv = lv + cfg.lambda_alpha_out * (out.alpha * outside).mean()
            loss = loss + weights[v] * lv
            if v == 0:
                with torch.no_grad():
                    step_psnr = float(psnr(out.rgb, target, m))
        loss = loss + _regularisers(b, cfg)

        params.opt.zero_grad(set_to_none=True)
        loss.backward()
        params.opt.step()

        with torch.no_grad():
            means = g.means.detach()
            for v, probe in probes:
                vg = _view_space_grad(probe.grad, means, cams[v])
                seen = vg > 0
                grad_acc += vg
                grad_cnt += seen.float()
            if cfg.densify_every > 0 and cfg.densify_from <= step <= densify_until and step % cfg.densify_every == 0:
                world_max = g.scales.detach().max(dim=-1).values
                res = densify_and_prune(
                    params.bound(),
                    grad_acc / grad_cnt.clamp_min(1),
                    world_max,
                    grad_threshold=cfg.densify_grad_threshold,
                    split_scale=cfg.split_scale * radius,
                    prune_opacity=cfg.prune_opacity,
                    prune_scale=cfg.prune_scale * radius,
                    max_gaussians=cfg.max_gaussians,
                    generator=gen,
                )
                params.replace(res.bound, res.source, res.fresh)
                for k in ("n_cloned", "n_split", "n_pruned"):
                    stats[k] += getattr(res, k)
                grad_acc = torch.zeros(res.bound.n, device=dev)
                grad_cnt = torch.zeros_like(grad_acc)

        last = {
            "loss": float(loss.detach()),
            "psnr": step_psnr,
            "n": int(params.binding.shape[0]),
            "sh_degree": active_sh,
        }
        if on_step is not None:
            on_step(step, last)

    fitted = params.bound().detach()
    with torch.no_grad():
        out = render(world_gaussians(fitted, verts, faces), cams[0], bg, backend=cfg.backend, sh_degree=cfg.sh_degree)
        target, m, _ = comp[0]
        final = {
            "loss": last.get("loss", float("nan")),
            "psnr": float(psnr(out.rgb, target, m)),
            "ssim": float(masked_ssim(out.rgb, target, m)),
            "l1": float(((out.rgb - target).abs() * m).sum() / (3 * m.sum()).clamp_min(1e-8)),
        }
    final.update(stats)
    final["n_gaussians"] = fitted.n
    final["steps"] = cfg.steps
    final["seconds"] = time.perf_counter() - t0
    return fitted, final


def fit_input_view(
    bound: BoundGaussians,
    vertices: Tensor,  # [V, 3]
    faces: Tensor,  # [F, 3]
    camera: Camera,
    image: Tensor,  # [H, W, 3]
    mask: Tensor,  # [H, W, 1]
    config: FitConfig | None = None,
    on_step: Callable[[int, dict], None] | None = None,
    *,
    render_fn: RenderFn | None = None,
) -> tuple[BoundGaussians, dict]:
    """fit_gaussians with the input view as the only target."""
    return fit_gaussians(
        bound, vertices, faces, [ViewTarget(camera, image, mask, 1.0)], config, on_step, render_fn=render_fn
    )


__all__ = ["ViewTarget", "FitConfig", "fit_gaussians", "fit_input_view"]
