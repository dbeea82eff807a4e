"""GAN inversion: a latent w for one photo (W-space optimisation), then pivotal tuning (PTI:
Roich et al. 2022) of the generator's weights around that pivot, both on an L2 loss inside a
head-region mask.

    c = gan_camera(yaw=0.0, pitch=0.0)             # [1, 25] in the generator's convention
    inv = invert(G, image, mask, c, InversionConfig(), on_step=...)
    write_inversion("gan.safetensors", inv)

Cameras: avatarcli.gan.camera (EG3D's convention; the FLAME fit's camera mapped by gan_view).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save

from avatarcli.errors import ArtifactError
from avatarcli.gan.camera import FOCAL, gan_camera  # noqa: F401  (re-exported)
from avatarcli.gan.generator import GanConfig, TriplaneGenerator
from avatarcli.io.atomic import atomic_write_bytes
from avatarcli.io.tensors import read_safetensors


@dataclass(frozen=True)
class InversionConfig:
    w_steps: int = 500
    pti_steps: int = 350
    w_lr: float = 0.01
    pti_lr: float = 3e-4
    w_avg_samples: int = 2000  # when the generator has no tracked w_avg
    lpips_weight: float = 1.0  # loss = masked L2 + lpips_weight * masked LPIPS (when given one)
    seed: int = 0


@dataclass
class InversionFrame:
    """Where the GAN sits against the photo and the FLAME head (avatarcli.gan.camera.GanView)."""

    crop_affine: np.ndarray  # [2, 3] float64: photo pixel -> GAN crop pixel
    crop_size: int
    image_size: tuple[int, int]  # (H, W) of the photo the affine applies to
    pivot: torch.Tensor  # [3] the FLAME point at the GAN origin
    scale: float  # GAN units per FLAME metre


@dataclass
class Inversion:
    ws: torch.Tensor  # [1, num_ws, w_dim] the pivot
    camera: torch.Tensor  # [1, 25] the rendering camera (camera_offset included)
    generator: TriplaneGenerator  # fine-tuned copy (the input generator is left unchanged)
    w_losses: list[float] = field(default_factory=list)
    pti_losses: list[float] = field(default_factory=list)
    frame: InversionFrame | None = None
    camera_offset: torch.Tensor | None = None  # [3] PanoHead's learned camera translation, added to every view


def masked_l2(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pixels where mask [N, 1, H, W] > 0 (all channels)."""
    w = (mask > 0).to(pred.dtype).expand_as(pred)
    return ((pred - target).square() * w).sum() / w.sum().clamp(min=1)


def inversion_loss(
    pred: torch.Tensor,  # [1, 3, R, R]
    target: torch.Tensor,
    mask: torch.Tensor,  # [1, 1, R, R]
    perceptual: Callable[..., torch.Tensor] | None,
    weight: float,
) -> torch.Tensor:
    """Masked L2, plus `weight` x the masked perceptual distance when `perceptual` is given."""
    loss = masked_l2(pred, target, mask)
    if perceptual is not None and weight > 0:
        loss = loss + weight * perceptual(pred, target, mask).mean()
    return loss


def _start_w(G: TriplaneGenerator, c: torch.Tensor, cfg: InversionConfig) -> torch.Tensor:  # [1, w_dim]
    if G.mapping.w_avg.abs().sum() > 0:
        return G.mapping.w_avg[None].clone()
    g = torch.Generator().manual_seed(cfg.seed)
    z = torch.randn(cfg.w_avg_samples, G.cfg.z_dim, generator=g).to(c.device)
    with torch.no_grad():
        return G.map(z, c.expand(len(z), -1))[:, 0].mean(0, keepdim=True)


def invert(
    G: TriplaneGenerator,
    image: torch.Tensor,  # [1, 3, R, R] in [-1, 1], R = G.cfg.img_resolution
    mask: torch.Tensor,  # [1, 1, R, R] head region
    c: torch.Tensor,  # [1, 25]
    cfg: InversionConfig = InversionConfig(),
    on_step: Callable[[str, int, float], None] | None = None,
    perceptual: Callable[..., torch.Tensor] | None = None,  # e.g. gan.lpips.Lpips: (x, y, mask) -> [N]
) -> Inversion:
    """W-space optimisation, then PTI on a copy of G; `on_step(stage, step, loss)` after each step.
    The loss: masked L2 (+ cfg.lpips_weight x `perceptual`; None: L2 only, the caller warns)."""
    torch.manual_seed(cfg.seed)
    G.requires_grad_(False)
    w = _start_w(G, c, cfg).requires_grad_(True)
    out = Inversion(ws=w.detach(), camera=c, generator=G)

    def w_loss() -> torch.Tensor:
        ws = w[:, None].expand(-1, G.num_ws, -1)
        return inversion_loss(G.synthesis(ws, c).image, image, mask, perceptual, cfg.lpips_weight)

    opt = torch.optim.Adam([w], lr=cfg.w_lr, betas=(0.9, 0.999))
    _optimise(opt, w_loss, cfg.w_steps, "w", out.w_losses, on_step)
    pivot = w.detach()[:, None].expand(-1, G.num_ws, -1).clone()
    tuned = copy.deepcopy(G).requires_grad_(True)

    def pti_loss() -> torch.Tensor:
        return inversion_loss(tuned.synthesis(pivot, c).image, image, mask, perceptual, cfg.lpips_weight)

    _optimise(
        torch.optim.Adam(tuned.parameters(), lr=cfg.pti_lr), pti_loss, cfg.pti_steps, "pti", out.pti_losses, on_step
    )
    out.ws, out.generator = pivot, tuned.eval().requires_grad_(False)
    return out


def _optimise(
    opt: torch.optim.Optimizer,
    loss_fn: Callable[[], torch.Tensor],
    steps: int,
    stage: str,
    losses: list[float],
    on_step: Callable[[str, int, float], None] | None,
) -> None:
    """`steps` Adam steps on loss_fn(); each loss appended to `losses` and reported to on_step."""
    for step in range(steps):
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if on_step:
            on_step(stage, step, losses[-1])


INVERSION_FORMAT = "avatarcli.gan-inversion"


def write_inversion(path, inv: Inversion) -> None:
    """One safetensors file: ws [1, num_ws, w_dim], camera [1, 25] and the tuned generator's
    tensors under "G."; metadata: format, version 1, the GanConfig (JSON), the last losses."""
    tensors = {"ws": inv.ws.contiguous(), "camera": inv.camera.contiguous()}
    if inv.camera_offset is not None:
        tensors["camera_offset"] = inv.camera_offset.float().reshape(3).contiguous()
    fr = inv.frame
    if fr is not None:
        tensors["frame.crop_affine"] = torch.as_tensor(np.asarray(fr.crop_affine, np.float64))
        tensors["frame.pivot"] = fr.pivot.float().reshape(3).contiguous()
        tensors["frame.scale"] = torch.tensor([fr.scale], dtype=torch.float64)
        tensors["frame.sizes"] = torch.tensor([fr.crop_size, *fr.image_size], dtype=torch.int64)
    tensors.update({f"G.{k}": v.contiguous() for k, v in inv.generator.state_dict().items()})
    meta = {
        "format": INVERSION_FORMAT,
        "version": "1",
        "config": json.dumps(inv.generator.cfg.to_dict()),
        "w_loss": f"{inv.w_losses[-1]:.6g}" if inv.w_losses else "",
        "pti_loss": f"{inv.pti_losses[-1]:.6g}" if inv.pti_losses else "",
    }
    atomic_write_bytes(path, save(tensors, metadata=meta))


def read_inversion(path) -> tuple[torch.Tensor, torch.Tensor, TriplaneGenerator]:
    """(ws [1, num_ws, w_dim], camera [1, 25], tuned generator) from `write_inversion`'s file."""
    inv = read_inversion_artifact(path)
    return inv.ws, inv.camera, inv.generator


def read_inversion_artifact(path) -> Inversion:
    """The whole inversion file: pivot, camera, tuned generator, last losses and (when written) its frame."""
    p = Path(path)
    meta, t = read_safetensors(p)
    if meta.get("format") != INVERSION_FORMAT or meta.get("version") != "1":
        raise ArtifactError(f"not a GAN inversion file (format {meta.get('format')!r})", path=p)
    try:
        G = TriplaneGenerator(GanConfig.from_dict(json.loads(meta["config"])))
        G.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("G.")}, strict=True)
        ws, cam = t["ws"], t["camera"]
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"GAN inversion file is incomplete ({type(e).__name__})", path=p) from None
    frame = None
    if "frame.crop_affine" in t:
        sizes = [int(v) for v in t["frame.sizes"]]
        frame = InversionFrame(t["frame.crop_affine"].double().numpy(), sizes[0], (sizes[1], sizes[2]),
                               t["frame.pivot"].float(), float(t["frame.scale"][0]))  # fmt: skip
    loss = lambda k: [float(meta[k])] if meta.get(k) else []  # noqa: E731
    offset = t["camera_offset"].float() if "camera_offset" in t else None
    return Inversion(ws, cam, G.eval().requires_grad_(False), loss("w_loss"), loss("pti_loss"), frame, offset)
