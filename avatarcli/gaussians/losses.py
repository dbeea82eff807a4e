"""Photometric losses for fitting Gaussians: masked L1, SSIM / D-SSIM, PSNR.

Images are [H, W, 3] (or batched [B, H, W, 3]) floats in [0, 1]; masks are
[H, W, 1] (or [B, H, W, 1]) weights in [0, 1].

SSIM follows Wang et al. 2004 as scikit-image computes it with
`gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1`:
an 11-tap separable Gaussian window (radius int(3.5 * sigma + 0.5)),
K1 = 0.01, K2 = 0.03, and the mean taken over the pixels whose window lies
inside the image (scikit-image pads, filters and then crops the border; the
cropped values never see the padding, so a 'valid' convolution is the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_K1, _K2 = 0.01, 0.03


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5, *, dtype=torch.float32, device=None) -> Tensor:
    """1-D normalised Gaussian taps [2r+1], r = int(truncate * sigma + 0.5) (scipy.ndimage's radius)."""
    r = int(truncate * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).to(dtype=dtype, device=device)


def _as_bchw(img: Tensor) -> tuple[Tensor, bool]:
    """[H, W, C] or [B, H, W, C] -> [B, C, H, W] and whether a batch dim was present."""
    if img.ndim == 3:
        return img.permute(2, 0, 1)[None], False
    if img.ndim == 4:
        return img.permute(0, 3, 1, 2), True
    raise ValueError(f"expected an image [H, W, C] or [B, H, W, C], got shape {tuple(img.shape)}")


def _blur(x: Tensor, w: Tensor, padding: str) -> Tensor:
    """Separable depthwise blur of x [B, C, H, W] with taps w [k]; 'valid' or 'same' (reflect padding)."""
    C = x.shape[1]
    r = (w.shape[0] - 1) // 2
    if padding == "same":
        x = F.pad(x, (r, r, r, r), mode="reflect")
    elif padding != "valid":
        raise ValueError(f"padding must be 'valid' or 'same', not {padding!r}")
    kx = w.view(1, 1, 1, -1).expand(C, 1, 1, -1)
    ky = w.view(1, 1, -1, 1).expand(C, 1, -1, 1)
    return F.conv2d(F.conv2d(x, kx, groups=C), ky, groups=C)


def ssim_map(
    img1: Tensor, img2: Tensor, *, sigma: float = 1.5, data_range: float = 1.0, padding: str = "valid"
) -> Tensor:
    """Per-pixel, per-channel SSIM.

    img1, img2 [H, W, C] or [B, H, W, C] -> [H', W', C] or [B, H', W', C];
    'valid': H' = H - 2r (scikit-image's cropped region), 'same': H' = H (reflect padding)."""
    if img1.shape != img2.shape:
        raise ValueError(f"image shapes differ: {tuple(img1.shape)} vs {tuple(img2.shape)}")
    x, batched = _as_bchw(img1)
    y, _ = _as_bchw(img2)
    w = gaussian_window(sigma, dtype=x.dtype, device=x.device)
    C1 = (_K1 * data_range) ** 2
    C2 = (_K2 * data_range) ** 2
    # one blur for the five moments: [B, 5C, H, W]
    mom = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), w, padding)
    ux, uy, uxx, uyy, uxy = mom.chunk(5, dim=1)
    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    s = ((2 * ux * uy + C1) * (2 * vxy + C2)) / ((ux * ux + uy * uy + C1) * (vx + vy + C2))  # [B, C, H', W']
    s = s.permute(0, 2, 3, 1)
    return s if batched else s[0]


def ssim(img1: Tensor, img2: Tensor, *, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Mean SSIM (scikit-image's value): [H, W, C] -> scalar; [B, H, W, C] -> [B]."""
    s = ssim_map(img1, img2, sigma=sigma, data_range=data_range, padding="valid")
    return s.mean(dim=(-3, -2, -1))


def _weighted_mean(values: Tensor, weight: Tensor | None) -> Tensor:
    """Mean of values [..., H, W, C] weighted by weight [..., H, W, 1] (over pixels and channels)."""
    if weight is None:
        return values.mean(dim=(-3, -2, -1))
    w = weight.expand_as(values)
    return (values * w).sum(dim=(-3, -2, -1)) / w.sum(dim=(-3, -2, -1)).clamp_min(1e-8)


def masked_ssim(img1: Tensor, img2: Tensor, mask: Tensor | None = None, *, sigma: float = 1.5) -> Tensor:
    """SSIM averaged over `mask` [.., H, W, 1] (a 'same'-padded map, so every pixel has a value)."""
    return _weighted_mean(ssim_map(img1, img2, sigma=sigma, padding="same"), mask)


def l1(img1: Tensor, img2: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean absolute difference, weighted by `mask` [.., H, W, 1] when given."""
    return _weighted_mean((img1 - img2).abs(), mask)


def dssim_l1(render: Tensor, target: Tensor, mask: Tensor | None = None, lambda_dssim: float = 0.2) -> Tensor:
    """The 3DGS photometric loss (1 - lambda) * L1 + lambda * (1 - SSIM), both mask-weighted."""
    loss = (1.0 - lambda_dssim) * l1(render, target, mask)
    if lambda_dssim > 0:
        loss = loss + lambda_dssim * (1.0 - masked_ssim(render, target, mask))
    return loss


def psnr(img1: Tensor, img2: Tensor, mask: Tensor | None = None, data_range: float = 1.0) -> Tensor:
    """PSNR in dB over the pixels (and channels) weighted by `mask` [.., H, W, 1] when given."""
    mse = _weighted_mean((img1 - img2) ** 2, mask)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def transparency(alpha: Tensor, region: Tensor) -> Tensor:
    """Mean of (1 - alpha) over `region` [.., H, W, 1] (weights): the prior against a see-through head.

    alpha [.., H, W, 1] rendered; 0 when the region is empty."""
    return ((1.0 - alpha) * region).sum() / region.sum().clamp_min(1e-8)


def erode(mask: Tensor, px: int) -> Tensor:
    """Grey-scale erosion of mask [H, W, 1] by a (2 px + 1)-square (a pixel keeps the minimum around it)."""
    if px <= 0:
        return mask
    x = mask.permute(2, 0, 1)[None]  # [1, 1, H, W]
    return -F.max_pool2d(-x, 2 * px + 1, stride=1, padding=px)[0].permute(1, 2, 0)


def psnr_value(img1: Tensor, img2: Tensor, mask: Tensor | None = None) -> float:
    """psnr() as a Python float (no gradient)."""
    with torch.no_grad():
        return float(psnr(img1, img2, mask))


__all__ = [
    "gaussian_window",
    "ssim_map",
    "ssim",
    "masked_ssim",
    "l1",
    "dssim_l1",
    "psnr",
    "psnr_value",
    "transparency",
    "erode",
]
