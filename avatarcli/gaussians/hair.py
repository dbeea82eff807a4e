"""Which Gaussians of the init head are hair: FLAME's head regions, and the hair the photo shows.

The init (avatarcli.gaussians.init) colours a Gaussian from the photo where it is seen, from its
mirrored twin where that is seen, and otherwise from a prior. On a short-haired head turned away from
the camera most of the back of the head is neither, and took the skin prior or the mixed colours of
the nearest seen "scalp" points (forehead, temples, ears): a bald, skin-coloured cap. Here:

1. Regions, from the canonical FLAME landmarks (iBUG 68) of the fit, in FLAME's frame (y up, face
   towards +z) -- the same split FLAME's own vertex masks (FLAME_masks.pkl: face, forehead, scalp,
   ears, neck, ...) make, but computed, so it holds on any FLAME-topology mesh and on the deformed one:
   * face: the face hold of avatarcli.flame.deform (inside the jaw line and the brows) -- never hair;
   * the hairline: at the side line in front of the ears (z >= z_ear, their depth) and curving down
     behind them to the nape line at the back's centre (hairline: cos^`arch` of the angle around the
     head's vertical axis from straight back, so seen from behind it is an arch, never a straight cut).
     The side line is ear level (the jaw line's upper ends, landmarks 0 and 16) unless the photo shows
     hair beside the face (`side` x its half width from its centre line) below it: then it follows that
     hair down as long as it continues (side_hairline, both sides pooled: a bob covers the unseen side
     and the ears down to where it ends). The nape line is at mouth level (landmarks 3 and 13, where a
     short-haired head's hair ends at the back) unless the photo shows hair lower down behind the ears
     or beside the face (long hair): then the lowest seen hair there (its `low_quantile`) is the line;
     it is never above the side line. A beard under the chin is not beside the face and leaves both alone.
   Above the line (and not face) is the hair zone, with a soft edge (the weight ramps 0 -> 1 over
   `edge` x (brow - mouth level) across the line); below it is skin (neck, cheeks).
2. Hair or skin in the photo (`split_hair_skin`): a Gaussian model of the skin colour from the seen
   face points (their median and the covariance of the nearer `core` share), the seen points that are
   not face and further than `skin_sigma` Mahalanobis units from it seed a hair colour model, and each
   seen non-face point is labelled by the likelier of the two (Gaussian log-likelihoods, two rounds).
3. A head shows hair when at least `min_hair_share` of the seen crown (the upper half of the hair
   zone above the brows) is hair. Then the unseen points of the hair zone take the seen HAIR colour
   (init.hair_colours: the k nearest seen hair points, half and half with their median; blended with
   the skin prior by the zone's weight at the soft edge); on a bald or
   shaved head nothing changes (the skin prior). Seen points keep the photo's colour either way, so a
   bald or high forehead stays skin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avatarcli.flame.forward import flame_forward
from avatarcli.flame.params import FlameParams


@dataclass
class HairConfig:
    arch: float = 1.0  # the back's hairline: y_side + (y_nape - y_side) cos^arch(angle from straight back)
    skin_sigma: float = 3.5  # Mahalanobis distance from the skin model beyond which a colour seeds hair
    core: float = 0.75  # share of the face's colours (nearest their median) that give the skin covariance
    min_hair_share: float = 0.3  # seen crown points that must be hair for the back to be hair
    low_quantile: float = 0.05  # the lowest seen hair behind the ears or beside the face, robustly
    side: float = 0.8  # "beside the face": further from its centre line than this x its half width at the ears
    min_points: int = 12  # fewest points a colour model or the seen hairline (or one band of it) is taken from
    run: int = 4  # the side hairline is followed down in runs of this many seen points
    edge: float = 0.25  # the hairline's soft edge: its width x (brow - mouth level)


@dataclass
class HeadLandmarks:
    """The heights and depths the regions are cut at, from the canonical landmarks (metres, FLAME frame)."""

    y_ear: float  # ear level: the jaw line's upper ends (landmarks 0, 16)
    z_ear: float  # their depth
    y_mouth: float  # the nape line's default: mouth level at the jaw line (landmarks 3, 13)
    y_brow: float  # the brows (landmarks 17-26)
    x_mid: float  # the face's centre line and half width at ear level (landmarks 0, 16)
    half_width: float

    @staticmethod
    def of(model, params: FlameParams) -> HeadLandmarks | None:
        """From `params` (canonical FLAME parameters, batch 1); None when the model has no landmarks."""
        if model.landmarks is None:
            return None
        with torch.no_grad():
            out = flame_forward(model, params).landmarks
        assert out is not None  # the model has landmarks (checked above)
        lmk = out[0].double().cpu()  # [68, 3]
        return HeadLandmarks(
            y_ear=float(lmk[[0, 16], 1].mean()),
            z_ear=float(lmk[[0, 16], 2].mean()),
            y_mouth=float(lmk[[3, 13], 1].mean()),
            y_brow=float(lmk[17:27, 1].mean()),
            x_mid=float(lmk[[0, 16], 0].mean()),
            half_width=0.5 * float((lmk[16, 0] - lmk[0, 0]).abs()),
        )


def smoothstep(x: Tensor) -> Tensor:
    """3 x^2 - 2 x^3 of x clamped to 0..1: 0 below 0, 1 above 1, no kinks."""
    t = x.clamp(0, 1)
    return t * t * (3 - 2 * t)


def hairline(points: Tensor, marks: HeadLandmarks, y_side: float, y_nape: float, power: float = 1.0) -> Tensor:
    """Height [N] of the hairline at points [N, 3]: y_side in front of the ears (z >= z_ear), curving down
    behind them to y_nape at the back's centre line: y_side + (y_nape - y_side) cos^power(phi), phi the
    angle around the head's vertical axis (through the ears' centre) from straight back, so seen from
    behind the line is an arch (higher towards the ears), never a straight horizontal cut."""
    back = (marks.z_ear - points[:, 2]).clamp_min(0)  # [N] depth behind the ears
    rho = torch.sqrt(back**2 + (points[:, 0] - marks.x_mid) ** 2).clamp_min(1e-9)
    return y_side + (back / rho) ** power * (min(y_nape, y_side) - y_side)


def side_hairline(points: Tensor, is_hair: Tensor, seen: Tensor, face: Tensor, marks: HeadLandmarks,
                  cfg: HairConfig) -> float:  # fmt: skip
    """How far down the hair the photo shows beside the face comes (both sides pooled: the unseen side is
    the mirror of the seen one): the seen points beside the face below ear level, from the top down in runs
    of `run` points, as long as at least half of each run is hair -> the lowest height reached (ear level
    when the first run is skin: ears, sideburns, a short cut)."""
    beside = seen & (face < 0.5) & ((points[:, 0] - marks.x_mid).abs() > cfg.side * marks.half_width)
    low = beside & (points[:, 1] < marks.y_ear)
    y, order = points[low, 1].sort(descending=True)  # [M]
    hair = is_hair[low][order]
    y_side = marks.y_ear
    for k in range(0, y.numel() - cfg.run + 1, cfg.run):
        if float(hair[k : k + cfg.run].float().mean()) < 0.5:
            break
        y_side = float(y[k + cfg.run - 1])
    return y_side


def _gauss_model(x: np.ndarray, core: float) -> tuple[np.ndarray, np.ndarray]:
    """Median [3] and the covariance [3, 3] of the `core` share of x [M, 3] nearest it (regularised)."""
    med = np.median(x, axis=0)
    d = np.linalg.norm(x - med, axis=1)
    near = x[d <= np.quantile(d, core)]
    cov = np.cov(near.T) if len(near) > 3 else np.zeros((3, 3))
    return med, cov + 1e-4 * np.eye(3)


def _loglik(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Gaussian log-likelihood (up to the shared constant) of x [M, 3] -> [M]."""
    diff = x - mean
    m = np.einsum("mi,ij,mj->m", diff, np.linalg.inv(cov), diff)
    return -0.5 * (m + np.log(np.linalg.det(cov)))


def split_hair_skin(colours: Tensor, skin: Tensor, cfg: HairConfig | None = None) -> Tensor:
    """colours [M, 3] of seen hair-zone points, skin [K, 3] seen face colours -> [M] bool: hair (module docstring, 2.)."""
    cfg = cfg or HairConfig()
    x, s = colours.double().cpu().numpy(), skin.double().cpu().numpy()
    if len(x) == 0 or len(s) < cfg.min_points:
        return torch.zeros(len(x), dtype=torch.bool)
    s_mean, s_cov = _gauss_model(s, cfg.core)
    d_skin = np.sqrt(np.maximum(-2 * _loglik(x, s_mean, s_cov) - np.log(np.linalg.det(s_cov)), 0.0))
    hair = d_skin > cfg.skin_sigma
    for _ in range(2):
        if hair.sum() < cfg.min_points:
            return torch.zeros(len(x), dtype=torch.bool)
        h_mean, h_cov = _gauss_model(x[hair], cfg.core)
        hair = _loglik(x, h_mean, h_cov) > _loglik(x, s_mean, s_cov)
    return torch.from_numpy(hair)


def hair_zone(
    points: Tensor,  # [N, 3] canonical (deformed) head
    face: Tensor,  # [N] 0..1 the face hold at the points
    marks: HeadLandmarks,
    y_side: float,
    y_nape: float,
    cfg: HairConfig,
) -> Tensor:
    """[N] 0..1 hair weight: not face, and above the hairline, ramping from 0 to 1 over `edge` x (brow -
    mouth level) across the line: a soft edge."""
    width = max(cfg.edge * (marks.y_brow - marks.y_mouth), 1e-6)
    above = smoothstep((points[:, 1] - hairline(points, marks, y_side, y_nape, cfg.arch)) / width + 0.5)
    return above * (face < 0.5).float()


def hair_points(
    points: Tensor,  # [N, 3]
    rgb: Tensor,  # [N, 3] their colours so far
    seen: Tensor,  # [N] bool: coloured from the photo
    face: Tensor,  # [N] 0..1 face hold
    marks: HeadLandmarks,
    cfg: HairConfig | None = None,
) -> tuple[Tensor, Tensor]:
    """-> (hair weight [N] in 0..1, all 0 on a head the photo shows without hair; seen hair [N] bool)."""
    cfg = cfg or HairConfig()
    is_hair = torch.zeros_like(seen)
    cand = seen & (face < 0.5)
    is_hair[cand] = split_hair_skin(rgb[cand], rgb[seen & (face > 0.5)], cfg)
    y_nape = marks.y_mouth
    beside = (points[:, 2] < marks.z_ear) | ((points[:, 0] - marks.x_mid).abs() > cfg.side * marks.half_width)
    low = is_hair & beside  # hair behind the ears or beside the face (not a beard under the chin)
    if int(low.sum()) >= cfg.min_points:  # hair seen lower down (long hair) lowers the nape line
        y_nape = min(y_nape, float(torch.quantile(points[low, 1].double(), cfg.low_quantile)))
    y_side = side_hairline(points, is_hair, seen, face, marks, cfg)
    weight = hair_zone(points, face, marks, y_side, y_nape, cfg)
    zone = weight > 0.5
    y_top = float(points[zone, 1].max()) if bool(zone.any()) else marks.y_brow
    crown = seen & zone & (points[:, 1] > 0.5 * (marks.y_brow + y_top))
    if int(crown.sum()) < cfg.min_points or float(is_hair[crown].float().mean()) < cfg.min_hair_share:
        return torch.zeros_like(weight), is_hair  # the photo shows no hair on the crown: bald, the prior stays
    return weight, is_hair


__all__ = ["HairConfig", "HeadLandmarks", "hair_points", "hair_zone", "hairline", "side_hairline", "split_hair_skin"]
