"""Tri-plane / tri-grid features and a small volume renderer (EG3D / PanoHead papers).

Conventions, as the public EG3D and PanoHead code defines them (read in NVlabs/eg3d and
SizheAn/PanoHead: training/volumetric_rendering/renderer.py, ray_marcher.py, training/triplane.py):

* World points lie in a cube of side `box_warp` centred on the origin, scaled by 2 / box_warp
  into grid_sample's [-1, 1].
* The backbone's image [N, 3 * C * D, H, W] is three planes of C * D channels, CHANNEL-major:
  channel c of depth slice d is index c * D + d (PanoHead views it as [N * 3, C, D, H, W]).
  `planes_from_backbone` reorders that into this module's [N, 3, D, C, H, W].
* Plane i is sampled at (u, v, s) = the point's coordinates in PLANE_AXES[layout][i]: u along
  the plane's width, v along its height, s across its D slices (tri-grid; unused when D == 1).
  They are the first / second / third components of x @ inv(A_i) for the reference's plane
  matrices A_i. Planes 0 and 1 are (x, y | z) and (x, z | y) in both; the third differs:
  PanoHead's (y, z | x), EG3D's (z, x) (EG3D projects plane 2 onto z, x: the x-z plane twice,
  transposed; its trained weights are for that).
* PanoHead zeroes the density outside the column |x|, |z| <= box_warp / 2 - 0.1 (its renderer's
  triplane_crop = 0.1: the raw density set to -1000 there); EG3D does not (`triplane_crop` 0).
* Densities: the raw output of the decoder is averaged over each sample interval, THEN
  activated: sigma = softplus(mean raw + density_shift) (shift -1, the reference's "activation
  bias"); colours likewise averaged per interval.
Cameras are OpenCV-style (x right, y down, z forward), cam2world [N, 4, 4], intrinsics [N, 3, 3]
normalised by the image size (fx = focal / width, cx = 0.5 for a centred principal point).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from avatarcli.gan.layers import FullyConnected

# per layout, for each plane: the coordinate indices of (u, v, slice)
PLANE_AXES = {
    "panohead": ((0, 1, 2), (0, 2, 1), (1, 2, 0)),
    "eg3d": ((0, 1, 2), (0, 2, 1), (2, 0, 1)),
}


def planes_from_backbone(img: torch.Tensor, depth: int) -> torch.Tensor:  # [N, 3*C*D, H, W] -> [N, 3, D, C, H, W]
    """The backbone's channel-major tri-grid (index c * depth + d within each plane) as [N, 3, D, C, H, W]."""
    n, ch, h, w = img.shape
    return img.reshape(n, 3, ch // (3 * depth), depth, h, w).transpose(2, 3)


def sample_planes(
    planes: torch.Tensor,  # [N, 3, D, C, H, W]
    points: torch.Tensor,  # [N, M, 3] world coordinates
    box_warp: float,
    layout: str = "panohead",
) -> torch.Tensor:  # [N, 3, M, C]
    """Bilinear (D == 1) or trilinear (D > 1) features of each plane at each point; zero outside
    the box (grid_sample, align_corners=False, zero padding)."""
    n, p, d, c, h, w = planes.shape
    q = points * (2.0 / box_warp)  # [-1, 1] inside the box
    out = []
    for i, (a, b, dep) in enumerate(PLANE_AXES[layout]):
        if d == 1:
            grid = torch.stack([q[..., a], q[..., b]], dim=-1)[:, :, None]  # [N, M, 1, 2]
            f = F.grid_sample(planes[:, i, 0], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        else:
            grid = torch.stack([q[..., a], q[..., b], q[..., dep]], dim=-1)[:, :, None, None]  # [N, M, 1, 1, 3]
            vol = planes[:, i].permute(0, 2, 1, 3, 4)  # [N, C, D, H, W]
            f = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[..., 0]
        out.append(f[..., 0].permute(0, 2, 1))  # [N, M, C]
    return torch.stack(out, dim=1)


def outside_crop(points: torch.Tensor, box_warp: float, crop: float) -> torch.Tensor:  # [N, M, 3] -> [N, M] bool
    """PanoHead's triplane crop: points whose |x| or |z| exceeds box_warp / 2 - crop."""
    lim = box_warp / 2 - crop
    return (points[..., 0].abs() > lim) | (points[..., 2].abs() > lim)


DECODER_ACTIVATIONS = ("sigmoid", "lrelu", "none")


class Decoder(nn.Module):
    """Mean of the plane features -> small MLP -> (raw density, features); the first 3 features
    are the raw colour. activation: "sigmoid" squashes the features to (-0.001, 1.001) (EG3D),
    "lrelu" is a leaky ReLU (0.2) times sqrt 2, "none" leaves them (PanoHead's release)."""

    def __init__(self, cin: int, hidden: int = 64, cout: int = 32, activation: str = "sigmoid"):
        super().__init__()
        if activation not in DECODER_ACTIVATIONS:
            raise ValueError(f"decoder activation {activation!r}: expected one of {DECODER_ACTIVATIONS}")
        self.activation = activation
        self.fc0 = FullyConnected(cin, hidden, act="softplus")
        self.fc1 = FullyConnected(hidden, 1 + cout)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # [N, 3, M, C]
        n, _, m, c = feats.shape
        x = self.fc1(self.fc0(feats.mean(dim=1).reshape(n * m, c))).reshape(n, m, -1)
        rgb = x[..., 1:]
        if self.activation == "sigmoid":
            rgb = torch.sigmoid(rgb) * (1 + 2 * 0.001) - 0.001
        elif self.activation == "lrelu":
            rgb = F.leaky_relu(rgb, 0.2) * 2**0.5
        return x[..., :1], rgb  # [N, M, 1], [N, M, cout]


def camera_rays(
    cam2world: torch.Tensor,  # [N, 4, 4]
    intrinsics: torch.Tensor,  # [N, 3, 3] normalised
    resolution: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # origins [N, R*R, 3], unit directions [N, R*R, 3]
    """One ray per pixel centre ((i + 0.5) / R), row-major, through a pinhole camera."""
    n = cam2world.shape[0]
    t = (torch.arange(resolution, dtype=cam2world.dtype, device=cam2world.device) + 0.5) / resolution
    v, u = torch.meshgrid(t, t, indexing="ij")
    u, v = u.reshape(1, -1), v.reshape(1, -1)
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, sk = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    y_cam = (v - cy) / fy
    x_cam = (u - cx - sk * y_cam) / fx
    d_cam = torch.stack([x_cam, y_cam, torch.ones_like(x_cam)], dim=-1)  # [N, R*R, 3]
    dirs = F.normalize(d_cam @ cam2world[:, :3, :3].transpose(1, 2), dim=-1)
    origins = cam2world[:, None, :3, 3].expand(n, dirs.shape[1], 3)
    return origins, dirs


def box_limits(
    origins: torch.Tensor,  # [N, R, 3]
    dirs: torch.Tensor,  # [N, R, 3] unit
    box_warp: float,
) -> tuple[torch.Tensor, torch.Tensor]:  # near [N, R], far [N, R]
    """Where each ray enters and leaves the cube [-box_warp/2, box_warp/2]^3 (slab method, the
    near end clamped at the origin). Rays that miss the cube get the hitting rays' smallest near
    and largest far (or, when none hits, the cube's bounding sphere around the camera distance)."""
    half = box_warp / 2
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0, t1 = (-half - origins) * inv, (half - origins) * inv
    near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    hit = far > near
    if hit.any():
        lo, hi = near[hit].min(), far[hit].max()
    else:
        dist = origins.norm(dim=-1).mean()
        lo, hi = (dist - half * 3**0.5).clamp(min=0), dist + half * 3**0.5
    return torch.where(hit, near, lo), torch.where(hit, far, hi)


def stratified_depths(
    n: int,
    rays: int,
    samples: int,
    start: float | torch.Tensor,  # a float or per ray [N, rays]
    end: float | torch.Tensor,
    jitter: bool,
    generator=None,
    device=None,
) -> torch.Tensor:  # [N, rays, samples]
    """Evenly spaced depths in [start, end]; with `jitter`, each moved uniformly within its bin."""
    t = torch.linspace(0, 1, samples, device=device)
    s = torch.as_tensor(start, device=device, dtype=t.dtype).expand(n, rays)[..., None]
    e = torch.as_tensor(end, device=device, dtype=t.dtype).expand(n, rays)[..., None]
    d = (s + (e - s) * t).clone()  # [N, rays, samples]
    if jitter and samples > 1:
        d = d + (torch.rand(d.shape, generator=generator, device=device) - 0.5) * (e - s) / (samples - 1)
    return d


@dataclass
class Composite:
    features: torch.Tensor  # [N, R, C]
    depth: torch.Tensor  # [N, R, 1] expected depth of the visible surface
    opacity: torch.Tensor  # [N, R, 1] 1 - transmittance through the whole ray
    weights: torch.Tensor  # [N, R, S-1] per interval


def composite(
    colors: torch.Tensor,  # [N, R, S, C]
    densities: torch.Tensor,  # [N, R, S, 1] raw (activated per interval) or, with shift None, non-negative
    depths: torch.Tensor,  # [N, R, S] sorted
    white_background: bool = False,
    shift: float | None = None,
) -> Composite:
    """Quadrature of the volume rendering integral over S-1 intervals, each with the mean of its
    end-point colour and density: alpha = 1 - exp(-sigma * delta), T = prod of (1 - alpha) before.
    With `shift`, the densities are raw and each interval's sigma is softplus(mean raw + shift)."""
    delta = (depths[..., 1:] - depths[..., :-1])[..., None]  # [N, R, S-1, 1]
    c_mid = (colors[..., 1:, :] + colors[..., :-1, :]) / 2
    s_mid = (densities[..., 1:, :] + densities[..., :-1, :]) / 2
    if shift is not None:
        s_mid = F.softplus(s_mid + shift)
    d_mid = ((depths[..., 1:] + depths[..., :-1]) / 2)[..., None]
    alpha = 1 - torch.exp(-s_mid * delta)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1, :]), 1 - alpha + 1e-10], dim=-2), dim=-2)
    w = alpha * trans[..., :-1, :]  # [N, R, S-1, 1]
    opacity = w.sum(dim=-2)
    feats = (w * c_mid).sum(dim=-2)
    depth = (w * d_mid).sum(dim=-2) / opacity.clamp(min=1e-8)
    depth = torch.where(opacity > 1e-8, depth, d_mid[..., -1, :]).clamp(depths.min(), depths.max())
    if white_background:
        feats = feats + (1 - opacity)
    return Composite(feats, depth, opacity, w[..., 0])


def smooth_weights(weights: torch.Tensor) -> torch.Tensor:  # [N, R, B] -> [N, R, B]
    """The coarse weights as the reference renderers' importance sampling uses them: a max over
    each pair of neighbours (the ends kept), then the mean of neighbouring pairs, plus 0.01."""
    n, r, b = weights.shape
    w = F.max_pool1d(weights.reshape(n * r, 1, b), 2, 1, padding=1)
    return (F.avg_pool1d(w, 2, 1) + 0.01).reshape(n, r, b)


def sample_pdf(
    bins: torch.Tensor,  # [N, R, B+1] interval edges
    weights: torch.Tensor,  # [N, R, B]
    samples: int,
    deterministic: bool = True,
    generator=None,
) -> torch.Tensor:  # [N, R, samples]
    """Inverse-CDF sampling of the piecewise-constant pdf given by `weights` over `bins`."""
    w = weights + 1e-5
    pdf = w / w.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, dim=-1)], dim=-1)  # [N, R, B+1]
    shape = (*cdf.shape[:-1], samples)
    if deterministic:
        u = torch.linspace(0, 1, samples + 2, dtype=cdf.dtype, device=cdf.device)[1:-1].expand(shape).contiguous()
    else:
        u = torch.rand(shape, generator=generator, dtype=cdf.dtype, device=cdf.device)
    idx = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[-1] - 1)
    c0, c1 = cdf.gather(-1, idx - 1), cdf.gather(-1, idx)
    b0, b1 = bins.gather(-1, idx - 1), bins.gather(-1, idx)
    t = (u - c0) / (c1 - c0).clamp(min=1e-8)
    return b0 + t * (b1 - b0)
