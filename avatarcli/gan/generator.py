"""A PanoHead-style 3D-aware generator: mapping -> StyleGAN2 backbone emitting a tri-grid ->
volume rendering of a low-resolution feature image -> style-conditioned super-resolution.

    G = TriplaneGenerator(GanConfig.tiny())
    out = G(z, c)          # z [N, z_dim], c [N, 25] = cam2world (16) + normalised intrinsics (9)
    out.image              # [N, 3, img_resolution, img_resolution] in about [-1, 1]

`GanConfig.panohead()` has the published PanoHead / EG3D FFHQ sizes; converted checkpoints carry
their own config (avatarcli.gan.weights), which wins over these defaults.

Not built (yet): PanoHead's camera-offset mapping (`t_mapping`, a learned translation added to
the rendering camera) and its optional background synthesis network.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from avatarcli.gan.layers import MappingNetwork, SynthesisBlock, SynthesisNetwork, ToRGBLayer
from avatarcli.gan.volume import (
    Decoder,
    box_limits,
    camera_rays,
    composite,
    sample_pdf,
    sample_planes,
    stratified_depths,
)


@dataclass(frozen=True)
class GanConfig:
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 25  # cam2world [4, 4] + intrinsics [3, 3], flattened
    mapping_layers: int = 2
    backbone_resolution: int = 256
    plane_channels: int = 32
    triplane_depth: int = 3  # PanoHead's tri-grid; 1 = EG3D's tri-plane
    channel_base: int = 32768
    channel_max: int = 512
    neural_resolution: int = 64  # the volume-rendered feature image
    img_resolution: int = 512
    decoder_hidden: int = 64
    decoder_features: int = 32
    decoder_sigmoid: bool = False  # PanoHead trains with decoder_activation="none"
    sr_channels: tuple[int, ...] = (128, 64, 32)  # one block per x2 from neural_resolution
    depth_samples: int = 48
    importance_samples: int = 48
    ray_start: float | None = 2.25  # None (a checkpoint's "auto"): per ray, where it enters the box
    ray_end: float | None = 3.3  # None: where it leaves the box
    camera_radius: float = 2.7  # the training cameras' distance to the origin, which fixed ray bounds are for
    box_warp: float = 1.0
    density_shift: float = -1.0  # sigma = softplus(raw + shift)
    white_background: bool = False
    use_torgb_raw: bool = True  # PanoHead: the raw colour is a toRGB of the feature image (else its first 3)
    c_scale: float = 1.0  # the mapping network sees c * c_scale (0 with c_zero: unconditioned)
    c_zero: bool = False

    @classmethod
    def panohead(cls) -> GanConfig:
        """PanoHead's published sizes (tri-grid depth 3, 64^2 neural rendering, 512^2 output)."""
        return cls()

    @classmethod
    def tiny(cls) -> GanConfig:
        """A few-thousand-parameter model for CPU tests: 16^2 planes, 8^2 rendering, 16^2 output."""
        return cls(
            z_dim=16, w_dim=16, mapping_layers=2, backbone_resolution=16, plane_channels=4, triplane_depth=2,
            channel_base=128, channel_max=16, neural_resolution=8, img_resolution=16, decoder_hidden=8,
            decoder_features=4, sr_channels=(8,), depth_samples=6, importance_samples=6,
        )  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GanOutput:
    image: torch.Tensor  # [N, 3, H, W] super-resolved, about [-1, 1]
    image_raw: torch.Tensor  # [N, 3, r, r] the volume-rendered colour
    features: torch.Tensor  # [N, F, r, r] the volume-rendered feature image
    depth: torch.Tensor  # [N, 1, r, r]
    opacity: torch.Tensor  # [N, 1, r, r]


class SuperResolution(nn.Module):
    """Feature image [N, F, r, r] -> image [N, 3, r * 2^k, ...]: bilinear x2, then k synthesis
    blocks (the first at that resolution, the rest x2 each), all styled by the last w; the raw
    colour is the skip image."""

    def __init__(self, cfg: GanConfig):
        super().__init__()
        chans = cfg.sr_channels
        k = int(round(math.log2(cfg.img_resolution / cfg.neural_resolution)))
        if k < 1 or cfg.neural_resolution * 2**k != cfg.img_resolution or len(chans) != k:
            raise ValueError(f"img_resolution / neural_resolution must be 2^k with k = len(sr_channels) ({len(chans)})")
        res = [cfg.neural_resolution * 2 ** (i + 1) for i in range(k)]
        cins = [cfg.decoder_features, *chans[:-1]]
        self.blocks = nn.ModuleList(
            SynthesisBlock(cins[i], chans[i], cfg.w_dim, res[i], 3, up=1 if i == 0 else 2) for i in range(k)
        )
        self.resolution = res[0]  # the first block's (the feature image is resized to it)

    def forward(self, rgb: torch.Tensor, feats: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        size = self.resolution
        x = F.interpolate(feats, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        img = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        ws = w[:, None].expand(-1, 3, -1)
        for block in self.blocks:
            x, img = block(x, img, ws, noise_mode)
        return img


class TriplaneGenerator(nn.Module):
    def __init__(self, cfg: GanConfig):
        super().__init__()
        self.cfg = cfg
        planes_ch = 3 * cfg.triplane_depth * cfg.plane_channels
        self.backbone = SynthesisNetwork(
            cfg.w_dim, cfg.backbone_resolution, planes_ch, cfg.channel_base, cfg.channel_max
        )
        self.num_ws = self.backbone.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, self.num_ws, cfg.mapping_layers)
        self.decoder = Decoder(cfg.plane_channels, cfg.decoder_hidden, cfg.decoder_features, cfg.decoder_sigmoid)
        self.superres = SuperResolution(cfg)
        self.torgb = ToRGBLayer(cfg.decoder_features, 3, cfg.w_dim) if cfg.use_torgb_raw else None

    def planes(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:  # [N, 3, D, C, H, W]
        p = self.backbone(ws, noise_mode)
        n, _, h, w = p.shape
        return p.reshape(n, 3, self.cfg.triplane_depth, self.cfg.plane_channels, h, w)

    def query(self, planes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [N, M, 3] -> density [N, M, 1] (>= 0), features [N, M, F]."""
        raw, feats = self.decoder(sample_planes(planes, points, self.cfg.box_warp))
        return F.softplus(raw + self.cfg.density_shift), feats

    def _march(self, planes, origins, dirs, depths) -> tuple[torch.Tensor, torch.Tensor]:
        n, r, s = depths.shape
        pts = (origins[:, :, None] + dirs[:, :, None] * depths[..., None]).reshape(n, r * s, 3)
        sigma, feats = self.query(planes, pts)
        return feats.reshape(n, r, s, -1), sigma.reshape(n, r, s, 1)

    def render(self, planes: torch.Tensor, c: torch.Tensor, resolution: int | None = None, generator=None):
        """Volume-render the planes from cameras c [N, 25]: coarse stratified samples, then
        importance samples from the coarse weights, composited together."""
        cfg = self.cfg
        res = resolution or cfg.neural_resolution
        cam2world, intr = c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3)
        origins, dirs = camera_rays(cam2world, intr, res)
        n, rays = origins.shape[:2]
        if cfg.ray_start is None or cfg.ray_end is None:
            start, end = box_limits(origins, dirs, cfg.box_warp)  # [N, R] each
            ray_range: tuple[float | torch.Tensor, float | torch.Tensor] = (start, end)
        else:  # fixed bounds are for cameras at camera_radius: moved with a camera nearer or farther
            shift = (cam2world[:, :3, 3].norm(dim=-1) - cfg.camera_radius)[:, None]  # [N, 1]
            ray_range = ((cfg.ray_start + shift).clamp(min=1e-3), (cfg.ray_end + shift).clamp(min=2e-3))
        d = stratified_depths(n, rays, cfg.depth_samples, *ray_range, generator is not None, generator, c.device)
        d = d.to(c.dtype)
        col, sig = self._march(planes, origins, dirs, d)
        if cfg.importance_samples:
            coarse = composite(col, sig, d)
            mids = (d[..., 1:] + d[..., :-1]) / 2
            bins = torch.cat([d[..., :1], mids, d[..., -1:]], dim=-1)[..., 1:-1]  # [N, R, S-1]
            fine = sample_pdf(bins, coarse.weights[..., 1:-1], cfg.importance_samples, generator is None, generator)
            fcol, fsig = self._march(planes, origins, dirs, fine.detach())
            d, order = torch.sort(torch.cat([d, fine.detach()], dim=-1), dim=-1)
            col = torch.cat([col, fcol], dim=2).gather(2, order[..., None].expand(-1, -1, -1, col.shape[-1]))
            sig = torch.cat([sig, fsig], dim=2).gather(2, order[..., None])
        out = composite(col, sig, d, cfg.white_background)
        img = lambda t: t.permute(0, 2, 1).reshape(n, -1, res, res)  # noqa: E731  [N, R, C] -> [N, C, r, r]
        return img(out.features), img(out.depth), img(out.opacity)

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, noise_mode: str = "const", generator=None) -> GanOutput:
        planes = self.planes(ws, noise_mode)
        feats, depth, opacity = self.render(planes, c, generator=generator)
        rgb = self.torgb(feats, ws[:, -1]) if self.torgb is not None else feats[:, :3]
        image = self.superres(rgb, feats, ws[:, -1], noise_mode)
        return GanOutput(image=image, image_raw=rgb, features=feats, depth=depth, opacity=opacity)

    def map(self, z: torch.Tensor, c: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        """z [N, z_dim], c [N, 25] -> ws [N, num_ws, w_dim] (the camera scaled / zeroed as trained)."""
        cm = torch.zeros_like(c) if self.cfg.c_zero else c * self.cfg.c_scale
        return self.mapping(z, cm, psi=psi, cutoff=cutoff)

    def forward(self, z: torch.Tensor, c: torch.Tensor, psi: float = 1.0, noise_mode: str = "const") -> GanOutput:
        return self.synthesis(self.map(z, c, psi=psi), c, noise_mode)
