"""The GAN's aligned crop: where the photo's face must sit in the generator's square image.

Rule implemented (from the EG3D / PanoHead papers' description of their FFHQ processing: five
facial landmarks aligned to a fixed layout by scale and translation, no in-plane rotation, the
head's roll left to the camera pose):

    anchors   the 68 iBUG landmarks -> 5 points: image-left eye centre (mean of 36..41),
              image-right eye centre (42..47), nose tip (30), mouth corners (48, 54)
    fit       least squares over s > 0 and t:  min sum_k |s * p_k + t - q_k|^2, with q_k the
              layout GAN_ANCHORS (unit crop coordinates) x size - 0.5 (pixel centres at integers)
    crop      the photo resampled through that map (bilinear), size x size

GAN_ANCHORS approximates the layout of EG3D / PanoHead 512^2 crops (eyes ~0.19 of the width
apart, at 0.48 of the height); the exact published preprocessing could not be checked against
real weights here, so the layout is one constant to tune. `uncrop` maps renders back to the photo.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from avatarcli.diffusion.crop import CropAlign, apply_affine, invert_affine, sample_grid

# unit crop coordinates (x right, y down): eye, eye, nose tip, mouth corner, mouth corner
GAN_ANCHORS = np.array(
    [[0.405, 0.48], [0.595, 0.48], [0.5, 0.57], [0.43, 0.655], [0.57, 0.655]], dtype=np.float64
)  # [5, 2]


def gan_anchors(landmarks: np.ndarray) -> np.ndarray:  # [5, 2]
    """68 iBUG landmarks [68, 2] -> the 5 alignment points (image-left eye first)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected 68 landmarks [68, 2], got {lm.shape}")
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def fit_scale_translation(src: np.ndarray, dst: np.ndarray) -> np.ndarray:  # [2, 3]
    """Least-squares dst ~ s * src + t (s > 0, no rotation). src, dst: [K, 2]."""
    ms, md = src.mean(0), dst.mean(0)
    den = float(np.sum((src - ms) ** 2))
    if den <= 1e-12:
        raise ValueError("alignment points coincide: cannot fit a scale")
    s = float(np.sum((src - ms) * (dst - md))) / den
    if s <= 0:
        raise ValueError("alignment points are mirrored against the layout")
    t = md - s * ms
    return np.array([[s, 0.0, t[0]], [0.0, s, t[1]]], dtype=np.float64)


def gan_align(landmarks: np.ndarray, size: int) -> CropAlign:
    """Photo pixel -> GAN crop pixel (a `size` x `size` square) by the rule above."""
    A = fit_scale_translation(gan_anchors(landmarks), GAN_ANCHORS * size - 0.5)
    corners = np.array([[-0.5, -0.5], [size - 0.5, size - 0.5]])
    img = apply_affine(invert_affine(A), corners)
    return CropAlign(affine=A, size=int(size), box=np.array([*img.min(0), *img.max(0)]))


def crop_tensor(image: torch.Tensor, align: CropAlign) -> torch.Tensor:
    """Photo [N, C, H, W] -> crop [N, C, S, S] (bilinear; outside the photo = 0)."""
    grid = sample_grid(align.inverse, (align.size, align.size), (image.shape[-2], image.shape[-1]))
    grid = grid.to(image.device, image.dtype).expand(image.shape[0], -1, -1, -1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def uncrop(render: torch.Tensor, align: CropAlign, image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A GAN render [N, C, S, S] -> the photo frame [N, C, H, W] and where it is defined [N, 1, H, W]."""
    grid = sample_grid(align.affine, image_hw, (align.size, align.size))
    grid = grid.to(render.device, render.dtype).expand(render.shape[0], -1, -1, -1)
    out = F.grid_sample(render, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = ((grid.abs() <= 1).all(dim=-1))[:, None].to(render.dtype)
    return out, inside
