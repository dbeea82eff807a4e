"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"): a perceptual distance for GAN inversion, written from the paper.

    d(x, y) = sum_l  mean_hw  w_l . (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|)^2

f_l: the ImageNet VGG16's activations after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (each
unit-normalised over channels); w_l >= 0: the learned per-channel linear layers (LPIPS v0.1);
inputs in [-1, 1], shifted and scaled per channel to the network's ImageNet normalisation.

Weights through the registry (weights.lock): `lpips-vgg` (the linear layers, BSD-2-Clause, as
the `lpips` pip package ships them) and `vgg16` (torchvision's ImageNet VGG16). `load_lpips`
raises MissingModelError naming the install / fetch command when either is absent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from avatarcli.errors import ArtifactError, MissingModelError
from avatarcli.progress import warn
from avatarcli.weights import resolve_file

# the LPIPS input normalisation for images in [-1, 1] (ImageNet mean / std rescaled)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


@dataclass(frozen=True)
class VggConfig:
    widths: tuple[int, int, int, int, int] = (64, 128, 256, 512, 512)  # per stage (2, 2, 3, 3, 3 convs)

    @classmethod
    def tiny(cls) -> VggConfig:
        return cls(widths=(2, 3, 4, 4, 5))


_STAGE_CONVS = (2, 2, 3, 3, 3)


class VggFeatures(nn.Module):
    """VGG16's convolutional part laid out as torchvision's `features` (the same indices: conv,
    relu, ..., maxpool), so its state dict loads as is; returns the five relu taps."""

    def __init__(self, cfg: VggConfig = VggConfig()):
        super().__init__()
        layers: list[nn.Module] = []
        self.taps: list[int] = []
        cin = 3
        for stage, (n, w) in enumerate(zip(_STAGE_CONVS, cfg.widths)):
            if stage:
                layers.append(nn.MaxPool2d(2, 2))
            for _ in range(n):
                layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU()]
                cin = w
            self.taps.append(len(layers) - 1)
        layers.append(nn.MaxPool2d(2, 2))  # torchvision's last pool (index 30), unused by LPIPS
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # [N, 3, H, W] -> 5 x [N, C_l, H_l, W_l]
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
                if len(out) == len(self.taps):
                    break
        return out


class Lpips(nn.Module):
    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, cfg: VggConfig = VggConfig()):
        super().__init__()
        self.net = VggFeatures(cfg)
        self.lins = nn.ParameterList(nn.Parameter(torch.zeros(1, w, 1, 1)) for w in cfg.widths)
        self.register_buffer("shift", torch.tensor(SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).reshape(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x, y [N, 3, H, W] in [-1, 1] -> [N]; with mask [N, 1, H, W], each layer's spatial mean
        is taken over the mask (resized to the layer, area-averaged) instead of the whole image."""
        fx = self.net((x - self.shift) / self.scale)
        fy = self.net((y - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for a, b, lin in zip(fx, fy, self.lins):
            d = (_unit(a) - _unit(b)).square()
            d = (d * lin.to(d.dtype)).sum(dim=1, keepdim=True)  # [N, 1, h, w]
            if mask is None:
                total = total + d.mean(dim=[1, 2, 3])
            else:
                m = F.adaptive_avg_pool2d(mask.to(d.dtype), d.shape[-2:])
                total = total + (d * m).sum(dim=[1, 2, 3]) / m.sum(dim=[1, 2, 3]).clamp(min=1e-8)
        return total


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.square().sum(dim=1, keepdim=True).sqrt() + eps)


def lpips_from_state(backbone: dict[str, torch.Tensor], lins: dict[str, torch.Tensor]) -> Lpips:
    """An Lpips from a torchvision VGG16 state dict (`features.*`; the classifier is ignored) and
    the LPIPS v0.1 linear layers (`lin<l>.model.1.weight` [1, C_l, 1, 1]); sizes read off them."""
    feats = {k: v for k, v in backbone.items() if k.startswith("features.")}
    lin = [lins[f"lin{i}.model.1.weight"] for i in range(5)]
    widths = tuple(int(w.shape[1]) for w in lin)
    m = Lpips(VggConfig(widths=widths))  # type: ignore[arg-type]
    m.net.load_state_dict(feats, strict=True)
    for p, w in zip(m.lins, lin):
        if (w < 0).any():
            raise ValueError("LPIPS linear weights must be non-negative")
        p.data.copy_(w)
    return m


def load_lpips(device: str | torch.device = "cpu") -> Lpips:
    """The registry's LPIPS-VGG (MissingModelError, naming the command, when weights are absent)."""
    lin_path, vgg_path = resolve_file("lpips-vgg"), resolve_file("vgg16")
    try:
        lins = torch.load(lin_path, map_location="cpu", weights_only=True)
        backbone = torch.load(vgg_path, map_location="cpu", weights_only=True)
        return lpips_from_state(backbone, lins).to(device)
    except (RuntimeError, KeyError, ValueError, OSError) as e:
        raise ArtifactError(f"LPIPS weights unusable ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None


def lpips_or_l2(device: str | torch.device = "cpu") -> Lpips | None:
    """load_lpips, or None after ONE warning line saying the inversion falls back to L2."""
    try:
        return load_lpips(device)
    except MissingModelError as e:
        warn(f"LPIPS unavailable, GAN inversion uses L2 only: {e}")
        return None
