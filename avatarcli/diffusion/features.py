"""The `features.safetensors` artifact written by `avatar encode`.

Tensors (all little-endian, C-contiguous):
    latents       [4, S/f, S/f] float32  VAE latent mean of the crop, times vae.config.scaling_factor
    image_embeds  [1, D]        float32  CLIP image embedding (CLIPVisionModelWithProjection.image_embeds)
    mask_crop     [S, S]        uint8    regions in the crop: 0 background, 1 face, 2 hair, 3 neck
    mask_image    [H, W]        uint8    the same regions projected back onto the (working) image
    affine        [2, 3]        float64  image pixel -> crop pixel (pixel centres at integers)
    crop_box      [4]           float64  x0 y0 x1 y1: image-space bounds of the crop square
Metadata header (strings): format "avatarcli.features", version "1", image_sha256,
image_size "H,W", crop_size "S", models (JSON: {role: {name, repo, revision}}),
region_names (JSON list).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

from avatarcli.errors import ArtifactError
from avatarcli.io.atomic import atomic_write_bytes
from avatarcli.io.tensors import read_safetensors

FORMAT = "avatarcli.features"
VERSION = 1
REGION_NAMES = ("background", "face", "hair", "neck")


@dataclass
class Features:
    latents: np.ndarray  # [4, h, w] float32
    image_embeds: np.ndarray  # [1, D] float32
    mask_crop: np.ndarray  # [S, S] uint8 in 0..3
    mask_image: np.ndarray  # [H, W] uint8 in 0..3
    affine: np.ndarray  # [2, 3] float64 image -> crop
    crop_box: np.ndarray  # [4] float64
    image_sha256: str
    models: dict = field(default_factory=dict)  # role -> {"name", "repo", "revision"}

    @property
    def crop_size(self) -> int:
        return int(self.mask_crop.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return (int(self.mask_image.shape[0]), int(self.mask_image.shape[1]))


_SPEC = {  # name -> (dtype, ndim)
    "latents": (np.float32, 3),
    "image_embeds": (np.float32, 2),
    "mask_crop": (np.uint8, 2),
    "mask_image": (np.uint8, 2),
    "affine": (np.float64, 2),
    "crop_box": (np.float64, 1),
}


def _validate(path, arrays: dict, meta: dict) -> None:
    def bad(msg):
        raise ArtifactError(msg, path=path)

    if meta.get("format") != FORMAT:
        bad(f"not an avatarcli features file (format {meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("version") != str(VERSION):
        bad(f"unsupported features version {meta.get('version')!r} (this avatarcli reads version {VERSION})")
    for name, (dt, nd) in _SPEC.items():
        if name not in arrays:
            bad(f"missing tensor {name!r}")
        a = arrays[name]
        if a.dtype != dt:
            bad(f"tensor {name!r} has dtype {a.dtype}, expected {np.dtype(dt)}")
        if a.ndim != nd:
            bad(f"tensor {name!r} has shape {list(a.shape)}, expected {nd} dimensions")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad(f"tensor {name!r} contains NaN or infinite values")
    S = arrays["mask_crop"].shape
    if S[0] != S[1] or S[0] < 8:
        bad(f"mask_crop has shape {list(S)}, expected a square [S, S]")
    lat = arrays["latents"].shape
    if lat[0] != 4 or lat[1] != lat[2] or S[0] % lat[1] != 0:
        bad(f"latents have shape {list(lat)}, expected [4, S/f, S/f] for crop size {S[0]}")
    if arrays["image_embeds"].shape[0] != 1:
        bad(f"image_embeds has shape {list(arrays['image_embeds'].shape)}, expected [1, D]")
    if arrays["affine"].shape != (2, 3):
        bad(f"affine has shape {list(arrays['affine'].shape)}, expected [2, 3]")
    if abs(np.linalg.det(arrays["affine"][:, :2])) < 1e-12:
        bad("affine is singular")
    if arrays["crop_box"].shape != (4,):
        bad(f"crop_box has shape {list(arrays['crop_box'].shape)}, expected [4]")
    for m in ("mask_crop", "mask_image"):
        if arrays[m].size and arrays[m].max() >= len(REGION_NAMES):
            bad(f"{m} has region ids up to {arrays[m].max()}, expected 0..{len(REGION_NAMES) - 1}")
    if not meta.get("image_sha256"):
        bad("metadata lacks image_sha256")


def features_to_bytes(f: Features) -> bytes:
    arrays = {
        "latents": np.ascontiguousarray(f.latents, dtype=np.float32),
        "image_embeds": np.ascontiguousarray(f.image_embeds, dtype=np.float32),
        "mask_crop": np.ascontiguousarray(f.mask_crop, dtype=np.uint8),
        "mask_image": np.ascontiguousarray(f.mask_image, dtype=np.uint8),
        "affine": np.ascontiguousarray(f.affine, dtype=np.float64),
        "crop_box": np.ascontiguousarray(f.crop_box, dtype=np.float64),
    }
    meta = {
        "format": FORMAT,
        "version": str(VERSION),
        "image_sha256": f.image_sha256,
        "image_size": f"{f.image_size[0]},{f.image_size[1]}",
        "crop_size": str(f.crop_size),
        "models": json.dumps(f.models, sort_keys=True),
        "region_names": json.dumps(list(REGION_NAMES)),
    }
    _validate("<features>", arrays, meta)
    return save({k: torch.from_numpy(v) for k, v in arrays.items()}, metadata=meta)


def write_features(path: str | Path, f: Features) -> Path:
    """Validate and write atomically."""
    data = features_to_bytes(f)
    atomic_write_bytes(path, data)
    return Path(path)


def read_features(path: str | Path) -> Features:
    """Read and validate; any problem -> ArtifactError naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError("features file not found", path=path)
    meta, tensors = read_safetensors(path)
    arrays = {k: t.numpy() for k, t in tensors.items()}
    _validate(path, arrays, meta)
    try:
        models = json.loads(meta.get("models", "{}"))
    except json.JSONDecodeError:
        raise ArtifactError("metadata 'models' is not valid JSON", path=path) from None
    return Features(
        latents=arrays["latents"],
        image_embeds=arrays["image_embeds"],
        mask_crop=arrays["mask_crop"],
        mask_image=arrays["mask_image"],
        affine=arrays["affine"],
        crop_box=arrays["crop_box"],
        image_sha256=meta["image_sha256"],
        models=models,
    )
