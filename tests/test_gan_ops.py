"""avatarcli.gan.ops against direct formulations (numpy + scipy.signal, per-sample F.conv2d)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from avatarcli.gan.ops import bias_act, downsample2d, modulated_conv2d, setup_filter, upfirdn2d, upsample2d


def _ref_upfirdn(x: np.ndarray, f: np.ndarray, up: int, down: int, pad, gain: float, flip: bool) -> np.ndarray:
    """One channel [H, W]: explicit zero insertion, np.pad / slicing, scipy convolve2d, stride."""
    px0, px1, py0, py1 = pad
    h, w = x.shape
    u = np.zeros((h * up, w * up))
    u[::up, ::up] = x
    u = np.pad(u, ((max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
    u = u[max(-py0, 0) : u.shape[0] - max(-py1, 0), max(-px0, 0) : u.shape[1] - max(-px1, 0)]
    op = scipy.signal.correlate2d if flip else scipy.signal.convolve2d
    y = op(u, f * gain, mode="valid")
    return y[::down, ::down]


@pytest.mark.parametrize(
    "up,down,pad,flip",
    [
        (1, 1, (1, 2, 0, 1), False),
        (2, 1, (2, 1, 2, 1), False),
        (1, 2, (1, 1, 1, 1), True),
        (3, 2, (-1, 3, 2, -2), False),
    ],
)
def test_upfirdn2d_matches_explicit_zero_insertion_and_scipy_convolution(up, down, pad, flip):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 7, 9))
    f = rng.normal(size=(4, 3))  # asymmetric, non-separable: catches a flip or transpose
    got = upfirdn2d(torch.tensor(x), torch.tensor(f), up=up, down=down, padding=pad, gain=1.7, flip_filter=flip)
    want = np.stack([np.stack([_ref_upfirdn(c, f, up, down, pad, 1.7, flip) for c in img]) for img in x])
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, atol=1e-10)


def test_resampling_keeps_size_and_a_constant_image():
    f = setup_filter([1, 3, 3, 1])
    assert float(f.sum()) == pytest.approx(1.0)
    x = torch.full((1, 2, 8, 8), 3.0, dtype=torch.float64)
    up = upsample2d(x, f.double())
    down = downsample2d(x, f.double())
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    # away from the zero-padded border a constant stays that constant (DC gain 1)
    np.testing.assert_allclose(up[..., 2:-2, 2:-2].numpy(), 3.0, atol=1e-12)
    np.testing.assert_allclose(down[..., 1:-1, 1:-1].numpy(), 3.0, atol=1e-12)


def test_bias_act_matches_plain_formulas():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 3, 4, generator=g)
    b = torch.randn(5, generator=g)
    xb = x + b[None, :, None, None]
    torch.testing.assert_close(bias_act(x, b, act="linear"), xb)
    lrelu = torch.where(xb > 0, xb, 0.2 * xb) * math.sqrt(2)
    torch.testing.assert_close(bias_act(x, b, act="lrelu"), lrelu)
    torch.testing.assert_close(bias_act(x, b, act="lrelu", clamp=0.5), lrelu.clamp(-0.5, 0.5))
    torch.testing.assert_close(bias_act(x, b, act="relu", gain=2.0), xb.clamp(min=0) * 2)
    torch.testing.assert_close(bias_act(x, b, act="sigmoid"), 1 / (1 + torch.exp(-xb)))
    # bias along the last dim (fully-connected layers)
    y = torch.randn(4, 5, generator=g)
    torch.testing.assert_close(bias_act(y, b, dim=1, act="softplus"), torch.log1p(torch.exp(y + b)))
    with pytest.raises(ValueError, match="unknown activation"):
        bias_act(x, b, act="swish-ish")


def _ref_modconv(x, weight, styles, demodulate):
    """Per sample: scale the weights explicitly, normalise each output filter, plain conv2d."""
    out = []
    for i in range(x.shape[0]):
        w = weight.clone()
        for ci in range(weight.shape[1]):
            w[:, ci] = weight[:, ci] * styles[i, ci]
        if demodulate:
            for co in range(weight.shape[0]):
                w[co] = w[co] / torch.sqrt((w[co] ** 2).sum() + 1e-8)
        out.append(F.conv2d(x[i : i + 1], w, padding=weight.shape[-1] // 2))
    return torch.cat(out)


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv2d_matches_per_sample_conv(demodulate):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 6, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64)
    styles = torch.randn(3, 4, generator=g, dtype=torch.float64)
    got = modulated_conv2d(x, weight, styles, demodulate=demodulate)
    torch.testing.assert_close(got, _ref_modconv(x, weight, styles, demodulate))


def _ref_upconv(x: np.ndarray, w: np.ndarray, f: np.ndarray) -> np.ndarray:
    """StyleGAN2's x2 upsampling conv written out for one sample x [Cin, H, W], w [Cout, Cin, 3, 3]
    (already modulated): zero insertion (x[i] at 2i, size 2H-1), correlation with each 3x3 kernel
    over its full support (size 2H+1; the orientation of the up = 1 layers), then the 4-tap blur
    x4 (a full convolution, size 2H+4) cropped by 2 on each side to 2H."""
    cin, h, wd = x.shape
    z = np.zeros((cin, 2 * h - 1, 2 * wd - 1))
    z[:, ::2, ::2] = x
    out = []
    for wo in w:
        c = sum(scipy.signal.correlate2d(z[i], wo[i], mode="full") for i in range(cin))
        out.append(scipy.signal.convolve2d(c, 4.0 * f, mode="full")[2 : 2 + 2 * h, 2 : 2 + 2 * wd])
    return np.stack(out)


def test_modulated_conv2d_upsampling_matches_zero_insertion_then_full_correlation_then_blur():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    weight[..., 0, :] += 2.0  # asymmetric kernels: a flip or transpose changes the result
    styles = torch.randn(2, 3, generator=g, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    got = modulated_conv2d(x, weight, styles, up=2, resample_filter=f)
    assert got.shape == (2, 5, 8, 10)
    mod = weight[None] * styles[:, None, :, None, None]
    mod = mod / torch.sqrt(mod.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8)
    want = np.stack([_ref_upconv(x[i].numpy(), mod[i].numpy(), f.numpy()) for i in range(2)])
    np.testing.assert_allclose(got.numpy(), want, atol=1e-10)  # border pixels included


def test_demodulation_removes_the_style_scale():
    """Scaling all styles of a sample by a constant leaves a demodulated conv unchanged (eq. 3)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 5, 5, generator=g)
    weight = torch.randn(3, 4, 3, 3, generator=g)
    styles = torch.randn(2, 4, generator=g)
    a = modulated_conv2d(x, weight, styles)
    b = modulated_conv2d(x, weight, styles * torch.tensor([[7.0], [0.1]]))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    c = modulated_conv2d(x, weight, styles * 7.0, demodulate=False)
    assert not torch.allclose(a, c, atol=1e-2)
