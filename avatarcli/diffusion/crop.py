"""Face crop alignment: a similarity transform from landmarks to a canonical square crop.

Three anchor points from the 68 iBUG landmarks (centre of each eye, centre of
the mouth) are mapped by a least-squares similarity (rotation, uniform scale,
translation; no reflection) onto fixed positions in a square crop. The
positions leave room above the eyes for hair and below the mouth for the chin
and neck. Pixel centres are at integer coordinates in both the image and the
crop, as everywhere in the project.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Canonical anchors in unit crop coordinates (x right, y down, 0..1 spans the crop).
# Image-left eye = landmarks 36..41 (the subject's right eye), image-right eye = 42..47.
CANONICAL_ANCHORS = np.array([[0.375, 0.45], [0.625, 0.45], [0.5, 0.69]], dtype=np.float64)  # [3, 2]


@dataclass
class CropAlign:
    affine: np.ndarray  # [2, 3] float64, image pixel -> crop pixel
    size: int  # the crop is size x size
    box: np.ndarray  # [4] x0 y0 x1 y1: image-space bounds of the crop square

    @property
    def inverse(self) -> np.ndarray:
        """[2, 3] crop pixel -> image pixel."""
        return invert_affine(self.affine)


def anchors_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """68 iBUG landmarks [68, 2] -> anchors [3, 2]: left eye, right eye (image sides), mouth centre."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected 68 landmarks [68, 2], got {lm.shape}")
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[48:68].mean(0)])


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity [2, 3] with dst ~ A[:, :2] @ src + A[:, 2]. src, dst: [K, 2], K >= 2.

    Written with complex numbers: dst = a * src + b, a = s * exp(i theta)."""
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    ms, md = zs.mean(), zd.mean()
    den = np.sum(np.abs(zs - ms) ** 2)
    if den <= 1e-12:
        raise ValueError("anchor points coincide: cannot fit a similarity")
    a = np.sum(np.conj(zs - ms) * (zd - md)) / den
    b = md - a * ms
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]], dtype=np.float64)


def invert_affine(A: np.ndarray) -> np.ndarray:
    """[2, 3] -> [2, 3] inverse map."""
    M = np.linalg.inv(A[:, :2])
    return np.concatenate([M, -M @ A[:, 2:3]], axis=1)


def apply_affine(A: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """[2, 3] applied to points [..., 2]."""
    return pts @ A[:, :2].T + A[:, 2]


def align_face(landmarks: np.ndarray, size: int) -> CropAlign:
    """Similarity from the image to a `size` x `size` canonical crop."""
    dst = CANONICAL_ANCHORS * size - 0.5  # unit square [0, 1] -> pixel centres at integers
    A = fit_similarity(anchors_from_landmarks(landmarks), dst)
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]])
    img = apply_affine(invert_affine(A), corners)
    box = np.array([img[:, 0].min(), img[:, 1].min(), img[:, 0].max(), img[:, 1].max()])
    return CropAlign(affine=A, size=int(size), box=box)


def sample_grid(A_dst_to_src: np.ndarray, out_hw: tuple[int, int], src_hw: tuple[int, int]) -> torch.Tensor:
    """grid_sample grid [1, H, W, 2] that reads, for each output pixel, the source pixel A @ (x, y)."""
    H, W = out_hw
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    A = torch.from_numpy(np.asarray(A_dst_to_src, dtype=np.float64))
    sx = A[0, 0] * xs + A[0, 1] * ys + A[0, 2]
    sy = A[1, 0] * xs + A[1, 1] * ys + A[1, 2]
    Hs, Ws = src_hw
    # align_corners=False: pixel centre x maps to (2x + 1) / W - 1.
    grid = torch.stack([(2 * sx + 1) / Ws - 1, (2 * sy + 1) / Hs - 1], dim=-1)
    return grid[None].float()


def warp_to_crop(rgb: np.ndarray, align: CropAlign) -> np.ndarray:
    """Image uint8 [H, W, 3] -> crop float32 [S, S, 3] in 0..1 (bilinear; outside the image = 0)."""
    img = (
        torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    )  # [1, 3, H, W]
    grid = sample_grid(align.inverse, (align.size, align.size), rgb.shape[:2])
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


def labels_to_image(labels: np.ndarray, align: CropAlign, image_hw: tuple[int, int]) -> np.ndarray:
    """Crop label map [S, S] (small ints) -> image label map [H, W] (nearest; outside the crop = 0)."""
    lab = torch.from_numpy(labels.astype(np.float32))[None, None]  # [1, 1, S, S]
    grid = sample_grid(align.affine, image_hw, labels.shape)
    out = F.grid_sample(lab, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out[0, 0].round().numpy().astype(labels.dtype)
