"""The `init-gaussians` stage: FLAME-bound Gaussians seeded on a fit's canonical head, coloured
from its photo (avatarcli.gaussians.init), with where the colours came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from avatarcli.errors import InputError
from avatarcli.flame.artifact import FlameFit
from avatarcli.flame.model import FlameModel
from avatarcli.gaussians.init import InitConfig, init_with_details
from avatarcli.gaussians.ply import GaussianPly
from avatarcli.io.images import LoadedImage, check_image, load_image


@dataclass
class InitStats:
    """Where the seeded Gaussians' colours came from, as fractions of all Gaussians."""

    n_gaussians: int
    from_photo: float  # seen in the photo
    mirrored: float  # unseen, the mirrored point is seen
    skin_prior: float  # neither: the skin tone
    unseen_hair: float | None  # unseen hair coloured from the seen hair (None without a head region)


def load_photo_for(image: Path, image_size: tuple[int, int], what: Path) -> LoadedImage:
    """Load `image` at the size the FLAME fit was made on (its original size); InputError if they differ."""
    H, W = (int(s) for s in image_size)
    check_image(image)
    loaded = load_image(image, max_side=max(H, W, 32))
    if tuple(loaded.original_size) != (H, W) or loaded.size != (H, W):
        raise InputError(
            f"the image is {loaded.original_size[0]}x{loaded.original_size[1]} (HxW) but {what} was made "
            f"on a {H}x{W} image: is it the same photo?",
            path=image,
        )
    return loaded


def init_head(
    model: FlameModel,
    fit: FlameFit,
    rgb: np.ndarray,  # [H, W, 3] uint8 at fit.image_size
    config: InitConfig | None = None,
    region: np.ndarray | Tensor | None = None,  # [H, W] head region in 0..1, or None
) -> tuple[GaussianPly, InitStats]:
    """The init head (init_gaussians) and where its colours came from."""
    ply, details = init_with_details(model, fit, rgb, config, region=region)
    c = details.colour
    n = max(1, ply.gaussians.n)
    stats = InitStats(
        n_gaussians=ply.gaussians.n,
        from_photo=float(c.visible.sum()) / n,
        mirrored=float(c.mirrored.sum()) / n,
        skin_prior=float(c.prior.sum()) / n,
        unseen_hair=float(c.hair.sum()) / n if c.hair is not None else None,
    )
    return ply, stats


__all__ = ["InitStats", "init_head", "load_photo_for"]
