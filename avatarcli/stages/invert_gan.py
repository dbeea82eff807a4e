"""The `invert-gan` stage for one photo: the GAN's aligned crop of the photo and its head region,
the FLAME fit's camera in the GAN's convention, then W-space inversion + pivotal tuning.

    inv = invert_photo(G, rgb, landmarks, region, fit, model, InversionConfig(), perceptual=lpips)
    write_inversion("face.gan.safetensors", inv)    # inv.frame: crop, pivot and scale, for the prior

rgb [H, W, 3] uint8, landmarks [68, 2] and region [H, W] are all at the fit's image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from avatarcli.diffusion.crop import CropAlign
from avatarcli.errors import InputError
from avatarcli.flame.artifact import FlameFit
from avatarcli.flame.model import FlameModel
from avatarcli.gan.align import crop_tensor, gan_align
from avatarcli.gan.camera import FOCAL, GanView, gan_view, head_pivot
from avatarcli.gan.generator import TriplaneGenerator, offset_camera
from avatarcli.gan.invert import Inversion, InversionConfig, InversionFrame, invert
from avatarcli.render.camera import Camera, photo_camera


@dataclass
class GanTarget:
    image: Tensor  # [1, 3, R, R] the aligned crop in [-1, 1]
    mask: Tensor  # [1, 1, R, R] the head region in the crop (0 / 1)
    view: GanView
    align: CropAlign


def gan_target(
    rgb: np.ndarray, landmarks: np.ndarray, region: np.ndarray, camera: Camera, vertices: Tensor, size: int
) -> GanTarget:
    """The crop the GAN is inverted to, its head mask and camera (`camera`: the canonical head's
    photo camera; `vertices` [V, 3]: the canonical head, whose bounding-box centre is the pivot)."""
    H, W = rgb.shape[:2]
    if np.asarray(region).shape[:2] != (H, W):
        raise InputError(f"the head region is {np.asarray(region).shape[:2]}, the photo {H}x{W}")
    try:
        align = gan_align(landmarks, size)
    except ValueError as e:
        raise InputError(f"cannot align the GAN crop: {e}") from None
    img = (
        torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    )  # [1, 3, H, W]
    crop = crop_tensor(img, align) * 2 - 1
    reg = torch.as_tensor(np.asarray(region, np.float32)).reshape(1, 1, H, W)
    mask = (crop_tensor(reg, align) > 0.5).float()
    if float(mask.sum()) < 1:
        raise InputError("the head region does not reach into the GAN crop (check the landmarks / mask)")
    return GanTarget(crop, mask, gan_view(camera, align, head_pivot(vertices)), align)


def camera_note(view: GanView, tolerance: float = 0.3) -> str | None:
    """A warning when the crop's camera is far from the GAN's training cameras (focal, centre)."""
    K = view.c[0, 16:].reshape(3, 3)
    f, cx, cy = float(K[0, 0]), float(K[0, 2]), float(K[1, 2])
    if abs(f / FOCAL - 1) > tolerance or max(abs(cx - 0.5), abs(cy - 0.5)) > 0.1:
        return (
            f"the photo's camera in the GAN crop (focal {f:.2f}, centre {cx:.2f}, {cy:.2f}) is far from the GAN's "
            f"training cameras (focal {FOCAL:.2f}, centre 0.50): the prior may fit poorly"
        )
    return None


def invert_photo(
    G: TriplaneGenerator,
    rgb: np.ndarray,
    landmarks: np.ndarray,
    region: np.ndarray,
    fit: FlameFit,
    model: FlameModel,
    config: InversionConfig = InversionConfig(),
    perceptual: Callable[..., Tensor] | None = None,
    on_step: Callable[[str, int, float], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Inversion:
    """Invert G to the photo (see the module docstring); the result carries its InversionFrame.
    on_warning(line): told when the photo's camera is far from the GAN's training cameras."""
    if tuple(rgb.shape[:2]) != tuple(fit.image_size):
        raise InputError(f"the photo is {rgb.shape[0]}x{rgb.shape[1]}, the FLAME fit is for {fit.image_size}")
    verts, _, root = fit.canonical(model)
    tgt = gan_target(rgb, landmarks, region, photo_camera(fit, root), verts, G.cfg.img_resolution)
    note = camera_note(tgt.view)
    if note and on_warning is not None:
        on_warning(note)
    dev = next(G.parameters()).device
    tgt.image, tgt.mask, tgt.view.c = tgt.image.to(dev), tgt.mask.to(dev), tgt.view.c.to(dev)
    with torch.no_grad():  # PanoHead's learned camera offset, fixed for the photo as its projector does
        offset = G.camera_offset(tgt.view.c)[0]  # [3] (zeros without t_mapping)
    c = offset_camera(tgt.view.c, offset)
    inv = invert(G, tgt.image, tgt.mask, c, config, on_step=on_step, perceptual=perceptual)
    inv.camera_offset = offset.detach().cpu()
    inv.frame = InversionFrame(
        tgt.align.affine, tgt.align.size, (int(rgb.shape[0]), int(rgb.shape[1])), tgt.view.pivot, tgt.view.scale
    )
    return inv


__all__ = ["GanTarget", "camera_note", "gan_target", "invert_photo"]
