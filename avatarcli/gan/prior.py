"""The inverted GAN as a prior for the denoise rounds, behind the diffusion denoiser's interface
(avatarcli.diffusion.denoiser.Denoiser): `denoise(images, cameras, condition, strength, seeds)`.

GanPrior      each novel view's "denoised" image is the inverted GAN rendered from that camera
              (avatarcli.gan.camera.camera_to_gan, the inversion's pivot and scale, moved by
              the photo's camera offset when the GAN has PanoHead's t_mapping), composited
              by the GAN's own opacity over the current render (where the GAN has no head, the
              view keeps what it had). The rounds fit these as soft targets; the photo stays the
              hard constraint. strength 0 returns the input exactly; otherwise the render does not
              depend on strength or seeds (it is deterministic: noise_mode "const").
PriorChain    gan+diffusion: the GAN's views, then the diffusion denoiser at the same strength
              (global full-head structure from the GAN, detail from the diffusion model).

`needs_condition`: whether the prior uses the photo's features (CLIP embedding); denoise asks
for `--features` only when it does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from avatarcli.errors import InputError
from avatarcli.gan.align import uncrop
from avatarcli.gan.camera import GanView, camera_to_gan
from avatarcli.gan.generator import TriplaneGenerator, offset_camera
from avatarcli.gan.invert import Inversion, read_inversion_artifact
from avatarcli.render.camera import Camera


class GanPrior:
    needs_condition = False

    def __init__(self, inversion: Inversion, device: str | torch.device = "cpu"):
        if inversion.frame is None:
            raise ValueError("the inversion has no frame (crop / pivot / scale): re-run `avatar invert-gan`")
        self.G: TriplaneGenerator = inversion.generator.to(device).eval().requires_grad_(False)
        self.ws = inversion.ws.to(device)
        fr = inversion.frame
        self.view = GanView(inversion.camera, fr.scale, fr.pivot)
        off = inversion.camera_offset
        self.offset = torch.zeros(3) if off is None else off.float().reshape(3).cpu()  # added to every view
        self.device = torch.device(device)

    @torch.no_grad()
    def render(self, cameras: list[Camera]) -> tuple[Tensor, Tensor]:
        """The GAN from canonical-head cameras (all one size) -> rgb [B, H, W, 3] in 0..1, alpha [B, H, W, 1]."""
        R = self.G.cfg.img_resolution
        rgbs, alphas = [], []
        for cam in cameras:
            c, sq = camera_to_gan(cam, self.view, R)
            out = self.G.synthesis(self.ws, offset_camera(c, self.offset).to(self.device))
            rgb = ((out.image + 1) / 2).clamp(0, 1)  # [1, 3, R, R]
            op = F.interpolate(out.opacity, size=(R, R), mode="bilinear", align_corners=False).clamp(0, 1)
            img, inside = uncrop(torch.cat([rgb, op], dim=1), sq, (cam.height, cam.width))  # [1, 4, H, W]
            rgbs.append(img[0, :3].permute(1, 2, 0))
            alphas.append((img[0, 3:] * inside[0]).permute(1, 2, 0))
        return torch.stack(rgbs), torch.stack(alphas)

    def denoise(
        self, images: Tensor, cameras: list[Camera], condition, strength: float, seeds: list[int]
    ) -> Tensor:  # [B, H, W, 3] -> [B, H, W, 3]
        if strength <= 0:
            return images.clone()
        rgb, alpha = self.render(cameras)
        rgb, alpha = rgb.to(images.device, images.dtype), alpha.to(images.device, images.dtype)
        return alpha * rgb + (1 - alpha) * images


class PriorChain:
    """Denoisers applied in turn (gan+diffusion: GanPrior, then the diffusion model)."""

    def __init__(self, *denoisers):
        self.denoisers = denoisers
        self.needs_condition = any(getattr(d, "needs_condition", True) for d in denoisers)

    def denoise(self, images: Tensor, cameras: list[Camera], condition, strength: float, seeds: list[int]) -> Tensor:
        for d in self.denoisers:
            images = d.denoise(images, cameras, condition, strength, seeds)
        return images


PRIORS = ("diffusion", "gan", "gan+diffusion")


def load_gan_prior(path, image_size: tuple[int, int], device: str | torch.device = "cpu") -> GanPrior:
    """GanPrior from `avatar invert-gan`'s file; InputError when it was made for another photo size."""

    inv = read_inversion_artifact(path)
    if inv.frame is None:
        raise InputError("the GAN inversion has no frame (crop / pivot / scale): re-run `avatar invert-gan`", path=path)
    if tuple(inv.frame.image_size) != tuple(image_size):
        raise InputError(
            f"the GAN inversion was made on a {inv.frame.image_size} photo, the head on {tuple(image_size)}", path=path
        )
    return GanPrior(inv, device)
