"""Loading the pinned diffusion / vision models through the one weights resolver.

Every loader takes a lock name ("sd-image-variations", "face-parsing"), asks
`avatarcli.weights.resolve(name)` for the local folder (env override
AVATAR_WEIGHTS_<NAME>, then the cache; MissingModelError otherwise), and loads
the REAL classes from the hub layout. Tests point the override at tiny models
of the same classes (avatarcli.testing.tiny_diffusion), so this code path is
the one CI runs.

Preprocessing configs (CLIPImageProcessor / SegformerImageProcessor JSON) are
read as plain JSON and applied in torch: no torchvision needed, and it runs on
the model's device.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from avatarcli.errors import ArtifactError, EnvironmentProblem, MissingModelError
from avatarcli.weights import env_var_for, get_entry, resolve

if TYPE_CHECKING:  # heavy imports: the loaders import them when a model is loaded
    from diffusers.models import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection, SegformerForSemanticSegmentation

SD_IMAGE_VARIATIONS = "sd-image-variations"
FACE_PARSING = "face-parsing"

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve_model(name: str) -> Path:
    """Local folder of lock model `name` (MissingModelError names `avatar weights fetch NAME`)."""

    return Path(resolve(name))


def model_info(name: str) -> dict:
    """{"name", "repo", "revision", "source"} for the features metadata header (from weights.lock).

    source is "override" when AVATAR_WEIGHTS_<NAME> points elsewhere (the revision is then
    the pinned one, not necessarily what that folder holds), else "cache"."""

    e = get_entry(name)
    return {
        "name": name,
        "repo": e.repo or e.url or "",
        "revision": e.revision,
        "source": "override" if os.environ.get(env_var_for(name)) else "cache",
    }


def _quiet_from_pretrained(cls, name: str, folder: Path, *args, **kwargs):
    """cls.from_pretrained(folder, ...) without warnings or progress bars; any failure to load
    (corrupt or truncated weights, a config of another class) -> one EnvironmentProblem line."""
    import transformers
    from diffusers.utils import logging as dlogging

    tbar = transformers.utils.logging.is_progress_bar_enabled()
    dbar = dlogging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    dlogging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls.from_pretrained(folder, *args, **kwargs)
    except Exception as e:  # noqa: BLE001 - loaders raise OSError/ValueError/RuntimeError/safetensors errors
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise EnvironmentProblem(
            f"cannot load model {name!r} ({cls.__name__}: {type(e).__name__}: {first}); "
            f"check it with `avatar weights verify {name}` or re-fetch it with `avatar weights fetch {name}`",
            path=folder,
        ) from None
    finally:
        if tbar:
            transformers.utils.logging.enable_progress_bar()
        if dbar:
            dlogging.enable_progress_bar()


def _need(folder: Path, name: str, parts: list[str]) -> None:
    for p in parts:
        if not (folder / p).exists():
            raise MissingModelError(
                f"model {name!r} at {folder} lacks {p}: run `avatar weights fetch {name}`", path=folder
            )


@dataclass
class ImagePrep:
    """Resize + normalise settings read from a preprocessor_config.json."""

    size: tuple[int, int]  # (H, W) the model sees
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    antialias: bool = True  # False for the sd-image-variations CLIP encoder (see load_clip_encoder)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """[B, H, W, 3] float 0..1 -> [B, 3, h, w] normalised."""
        x = images.permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != self.size:
            x = torch.nn.functional.interpolate(
                x, size=self.size, mode="bicubic", align_corners=False, antialias=self.antialias
            )
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std


def _read_prep(path: Path, default_size: int, mean, std) -> ImagePrep:
    cfg = json.loads(path.read_text()) if path.exists() else {}
    size = cfg.get("crop_size") if cfg.get("do_center_crop", False) else cfg.get("size")
    if isinstance(size, dict):
        side = size.get("shortest_edge", default_size)
        h = size["height"] if "height" in size else side
        w = size["width"] if "width" in size else side
    elif isinstance(size, int):
        h = w = size
    else:
        h = w = default_size
    return ImagePrep((int(h), int(w)), tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std)))


@dataclass
class ClipEncoder:
    model: CLIPVisionModelWithProjection
    prep: ImagePrep

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """[B, H, W, 3] 0..1 -> image_embeds [B, D] (float32)."""
        p = next(self.model.parameters())
        x = self.prep(images.to(p.device, torch.float32)).to(p.dtype)
        return self.model(pixel_values=x).image_embeds.float()


@dataclass
class FaceParser:
    model: SegformerForSemanticSegmentation
    prep: ImagePrep
    id2label: dict[int, str] = field(default_factory=dict)

    @property
    def n_labels(self) -> int:
        """The label ids the model predicts (its config's num_labels, which transformers types Optional)."""
        n = self.model.config.num_labels
        if n is None:
            raise EnvironmentProblem("the face-parsing model's config has no num_labels")
        return int(n)

    @torch.no_grad()
    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """[B, H, W, 3] 0..1 -> label map [B, H, W] long (model label ids, argmax at full size)."""
        p = next(self.model.parameters())
        H, W = images.shape[1:3]
        logits = self.model(pixel_values=self.prep(images.to(p.device, torch.float32)).to(p.dtype)).logits
        logits = torch.nn.functional.interpolate(logits.float(), size=(H, W), mode="bilinear", align_corners=False)
        return logits.argmax(1)


def load_vae(folder: Path, device, dtype) -> AutoencoderKL:
    from diffusers import AutoencoderKL

    _need(folder, SD_IMAGE_VARIATIONS, ["vae/config.json"])
    vae = _quiet_from_pretrained(
        AutoencoderKL, SD_IMAGE_VARIATIONS, folder, subfolder="vae", torch_dtype=dtype, low_cpu_mem_usage=False
    )
    return vae.to(device).eval().requires_grad_(False)


def load_unet(folder: Path, device, dtype) -> UNet2DConditionModel:
    from diffusers import UNet2DConditionModel

    _need(folder, SD_IMAGE_VARIATIONS, ["unet/config.json"])
    unet = _quiet_from_pretrained(
        UNet2DConditionModel, SD_IMAGE_VARIATIONS, folder, subfolder="unet", torch_dtype=dtype, low_cpu_mem_usage=False
    )
    return unet.to(device).eval().requires_grad_(False)


def load_scheduler_config(folder: Path) -> dict:
    """The repo's scheduler config (a PNDM config in the real repo); the denoiser builds DDIM from it."""
    p = folder / "scheduler" / "scheduler_config.json"
    if not p.exists():
        raise MissingModelError(
            f"model {SD_IMAGE_VARIATIONS!r} lacks scheduler/: run `avatar weights fetch {SD_IMAGE_VARIATIONS}`",
            path=folder,
        )
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"scheduler config is not valid JSON ({e.msg})", path=p) from None


def load_clip_encoder(folder: Path, device, dtype) -> ClipEncoder:
    from transformers import CLIPVisionModelWithProjection

    _need(folder, SD_IMAGE_VARIATIONS, ["image_encoder/config.json"])
    model = _quiet_from_pretrained(
        CLIPVisionModelWithProjection, SD_IMAGE_VARIATIONS, folder / "image_encoder", dtype=dtype
    )
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    prep = _read_prep(
        folder / "feature_extractor" / "preprocessor_config.json", model.config.image_size, CLIP_MEAN, CLIP_STD
    )
    # The sd-image-variations v2 model card: the model was trained on images resized to 224 px
    # bicubic WITHOUT anti-aliasing, and inference must resize the same way.
    prep.antialias = False
    return ClipEncoder(model, prep)


def load_face_parser(folder: Path, device, dtype=torch.float32) -> FaceParser:
    from transformers import SegformerForSemanticSegmentation

    _need(folder, FACE_PARSING, ["config.json"])
    model = _quiet_from_pretrained(SegformerForSemanticSegmentation, FACE_PARSING, folder, dtype=dtype)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    prep = _read_prep(folder / "preprocessor_config.json", 512, IMAGENET_MEAN, IMAGENET_STD)
    id2label = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    return FaceParser(model, prep, id2label)
