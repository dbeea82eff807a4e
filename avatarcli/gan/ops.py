"""StyleGAN2 building blocks in plain torch, written from the papers' definitions.

upfirdn2d   upsample by zero insertion, pad (negative = crop), FIR-filter (a true 2D convolution
            with the filter), downsample by keeping every `down`-th sample (Karras et al. 2020,
            "Analyzing and Improving the Image Quality of StyleGAN", appendix B).
bias_act    x + b along one dim, then an activation, a gain and an optional clamp.
modulated_conv2d  weights scaled per sample by the styles, then demodulated to unit L2 norm per
            output channel (StyleGAN2 eq. 1-3), run as one grouped convolution over the batch.

Everything is differentiable torch; no custom kernels, runs on the CPU.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Padding = int | Sequence[int]


def setup_filter(taps: Sequence[float] | torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """A separable 1D tap list -> its 2D outer-product filter [k, k], summing to 1 when `normalize`.
    A 2D tensor is returned as it is (normalised when asked)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim == 1:
        f = f[:, None] * f[None, :]  # [k, k]
    if normalize:
        f = f / f.sum()
    return f


def _pad4(padding: Padding) -> tuple[int, int, int, int]:
    """int p -> (p, p, p, p); (px, py) -> (px, px, py, py); 4-tuple (x0, x1, y0, y1) as is."""
    if isinstance(padding, int):
        return (padding,) * 4  # type: ignore[return-value]
    p = tuple(int(v) for v in padding)
    if len(p) == 2:
        return (p[0], p[0], p[1], p[1])
    if len(p) != 4:
        raise ValueError(f"padding must have 1, 2 or 4 values, got {len(p)}")
    return p  # type: ignore[return-value]


def upfirdn2d(
    x: torch.Tensor,  # [N, C, H, W]
    f: torch.Tensor | None,  # [kh, kw] or None (identity)
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    gain: float = 1.0,
    flip_filter: bool = False,
) -> torch.Tensor:  # [N, C, H', W']
    """Upsample (zeros between samples), pad (x0, x1, y0, y1; negative crops), convolve each channel
    with `f * gain` (a true convolution; `flip_filter` makes it a correlation), downsample.

    Output size: W' = (W * up + x0 + x1 - kw) // down + 1 (same for H)."""
    n, c, h, w = x.shape
    px0, px1, py0, py1 = _pad4(padding)
    if up > 1:
        z = x.new_zeros(n, c, h, up, w, up)
        z[:, :, :, 0, :, 0] = x
        x = z.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    if f is None:
        f = x.new_ones(1, 1)
    f = (f.to(x.dtype) * gain).to(x.device)
    if not flip_filter:
        f = f.flip([0, 1])  # conv2d correlates; flipping makes it a convolution
    weight = f[None, None].repeat(c, 1, 1, 1)  # [C, 1, kh, kw]
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down]


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Resolution x `up` with filter `f` [k, k]; DC gain kept (filter scaled by up**2), size exactly H*up."""
    k = f.shape[-1]
    p0 = (k + up - 1) // 2
    p1 = (k - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up**2)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """Resolution / `down` with filter `f` [k, k], size exactly H // down."""
    k = f.shape[-1]
    p0 = (k - down + 1) // 2
    p1 = (k - down) // 2
    return upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1))


# ------------------------------------------------------------------ bias + activation

_ACTS: dict[str, tuple[Callable[[torch.Tensor, float], torch.Tensor], float]] = {
    "linear": (lambda x, a: x, 1.0),
    "relu": (lambda x, a: F.relu(x), math.sqrt(2)),
    "lrelu": (lambda x, a: F.leaky_relu(x, a), math.sqrt(2)),
    "tanh": (lambda x, a: torch.tanh(x), 1.0),
    "sigmoid": (lambda x, a: torch.sigmoid(x), 1.0),
    "softplus": (lambda x, a: F.softplus(x), 1.0),
}


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,  # [x.shape[dim]]
    dim: int = 1,
    act: str = "linear",
    alpha: float = 0.2,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """act(x + b) * gain, clamped to [-clamp, clamp]. Default gain: sqrt(2) for relu/lrelu (He
    init keeps the variance), 1 otherwise; `alpha` is lrelu's negative slope."""
    if act not in _ACTS:
        raise ValueError(f"unknown activation {act!r}; one of {', '.join(_ACTS)}")
    fn, default_gain = _ACTS[act]
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape).to(x.dtype)
    x = fn(x, alpha)
    g = default_gain if gain is None else gain
    if g != 1:
        x = x * g
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


# ------------------------------------------------------------------ modulated convolution


def modulate_weights(
    weight: torch.Tensor,  # [Cout, Cin, k, k]
    styles: torch.Tensor,  # [N, Cin]
    demodulate: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:  # [N, Cout, Cin, k, k]
    """StyleGAN2 eq. 1 and 3: w'_ijk = s_i w_ijk, then w'' = w' / sqrt(sum_ik w'^2 + eps) per output j."""
    w = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=[2, 3, 4], keepdim=True) + eps)
    return w


def modulated_conv2d(
    x: torch.Tensor,  # [N, Cin, H, W]
    weight: torch.Tensor,  # [Cout, Cin, k, k]
    styles: torch.Tensor,  # [N, Cin]
    demodulate: bool = True,
    up: int = 1,
    resample_filter: torch.Tensor | None = None,  # [f, f], needed when up > 1
) -> torch.Tensor:  # [N, Cout, H*up, W*up]
    """A k x k convolution ('same' size) with per-sample modulated weights, as a grouped conv.

    up > 1 (StyleGAN2's upsampling layer: a stride-`up` transposed convolution, then a blur):
    the input is zero-inserted (x[i] at position up*i), correlated with the kernel over its full
    support (the same kernel orientation as the up = 1 layers: a transposed convolution with
    the flipped kernel), then FIR-filtered with `resample_filter` x up^2 and cropped to H*up.
    The intermediate is never truncated, so border pixels match the fused layer exactly."""
    n, cin, h, w = x.shape
    cout, _, kh, kw = weight.shape
    wts = modulate_weights(weight, styles, demodulate).to(x.dtype)  # [N, Cout, Cin, k, k]
    if up == 1:
        y = F.conv2d(
            x.reshape(1, n * cin, h, w), wts.reshape(n * cout, cin, kh, kw), padding=(kh // 2, kw // 2), groups=n
        )
        return y.reshape(n, cout, h, w)
    if resample_filter is None:
        raise ValueError("up > 1 needs a resample_filter")
    wt = wts.transpose(1, 2).reshape(n * cin, cout, kh, kw).flip([2, 3])  # [N*Cin, Cout, k, k]
    y = F.conv_transpose2d(x.reshape(1, n * cin, h, w), wt, stride=up, groups=n)  # [1, N*Cout, up(H-1)+k, ...]
    y = y.reshape(n, cout, *y.shape[2:])
    fh, fw = resample_filter.shape
    # full-support size up*(H-1)+k -> H*up after the filter: pad so that the 'same' conv's centre
    # (k // 2) and the upsampler's centre ((f + up - 1) // 2) line up
    px0, px1 = (fw + up - 1) // 2 + kw // 2 - (kw - 1), (fw - up) // 2 + kw // 2 - (kw - up)
    py0, py1 = (fh + up - 1) // 2 + kh // 2 - (kh - 1), (fh - up) // 2 + kh // 2 - (kh - up)
    return upfirdn2d(y, resample_filter, padding=(px0, px1, py0, py1), gain=up**2)
