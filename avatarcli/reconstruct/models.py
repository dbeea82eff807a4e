"""The models of a reconstruct run: checked first (exit 3 naming every missing one), then loaded once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from avatarcli.device import resolve_device
from avatarcli.diffusion.denoiser import Denoiser, load_default_denoiser
from avatarcli.diffusion.encode import EncodeModels, load_encode_models
from avatarcli.errors import MissingModelError
from avatarcli.flame.loader import load_flame
from avatarcli.flame.locate import locate_flame
from avatarcli.flame.model import FlameModel
from avatarcli.gan.convert import load_generator
from avatarcli.gan.generator import TriplaneGenerator
from avatarcli.gan.lpips import Lpips, lpips_or_l2
from avatarcli.io.hashing import sha256_file
from avatarcli.landmarks.choose import Detector, detector_models, load_detector
from avatarcli.reconstruct.plan import Job, ReconstructConfig
from avatarcli.weights import get_entry, resolve, resolve_file
from avatarcli.weights.resolver import ROUTE_SETTINGS, without_download

DETECTOR_MODELS = ("fan-2d", "s3fd")
ENCODE_MODELS = ("sd-image-variations", "face-parsing")
DENOISER_MODELS = ("sd-image-variations",)
GAN_MODEL = "panohead"  # the converted GAN generator (`avatar weights convert panohead --from FILE.pkl`)


@dataclass
class Models:
    """Everything loaded once per batch."""

    device: torch.device
    flame: FlameModel
    detector: Detector | None = None  # None: every job brings its landmarks
    detector_models: tuple[str, ...] = DETECTOR_MODELS  # the weights.lock names of the chosen detector
    encode: EncodeModels | None = None  # None: no diffusion
    denoiser: Denoiser | None = None  # None: no diffusion rounds
    gan: TriplaneGenerator | None = None  # the GAN prior's generator (inverted per photo on a copy); None: no GAN
    perceptual: Lpips | None = None  # LPIPS for the inversion; None: L2 only (warned once at loading)
    ids: dict[str, str] = field(default_factory=dict)  # model name -> revision / override (work-folder keys)


def needed_models(jobs: Sequence[Job], config: ReconstructConfig) -> list[str]:
    """weights.lock names this run needs."""
    names: list[str] = []
    if any(j.landmarks is None for j in jobs):
        names += detector_models(config.detector)
    if config.use_diffusion:
        names += ENCODE_MODELS
        if config.needs_denoiser:
            names += [n for n in DENOISER_MODELS if n not in names]
    if config.use_gan and config.gan_weights is None:
        names.append(GAN_MODEL)  # LPIPS is optional: without it the inversion is L2 only (one warning)
    return names


def _model_id(name: str) -> str:
    entry = get_entry(name)
    ov = os.environ.get(entry.env_var)
    return f"override:{Path(ov).expanduser().resolve()}" if ov else f"{entry.name}@{entry.revision}"


def resolve_models(jobs: Sequence[Job], config: ReconstructConfig) -> list[str]:
    """Check (without loading anything big) that every model the run needs is here:
    the device, the FLAME model, each pinned model. Raises one EnvironmentProblem (exit 3)
    naming all the missing ones and the fix. Returns the needed weights names."""
    resolve_device(config.device)

    locate_flame(config.flame)
    names = needed_models(jobs, config)
    missing: list[str] = []
    for n in names:
        try:
            resolve(n)
        except MissingModelError:
            missing.append(n)
    if missing:
        if len(missing) == 1:
            resolve(missing[0])  # re-raise its own one-line message
        fetch = [n for n in missing if get_entry(n).kind != "manual"]
        fixes = ([f"`avatar weights fetch {' '.join(fetch)}`"] if fetch else []) + [
            f"`{get_entry(n).fix}` (download {get_entry(n).source_file} from {get_entry(n).url} first)"
            for n in missing
            if n not in fetch
        ]
        raise MissingModelError(
            f"models not available: {', '.join(missing)}; run {' and '.join(fixes)} "
            f"(or point AVATAR_WEIGHTS_<NAME> at local copies){without_download(missing)}",
            mentions=ROUTE_SETTINGS,
        )
    return names


def load_models(jobs: Sequence[Job], config: ReconstructConfig) -> Models:
    """Resolve everything first (exit 3 before any loading), then load each model once."""
    names = resolve_models(jobs, config)
    device = resolve_device(config.device)
    flame = load_flame(config.flame)
    models = Models(device=device, flame=flame, ids={n: _model_id(n) for n in names})
    if any(j.landmarks is None for j in jobs):
        models.detector = load_detector(config.detector, device=str(device), need_detector=True)
        models.detector_models = detector_models(config.detector)
    if config.use_diffusion:
        models.encode = load_encode_models(device)
        if config.needs_denoiser:
            models.denoiser = load_default_denoiser(device, vae=models.encode.vae)  # one VAE for both
    if config.use_gan:
        _load_gan(models, config)
    return models


def _load_gan(models: Models, config: ReconstructConfig) -> None:
    """The GAN generator (config.gan_weights or the registry's) and LPIPS, once for the batch;
    models.ids["gan"] / ["perceptual"] identify them in the invert-gan stage's work-folder key."""

    if config.gan_weights is not None:
        path = Path(config.gan_weights)
        models.ids["gan"] = f"file:{sha256_file(path)}"
    else:
        path = resolve_file(GAN_MODEL)
        models.ids["gan"] = models.ids.get(GAN_MODEL) or _model_id(GAN_MODEL)
    models.gan = load_generator(path, models.device)
    models.perceptual = lpips_or_l2(models.device)
    models.ids["perceptual"] = "l2" if models.perceptual is None else f"{_model_id('lpips-vgg')}+{_model_id('vgg16')}"
