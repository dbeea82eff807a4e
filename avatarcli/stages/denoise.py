"""The `denoise` stage: fit the head to its photo, then refine the unseen sides by diffusion.

    head, stats = denoise_head(init_ply, model, rgb, features=f, denoiser=d, config=DenoiseConfig())

1. Canonical mesh from the PLY's own FLAME parameters (HeadMeta), the Gaussians re-bound to it.
2. Working resolution: the photo (at the fit's image size) is downscaled so that its long side
   is at most `max_side` (antialiased); the photo camera (photo_camera(meta.fit, root)) is scaled
   with it (pixel centres at integers).
3. Head region (where the loss counts fully): `mask` if given; else the features' face-parsing
   regions (face, hair, neck: mask_image != background) resized to the working size; else the
   init head's rendered alpha (> 0.5), dilated by `mask_dilate` x the image side (default 0).
   Along the region's edge the photo's foreground colour replaces the photo (edge_colours), so
   the backdrop mixed into the silhouette's pixels never becomes head colour.
4. Input-view fit: avatarcli.gaussians.fit.fit_gaussians with the photo as the only target
   (`steps`, SH degree, densify/prune).
5. Gaussians whose centre projects outside the head region (a given or features region; not the
   init-alpha fallback) are dropped after the fits: no head Gaussian carries backdrop or clothing.
6. Figures (quality.py), from the final render on white against the photo at the working size:
   head-region PSNR, coverage (region pixels with alpha > 0.5) and spill (alpha mass outside).
   A fit that diverged (non-finite render) raises FitDivergedError.
7. rounds > 0 with a denoiser (the diffusion model, or a prior with its interface: the inverted
   GAN, avatarcli.gan.prior, which needs no features): avatarcli.diffusion.rounds.refine (novel views rendered,
   denoised at falling strength, fitted softly with the input view as the hard constraint),
   conditioned on the features' CLIP image embedding; `round_steps` fit steps per round,
   no densification inside the rounds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli import quality
from avatarcli.device import resolve_device
from avatarcli.diffusion.denoiser import Conditioning, Denoiser
from avatarcli.diffusion.features import Features
from avatarcli.diffusion.rounds import RefineStats, RoundsConfig, RoundStats, dilate, refine
from avatarcli.errors import FitDivergedError, InputError
from avatarcli.flame.deform import outside_region
from avatarcli.flame.model import FlameModel
from avatarcli.gaussians.binding import world_gaussians
from avatarcli.gaussians.fit import FitConfig, FitStats, ViewTarget, fit_gaussians
from avatarcli.gaussians.losses import masked_ssim, psnr
from avatarcli.gaussians.model import BoundGaussians
from avatarcli.gaussians.mouth import gate_interior, head_gate
from avatarcli.gaussians.ply import GaussianPly
from avatarcli.progress import FitStep, StepCallback
from avatarcli.render.api import RenderOutput, render
from avatarcli.render.camera import Camera, photo_camera, scaled_camera
from avatarcli.segment.foreground import foreground
from avatarcli.segment.head_region import features_mask


@dataclass
class DenoiseConfig:
    steps: int = (
        200  # input-view fit steps (bench_fit_head: 200 reaches ~40 dB at 256 px; fewer trade quality for time)
    )
    sh_degree: int | None = None  # None: 0 for the input-view fit alone, 1 with diffusion rounds
    rounds: int = 4  # diffusion rounds (0: input-view fit only)
    round_steps: int = 100  # fit steps per round
    strength_start: float = 0.7
    strength_end: float = 0.2
    yaws: tuple[float, ...] = (45.0, -45.0, 90.0, -90.0, 135.0, -135.0, 180.0)
    pitches: tuple[float, ...] = (0.0, 20.0)
    round_weight_max: float = 0.5  # soft-view weight = this x (1 - strength)
    view_size: int | None = None  # novel-view side in px (None: the working photo's height)
    seed: int = 0
    max_side: int = 512  # working resolution: the photo's long side is at most this
    max_gaussians: int = 30_000
    mask_dilate: float = 0.0  # fallback head region: init alpha dilated by this x the image side
    edge_band: float = (
        0.01  # the photo's foreground is estimated this x the long side inside the region's edge (0: off)
    )
    backend: str = "auto"  # render backend
    device: str = "auto"
    fit: FitConfig = field(default_factory=FitConfig)  # base settings (steps / sh / seed / backend overridden)

    def fit_config(self, rounds: int | None = None) -> FitConfig:
        """The input-view fit's settings; `rounds`: the rounds that will run (default: self.rounds).

        SH bands above 0 are fitted only when views beyond the photo constrain them: with
        sh_degree None the head has degree 0 without rounds and 1 with them (the input-view fit
        leaves bands > 0 alone either way); an explicit sh_degree is fitted from the photo too."""
        n_rounds = self.rounds if rounds is None else rounds
        sh = self.sh_degree if self.sh_degree is not None else (1 if n_rounds > 0 else 0)
        return replace(self.fit, steps=self.steps, sh_degree=sh, seed=self.seed, backend=self.backend,
                       max_gaussians=self.max_gaussians,
                       fit_sh_rest=True if self.sh_degree is not None else self.fit.fit_sh_rest)  # fmt: skip

    def rounds_config(self):
        return RoundsConfig(
            rounds=self.rounds, strength_start=self.strength_start, strength_end=self.strength_end, yaws=tuple(self.yaws),
            pitches=tuple(self.pitches), weight_max=self.round_weight_max, view_size=self.view_size, seed=self.seed,
        )  # fmt: skip

    def validate(self) -> None:
        if self.steps < 0 or self.round_steps < 0 or self.rounds < 0:
            raise InputError("steps, round steps and rounds must be >= 0")
        if self.sh_degree is not None and not 0 <= self.sh_degree <= 3:
            raise InputError(f"sh_degree must be 0..3, got {self.sh_degree}")
        if self.max_side < 16:
            raise InputError(
                f"max_side (the working resolution) must be >= 16, got {self.max_side}", setting="max_side"
            )
        self.rounds_config().validate()


def working_photo(rgb: np.ndarray, camera: Camera, max_side: int) -> tuple[Tensor, Camera]:
    """uint8 [H, W, 3] at the camera's size -> float [h, w, 3] with long side <= max_side, and its camera."""
    img = torch.from_numpy(np.array(rgb, dtype=np.float32)) / 255.0  # [H, W, 3]
    cam = scaled_camera(camera, max_side, upscale=False)
    if (cam.height, cam.width) != tuple(img.shape[:2]):
        x = img.permute(2, 0, 1)[None]
        img = F.interpolate(x, size=(cam.height, cam.width), mode="bilinear", align_corners=False, antialias=True)[
            0
        ].permute(1, 2, 0)
    return img.clamp(0, 1).contiguous(), cam


def edge_colours(image: Tensor, region: Tensor, band_frac: float) -> Tensor:
    """The working photo [h, w, 3] with the backdrop taken out along the edge of the head region
    [h, w, 1] (avatarcli.segment.foreground, band = band_frac x the long side, at least 1.5 px)."""
    if band_frac <= 0:
        return image
    band = max(1.5, band_frac * max(image.shape[0], image.shape[1]))
    fg = foreground(image.cpu().numpy(), region[..., 0].cpu().numpy() > 0.5, band)
    return torch.from_numpy(fg).to(image.device)


def alpha_mask(
    bound: BoundGaussians, vertices: Tensor, faces: Tensor, camera: Camera, dilate_frac: float, backend: str = "auto"
) -> Tensor:
    """The head's rendered alpha (> 0.5) dilated by dilate_frac x the image side -> float [h, w, 1]."""

    with torch.no_grad():
        g = world_gaussians(bound, vertices, faces)
        out = render(g, camera.to(vertices.device), None, backend=backend, sh_degree=0)
    px = int(round(dilate_frac * max(camera.width, camera.height)))
    return dilate((out.alpha > 0.5).float()[None], px)[0].cpu()


def input_view_psnr(
    bound: BoundGaussians, vertices: Tensor, faces: Tensor, target: ViewTarget, fit_cfg: FitConfig
) -> float:
    """PSNR of the head vs the photo inside the head region, as the fit measures it."""

    dev = vertices.device
    bg = torch.tensor(fit_cfg.background, dtype=torch.float32, device=dev)
    with torch.no_grad():
        g = gate_interior(world_gaussians(bound, vertices, faces), bound.binding, fit_cfg.mouth)
        out = render(g, target.camera.to(dev), bg, backend=fit_cfg.backend,
                     sh_degree=min(bound.sh_degree, fit_cfg.sh_degree))  # fmt: skip
        m = target.mask.to(dev)
        return float(psnr(out.rgb, m * target.image.to(dev) + (1 - m) * bg, m))


def cut_outside(bound: BoundGaussians, vertices: Tensor, faces: Tensor, target: ViewTarget) -> BoundGaussians:
    """`bound` without the Gaussians whose centre projects outside the target's head region."""

    with torch.no_grad():
        means = world_gaussians(bound, vertices, faces).means
    out = outside_region(means, target.camera, target.mask[..., 0]).to(means.device)
    keep = torch.nonzero(~out).reshape(-1)
    return bound if keep.numel() in (0, bound.n) else bound.subset(keep)


@dataclass
class DenoiseStats:
    """Figures of denoise_head (input view at the working size; region figures on white)."""

    psnr_init: float  # the init head, before any fit
    psnr_fit: float  # after the input-view fit
    psnr: float  # at the end
    ssim: float
    n_gaussians: int
    fit_s: float
    rounds_s: float
    seconds: float
    fit: FitStats | None  # the input-view fit (None: 0 steps)
    rounds: RefineStats | None  # the diffusion rounds (None: no rounds)
    size: tuple[int, int]  # (h, w) working size
    mask: str  # where the head region came from: "given", "features" or "init alpha"
    psnr_region: float  # head-region PSNR on white (avatarcli.quality)
    coverage: float
    spill: float

    def scalars(self) -> dict[str, int | float | str | bool]:
        """The plain-number fields, in field order (for summaries)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float, str, bool)):
                out[f.name] = v
        return out


def region_figures(out: RenderOutput, target: ViewTarget, fit_cfg: FitConfig) -> dict[str, float]:
    """Head-region PSNR (render on white vs the photo), coverage and spill (avatarcli.quality) of the
    final render `out` (made over fit_cfg.background); FitDivergedError when it is not finite."""

    rgb, alpha = out.rgb.detach().cpu(), out.alpha.detach().cpu()
    if not (torch.isfinite(rgb).all() and torch.isfinite(alpha).all()):
        raise FitDivergedError("the input-view fit diverged (NaN in the render); try fewer steps or another seed")
    bg = torch.tensor(fit_cfg.background, dtype=torch.float32)
    white = rgb.clamp(0, 1) + (1 - alpha) * (1 - bg)  # re-composited from the fit background onto white
    region = target.mask[..., 0].cpu() > 0.5
    return {
        "psnr_region": quality.region_psnr(white.clamp(0, 1), target.image.cpu(), region),
        "coverage": quality.coverage(alpha, region),
        "spill": quality.spill(alpha, region),
    }


def _check_inputs(ply: GaussianPly, rgb: np.ndarray, features: Features | None, rounds: int) -> np.ndarray:
    """The photo as uint8 [H, W, 3] at the head's fit size; InputError for a PLY that is not a head,
    a photo of another size, or rounds without features."""
    if ply.binding is None or ply.meta is None:
        raise InputError("the PLY has no FLAME binding / head metadata: run `avatar init-gaussians` to make one")
    H, W = ply.meta.image_size
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"the photo must be uint8 [H, W, 3], got {rgb.dtype} {list(rgb.shape)}")
    if tuple(rgb.shape[:2]) != (H, W):
        raise InputError(f"the photo is {rgb.shape[0]}x{rgb.shape[1]} (HxW), the head was fitted on {H}x{W}")
    if rounds > 0 and features is None:
        raise InputError("diffusion rounds need the photo's features (`avatar encode`): pass them, or 0 rounds")
    return rgb


def head_region(
    mask: np.ndarray | Tensor | None,
    features: Features | None,
    full_size: tuple[int, int],  # (H, W) of the photo
    init: tuple[BoundGaussians, Tensor, Tensor],  # the init head: bound, vertices [V, 3], faces [F, 3]
    cam: Camera,  # the working camera
    cfg: DenoiseConfig,
    dev: torch.device,
) -> tuple[Tensor, str]:
    """The head region at the working size, float [h, w, 1] in 0..1, and where it came from: the
    given mask, else the features' face parsing, else the init head's rendered alpha."""
    (H, W), (h, w) = full_size, (cam.height, cam.width)
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask), dtype=torch.float32).reshape(H, W)[None, None]
        region = F.interpolate(m, size=(h, w), mode="area" if (h, w) != (H, W) else "nearest")[0]
        region, src = region.permute(1, 2, 0).clamp(0, 1), "given"
    elif features is not None:
        region, src = features_mask(features, (h, w)), "features"
    else:
        backend = cfg.backend if dev.type == "cuda" else "torch"
        region, src = alpha_mask(*init, cam, cfg.mask_dilate, backend=backend), "init alpha"
    if float(region.sum()) < 1:
        raise InputError("the head region is empty in the photo (check the FLAME fit / features)")
    return region, src


def _phase_steps(on_step: StepCallback | None, offset: int, phase: str) -> StepCallback | None:
    """on_step for one phase of the run: steps numbered from `offset`, info tagged with the phase."""
    if on_step is None:
        return None
    return lambda i, d: on_step(offset + i, replace(d, phase=phase))


def _diffusion_rounds(
    bound: BoundGaussians,
    mesh: tuple[Tensor, Tensor],  # vertices [V, 3], faces [F, 3]
    target: ViewTarget,
    features: Features | None,  # None: a denoiser that needs no conditioning (the GAN prior)
    denoiser: Denoiser,
    cfg: DenoiseConfig,
    fcfg: FitConfig,
    rounds: int,
    on_step: StepCallback | None,
    on_round: Callable[[int, int, RoundStats], None] | None,
) -> tuple[BoundGaussians, RefineStats]:
    """avatarcli.diffusion.rounds.refine conditioned on the features' CLIP embedding (a zero one
    without features); its steps are numbered after the input-view fit's."""
    dev = target.image.device
    emb = torch.zeros(1, 1) if features is None else torch.from_numpy(np.asarray(features.image_embeds, np.float32))
    cond = Conditioning(image_embeds=emb.to(dev), image=target.image)
    counter = {"round": 0}

    def on_progress(r: int, n: int, info: RoundStats) -> None:
        counter["round"] = r + 1
        if on_round is not None:
            on_round(r, n, info)

    def round_step(i: int, d: FitStep) -> None:
        if on_step is not None:
            on_step(
                cfg.steps + counter["round"] * cfg.round_steps + i,
                replace(d, phase=f"round {counter['round'] + 1}/{rounds}"),
            )

    rcfg = replace(cfg.rounds_config(), rounds=rounds)
    round_fit = replace(fcfg, steps=cfg.round_steps)
    return refine(bound, *mesh, target, denoiser, cond, rcfg, round_fit, on_progress, on_step=round_step)


def _final_ssim(bound: BoundGaussians, mesh: tuple[Tensor, Tensor], target: ViewTarget, fcfg: FitConfig):
    """The final input-view render over the fit background, and its masked SSIM against the target."""
    bg = torch.tensor(fcfg.background, dtype=torch.float32, device=target.image.device)
    with torch.no_grad():
        g = gate_interior(world_gaussians(bound, *mesh), bound.binding, fcfg.mouth)
        out = render(g, target.camera, bg, backend=fcfg.backend, sh_degree=fcfg.sh_degree)
        tgt = target.mask * target.image + (1 - target.mask) * bg
        return out, float(masked_ssim(out.rgb, tgt, target.mask))


def denoise_head(
    ply: GaussianPly,
    model: FlameModel,
    rgb: np.ndarray,
    *,
    features: Features | None = None,
    denoiser: Denoiser | None = None,
    config: DenoiseConfig | None = None,
    on_step: StepCallback | None = None,
    on_round: Callable[[int, int, RoundStats], None] | None = None,
    mask: np.ndarray | Tensor | None = None,
) -> tuple[GaussianPly, DenoiseStats]:
    """Fit `ply` (an init head with FLAME binding and metadata) to the photo `rgb` (uint8 [H, W, 3] at
    the fit's image size), then run `config.rounds` diffusion rounds when `denoiser` is given.

    features: avatarcli.diffusion.features.Features (its mask and CLIP embedding); needed for rounds.
    mask: optional explicit head region [H, W] (or [H, W, 1]) in 0..1 at the photo's size; overrides
    the features' mask. on_step(step, info) counts steps over the whole run (fit, then rounds);
    info: avatarcli.progress.FitStep (loss, psnr, n, sh_degree, phase). on_round(r, n_rounds, info)
    after each round, info: avatarcli.diffusion.rounds.RoundStats.
    Returns (head, DenoiseStats)."""
    cfg = config or DenoiseConfig()
    cfg.validate()
    rounds = cfg.rounds if denoiser is not None else 0
    needs_features = bool(getattr(denoiser, "needs_condition", True))  # the GAN prior does not use them
    rgb = _check_inputs(ply, rgb, features, rounds if needs_features else 0)
    meta = ply.meta
    assert meta is not None  # _check_inputs
    dev = resolve_device(cfg.device)
    t_all = time.perf_counter()

    verts, faces, _ = meta.canonical(model)
    root = torch.as_tensor(np.asarray(meta.root_joint), dtype=torch.float32)
    bound = ply.to_bound(verts, faces)
    image, cam = working_photo(rgb, photo_camera(meta.fit, root), cfg.max_side)
    region, region_src = head_region(mask, features, meta.image_size, (bound, verts, faces), cam, cfg, dev)

    photo_target = ViewTarget(cam.to(dev), image.to(dev), region.to(dev), 1.0)  # for the printed figures
    image = edge_colours(image, region, cfg.edge_band)
    verts, faces, bound = verts.to(dev), faces.to(dev), bound.to(dev)
    target = ViewTarget(cam.to(dev), image.to(dev), region.to(dev), 1.0)
    fcfg = replace(cfg.fit_config(rounds), mouth=head_gate(meta, model))  # the interior hidden while the lips touch
    psnr_init = input_view_psnr(bound, verts, faces, target, fcfg)

    t0 = time.perf_counter()
    fit_stats: FitStats | None = None
    if cfg.steps > 0:
        bound, fit_stats = fit_gaussians(bound, verts, faces, [target], fcfg, _phase_steps(on_step, 0, "fit"))
    t1 = time.perf_counter()
    psnr_fit = input_view_psnr(bound, verts, faces, target, fcfg)

    round_stats: RefineStats | None = None
    if rounds > 0 and denoiser is not None:  # (checked above: features when the denoiser needs them)
        bound, round_stats = _diffusion_rounds(
            bound, (verts, faces), target, features, denoiser, cfg, fcfg, rounds, on_step, on_round
        )
    t2 = time.perf_counter()
    if region_src != "init alpha":
        bound = cut_outside(bound, verts, faces, target)

    out, ssim = _final_ssim(bound, (verts, faces), target, fcfg)
    final_psnr = input_view_psnr(bound, verts, faces, target, fcfg)
    figures = region_figures(out, photo_target, fcfg)
    head = GaussianPly.from_bound(bound.to("cpu"), verts.cpu(), faces.cpu(), meta)
    stats = DenoiseStats(
        psnr_init=psnr_init,
        psnr_fit=psnr_fit,
        psnr=final_psnr,
        ssim=ssim,
        n_gaussians=head.gaussians.n,
        fit_s=t1 - t0,
        rounds_s=t2 - t1,
        seconds=time.perf_counter() - t_all,
        fit=fit_stats,
        rounds=round_stats,
        size=(cam.height, cam.width),
        mask=region_src,
        **figures,
    )
    return head, stats


__all__ = ["DenoiseConfig", "DenoiseStats", "denoise_head", "working_photo", "alpha_mask", "edge_colours"]
