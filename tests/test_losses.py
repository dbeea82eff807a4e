"""Photometric losses against independent references (scikit-image, numpy)."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from avatarcli.gaussians.losses import dssim_l1, gaussian_window, l1, masked_ssim, psnr, ssim, ssim_map


def _sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1
    )


def _pair(seed: int, h: int, w: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # smooth structure + noise, so SSIM is far from both 0 and 1
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 0.5 + 0.3 * np.sin(6 * xx[..., None] + np.array([0, 1, 2])) * np.cos(4 * yy[..., None])
    a = np.clip(base + noise * rng.standard_normal((h, w, 3)), 0, 1)
    b = np.clip(base + noise * rng.standard_normal((h, w, 3)) + 0.05, 0, 1)
    return a, b


@pytest.mark.parametrize("seed,h,w,noise", [(0, 32, 32, 0.1), (1, 40, 23, 0.2), (2, 64, 48, 0.02)])
def test_ssim_matches_skimage(seed, h, w, noise):
    a, b = _pair(seed, h, w, noise)
    ref = _sk_ssim(a, b)
    assert 0.05 < ref < 0.99  # a meaningful case
    got64 = float(ssim(torch.from_numpy(a), torch.from_numpy(b)))
    got32 = float(ssim(torch.from_numpy(a).float(), torch.from_numpy(b).float()))
    assert abs(got64 - ref) < 1e-10
    assert abs(got32 - ref) < 1e-4


def test_ssim_batched_and_identity():
    a, b = _pair(3, 24, 24, 0.2)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    batch = ssim(torch.stack([ta, ta]), torch.stack([tb, ta]))
    assert batch.shape == (2,)
    assert abs(float(batch[0]) - _sk_ssim(a, b)) < 1e-10
    assert abs(float(batch[1]) - 1.0) < 1e-12
    assert ssim_map(ta, tb).shape == (24 - 10, 24 - 10, 3)
    assert ssim_map(ta, tb, padding="same").shape == (24, 24, 3)


def test_gaussian_window_is_scipy_kernel():
    from scipy.ndimage import gaussian_filter1d

    delta = np.zeros(31)
    delta[15] = 1.0
    ref = gaussian_filter1d(delta, 1.5, truncate=3.5)[10:21]  # the impulse response = the taps
    assert np.allclose(gaussian_window(1.5, dtype=torch.float64).numpy(), ref, atol=1e-15)


def test_masked_l1_psnr_reference():
    rng = np.random.default_rng(4)
    a, b = rng.random((16, 20, 3)), rng.random((16, 20, 3))
    m = (rng.random((16, 20, 1)) > 0.5).astype(np.float64)
    sel = np.broadcast_to(m, a.shape) > 0
    ta, tb, tm = map(torch.from_numpy, (a, b, m))
    assert abs(float(l1(ta, tb, tm)) - np.abs(a - b)[sel].mean()) < 1e-12
    assert abs(float(l1(ta, tb)) - np.abs(a - b).mean()) < 1e-12
    mse = ((a - b) ** 2)[sel].mean()
    assert abs(float(psnr(ta, tb, tm)) - 10 * np.log10(1 / mse)) < 1e-9
    # PSNR of a known constant error: 0.1 -> 20 dB
    assert abs(float(psnr(ta, ta + 0.1)) - 20.0) < 1e-9


def test_masked_ssim_ignores_outside_mask():
    a, b = _pair(5, 32, 32, 0.1)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    m = torch.zeros(32, 32, 1, dtype=torch.float64)
    m[:, :16] = 1
    tb2 = tb.clone()
    tb2[:, 27:] = 0  # changed far from the mask (more than the 5-pixel window radius away)
    assert abs(float(masked_ssim(ta, tb, m)) - float(masked_ssim(ta, tb2, m))) < 1e-12
    assert abs(float(masked_ssim(ta, tb, None)) - float(masked_ssim(ta, tb2, None))) > 1e-3


def test_dssim_l1_gradient_and_zero_at_target():
    a, b = _pair(6, 24, 24, 0.1)
    x = torch.from_numpy(a).requires_grad_(True)
    y = torch.from_numpy(b)
    loss = dssim_l1(x, y, lambda_dssim=0.2)
    loss.backward()
    assert float(loss.detach()) > 0 and x.grad.abs().sum() > 0
    assert float(dssim_l1(y, y)) < 1e-12
    # the gradient of the SSIM part matches finite differences (float64)
    small = torch.from_numpy(a[:12, :12].copy()).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: masked_ssim(t, y[:12, :12]), (small,), eps=1e-6, atol=1e-6)
