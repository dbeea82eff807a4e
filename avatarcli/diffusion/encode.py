"""`encode` stage: aligned face crop -> VAE latents, CLIP image embedding, face-region mask.

Face-region mapping from the 19 CelebAMask-HQ labels of the face parser
(by label NAME from the model's config.id2label; ".png" suffixes ignored):
    face (1):       skin, nose, eye_g (glasses), l_eye, r_eye, l_brow, r_brow,
                    l_ear, r_ear, ear_r (earring), mouth, u_lip, l_lip
    hair (2):       hair, hat
    neck (3):       neck, neck_l (necklace)
    background (0): background, cloth, and any label not listed here
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from avatarcli.device import resolve_device
from avatarcli.diffusion import models as M
from avatarcli.diffusion.crop import CropAlign, align_face, labels_to_image, warp_to_crop
from avatarcli.diffusion.features import Features

if TYPE_CHECKING:  # heavy: diffusers is imported when the models are loaded
    from diffusers.models import AutoencoderKL

REGION_BACKGROUND, REGION_FACE, REGION_HAIR, REGION_NECK = 0, 1, 2, 3
LABEL_TO_REGION = {
    "background": REGION_BACKGROUND,
    "cloth": REGION_BACKGROUND,
    "skin": REGION_FACE,
    "nose": REGION_FACE,
    "eye_g": REGION_FACE,
    "l_eye": REGION_FACE,
    "r_eye": REGION_FACE,
    "l_brow": REGION_FACE,
    "r_brow": REGION_FACE,
    "l_ear": REGION_FACE,
    "r_ear": REGION_FACE,
    "ear_r": REGION_FACE,
    "mouth": REGION_FACE,
    "u_lip": REGION_FACE,
    "l_lip": REGION_FACE,
    "hair": REGION_HAIR,
    "hat": REGION_HAIR,
    "neck": REGION_NECK,
    "neck_l": REGION_NECK,
}
# Label order of jonathandinu/face-parsing, used when a config has no usable names.
CELEBAMASK_ORDER = [
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
]  # fmt: skip


def region_lut(id2label: dict[int, str], n_labels: int) -> np.ndarray:
    """Lookup table [n_labels] uint8: parser label id -> region id."""
    lut = np.zeros(n_labels, dtype=np.uint8)
    for i in range(n_labels):
        name = str(id2label.get(i, "")).lower().removesuffix(".png")
        generic = name == "" or name.startswith("label_")
        if generic and i < len(CELEBAMASK_ORDER):
            name = CELEBAMASK_ORDER[i]  # generic "LABEL_i" names: assume the CelebAMask-HQ order
        lut[i] = LABEL_TO_REGION.get(name, REGION_BACKGROUND)
    return lut


@dataclass
class EncodeModels:
    vae: AutoencoderKL
    clip: M.ClipEncoder
    parser: M.FaceParser
    info: dict  # role -> {"name", "repo", "revision"}
    device: torch.device


def load_encode_models(device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> EncodeModels:
    """Resolve BOTH models first (MissingModelError before any loading), then load them."""
    device = resolve_device(device)
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    sd = M.resolve_model(M.SD_IMAGE_VARIATIONS)
    fp = M.resolve_model(M.FACE_PARSING)
    sd_info = M.model_info(M.SD_IMAGE_VARIATIONS)
    fp_info = M.model_info(M.FACE_PARSING)
    info = {
        "vae": {**sd_info, "subfolder": "vae"},
        "image_encoder": {**sd_info, "subfolder": "image_encoder"},
        "face_parser": fp_info,
    }
    return EncodeModels(
        vae=M.load_vae(sd, device, dtype),
        clip=M.load_clip_encoder(sd, device, dtype),
        parser=M.load_face_parser(fp, device, torch.float32),
        info=info,
        device=device,
    )


@torch.no_grad()
def vae_encode(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] 0..1 -> scaled latents [B, 4, H/f, W/f] float32 (latent mean, deterministic)."""
    p = next(vae.parameters())
    x = images.permute(0, 3, 1, 2).to(p.device, p.dtype) * 2.0 - 1.0
    return (vae.encode(x).latent_dist.mean * vae.config["scaling_factor"]).float()


def encode_face(
    rgb: np.ndarray, landmarks: np.ndarray, models: EncodeModels, *, size: int = 512, image_sha256: str = ""
) -> tuple[Features, CropAlign]:
    """Image uint8 [H, W, 3] + landmarks [68, 2] (in that image's pixels) -> (Features, crop alignment)."""
    align = align_face(landmarks, size)
    crop = torch.from_numpy(warp_to_crop(rgb, align))[None].to(models.device)  # [1, S, S, 3]
    latents = vae_encode(models.vae, crop)[0].cpu().numpy()  # [4, S/f, S/f]
    embeds = models.clip.embed(crop).cpu().numpy()  # [1, D]
    labels = models.parser.labels(crop)[0].cpu().numpy()  # [S, S] parser ids
    lut = region_lut(models.parser.id2label, models.parser.n_labels)
    mask_crop = lut[labels]  # [S, S] uint8
    mask_image = labels_to_image(mask_crop, align, rgb.shape[:2])  # [H, W] uint8
    feats = Features(
        latents=latents.astype(np.float32),
        image_embeds=embeds.astype(np.float32),
        mask_crop=mask_crop,
        mask_image=mask_image,
        affine=align.affine,
        crop_box=align.box,
        image_sha256=image_sha256,
        models=models.info,
    )
    return feats, align
