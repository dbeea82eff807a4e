"""The `fit-flame` stage: FLAME fitted to the landmarks of one or more photos (one batched
optimisation), each fit with its quality (`avatar fit-flame`, `avatar reconstruct`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from avatarcli.flame.artifact import FlameFit, fit_quality
from avatarcli.flame.fit import FitConfig, fit_flame
from avatarcli.flame.model import FlameModel
from avatarcli.landmarks.artifact import Landmarks


@dataclass
class FitQuality:
    """How well a fit reproduces its landmarks (avatarcli.flame.artifact.fit_quality)."""

    mean_error_px: float  # mean reprojection error of the 68 landmarks
    max_error_px: float
    poor: bool  # mean error over the config's poor-fit threshold


def fit_photos(
    model: FlameModel,
    marks: Sequence[Landmarks],
    config: FitConfig | None = None,
    device: torch.device | str = "cpu",
) -> list[tuple[FlameFit, FitQuality]]:
    """Fit FLAME to every Landmarks at once -> (fit, quality) per input, in input order."""
    cfg = config or FitConfig()
    fits = fit_flame(model, marks, cfg, device)
    return [(fit, quality_of(fit, lm, cfg)) for fit, lm in zip(fits, marks)]


def quality_of(fit: FlameFit, marks: Landmarks, config: FitConfig) -> FitQuality:
    """The fit's quality against the landmarks it was fitted to (in the fit's pixels)."""
    err, poor = fit_quality(fit, marks.landmarks, config.poor_fit_px, config.poor_fit_frac)
    return FitQuality(mean_error_px=err, max_error_px=float(fit.landmark_error_px.max()), poor=poor)


__all__ = ["FitQuality", "fit_photos", "quality_of"]
