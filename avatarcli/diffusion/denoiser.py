"""Denoisers for novel views: an interface, and Stable Diffusion image variations (img2img).

`Denoiser` is what the refinement rounds call; a multi-view model only has to
implement `denoise` (it gets the cameras of all views at once) to plug in.

`SDImageVariationsDenoiser` runs img2img in the VAE latent space:
    latents = VAE(views) * scaling_factor
    t_start from `strength` (DDIM timesteps of `num_inference_steps`, built from scheduler/ config)
    latents = add_noise(latents, noise(seed of each view), t_start)
    DDIM steps t_start..0 with the UNet conditioned on the CLIP image embedding
        (encoder_hidden_states = image_embeds[:, None, :]), classifier-free guidance
        against a zero embedding, cond and uncond batched together
    views = VAE.decode(latents / scaling_factor)
strength 0 returns the input unchanged. Noise is drawn on the CPU from
torch.Generator(seed) per view, so a seed gives the same noise on every device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.device import resolve_device
from avatarcli.diffusion import models as M
from avatarcli.diffusion.features import read_features
from avatarcli.errors import InputError
from avatarcli.io.images import load_image
from avatarcli.render.camera import Camera

if TYPE_CHECKING:  # heavy: diffusers is imported when the models are loaded
    from diffusers.models import AutoencoderKL, UNet2DConditionModel


@dataclass
class Conditioning:
    """What a denoiser is conditioned on."""

    image_embeds: Tensor  # [1, D] CLIP image embedding of the input photo's face crop
    image: Tensor | None = None  # [H, W, 3] float 0..1, the input photo (crop), for models that use it


@runtime_checkable
class Denoiser(Protocol):
    """What avatarcli.diffusion.rounds.refine calls once per round with ALL novel views.

    Contract (a multi-view diffusion model implements exactly this and plugs in unchanged):
      images     [B, H, W, 3] float in 0..1: the current head rendered from `cameras` over the
                 fit background (any device / float dtype; the output keeps both).
      cameras    B avatarcli.render.camera.Camera (OpenCV axes, world-to-camera viewmat, K with
                 pixel centres at integers) in the canonical head space: FLAME metres, y up, the
                 face towards +z. Relative poses are what a multi-view model needs; a per-view
                 model (SD image variations) ignores them.
      condition  Conditioning: the input photo's CLIP image embedding [1, D] (and the photo).
      strength   in [0, 1]: how far into the noise schedule the views are pushed before denoising.
                 0 returns the input images untouched (an exact copy, no model runs); 1 re-imagines
                 them from (almost) pure noise.
      seeds      B ints, one per view: the result is a deterministic function of the inputs and
                 the seeds (same seeds -> same images), independent of how views are batched.
    Returns [B, H, W, 3] in 0..1. Views may be processed jointly (a multi-view model should)."""

    def denoise(
        self, images: Tensor, cameras: list[Camera], condition: Conditioning, strength: float, seeds: list[int]
    ) -> Tensor:
        """images [B, H, W, 3] float 0..1 -> denoised [B, H, W, 3]; strength in [0, 1]; one seed per view."""
        ...


@dataclass
class DenoiseTimings:
    unet_s: float = 0.0
    unet_calls: int = 0
    vae_s: float = 0.0
    total_s: float = 0.0
    calls: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def view_noise(seed: int, shape: Sequence[int]) -> Tensor:
    """Deterministic standard normal noise [*shape] float32 on the CPU for one view."""
    g = torch.Generator(device="cpu").manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    return torch.randn(tuple(shape), generator=g, dtype=torch.float32)


@dataclass
class SDImageVariationsDenoiser:
    """img2img with lambdalabs/sd-image-variations-diffusers (or any UNet2DConditionModel + AutoencoderKL)."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler_config: dict  # scheduler/scheduler_config.json; DDIM is built from it
    num_inference_steps: int = 25
    guidance_scale: float = 3.0
    resolution: int | None = None  # views are resized to this for the model (None: their own size)
    max_batch: int = 8  # views per UNet call (x2 with guidance)
    timings: DenoiseTimings = field(default_factory=DenoiseTimings)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (VAE factor x UNet downsamplings)."""
        vae_f = 2 ** (len(self.vae.config["block_out_channels"]) - 1)
        return vae_f * 2 ** (len(self.unet.config["block_out_channels"]) - 1)

    def make_scheduler(self):
        from diffusers import DDIMScheduler

        cfg = {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
        cfg["clip_sample"] = False  # latents are not in [-1, 1]
        return DDIMScheduler.from_config(cfg)

    def timesteps_for(self, strength: float) -> Tensor:
        """The DDIM timesteps an img2img pass at `strength` runs (empty for strength ~ 0)."""
        sched = self.make_scheduler()
        sched.set_timesteps(self.num_inference_steps)
        n_run = min(int(round(self.num_inference_steps * float(strength))), self.num_inference_steps)
        return sched.timesteps[self.num_inference_steps - n_run :] if n_run > 0 else sched.timesteps[:0]

    def _model_size(self, H: int, W: int) -> tuple[int, int]:
        m = self.size_multiple
        if self.resolution:
            h = w = self.resolution
        else:
            h, w = H, W
        return (max(m, -(-h // m) * m), max(m, -(-w // m) * m))

    @torch.no_grad()
    def denoise(
        self, images: Tensor, cameras: list[Camera], condition: Conditioning, strength: float, seeds: list[int]
    ) -> Tensor:
        """images [B, H, W, 3] float 0..1 -> [B, H, W, 3] (same device and dtype as the input)."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise InputError(f"denoise expects images [B, H, W, 3], got {list(images.shape)}")
        B, H, W, _ = images.shape
        if len(seeds) != B:
            raise InputError(f"denoise got {B} views but {len(seeds)} seeds")
        if not 0.0 <= float(strength) <= 1.0:
            raise InputError(f"denoise strength must be in [0, 1], got {strength}")
        timesteps = self.timesteps_for(strength)
        if float(strength) == 0.0 or len(timesteps) == 0:
            return images.clone()
        emb = condition.image_embeds.reshape(1, -1)  # [1, D]
        cross = self.unet.config["cross_attention_dim"]
        if emb.shape[1] != cross:
            raise InputError(f"conditioning embedding has {emb.shape[1]} dims, the UNet expects {cross}")
        t0 = time.perf_counter()
        out = torch.empty_like(images)
        for s in range(0, B, self.max_batch):
            e = min(B, s + self.max_batch)
            out[s:e] = self._denoise_chunk(images[s:e], emb, timesteps, seeds[s:e]).to(images.device, images.dtype)
        _sync(self.device)
        self.timings.total_s += time.perf_counter() - t0
        self.timings.calls += 1
        return out

    def _denoise_chunk(self, images: Tensor, emb: Tensor, timesteps: Tensor, seeds: list[int]) -> Tensor:
        dev, dt = self.device, self.dtype
        b, H, W, _ = images.shape
        h, w = self._model_size(H, W)
        x = images.permute(0, 3, 1, 2).to(dev, torch.float32)  # [b, 3, H, W]
        if (h, w) != (H, W):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        sf = self.vae.config["scaling_factor"]

        _sync(dev)
        tv = time.perf_counter()
        lat = self.vae.encode((x * 2.0 - 1.0).to(self.vae.dtype)).latent_dist.mean.to(dt) * sf  # [b, 4, h/f, w/f]
        _sync(dev)
        self.timings.vae_s += time.perf_counter() - tv

        sched = self.make_scheduler()
        sched.set_timesteps(self.num_inference_steps, device=dev)
        timesteps = timesteps.to(dev)
        noise = torch.stack([view_noise(sd, lat.shape[1:]) for sd in seeds]).to(dev, dt)  # [b, 4, h/f, w/f]
        lat = sched.add_noise(lat, noise, timesteps[:1].repeat(b))

        cond = emb.to(dev, dt)[:, None, :].expand(b, 1, emb.shape[1])  # [b, 1, D]
        guided = self.guidance_scale > 1.0
        hidden = torch.cat([torch.zeros_like(cond), cond]) if guided else cond  # [2b or b, 1, D]
        for t in timesteps:
            inp = torch.cat([lat, lat]) if guided else lat
            inp = sched.scale_model_input(inp, t)
            _sync(dev)
            tu = time.perf_counter()
            eps = self.unet(inp, t, encoder_hidden_states=hidden).sample
            _sync(dev)
            self.timings.unet_s += time.perf_counter() - tu
            self.timings.unet_calls += 1
            if guided:
                eps_u, eps_c = eps.chunk(2)
                eps = eps_u + self.guidance_scale * (eps_c - eps_u)
            lat = sched.step(eps, t, lat, eta=0.0).prev_sample

        _sync(dev)
        tv = time.perf_counter()
        img = self.vae.decode((lat / sf).to(self.vae.dtype)).sample.float()  # [b, 3, h, w] in -1..1
        _sync(dev)
        self.timings.vae_s += time.perf_counter() - tv
        img = (img * 0.5 + 0.5).clamp(0.0, 1.0)
        if (h, w) != (H, W):
            img = F.interpolate(img, size=(H, W), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return img.permute(0, 2, 3, 1)  # [b, H, W, 3]


def load_default_denoiser(
    device: torch.device | str = "auto",
    dtype: torch.dtype | None = None,
    *,
    num_inference_steps: int = 25,
    guidance_scale: float = 3.0,
    resolution: int | str | None = "native",
    max_batch: int = 8,
    vae: AutoencoderKL | None = None,
) -> SDImageVariationsDenoiser:
    """The pinned sd-image-variations model via the resolver; fp16 on CUDA, fp32 on the CPU.

    `vae`: the same model's AutoencoderKL when it is already loaded (reconstruct's encode
    models hold it), so it is not loaded twice.

    resolution "native" = unet.sample_size x VAE factor (512 for SD 1.x) when that is at
    least 64 px, else the views' own size; an int forces a size; None keeps the views' size."""
    device = resolve_device(device)
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    folder = M.resolve_model(M.SD_IMAGE_VARIATIONS)
    sched_cfg = M.load_scheduler_config(folder)
    unet = M.load_unet(folder, device, dtype)
    vae = vae if vae is not None else M.load_vae(folder, device, dtype)
    model_side: int | None
    if resolution == "native":
        native = int(unet.config["sample_size"]) * 2 ** (len(vae.config["block_out_channels"]) - 1)
        model_side = native if native >= 64 else None
    elif isinstance(resolution, str):
        raise ValueError(f"resolution {resolution!r}: expected 'native', a size in pixels or None")
    else:
        model_side = resolution
    return SDImageVariationsDenoiser(
        unet=unet,
        vae=vae,
        scheduler_config=sched_cfg,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        resolution=model_side,
        max_batch=max_batch,
    )


def load_condition(source: str | Path, device: torch.device | str = "cpu") -> Conditioning:
    """Conditioning from a features.safetensors (its stored embedding) or from an image
    (CLIP embedding of the centred square crop of the whole image, via the pinned encoder)."""
    source = Path(source)
    if source.suffix.lower() == ".safetensors":
        f = read_features(source)
        return Conditioning(image_embeds=torch.from_numpy(f.image_embeds).to(device))

    device = resolve_device(device)
    img = load_image(source)
    folder = M.resolve_model(M.SD_IMAGE_VARIATIONS)
    enc = M.load_clip_encoder(folder, device, torch.float16 if device.type == "cuda" else torch.float32)
    rgb = torch.from_numpy(np.array(img.rgb, dtype=np.float32)) / 255.0  # [H, W, 3]
    H, W = rgb.shape[:2]
    s = min(H, W)
    sq = rgb[(H - s) // 2 : (H - s) // 2 + s, (W - s) // 2 : (W - s) // 2 + s]
    return Conditioning(image_embeds=enc.embed(sq[None]).to(device), image=rgb.to(device))
