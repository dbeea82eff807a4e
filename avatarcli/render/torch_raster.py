"""A differentiable Gaussian rasterizer in plain PyTorch (CPU or any device).

It computes what gsplat 1.5's `rasterization(..., rasterize_mode="classic")`
computes, so either backend can render any scene:

1. Projection (autograd): camera-space means; 3D covariance R S S^T R^T
   (wxyz quaternions, normalised; linear scales), rotated into the camera;
   EWA: Sigma2d = J Sigma_c J^T + eps2d * I with the perspective Jacobian J, whose
   x/z, y/z are clamped to 1.3x the field of view (as gsplat). Gaussians with
   z <= near (0.01), z >= far, det <= 0 or opacity < 1/255 are culled.
2. Fragments (no grad): per Gaussian, the pixels of its bounding box at
   `extend * sqrt(diag Sigma2d)`, extend = min(3.33, sqrt(2 ln(255 opacity))),
   the box of the ellipse where alpha >= 1/255, so every pixel gsplat
   composites is a candidate. Candidates are enumerated with
   repeat_interleave / arange arithmetic, those with alpha < 1/255 dropped,
   and the rest sorted once by the int64 key (pixel, depth rank).
3. Compositing: alpha = min(0.999, o exp(-0.5 d^T Sigma2d^-1 d)) (gsplat's
   clamp is 0.999). The transmittance of each fragment is a segmented
   cumulative sum of log(1 - alpha) along its pixel's sorted run, in float64
   (global cumsum minus the value before the run starts). gsplat's stopping
   rule: a fragment whose inclusive transmittance T * (1 - alpha) would be
   <= 1e-4 is not composited, nor is anything behind it. A first no-grad
   pass finds the composited prefix of every run; the autograd pass then
   recomputes alpha and the weights w = alpha * T only for those fragments,
   and index_add scatters w * (rgb, 1, depth) into the image.
4. Output: rgb + (1 - alpha) * background; alpha = sum w = 1 - T_final;
   depth = sum w z / max(alpha, 1e-10) (gsplat's "ED", expected depth,
   normalised by alpha; 0 where nothing was hit).

Pixel centres are at INTEGER coordinates (this project's convention);
gsplat's are at +0.5, which is why its backend gets cx, cy + 0.5. Work is
done in chunks of at most `max_fragments` candidates / fragments, split at
pixel boundaries, to bound memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from avatarcli.geometry import quaternion_to_matrix
from avatarcli.render.sh import sh_to_rgb

ALPHA_THRESHOLD = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4


@dataclass
class RasterSettings:
    near_plane: float = 0.01
    far_plane: float = 1e10
    eps2d: float = 0.3
    max_fragments: int = 1 << 22  # per chunk; bounds memory of one pass


@dataclass
class Projected:
    """Per-Gaussian screen-space quantities for the culled-in subset `ids`."""

    ids: Tensor  # [M] long, indices into the input Gaussians
    means2d: Tensor  # [M, 2] pixel coordinates (integer pixel centres)
    cov2d: Tensor  # [M, 2, 2] blurred 2D covariance
    conics: Tensor  # [M, 3] (a, b, c) of the inverse covariance [[a, b], [b, c]]
    depths: Tensor  # [M] camera z
    opacities: Tensor  # [M]


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """R S S^T R^T. quats [N, 4] wxyz, scales [N, 3] linear -> [N, 3, 3]."""
    R = quaternion_to_matrix(quats)  # [N, 3, 3]
    M = R * scales[:, None, :]  # R @ diag(s)
    return M @ M.transpose(-1, -2)


def project(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    viewmat: Tensor,  # [4, 4]
    K: Tensor,  # [3, 3]
    width: int,
    height: int,
    settings: RasterSettings = RasterSettings(),
) -> Projected:
    """EWA projection + gsplat's culling (near/far plane, det, opacity)."""
    Rv, tv = viewmat[:3, :3], viewmat[:3, 3]
    mc = means @ Rv.T + tv  # [N, 3]
    z = mc[:, 2]
    with torch.no_grad():
        valid = (z > settings.near_plane) & (z < settings.far_plane) & (opacities >= ALPHA_THRESHOLD)
    ids = valid.nonzero().squeeze(1)  # [M]
    mc, z = mc[ids], z[ids]
    cov_c = Rv @ covariance_3d(quats[ids], scales[ids]) @ Rv.T  # [M, 3, 3]

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # gsplat's limits, written with its +0.5 principal point
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_xp = (width - (cx + 0.5)) / fx + 0.3 * tan_fovx
    lim_xn = (cx + 0.5) / fx + 0.3 * tan_fovx
    lim_yp = (height - (cy + 0.5)) / fy + 0.3 * tan_fovy
    lim_yn = (cy + 0.5) / fy + 0.3 * tan_fovy
    x, y = mc[:, 0], mc[:, 1]
    tx = z * torch.minimum(torch.maximum(x / z, -lim_xn), lim_xp)
    ty = z * torch.minimum(torch.maximum(y / z, -lim_yn), lim_yp)
    o = torch.zeros_like(z)
    J = torch.stack([fx / z, o, -fx * tx / (z * z), o, fy / z, -fy * ty / (z * z)], -1).reshape(-1, 2, 3)
    cov2d = J @ cov_c @ J.transpose(-1, -2)  # [M, 2, 2]
    cov2d = cov2d + settings.eps2d * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det = a * c - b * b
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)  # [M, 2]

    keep = (det > 0).nonzero().squeeze(1)
    det = det[keep]
    conics = torch.stack([c[keep] / det, -b[keep] / det, a[keep] / det], -1)
    return Projected(ids[keep], means2d[keep], cov2d[keep], conics, z[keep], opacities[ids][keep])


def _alpha(p: Projected, g: Tensor, pix: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Unclamped o*exp(-sigma) and sigma of fragments (g [F] into p, pix [F] flat index)."""
    px = (pix % width).to(p.means2d.dtype)
    py = torch.div(pix, width, rounding_mode="floor").to(p.means2d.dtype)
    dx = p.means2d[g, 0] - px
    dy = p.means2d[g, 1] - py
    con = p.conics[g]  # [F, 3]
    sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
    return p.opacities[g] * torch.exp(-sigma), sigma


def _segment_transmittance(alpha: Tensor, pix: Tensor) -> tuple[Tensor, Tensor]:
    """Per-fragment log T before (exclusive) and after (inclusive) it, within runs of equal pix.

    alpha [F] (sorted by pixel, then depth), pix [F] -> (log_T_excl [F], log_T_incl [F]) float64."""
    log1m = torch.log1p(-alpha.double())  # [F]
    C = torch.cumsum(log1m, 0)
    start = torch.ones_like(pix, dtype=torch.bool)
    start[1:] = pix[1:] != pix[:-1]
    seg = torch.cumsum(start, 0) - 1  # [F] run index
    base = (C - log1m)[start]  # cumsum before each run
    incl = C - base[seg]
    return incl - log1m, incl


def _chunks(pix_sorted: Tensor, max_len: int) -> list[tuple[int, int]]:
    """Split a sorted pixel array into [a, b) ranges of <= ~max_len that never cut a pixel's run."""
    n = pix_sorted.numel()
    if n <= max_len:
        return [(0, n)]
    cuts = [0]
    while cuts[-1] + max_len < n:
        at = cuts[-1] + max_len
        b = int(torch.searchsorted(pix_sorted, pix_sorted[at : at + 1], right=False).item())
        if b <= cuts[-1]:  # one pixel longer than max_len: take its whole run
            b = int(torch.searchsorted(pix_sorted, pix_sorted[at : at + 1], right=True).item())
        cuts.append(b)
    cuts.append(n)
    return list(zip(cuts[:-1], cuts[1:]))


@torch.no_grad()
def fragments(p: Projected, width: int, height: int, max_candidates: int = 1 << 22) -> tuple[Tensor, Tensor]:
    """Fragments with alpha >= 1/255, sorted by (pixel, depth): (g [F] into p, pix [F] flat pixel index)."""
    dev = p.means2d.device
    M = p.depths.numel()
    if M == 0:
        e = torch.zeros(0, dtype=torch.long, device=dev)
        return e, e
    extend = torch.sqrt(2.0 * torch.log(p.opacities / ALPHA_THRESHOLD)).clamp(max=3.33)
    ext = extend[:, None] * torch.sqrt(torch.diagonal(p.cov2d, dim1=-2, dim2=-1)) * (1 + 1e-5) + 1e-4  # [M, 2]
    lo = torch.ceil(p.means2d - ext)
    hi = torch.floor(p.means2d + ext)
    size = torch.tensor([width, height], dtype=lo.dtype, device=dev)
    lo = torch.maximum(lo, torch.zeros_like(lo)).clamp(max=size).long()  # [M, 2]
    hi = torch.minimum(hi, size - 1).clamp(min=-1).long()
    n = (hi - lo + 1).clamp(min=0)  # [M, 2]
    cnt = n[:, 0] * n[:, 1]  # [M]

    order = torch.argsort(p.depths, stable=True)  # front to back
    rank = torch.empty_like(order)
    rank[order] = torch.arange(M, device=dev)

    keys = []
    cum = torch.cumsum(cnt, 0)
    start = 0
    while start < M:  # chunks of Gaussians with <= max_candidates candidates (at least one Gaussian)
        base = int(cum[start - 1].item()) if start > 0 else 0
        stop = int(torch.searchsorted(cum, torch.tensor(base + max_candidates, device=dev), right=True).item())
        stop = max(stop, start + 1)
        idx = torch.arange(start, stop, device=dev)
        c = cnt[idx]
        total = int(c.sum().item())
        start = stop
        if total == 0:
            continue
        g = torch.repeat_interleave(idx, c)  # [T]
        offs = torch.cumsum(c, 0) - c  # [chunk]
        local = torch.arange(total, device=dev) - torch.repeat_interleave(offs, c)
        nx = n[g, 0]
        col = lo[g, 0] + local % nx
        row = lo[g, 1] + torch.div(local, nx, rounding_mode="floor")
        pix = row * width + col
        a, sigma = _alpha(p, g, pix, width)
        ok = (sigma >= 0) & (a >= ALPHA_THRESHOLD)
        keys.append(pix[ok] * M + rank[g[ok]])
    if not keys:
        e = torch.zeros(0, dtype=torch.long, device=dev)
        return e, e
    key = torch.sort(torch.cat(keys)).values
    return order[key % M], torch.div(key, M, rounding_mode="floor")


def rasterize(
    p: Projected,
    colors: Tensor,  # [M, 3] per projected Gaussian
    width: int,
    height: int,
    background: Tensor | None = None,  # [3]
    settings: RasterSettings = RasterSettings(),
    stats: dict | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite projected Gaussians -> rgb [H, W, 3], alpha [H, W, 1], depth [H, W, 1] (ED)."""
    g_all, pix_all = fragments(p, width, height, settings.max_fragments)
    need_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (p.means2d, p.conics, p.opacities, p.depths, colors)
    )
    vals = torch.cat([colors, torch.ones_like(colors[:, :1]), p.depths[:, None]], 1)  # [M, 5]
    img = torch.zeros(height * width, 5, dtype=vals.dtype, device=vals.device)
    n_comp = 0
    for a0, b0 in _chunks(pix_all, settings.max_fragments):
        g, pix = g_all[a0:b0], pix_all[a0:b0]
        with torch.no_grad():
            alpha = _alpha(p, g, pix, width)[0].clamp(max=ALPHA_MAX)
            log_excl, log_incl = _segment_transmittance(alpha, pix)
            keep = log_incl > math.log(T_MIN)
            if not need_grad:
                w = (alpha.double() * torch.exp(log_excl)).to(vals.dtype)[keep]
        g, pix = g[keep], pix[keep]
        if need_grad:  # recompute on the composited fragments only, with autograd
            alpha = _alpha(p, g, pix, width)[0].clamp(max=ALPHA_MAX)
            log_excl, _ = _segment_transmittance(alpha, pix)
            w = (alpha.double() * torch.exp(log_excl)).to(vals.dtype)
        n_comp += g.numel()
        img = img.index_add(0, pix, vals[g] * w[:, None])
    if stats is not None:
        stats["fragments"] = stats.get("fragments", 0) + int(pix_all.numel())
        stats["composited"] = stats.get("composited", 0) + n_comp
        stats["visible"] = stats.get("visible", 0) + int(p.depths.numel())
    img = img.reshape(height, width, 5)
    rgb, alpha_img, depth = img[..., :3], img[..., 3:4], img[..., 4:5]
    if background is not None:
        rgb = rgb + (1.0 - alpha_img) * background.to(rgb)
    depth = depth / alpha_img.clamp(min=1e-10)
    return rgb, alpha_img, depth


def render_torch(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] wxyz
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    sh: Tensor,  # [N, K, 3]
    viewmat: Tensor,  # [4, 4]
    K: Tensor,  # [3, 3] integer pixel centres
    width: int,
    height: int,
    background: Tensor | None = None,  # [3]
    sh_degree: int | None = None,
    settings: RasterSettings = RasterSettings(),
    stats: dict | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render one view -> rgb [H, W, 3], alpha [H, W, 1], depth [H, W, 1]."""
    viewmat = viewmat.to(means)
    K = K.to(means)
    p = project(means, quats, scales, opacities, viewmat, K, width, height, settings)
    campos = -viewmat[:3, :3].T @ viewmat[:3, 3]  # [3]
    colors = sh_to_rgb(sh[p.ids], means[p.ids] - campos, sh_degree)  # [M, 3]
    return rasterize(p, colors, width, height, background, settings, stats)
