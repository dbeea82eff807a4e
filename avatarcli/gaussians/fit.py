"""Photometric fit of FLAME-bound Gaussians to target views ("fit the input view").

Optimises the bound parameters (local_xyz, local_rot, local_log_scale,
opacity_logit, sh) on a fixed canonical mesh with Adam (one learning rate per
group), against a list of `ViewTarget`s. Target 0 is the input photo (the hard
constraint, weight 1); the diffusion rounds add softer novel views (weight < 1).

Per view and step:
    target' = mask * image + (1 - mask) * background          (the head over the render background)
    w       = mask + outside_weight * (1 - mask)               (pixel weights)
    L_view  = weight * [(1 - l) L1_w + l (1 - SSIM_w)] + weight * alpha_out * mean(alpha * (1 - mask))
              + weight * opaque * mean_{interior}(1 - alpha)
The last term is the prior against semi-transparency: inside the head region (eroded by
`opaque_erode_px`, so the soft silhouette is free) the front surface stays opaque, so hidden
Gaussians neither show through nor soak up residuals.
Regularisers keep each Gaussian near its triangle (tangent offset beyond
`offset_cap` and normal offset beyond `normal_cap` triangle sizes cost a
quadratic penalty) and its local scale below `log_scale_cap`.
Target 0 is in every step; the other targets are cycled through,
`views_per_step - 1` at a time. Densify/prune follows 3DGS through a strategy
(avatarcli.gaussians.densify: `DefaultStrategy` from the config's densify_* fields,
`NoDensify` for a fixed set).

Unseen sides stay as they are (avatarcli.gaussians.visibility): each Gaussian's Adam update is
scaled by a gate of its visibility from the targets' cameras (transmittance-weighted
contribution / footprint), refreshed every `visibility.every` steps and after densification, so
only what some target sees changes. A prior ties each Gaussian's colour to its start as far as no
target sees its triangle squarely (ramped out over n . d 0.2-0.9, hard below 0.2: the rim and the far
side), and below n . d 0.1 its opacity, scale, position and rotation too, weighted by the pixels it
would cover seen face-on (VisibilityConfig: colour_prior, rim_prior, geometry_prior). Spherical-harmonics bands above 0 are fitted only when more
than one target constrains them (`fit_sh_rest`; the input view alone cannot tell
view-dependent colour from texture); with one target they keep their values.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.gaussians.binding import world_gaussians
from avatarcli.gaussians.densify import DefaultStrategy, DensifyState, NoDensify, Strategy
from avatarcli.gaussians.losses import dssim_l1, erode, masked_ssim, psnr, transparency
from avatarcli.gaussians.model import SH_C0, BoundGaussians, Gaussians, sh_coeffs
from avatarcli.gaussians.mouth import MouthGate, gate_interior
from avatarcli.gaussians.visibility import UpdateGate, VisibilityConfig, gates
from avatarcli.geometry import triangle_frames
from avatarcli.progress import FitStep, StepCallback
from avatarcli.render.api import RenderOutput, render
from avatarcli.render.camera import Camera, cropped_camera, scaled_camera

RenderFn = Callable[..., RenderOutput]  # render(gaussians, camera, background, backend=..., sh_degree=...)


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
    lambda_opaque: float = 0.1  # penalty on (1 - alpha) inside the eroded mask (opaque front surface)
    opaque_erode_px: int = 2  # erosion of the mask for the opacity prior (the silhouette stays soft)
    # regularisers (binding frames: 1 = one triangle size)
    reg_offset: float = 1.0
    offset_cap: float = 1.0  # tangent offset allowed for free
    normal_cap: float = 0.5  # offset along the normal allowed for free
    reg_scale: float = 1.0
    log_scale_cap: float = 0.0  # local scale above exp(cap) triangle sizes costs
    # colour
    sh_degree: int = 1
    sh_increase_every: int | None = None  # steps per extra SH band; None: steps // (sh_degree + 1)
    fit_sh_rest: bool | None = None  # fit SH bands > 0; None: only with more than one target
    # unseen sides: updates gated by visibility from the targets' cameras
    visibility: VisibilityConfig = field(default_factory=VisibilityConfig)
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
    # e.g. 0.06: each target is rendered in the window of its mask's bounding box grown by this x its long
    # side (at least CROP_MIN_PX); the loss keeps the whole image's normalisation (outside the window render
    # and target are both the background). Off (None) by default: on obama_turned the two step-1 losses
    # differ by 0.1-0.2 %: float32 rounding of the weighted means' sums (a sum by hand over the image and
    # one over the window agree; losses.py's reductions differ from it by that much), and 200 steps
    # then end 0.6 dB lower (bench/bench_fit_speed.py)
    crop_margin: float | None = None
    # coarse to fine: the first coarse_until x steps fit the targets resized by coarse_scale (fewer pixels
    # and fragments per step); the rest at full size
    coarse_until: float = 0.0
    coarse_scale: float = 0.5
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    backend: str = "auto"
    seed: int = 0
    mouth: MouthGate | None = None  # the mouth interior's opacity gate (gaussians/mouth.py: head_gate)

    def strategy(self) -> Strategy:
        """The densification strategy these settings describe (NoDensify when densify_every <= 0)."""
        if self.densify_every <= 0:
            return NoDensify()
        return DefaultStrategy(
            grad_threshold=self.densify_grad_threshold,
            split_scale=self.split_scale,
            prune_opacity=self.prune_opacity,
            prune_scale=self.prune_scale,
            max_gaussians=self.max_gaussians,
            refine_start=self.densify_from,
            refine_stop=int(self.densify_until * self.steps),
            refine_every=self.densify_every,
        )


@dataclass
class FitStats:
    """Figures of a finished fit: target 0 inside its mask, from the fitted set's own render."""

    loss: float  # the last step's total loss (nan after 0 steps)
    psnr: float
    ssim: float
    l1: float
    n_gaussians: int
    n_cloned: int
    n_split: int
    n_pruned: int
    steps: int
    seconds: float
    n_frozen: int = 0  # Gaussians no target saw at the last visibility refresh (gate 0: they kept their values)


_GROUPS = ("local_xyz", "local_rot", "local_log_scale", "opacity_logit", "sh0", "sh_rest")


def _default_render() -> RenderFn:
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

    def __init__(self, bound: BoundGaussians, cfg: FitConfig, fit_sh_rest: bool = True):
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
            "sh_rest": cfg.lr_sh_rest if fit_sh_rest else 0.0,
        }
        self.anchor = self._prior_values()  # the values the fit started from (the unseen-side prior's anchors)
        self.opt = torch.optim.Adam(
            [{"params": [self.t[k]], "lr": lrs[k], "name": k} for k in _GROUPS], lr=1e-3, eps=1e-15
        )

    def _prior_values(self) -> dict[str, Tensor]:
        """What the unseen-side prior ties (detached): SH DC [N, 3], opacity [N], local position [N, 3],
        unit rotation [N, 4] and log-scale [N, 3]."""
        t = {k: v.detach() for k, v in self.t.items()}
        return {
            "sh0": t["sh0"][:, 0].clone(),
            "opacity": torch.sigmoid(t["opacity_logit"]),
            "local_xyz": t["local_xyz"].clone(),
            "local_rot": F.normalize(t["local_rot"], dim=-1),
            "local_log_scale": t["local_log_scale"].clone(),
        }

    def bound(self) -> BoundGaussians:
        return BoundGaussians(
            binding=self.binding,
            local_xyz=self.t["local_xyz"],
            local_rot=self.t["local_rot"],
            local_log_scale=self.t["local_log_scale"],
            opacity_logit=self.t["opacity_logit"],
            sh=torch.cat([self.t["sh0"], self.t["sh_rest"]], dim=1),
        )

    def step(self, gate: UpdateGate | None) -> None:
        """One Adam step; with `gate`, row i moves gate.geometry[i] of its Adam update."""
        if gate is None:
            self.opt.step()
            return
        with torch.no_grad():
            before = {k: v.detach().clone() for k, v in self.t.items()}
        self.opt.step()
        with torch.no_grad():
            for k, v in self.t.items():
                gk = gate.geometry.view(-1, *([1] * (v.ndim - 1))).to(v.dtype)
                v.copy_(before[k] + gk * (v - before[k]))

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
        before = self._prior_values()
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
        # a new row's anchor is its parent's, moved as densification moved the row (a split child's scale
        # is its parent's / 1.6, so is its anchor): clones of a back Gaussian keep the back's init values
        new_vals = self._prior_values()
        self.anchor = {k: self.anchor[k][source] + (new_vals[k] - before[k][source]) for k in new_vals}


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


def _unseen_prior(params: _Params, gate: UpdateGate | None, sc: _Scene, cfg: FitConfig) -> Tensor:
    """1 / P * sum_i S_i (k_i |d rgb_i|^2 + [c_i < geometry_facing] rim_prior mu G_i), the offsets from the
    anchors (avatarcli.gaussians.visibility: k_i = rim_prior where c_i < rim_facing, else colour_prior
    (1 - gate.colour_i); c_i = gate.facing_i; G_i = d opacity^2 + |d log-scale|^2 + |d local xyz|^2 +
    sin^2(rotation angle / 2); P: target 0's pixel weight; S_i: the face-on footprint in its camera)."""
    vc = cfg.visibility
    if gate is None or gate.surface is None or gate.facing is None or max(vc.colour_prior, vc.rim_prior) <= 0:
        return torch.zeros((), device=sc.verts.device)
    a = params.anchor
    rim = gate.facing < vc.rim_facing  # [N]
    k = torch.where(rim, vc.rim_prior, vc.colour_prior * (1 - gate.colour))  # [N]
    cost = k * (SH_C0 * (params.t["sh0"][:, 0] - a["sh0"])).pow(2).sum(-1)  # [N] squared rgb offset, weighted
    edge_on = gate.facing < vc.geometry_facing  # [N]
    if vc.geometry_prior > 0 and bool(edge_on.any()):
        d_opacity = torch.sigmoid(params.t["opacity_logit"]) - a["opacity"]  # [N]
        d_scale = (params.t["local_log_scale"] - a["local_log_scale"]).pow(2).sum(-1)  # [N]
        d_xyz = (params.t["local_xyz"] - a["local_xyz"]).pow(2).sum(-1)  # [N] triangle units
        cos_half = (F.normalize(params.t["local_rot"], dim=-1) * a["local_rot"]).sum(-1)  # [N]
        geo = d_opacity.pow(2) + d_scale + d_xyz + 1 - cos_half.pow(2)  # [N]
        cost = cost + edge_on * (vc.rim_prior * vc.geometry_prior) * geo
    return (gate.surface * cost).sum() / sc.pixel_weight


def _check_targets(targets: list[ViewTarget]) -> None:
    if not targets:
        raise ValueError("fit_gaussians needs at least one target view")
    for i, t in enumerate(targets):
        h, w = t.camera.height, t.camera.width
        if tuple(t.image.shape) != (h, w, 3) or tuple(t.mask.shape) != (h, w, 1):
            raise ValueError(
                f"target {i}: image {tuple(t.image.shape)} / mask {tuple(t.mask.shape)} do not match the camera ({h}x{w})"
            )


CROP_MIN_PX = 8  # the SSIM window's radius (5) and the opacity prior's erosion fit in this margin


def crop_window(mask: Tensor, margin: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the bounding box of mask [H, W, 1] > 0 grown by margin x the long side (at
    least CROP_MIN_PX), within the image; the whole image for an empty mask."""
    H, W = mask.shape[0], mask.shape[1]
    ys, xs = torch.nonzero(mask[..., 0] > 0, as_tuple=True)
    if ys.numel() == 0:
        return 0, 0, W, H
    m = max(CROP_MIN_PX, int(math.ceil(margin * max(H, W))))
    return (max(0, int(xs.min()) - m), max(0, int(ys.min()) - m), min(W, int(xs.max()) + m + 1),
            min(H, int(ys.max()) + m + 1))  # fmt: skip


@dataclass
class _Scene:
    """The fixed inputs of a fit, on the fit's device; each target in its crop window (crop_window)."""

    verts: Tensor  # [V, 3] canonical mesh
    faces: Tensor  # [F, 3]
    bg: Tensor  # [3]
    cams: list[Camera]  # per target: the camera of its crop window [h, w]
    comp: list[tuple[Tensor, Tensor, Tensor]]  # per target: target over bg [h, w, 3], mask [h, w, 1], outside [h, w, 1]
    weights: list[float]
    interior: list[Tensor]  # per target: eroded mask [h, w, 1] (where the front must be opaque)
    pixel_weight: float  # target 0's sum of L1 pixel weights (the colour prior is in its pixel units)
    full_cams: list[Camera]  # the targets' own cameras (densification measures gradients in their NDC)
    photo_scale: list[float]  # per target: crop's / whole image's sum of L1 pixel weights
    pixel_scale: list[float]  # per target: crop's / whole image's pixel count

    @classmethod
    def build(
        cls, vertices: Tensor, faces: Tensor, targets: list[ViewTarget], cfg: FitConfig, dev: torch.device
    ) -> _Scene:
        bg = torch.tensor(cfg.background, dtype=torch.float32, device=dev)
        full_cams = [t.camera.to(dev) for t in targets]
        comp, cams, photo_scale, pixel_scale = [], [], [], []
        for c, t in zip(full_cams, targets):
            tgt, m, out = _composite_target(
                ViewTarget(c, t.image.to(dev, torch.float32), t.mask.to(dev, torch.float32)), bg
            )
            x0, y0, x1, y1 = (0, 0, c.width, c.height) if cfg.crop_margin is None else crop_window(m, cfg.crop_margin)
            whole = float((m + cfg.outside_weight * out).sum())
            tgt, m, out = tgt[y0:y1, x0:x1], m[y0:y1, x0:x1], out[y0:y1, x0:x1]
            comp.append((tgt, m, out))
            cams.append(cropped_camera(c, x0, y0, x1 - x0, y1 - y0))
            photo_scale.append(float((m + cfg.outside_weight * out).sum()) / max(whole, 1e-8))
            pixel_scale.append((x1 - x0) * (y1 - y0) / (c.width * c.height))
        verts = vertices.detach().to(dev, torch.float32)
        interior = [erode(m, cfg.opaque_erode_px) for _, m, _ in comp]
        pw = float((comp[0][1] + cfg.outside_weight * comp[0][2]).sum()) / photo_scale[0]
        return cls(verts, faces.to(dev), bg, cams, comp, [float(t.weight) for t in targets], interior, pw,
                   full_cams, photo_scale, pixel_scale)  # fmt: skip

    @property
    def radius(self) -> float:
        return float((self.verts - self.verts.mean(0)).norm(dim=-1).max())


def scaled_targets(targets: list[ViewTarget], scale: float) -> list[ViewTarget]:
    """The targets resized by `scale` (area filter), each with its camera scaled to match."""
    out = []
    for t in targets:
        cam = scaled_camera(t.camera, max(16, round(scale * max(t.camera.width, t.camera.height))))

        def resize(x: Tensor) -> Tensor:  # [H, W, C] -> [h, w, C]
            y = F.interpolate(x.permute(2, 0, 1)[None].float(), size=(cam.height, cam.width), mode="area")
            return y[0].permute(1, 2, 0).contiguous()

        out.append(ViewTarget(cam, resize(t.image), resize(t.mask), t.weight))
    return out


class _ViewOrder:
    """Target 0 in every step; the others cycled in seeded random order, `per_step - 1` at a time."""

    def __init__(self, n_targets: int, per_step: int, generator: torch.Generator):
        self.others = list(range(1, n_targets))
        self.per_step = per_step
        self.gen = generator
        self.order: list[int] = []

    def next(self) -> list[int]:
        views = [0]
        for _ in range(min(self.per_step - 1, len(self.others))):
            if not self.order:
                self.order = [self.others[i] for i in torch.randperm(len(self.others), generator=self.gen).tolist()]
            views.append(self.order.pop())
        return views


class _Gate:
    """Per-Gaussian update gate from the targets' visibility; refreshed every `visibility.every`
    steps and whenever the set is replaced (densification)."""

    def __init__(self, cfg: FitConfig, sc: _Scene, render: RenderFn):
        self.cfg, self.sc, self.render = cfg, sc, render
        self.gate: UpdateGate | None = None
        self.binding: Tensor | None = None
        self.normals = triangle_frames(sc.verts, sc.faces)[1][:, :, 2]  # [F, 3] outward unit normals

    def get(self, step: int, g: Gaussians, binding: Tensor) -> UpdateGate | None:
        vc = self.cfg.visibility
        if not vc.enabled:
            return None
        stale = self.gate is None or binding is not self.binding or (vc.every > 0 and (step - 1) % vc.every == 0)
        if stale:
            cams = [c for c, w in zip(self.sc.cams, self.sc.weights) if w > 0]  # a weight-0 view sees nothing
            normals = self.normals[binding.to(self.normals.device)]  # [N, 3]
            self.gate = gates(g.detach(), normals, cams, self.render, vc, self.cfg.backend)
            self.binding = binding
        return self.gate

    @property
    def n_frozen(self) -> int:
        return 0 if self.gate is None else self.gate.n_frozen


def _views_loss(
    g: Gaussians, views: list[int], sc: _Scene, cfg: FitConfig, sh: int, render: RenderFn, strategy: Strategy,
    state: DensifyState,
) -> tuple[Tensor, float]:  # fmt: skip
    """Weighted photometric loss over `views` -> (loss, PSNR of target 0 inside its mask)."""
    loss = torch.zeros((), device=sc.verts.device)
    step_psnr = float("nan")
    for v in views:
        gv = strategy.step_pre_backward(state, g, sc.full_cams[v])
        out = render(gv, sc.cams[v], sc.bg, backend=cfg.backend, sh_degree=sh)
        target, m, outside = sc.comp[v]
        # the whole image's means: outside the crop window render and target are both the background
        lv = sc.photo_scale[v] * dssim_l1(out.rgb, target, m + cfg.outside_weight * outside, cfg.lambda_dssim)
        if cfg.lambda_alpha_out > 0:
            lv = lv + cfg.lambda_alpha_out * sc.pixel_scale[v] * (out.alpha * outside).mean()
        if cfg.lambda_opaque > 0:
            lv = lv + cfg.lambda_opaque * transparency(out.alpha, sc.interior[v])
        loss = loss + sc.weights[v] * lv
        if v == 0:
            with torch.no_grad():
                step_psnr = float(psnr(out.rgb, target, m))
    return loss, step_psnr


@torch.no_grad()
def _final_figures(fitted: BoundGaussians, sc: _Scene, cfg: FitConfig, render: RenderFn) -> dict[str, float]:
    """PSNR, SSIM and L1 of the fitted set against target 0 inside its mask."""
    g = gate_interior(world_gaussians(fitted, sc.verts, sc.faces), fitted.binding, cfg.mouth)
    out = render(g, sc.cams[0], sc.bg, backend=cfg.backend, sh_degree=cfg.sh_degree)
    target, m, _ = sc.comp[0]
    return {
        "psnr": float(psnr(out.rgb, target, m)),
        "ssim": float(masked_ssim(out.rgb, target, m)),
        "l1": float(((out.rgb - target).abs() * m).sum() / (3 * m.sum()).clamp_min(1e-8)),
    }


def fit_gaussians(
    bound: BoundGaussians,
    vertices: Tensor,  # [V, 3] canonical mesh
    faces: Tensor,  # [F, 3]
    targets: list[ViewTarget],
    config: FitConfig | None = None,
    on_step: StepCallback | None = None,
    *,
    render_fn: RenderFn | None = None,
    strategy: Strategy | None = None,
) -> tuple[BoundGaussians, FitStats]:
    """Fit `bound` to `targets`; returns the fitted (detached) Gaussians and their FitStats
    (loss, l1, psnr and ssim of target 0 inside its mask, n_gaussians, densify counts, seconds).

    `on_step(step, info)` is called after every step with info an avatarcli.progress.FitStep
    (loss, psnr: target 0 inside its mask from that step's render, n, sh_degree). `render_fn` defaults to
    avatarcli.render.api.render; `strategy` (densification) defaults to `config.strategy()`."""
    cfg = config or FitConfig()
    _check_targets(targets)
    render = render_fn or _default_render()
    strategy = strategy or cfg.strategy()
    dev = bound.local_xyz.device
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    sc = fine = _Scene.build(vertices, faces, targets, cfg, dev)
    n_coarse = int(round(cfg.coarse_until * cfg.steps)) if 0 < cfg.coarse_scale < 1 else 0
    if n_coarse > 0:
        sc = _Scene.build(vertices, faces, scaled_targets(targets, cfg.coarse_scale), cfg, dev)
    cfg.visibility.validate()
    n_views = sum(1 for t in targets if t.weight > 0)
    fit_rest = cfg.fit_sh_rest if cfg.fit_sh_rest is not None else n_views > 1
    params = _Params(bound.to(dev), cfg, fit_sh_rest=fit_rest)
    gates = _Gate(cfg, sc, render)
    state = strategy.initialize_state(params.binding.shape[0], sc.radius, dev)
    sh_every = cfg.sh_increase_every or max(1, cfg.steps // (cfg.sh_degree + 1))
    order = _ViewOrder(len(targets), cfg.views_per_step, gen)
    last: FitStep | None = None
    for step in range(1, cfg.steps + 1):
        if step == n_coarse + 1 and sc is not fine:  # coarse steps done: full size, visibility afresh
            sc, gates = fine, _Gate(cfg, fine, render)
        frac = (step - 1) / max(1, cfg.steps - 1)
        params.set_lr("local_xyz", cfg.lr_xyz * (cfg.lr_xyz_final / cfg.lr_xyz) ** frac if cfg.lr_xyz > 0 else 0.0)
        active_sh = min(cfg.sh_degree, (step - 1) // sh_every)
        b = params.bound()
        g = gate_interior(world_gaussians(b, sc.verts, sc.faces), b.binding, cfg.mouth)
        gate = gates.get(step, g, params.binding)
        loss, step_psnr = _views_loss(g, order.next(), sc, cfg, active_sh, render, strategy, state)
        loss = loss + _regularisers(b, cfg) + _unseen_prior(params, gate, sc, cfg)
        params.opt.zero_grad(set_to_none=True)
        loss.backward()
        params.step(gate)
        strategy.step_post_backward(params, state, step, g, gen)
        last = FitStep(loss=float(loss.detach()), psnr=step_psnr, n=int(params.binding.shape[0]), sh_degree=active_sh)
        if on_step is not None:
            on_step(step, last)
    fitted = params.bound().detach()
    return fitted, FitStats(
        loss=float("nan") if last is None else last.loss,
        **_final_figures(fitted, fine, cfg, render),
        n_gaussians=fitted.n,
        n_cloned=state.n_cloned,
        n_split=state.n_split,
        n_pruned=state.n_pruned,
        steps=cfg.steps,
        seconds=time.perf_counter() - t0,
        n_frozen=gates.n_frozen,
    )


def fit_input_view(
    bound: BoundGaussians,
    vertices: Tensor,  # [V, 3]
    faces: Tensor,  # [F, 3]
    camera: Camera,
    image: Tensor,  # [H, W, 3]
    mask: Tensor,  # [H, W, 1]
    config: FitConfig | None = None,
    on_step: StepCallback | None = None,
    *,
    render_fn: RenderFn | None = None,
) -> tuple[BoundGaussians, FitStats]:
    """fit_gaussians with the input view as the only target."""
    return fit_gaussians(
        bound, vertices, faces, [ViewTarget(camera, image, mask, 1.0)], config, on_step, render_fn=render_fn
    )


__all__ = ["ViewTarget", "FitConfig", "FitStats", "fit_gaussians", "fit_input_view"]
