"""A PanoHead-style 3D-aware generator: mapping -> StyleGAN2 backbone emitting a tri-grid ->
volume rendering of a low-resolution feature image (+ a background image where the head is
not opaque) -> style-conditioned super-resolution.

    G = TriplaneGenerator(GanConfig.tiny())
    out = G(z, c)          # z [N, z_dim], c [N, 25] = cam2world (16) + normalised intrinsics (9)
    out.image              # [N, 3, img_resolution, img_resolution] in about [-1, 1]

`GanConfig.panohead()` has the sizes of PanoHead's public 512 px training configuration (its
train.py and training/triplane.py, read in SizheAn/PanoHead; EG3D's 8XDC super-resolution);
converted checkpoints carry their own config (avatarcli.gan.convert), which wins. The tensor
layouts and sampling conventions, and their sources, are in avatarcli.gan.volume's docstring.

PanoHead's camera-offset mapping (`t_mapping`): a small mapping network (z, c) -> a translation
added to the rendering camera (cam2world entries 3, 7, 11). Its projector computes it once per
photo at the mean latent; here `camera_offset(c)` evaluates it at z = 0 (the mean of z), which
normalises to a zero latent input (the reference's projector uses the mean of 10000 random
samples, which normalises to a random direction).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from avatarcli.gan.layers import MappingNetwork, SynthesisBlock, SynthesisNetwork, ToRGBLayer
from avatarcli.gan.volume import (
    Decoder,
    box_limits,
    camera_rays,
    composite,
    outside_crop,
    planes_from_backbone,
    sample_pdf,
    sample_planes,
    smooth_weights,
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
    conv_clamp: float | None = None  # the backbone's (PanoHead trains it in fp32: no clamp)
    layout: str = "panohead"  # plane axes and output scaling: "panohead" | "eg3d" (avatarcli.gan.volume)
    triplane_crop: float = 0.1  # PanoHead's density crop (box_warp / 2 - crop in x and z); EG3D: 0
    neural_resolution: int = 64  # the volume-rendered feature image
    img_resolution: int = 512
    decoder_hidden: int = 64
    decoder_features: int = 32
    decoder_activation: str = "none"  # PanoHead's release: "none" (with use_torgb_raw); EG3D: "sigmoid"
    sr_channels: tuple[int, ...] = (256, 128)  # one super-resolution block each
    sr_input_resolution: int = 128  # the feature image is resized to this before super-resolution
    sr_first_up: bool = True  # the first block doubles (EG3D 8X / 8XDC); False: it keeps (4X / 2X)
    sr_noise_mode: str = "none"  # the super-resolution's noise (PanoHead's superresolution_noise_mode)
    sr_conv_clamp: float | None = 256.0  # 256 when trained in fp16 (sr_num_fp16_res > 0)
    use_background: bool = True  # PanoHead's background synthesis network (under the head's alpha)
    camera_offset: bool = True  # PanoHead's t_mapping (see the module docstring)
    depth_samples: int = 48
    importance_samples: int = 48
    ray_start: float | None = 2.25  # None (a checkpoint's "auto"): per ray, where it enters the box
    ray_end: float | None = 3.3  # None: where it leaves the box
    camera_radius: float = 2.7  # the training cameras' distance to the origin, which fixed ray bounds are for
    box_warp: float = 1.0
    density_shift: float = -1.0  # sigma = softplus(raw + shift), per interval
    white_background: bool = False
    use_torgb_raw: bool = True  # PanoHead: the raw colour is a toRGB of the feature image (else its first 3)
    c_scale: float = 1.0  # the mapping network sees c * c_scale (0 with c_zero: unconditioned)
    c_zero: bool = False

    @classmethod
    def panohead(cls) -> GanConfig:
        """PanoHead's public 512 px configuration (tri-grid depth 3, 64^2 neural rendering)."""
        return cls()

    @classmethod
    def tiny(cls) -> GanConfig:
        """A few-thousand-parameter model for CPU tests: 16^2 planes, 8^2 rendering, 16^2 output."""
        return cls(
            z_dim=16, w_dim=16, mapping_layers=2, backbone_resolution=16, plane_channels=4, triplane_depth=2,
            channel_base=128, channel_max=16, neural_resolution=8, img_resolution=16, decoder_hidden=8,
            decoder_features=4, sr_channels=(8,), sr_input_resolution=8, depth_samples=6, importance_samples=6,
            use_background=False, camera_offset=False, triplane_crop=0.0,
        )  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> GanConfig:
        """A stored config (converted weights, inversions). Files written before the tri-grid
        review lack the new fields: they get the layout those files were made with (tiny test
        models only: no real checkpoint was converted then)."""
        raw = dict(raw)
        if "decoder_sigmoid" in raw:
            raw["decoder_activation"] = "sigmoid" if raw.pop("decoder_sigmoid") else "none"
        known = {f.name for f in fields(cls)}
        if "sr_input_resolution" not in raw and "neural_resolution" in raw:
            raw.update(sr_input_resolution=raw["neural_resolution"] * 2, sr_first_up=False)
        for k, old in (("use_background", False), ("camera_offset", False), ("triplane_crop", 0.0)):
            raw.setdefault(k, old)
        raw["sr_channels"] = tuple(raw.get("sr_channels", ()))
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass
class GanOutput:
    image: torch.Tensor  # [N, 3, H, W] super-resolved, about [-1, 1]
    image_raw: torch.Tensor  # [N, 3, r, r] the volume-rendered colour
    features: torch.Tensor  # [N, F, r, r] the volume-rendered feature image
    depth: torch.Tensor  # [N, 1, r, r]
    opacity: torch.Tensor  # [N, 1, r, r]


class SuperResolution(nn.Module):
    """Feature image [N, F, r, r] -> image [N, 3, R, R] (EG3D's hybrid super-resolution): the
    feature and raw-colour images resized (bilinear, antialiased) to sr_input_resolution, then
    one synthesis block per sr_channels entry, the first doubling the resolution when
    sr_first_up, every later one doubling it; all styled by the last w. The raw colour is the
    skip image."""

    def __init__(self, cfg: GanConfig):
        super().__init__()
        chans, r0 = cfg.sr_channels, cfg.sr_input_resolution
        res = [r0 * 2 ** (i + int(cfg.sr_first_up)) for i in range(len(chans))]
        if not chans or res[-1] != cfg.img_resolution:
            raise ValueError(
                f"super-resolution from {r0} px with {len(chans)} block(s) (first_up={cfg.sr_first_up}) does not reach "
                f"img_resolution {cfg.img_resolution}"
            )
        cins = [cfg.decoder_features, *chans[:-1]]
        ups = [2 if (i > 0 or cfg.sr_first_up) else 1 for i in range(len(chans))]
        self.blocks = nn.ModuleList(
            SynthesisBlock(cins[i], chans[i], cfg.w_dim, res[i], 3, up=ups[i], conv_clamp=cfg.sr_conv_clamp)
            for i in range(len(chans))
        )
        self.resolution, self.noise_mode = r0, cfg.sr_noise_mode

    def forward(self, rgb: torch.Tensor, feats: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        size = self.resolution
        if feats.shape[-1] != size:
            feats = F.interpolate(feats, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        ws = w[:, None].expand(-1, 3, -1)
        x, img = feats, rgb
        for block in self.blocks:
            x, img = block(x, img, ws, self.noise_mode)
        return img


class TriplaneGenerator(nn.Module):
    def __init__(self, cfg: GanConfig):
        super().__init__()
        self.cfg = cfg
        planes_ch = 3 * cfg.triplane_depth * cfg.plane_channels
        self.backbone = SynthesisNetwork(
            cfg.w_dim, cfg.backbone_resolution, planes_ch, cfg.channel_base, cfg.channel_max, cfg.conv_clamp
        )
        self.num_ws = self.backbone.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, self.num_ws, cfg.mapping_layers)
        self.decoder = Decoder(cfg.plane_channels, cfg.decoder_hidden, cfg.decoder_features, cfg.decoder_activation)
        self.superres = SuperResolution(cfg)
        self.torgb = ToRGBLayer(cfg.decoder_features, 3, cfg.w_dim, conv_clamp=None) if cfg.use_torgb_raw else None
        self.bcg = (
            SynthesisNetwork(cfg.w_dim, cfg.sr_input_resolution, cfg.decoder_features, cfg.channel_base // 2,
                             cfg.channel_max, cfg.conv_clamp)
            if cfg.use_background else None
        )  # fmt: skip
        self.t_mapping = (
            MappingNetwork(cfg.z_dim, cfg.c_dim, 3, 1, cfg.mapping_layers, lr_mul=1.0, last_act="linear")
            if cfg.camera_offset else None
        )  # fmt: skip

    def planes(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:  # [N, 3, D, C, H, W]
        return planes_from_backbone(self.backbone(ws, noise_mode), self.cfg.triplane_depth)

    def query(self, planes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [N, M, 3] -> RAW density [N, M, 1] (activated per interval by `composite`), features [N, M, F]."""
        cfg = self.cfg
        raw, feats = self.decoder(sample_planes(planes, points, cfg.box_warp, cfg.layout))
        if cfg.triplane_crop > 0:
            raw = torch.where(outside_crop(points, cfg.box_warp, cfg.triplane_crop)[..., None], -1000.0, raw)
        return raw, feats

    def density(self, planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:  # [N, M, 1] >= 0
        """The density at points (the activation `composite` applies per interval), for inspection."""
        return F.softplus(self.query(planes, points)[0] + self.cfg.density_shift)

    def _march(self, planes, origins, dirs, depths) -> tuple[torch.Tensor, torch.Tensor]:
        n, r, s = depths.shape
        pts = (origins[:, :, None] + dirs[:, :, None] * depths[..., None]).reshape(n, r * s, 3)
        raw, feats = self.query(planes, pts)
        return feats.reshape(n, r, s, -1), raw.reshape(n, r, s, 1)

    def _ray_range(self, cam2world, origins, dirs) -> tuple[torch.Tensor, torch.Tensor]:  # [N, R] or [N, 1] each
        cfg = self.cfg
        if cfg.ray_start is None or cfg.ray_end is None:
            return box_limits(origins, dirs, cfg.box_warp)  # [N, R] each
        # fixed bounds are for cameras at camera_radius: moved with a camera nearer or farther
        shift = (cam2world[:, :3, 3].norm(dim=-1) - cfg.camera_radius)[:, None]  # [N, 1]
        return (cfg.ray_start + shift).clamp(min=1e-3), (cfg.ray_end + shift).clamp(min=2e-3)

    def render(self, planes: torch.Tensor, c: torch.Tensor, resolution: int | None = None, generator=None):
        """Volume-render the planes from cameras c [N, 25]: coarse stratified samples, then
        importance samples from the (smoothed) coarse weights, composited together."""
        cfg = self.cfg
        res = resolution or cfg.neural_resolution
        cam2world, intr = c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3)
        origins, dirs = camera_rays(cam2world, intr, res)
        n, rays = origins.shape[:2]
        start, end = self._ray_range(cam2world, origins, dirs)
        d = stratified_depths(n, rays, cfg.depth_samples, start, end, generator is not None, generator, c.device)
        d = d.to(c.dtype)
        col, sig = self._march(planes, origins, dirs, d)
        if cfg.importance_samples:
            coarse = composite(col, sig, d, shift=cfg.density_shift)
            mids = (d[..., 1:] + d[..., :-1]) / 2  # [N, R, S-1] bin edges
            w = smooth_weights(coarse.weights.detach())[..., 1:-1]
            fine = sample_pdf(mids, w, cfg.importance_samples, generator is None, generator)
            fcol, fsig = self._march(planes, origins, dirs, fine.detach())
            d, order = torch.sort(torch.cat([d, fine.detach()], dim=-1), dim=-1)
            col = torch.cat([col, fcol], dim=2).gather(2, order[..., None].expand(-1, -1, -1, col.shape[-1]))
            sig = torch.cat([sig, fsig], dim=2).gather(2, order[..., None])
        out = composite(col, sig, d, cfg.white_background, shift=cfg.density_shift)
        img = lambda t: t.permute(0, 2, 1).reshape(n, -1, res, res)  # noqa: E731  [N, R, C] -> [N, C, r, r]
        return img(out.features), img(out.depth), img(out.opacity)

    def background(self, ws: torch.Tensor, size: int, noise_mode: str) -> torch.Tensor:  # [N, F, size, size]
        """PanoHead's background feature image: its own synthesis network on the first ws."""
        assert self.bcg is not None
        k = self.bcg.num_ws
        ws_b = ws[:, :k] if ws.shape[1] >= k else torch.cat([ws, ws[:, -1:].expand(-1, k - ws.shape[1], -1)], 1)
        b = self.bcg(ws_b, noise_mode)
        return F.interpolate(b, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, noise_mode: str = "const", generator=None) -> GanOutput:
        """ws [N, num_ws, w_dim], c [N, 25] (the rendering camera, any camera offset already added)."""
        cfg = self.cfg
        planes = self.planes(ws, noise_mode)
        feats, depth, opacity = self.render(planes, c, generator=generator)
        if cfg.layout == "eg3d" or cfg.decoder_activation == "sigmoid":
            feats = feats * 2 - 1  # EG3D's ray marcher always; PanoHead's synthesis after a sigmoid decoder
        if self.bcg is not None:
            feats = feats + (1 - opacity) * self.background(ws, feats.shape[-1], noise_mode)
        rgb = self.torgb(feats, ws[:, -1]) if self.torgb is not None else feats[:, :3]
        image = self.superres(rgb, feats, ws[:, -1])
        return GanOutput(image=image, image_raw=rgb, features=feats, depth=depth, opacity=opacity)

    def condition(self, c: torch.Tensor) -> torch.Tensor:  # [N, 25]
        """The camera as the mapping networks see it (scaled, or zeroed when trained unconditioned)."""
        return torch.zeros_like(c) if self.cfg.c_zero else c * self.cfg.c_scale

    def map(self, z: torch.Tensor, c: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        """z [N, z_dim], c [N, 25] -> ws [N, num_ws, w_dim] (the camera scaled / zeroed as trained)."""
        return self.mapping(z, self.condition(c), psi=psi, cutoff=cutoff)

    def camera_offset(self, c: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:  # [N, 3]
        """PanoHead's learned camera translation for cameras c [N, 25] at latent z (default 0);
        zeros for a generator without t_mapping."""
        if self.t_mapping is None:
            return torch.zeros(c.shape[0], 3, dtype=c.dtype, device=c.device)
        z = torch.zeros(c.shape[0], self.cfg.z_dim, dtype=c.dtype, device=c.device) if z is None else z
        return self.t_mapping(z, self.condition(c))[:, 0]

    def forward(self, z: torch.Tensor, c: torch.Tensor, psi: float = 1.0, noise_mode: str = "const") -> GanOutput:
        """Sample: ws from (z, c), rendered from c moved by the camera offset at z."""
        return self.synthesis(self.map(z, c, psi=psi), offset_camera(c, self.camera_offset(c, z)), noise_mode)


def offset_camera(c: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:  # [N, 25], [N, 3] or [3] -> [N, 25]
    """c with `delta` added to its cam2world translation (entries 3, 7, 11)."""
    out = c.clone()
    out[:, [3, 7, 11]] = out[:, [3, 7, 11]] + delta.to(c.dtype).reshape(-1, 3)
    return out
