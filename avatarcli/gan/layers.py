"""StyleGAN2 layers (equalised learning rate, style modulation) built on avatarcli.gan.ops.

Equalised learning rate (Karras et al. 2018): weights are stored ~N(0, 1/lr_mul^2) and scaled at
run time by lr_mul / sqrt(fan_in), biases by lr_mul.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from avatarcli.gan.ops import bias_act, modulated_conv2d, setup_filter, upsample2d


class FullyConnected(nn.Module):
    """y = act(x @ (W * lr_mul / sqrt(in)).T + b * lr_mul)."""

    def __init__(self, cin: int, cout: int, act: str = "linear", bias_init: float = 0.0, lr_mul: float = 1.0):
        super().__init__()
        self.act = act
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(cin)
        self.bias_gain = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, cin] -> [N, cout]
        y = x @ (self.weight * self.weight_gain).t().to(x.dtype)
        return bias_act(y, self.bias * self.bias_gain, dim=y.ndim - 1, act=self.act)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:  # [N, D]
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z [N, z_dim] (+ camera c [N, c_dim]) -> ws [N, num_ws, w_dim]; tracks w_avg for truncation."""

    w_avg: torch.Tensor  # [w_dim] buffer

    def __init__(
        self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 2, lr_mul: float = 0.01,
        last_act: str = "lrelu",
    ):  # fmt: skip
        """last_act: the last layer's activation ("linear" for PanoHead's camera-offset mapping)."""
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.embed = FullyConnected(c_dim, w_dim) if c_dim else None
        dims = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * num_layers
        acts = ["lrelu"] * (num_layers - 1) + [last_act]
        self.layers = nn.ModuleList(
            FullyConnected(dims[i], dims[i + 1], act=acts[i], lr_mul=lr_mul) for i in range(num_layers)
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self, z: torch.Tensor, c: torch.Tensor | None, psi: float = 1.0, cutoff: int | None = None
    ) -> torch.Tensor:  # [N, num_ws, w_dim]
        parts = [normalize_2nd_moment(z)] if self.z_dim else []
        if self.embed is not None:
            if c is None:
                raise ValueError("this mapping network is camera-conditioned: pass c [N, c_dim]")
            parts.append(normalize_2nd_moment(self.embed(c.to(z.dtype))))
        x = torch.cat(parts, dim=1)
        for layer in self.layers:
            x = layer(x)
        ws = x[:, None].repeat(1, self.num_ws, 1)
        if psi != 1:
            n = self.num_ws if cutoff is None else cutoff
            ws[:, :n] = self.w_avg.to(ws.dtype).lerp(ws[:, :n], psi)
        return ws


class SynthesisLayer(nn.Module):
    """Style-modulated 3x3 conv (optionally x2 upsampling), per-pixel noise, bias + lrelu."""

    noise_const: torch.Tensor  # [R, R] buffer
    resample_filter: torch.Tensor  # [4, 4] buffer

    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int, up: int = 1, conv_clamp: float | None = 256):
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = FullyConnected(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        styles = self.affine(w)  # [N, cin]
        x = modulated_conv2d(x, self.weight, styles, demodulate=True, up=self.up, resample_filter=self.resample_filter)
        if noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype) * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        elif noise_mode != "none":
            raise ValueError(f"noise_mode must be const, random or none, not {noise_mode!r}")
        return bias_act(x, self.bias, act="lrelu", clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Style-modulated 1x1 conv without demodulation (the 'tRGB' of StyleGAN2's skip generator)."""

    def __init__(self, cin: int, cout: int, w_dim: int, conv_clamp: float | None = 256):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.weight_gain = 1 / math.sqrt(cin)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: [const 4x4 | conv0 (x`up`)], conv1, toRGB; the image
    skip path is upsampled with the same filter and summed."""

    resample_filter: torch.Tensor  # [4, 4] buffer

    def __init__(
        self, cin: int, cout: int, w_dim: int, resolution: int, img_channels: int, up: int = 2,
        conv_clamp: float | None = 256,
    ):  # fmt: skip
        super().__init__()
        self.cin, self.up, self.resolution = cin, up, resolution
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))
        if cin == 0:
            self.const = nn.Parameter(torch.randn(cout, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(cin, cout, w_dim, resolution, up=up, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(cout, cout, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(cout, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if cin == 0 else 2
        self.num_ws = self.num_conv + 1

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str = "const"
    ) -> tuple[torch.Tensor, torch.Tensor]:  # ws [N, num_ws, w_dim]
        i = 0
        if self.cin == 0:
            x = self.const[None].repeat(ws.shape[0], 1, 1, 1).to(ws.dtype)
        else:
            assert x is not None
            x = self.conv0(x, ws[:, 0], noise_mode)
            i = 1
        x = self.conv1(x, ws[:, i], noise_mode)
        y = self.torgb(x, ws[:, i + 1])
        if img is not None:
            img = upsample2d(img, self.resample_filter, self.up) if self.up > 1 else img
            y = y + img
        return x, y


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, R, R]: blocks at 4, 8, ..., R."""

    def __init__(
        self, w_dim: int, resolution: int, img_channels: int, channel_base: int, channel_max: int,
        conv_clamp: float | None = 256,
    ):  # fmt: skip
        super().__init__()
        res_log2 = int(math.log2(resolution))
        if 2**res_log2 != resolution or resolution < 4:
            raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
        self.resolutions = [2**i for i in range(2, res_log2 + 1)]
        ch = {r: min(channel_base // r, channel_max) for r in self.resolutions}
        blocks = [
            SynthesisBlock(ch[r // 2] if r > 4 else 0, ch[r], w_dim, r, img_channels, conv_clamp=conv_clamp)
            for r in self.resolutions
        ]
        self.blocks = nn.ModuleList(blocks)
        self.block_ws = [(b.num_conv, b.num_ws) for b in blocks]  # per block: ws it advances, ws it reads
        self.num_ws = sum(n for n, _ in self.block_ws) + 1

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        x = img = None
        i = 0
        for block, (n_conv, n_ws) in zip(self.blocks, self.block_ws):
            x, img = block(x, img, ws[:, i : i + n_ws], noise_mode)
            i += n_conv
        assert img is not None
        return img
