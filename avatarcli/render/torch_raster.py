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
   the box of the ellipse where alpha >= 1/255 (gsplat's). Within the box, each
   image row's run of pixels where sigma <= ln(255 o) is solved for in float64
   (a quadratic in x, with a 1e-3 margin in sigma), so the candidates are the
   fragments themselves rather than the whole box ("row segments", `Rows`).
3. Compositing, per band of image rows (bands of at most `max_fragments`
   fragments, to bound memory): the fragments are enumerated segment by
   segment with Gaussians in depth order and stably sorted by pixel, so each
   pixel's run is front to back. alpha = min(0.999, o exp(-sigma)), sigma =
   0.5 d^T Sigma2d^-1 d (gsplat's clamp; alpha < 1/255 or sigma < 0: not
   composited). The transmittance before each fragment is a segmented sum of
   log(1 - alpha) along its pixel's run (a float64 cumulative sum minus its
   value at the run's start). gsplat's stopping rule: a fragment whose
   inclusive transmittance T (1 - alpha) would be <= 1e-4 is not composited,
   nor is anything behind it. The image is one sparse (CSR, pixel x Gaussian)
   product of the weights w = alpha T with (rgb, 1, depth).
   Backward (`_Composite`, by hand, checked against finite differences and the
   autograd reference in tests/reference_raster.py): with s = dL/dC . v per
   fragment, dL/dalpha_i = T_i s_i - sum_{j behind i} w_j s_j / (1 - alpha_i)
   (a suffix sum along the run); dL/dsigma = -alpha dL/dalpha where alpha is not
   clamped; sums over each row segment (of dL/dsigma x 1, dx, dx^2) give the
   means2d, conic and opacity gradients; dL/dv is the transposed product.
4. Output: rgb + (1 - alpha) * background; alpha = sum w = 1 - T_final;
   depth = sum w z / max(alpha, 1e-10) (gsplat's "ED", expected depth,
   normalised by alpha; 0 where nothing was hit).

Pixel centres are at INTEGER coordinates (this project's convention);
gsplat's are at +0.5, which is why its backend gets cx, cy + 0.5.
"""

from __future__ import annotations

import math
import warnings
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
    max_fragments: int = 1 << 22  # per band of image rows (at least one row); bounds memory of one pass


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


@dataclass
class Rows:
    """Row segments of the fragments, in depth-rank order: Gaussian `g` (its front-to-back rank)
    covers pixels xa .. xa + n - 1 of image row y."""

    g: Tensor  # [R] long, depth rank
    y: Tensor  # [R] long
    xa: Tensor  # [R] long
    n: Tensor  # [R] long, > 0

    def subset(self, idx: Tensor) -> Rows:
        return Rows(self.g[idx], self.y[idx], self.xa[idx], self.n[idx])


def _boxes(p: Projected, order: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """gsplat's bounding boxes (alpha >= 1/255, at most 3.33 sigma) in depth-rank order -> lo, hi [M, 2] long."""
    opac, cov2d, means2d = p.opacities[order], p.cov2d[order], p.means2d[order]
    extend = torch.sqrt(2.0 * torch.log(opac / ALPHA_THRESHOLD)).clamp(max=3.33)
    ext = extend[:, None] * torch.sqrt(torch.diagonal(cov2d, dim1=-2, dim2=-1)) * (1 + 1e-5) + 1e-4  # [M, 2]
    lo = torch.ceil(means2d - ext)
    hi = torch.floor(means2d + ext)
    size = torch.tensor([width, height], dtype=lo.dtype, device=lo.device)
    lo = torch.maximum(lo, torch.zeros_like(lo)).clamp(max=size).long()
    hi = torch.minimum(hi, size - 1).clamp(min=-1).long()
    return lo, hi


@torch.no_grad()
def row_segments(p: Projected, order: Tensor, width: int, height: int) -> Rows:
    """Per Gaussian (in depth-rank order) and image row of its box, the run of pixels where
    sigma <= ln(255 o) (alpha >= 1/255) within its box, solved in float64 with a margin of
    1e-3 in sigma: a candidate set containing every fragment the exact float test keeps."""
    dev = p.means2d.device
    lo, hi = _boxes(p, order, width, height)
    ny = (hi[:, 1] - lo[:, 1] + 1).clamp(min=0)  # [M]
    gr = torch.repeat_interleave(torch.arange(order.numel(), device=dev), ny)  # [R]
    m2, con = p.means2d[order].double(), p.conics[order].double()  # [M, 2], [M, 3]
    a, b, c = con.unbind(1)
    s = torch.log(p.opacities[order].double() / ALPHA_THRESHOLD) + 1e-3
    # per Gaussian: mean x, y, b / a, (b^2 - a c) / a^2, 2 s / a, first row, box x range
    first = (lo[:, 1] - (torch.cumsum(ny, 0) - ny)).double()
    per_g = torch.stack([m2[:, 0], m2[:, 1], b / a, (b * b - a * c) / (a * a), 2 * s / a, first, lo[:, 0], hi[:, 0]], 1)
    mx, my, ba, disc_a, s2a, first, lo_x, hi_x = per_g.index_select(0, gr).unbind(1)  # [R] each
    y = first + torch.arange(gr.numel(), device=dev, dtype=torch.float64)  # the row index
    dy = my - y
    # 0.5 a dx^2 + b dy dx + 0.5 c dy^2 = s at dx = (-b dy +- sqrt((b^2 - a c) dy^2 + 2 a s)) / a; x = mean_x - dx
    disc = disc_a * dy * dy + s2a
    sq = torch.sqrt(disc.clamp(min=0))
    xa = torch.maximum(torch.ceil(mx + ba * dy - sq - 1e-4), lo_x)
    xb = torch.minimum(torch.floor(mx + ba * dy + sq + 1e-4), hi_x)
    n = torch.where(disc >= 0, xb - xa + 1, torch.zeros_like(xa)).clamp(min=0).long()
    xa, y = xa.long(), y.long()
    keep = (n > 0).nonzero().squeeze(1)
    return Rows(gr[keep], y[keep], xa[keep], n[keep])


def _bands(rows: Rows, height: int, max_fragments: int) -> list[tuple[int, int]]:
    """Split the image rows into bands [y0, y1) of <= ~max_fragments fragments (at least one row each)."""
    total = int(rows.n.sum())
    if total <= max_fragments:
        return [(0, height)]
    per_y = torch.zeros(height, dtype=torch.long, device=rows.n.device).index_add_(0, rows.y, rows.n)
    cum = torch.cumsum(per_y, 0).tolist()
    bands, y0, base = [], 0, 0
    for y in range(height):
        if cum[y] - base > max_fragments and y > y0:
            bands.append((y0, y))
            y0, base = y, cum[y - 1]
    bands.append((y0, height))
    return bands


def _csr_mm(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int], dense: Tensor) -> Tensor:
    """(sparse CSR [size] with crow, col, values) @ dense [size[1], K] -> [size[0], K]. Each output row
    is one sequential sum over its entries, in their order: deterministic for any thread count."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        sp = torch.sparse_csr_tensor(crow.to(col.dtype), col, values, size=size, check_invariants=False)
    return sp @ dense


def _crow(idx: Tensor, n: int) -> Tensor:
    """CSR row pointers [n + 1] (long) of the sorted row index idx [F]."""
    crow = torch.zeros(n + 1, dtype=torch.long, device=idx.device)
    crow[1:] = torch.cumsum(torch.bincount(idx, minlength=n), 0)
    return crow


def _run_values(x: Tensor, crow: Tensor, first: bool) -> Tensor:
    """x [F] at the first (or last) entry of each run crow [P + 1] describes -> [P] (0 for empty runs)."""
    if x.numel() == 0:
        return x.new_zeros(crow.numel() - 1)
    at = crow[:-1] if first else crow[1:] - 1
    return torch.where(crow[1:] > crow[:-1], x[at.clamp(0, x.numel() - 1)], x.new_zeros(()))


@dataclass
class _Band:
    """One band's fragments, as the forward pass leaves them for the backward pass."""

    rows: Rows  # [R]
    y0: int
    width: int
    row_of: Tensor  # [F] int32 row segment of each fragment (generation order: by Gaussian, row, x)
    dx: Tensor  # [F] mean_x - pixel x (generation order)
    pix_gen: Tensor  # [F] int32 band-local pixel index (generation order)
    g_gen: Tensor  # [F] depth rank (generation order: non-decreasing)
    perm: Tensor  # [F] long: sorted position i holds generation-order fragment perm[i]
    pix: Tensor  # [F] int32 band-local pixel (sorted by pixel, then depth)
    g: Tensor  # [F] long depth rank (sorted)
    crow: Tensor  # [P + 1] long: pixel q's fragments are sorted[crow[q] : crow[q + 1]]
    alpha: Tensor  # [F] clamped alpha, 0 where below 1/255 (sorted)
    trans: Tensor  # [F] transmittance in front of the fragment (sorted)
    w: Tensor  # [F] alpha * T where composited, else 0 (sorted)
    keep: Tensor  # [F] bool: composited (in front of the T < 1e-4 cut-off)


def _band_alpha(x: tuple[Tensor, ...], rows: Rows, y0: int, width: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Alpha of a band's fragments in generation order -> (alpha [F] clamped, 0 below 1/255 or where
    sigma < 0; row_of [F] int32; dx [F] = mean_x - pixel x; pix [F] int32 band-local)."""
    mx, my, ca, cb, cc, op = (t.index_select(0, rows.g) for t in x)  # [R] each
    n = rows.n
    dt, dev = mx.dtype, mx.device
    dy = my - rows.y.to(dt)  # [R]
    d0 = mx - rows.xa.to(dt)
    start = torch.cumsum(n, 0) - n
    count = int(start[-1] + n[-1]) if n.numel() else 0
    row_of = torch.repeat_interleave(torch.arange(n.numel(), dtype=torch.int32, device=dev), n.int())  # [F]
    ar = torch.arange(count, device=dev)
    k = ar - start.index_select(0, row_of)
    pix = (((rows.y - y0) * width + rows.xa - start).index_select(0, row_of) + ar).int()
    dx = d0.index_select(0, row_of) - k.to(dt)
    ha, bdy = (0.5 * ca).index_select(0, row_of), (cb * dy).index_select(0, row_of)
    cst = (0.5 * cc * dy * dy).index_select(0, row_of)
    sigma = dx * (ha * dx + bdy) + cst  # 0.5 (a dx^2 + c dy^2) + b dx dy
    alpha = op.index_select(0, row_of) * torch.exp(-sigma)
    valid = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
    alpha = torch.where(valid, alpha.clamp(max=ALPHA_MAX), torch.zeros_like(alpha))
    return alpha, row_of, dx, pix


def _band_forward(
    x: tuple[Tensor, ...], vals: Tensor, rows: Rows, y0: int, y1: int, width: int, stats: dict | None
) -> tuple[Tensor, _Band]:
    """Composite one band of image rows -> ([(y1 - y0) * width, 5] sums of w * vals, what backward needs)."""
    alpha, row_of, dx, pix_gen = _band_alpha(x, rows, y0, width)
    n_pix = (y1 - y0) * width
    pix, perm = torch.sort(pix_gen, stable=True)  # stable: generation order is depth order per pixel
    alpha = alpha.index_select(0, perm)
    g_gen = rows.g.index_select(0, row_of)
    g = g_gen.index_select(0, perm)
    crow = _crow(pix, n_pix)
    log1m = torch.log1p(-alpha)
    excl = torch.cumsum(log1m.double(), 0) - log1m  # float64: the sum runs over the whole band
    log_t = (excl - _run_values(excl, crow, True).index_select(0, pix)).to(alpha.dtype)  # log T before, in its run
    keep = log_t + log1m > math.log(T_MIN)
    trans = torch.exp(log_t)
    w = torch.where(keep, alpha * trans, torch.zeros_like(alpha))
    img = _csr_mm(crow, g, w, (n_pix, vals.shape[0]), vals)  # [n_pix, 5]
    if stats is not None:
        stats["fragments"] = stats.get("fragments", 0) + int((alpha > 0).sum())  # alpha >= 1/255
        stats["composited"] = stats.get("composited", 0) + int((keep & (alpha > 0)).sum())
    return img, _Band(rows, y0, width, row_of, dx, pix_gen, g_gen, perm, pix, g, crow, alpha, trans, w, keep)


def _band_grad_vals(b: _Band, grad: Tensor, n_gaussians: int) -> Tensor:
    """d loss / d vals [M, 5] of one band from grad [P, 5] of its image: the transposed product, with the
    fragments in generation order (grouped by Gaussian, then row, then x: CSR rows by Gaussian)."""
    w_gen = torch.zeros_like(b.w).index_copy_(0, b.perm, b.w)
    return _csr_mm(_crow(b.g_gen, n_gaussians), b.pix_gen, w_gen, (n_gaussians, grad.shape[0]), grad)


def _band_grad_geometry(x: tuple[Tensor, ...], vals: Tensor, b: _Band, grad: Tensor) -> Tensor:
    """d loss / d (mx, my, a, b, c) and o x d loss / d o [M, 6] of one band from grad [P, 5] of its image."""
    mx, my, ca, cb, cc, op = x
    gt, vt = grad.t().contiguous(), vals.t().contiguous()  # [5, P], [5, M]
    used = [k for k in range(5) if bool(gt[k].any())]  # channels the loss reads (often not depth)
    s = torch.zeros_like(b.w)  # [F] grad . vals
    for k in used:
        s += gt[k].index_select(0, b.pix) * vt[k].index_select(0, b.g)
    cw = torch.cumsum((b.w * s).double(), 0)
    behind = (_run_values(cw, b.crow, False).index_select(0, b.pix) - cw).to(s.dtype)  # sum of w s behind it
    d_alpha = b.trans * s - behind / (1.0 - b.alpha)
    free = b.keep & (b.alpha > 0) & (b.alpha < ALPHA_MAX)
    gs = torch.where(free, -b.alpha * d_alpha, torch.zeros_like(d_alpha))  # d loss / d sigma
    gs_gen = torch.zeros_like(gs).index_copy_(0, b.perm, gs)  # generation order: each row segment is a run
    R = b.rows.g.numel()
    s0 = torch.bincount(b.row_of, weights=gs_gen, minlength=R)  # [R]
    sx = torch.bincount(b.row_of, weights=gs_gen * b.dx, minlength=R)
    sxx = torch.bincount(b.row_of, weights=gs_gen * b.dx * b.dx, minlength=R)
    g = b.rows.g
    dy = my[g] - b.rows.y.to(my.dtype)
    per_row = torch.stack(
        [ca[g] * sx + cb[g] * dy * s0, cc[g] * dy * s0 + cb[g] * sx, 0.5 * sxx, dy * sx, 0.5 * dy * dy * s0, -s0], 1
    )  # [R, 6] d (mx, my, a, b, c) and d o times o
    return torch.zeros(vals.shape[0], 6, dtype=vals.dtype, device=vals.device).index_add_(0, g, per_row.to(vals.dtype))


def _split(means2d: Tensor, conics: Tensor, opacities: Tensor) -> tuple[Tensor, ...]:
    m, c = means2d.detach(), conics.detach()
    return m[:, 0], m[:, 1], c[:, 0], c[:, 1], c[:, 2], opacities.detach()


def _composite(x: tuple[Tensor, ...], vals: Tensor, rows: Rows, bands, width: int, stats) -> tuple[Tensor, list]:
    """[H * W, 5] sums of w * vals over all bands, and the bands' saved state."""
    out, saved = [], []
    for y0, y1 in bands:
        sel = rows if len(bands) == 1 else rows.subset(((rows.y >= y0) & (rows.y < y1)).nonzero().squeeze(1))
        img, band = _band_forward(x, vals, sel, y0, y1, width, stats)
        out.append(img)
        saved.append(band)
    return torch.cat(out, 0), saved


class _Composite(torch.autograd.Function):
    """Alpha compositing of row-segment fragments with a hand-written backward (inputs in depth-rank order)."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, vals, rows, bands, width, stats):  # type: ignore[override]
        x = _split(means2d, conics, opacities)
        img, saved = _composite(x, vals.detach(), rows, bands, width, stats)
        ctx.save_for_backward(means2d, conics, opacities, vals)
        ctx.bands = saved
        return img

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        means2d, conics, opacities, vals = ctx.saved_tensors
        x = _split(means2d, conics, opacities)
        want_geo, want_vals = any(ctx.needs_input_grad[:3]), ctx.needs_input_grad[3]
        d_vals = torch.zeros_like(vals) if want_vals else None
        d_geo = torch.zeros(vals.shape[0], 6, dtype=vals.dtype, device=vals.device)
        for b in ctx.bands:
            a0 = b.y0 * b.width
            g = grad[a0 : a0 + b.crow.numel() - 1].contiguous()
            if d_vals is not None:
                d_vals += _band_grad_vals(b, g, vals.shape[0])
            if want_geo:
                d_geo += _band_grad_geometry(x, vals.detach(), b, g)
        if not want_geo:
            return None, None, None, d_vals, None, None, None, None
        return d_geo[:, :2], d_geo[:, 2:5], d_geo[:, 5] / opacities.detach(), d_vals, None, None, None, None


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
    order = torch.argsort(p.depths.detach(), stable=True)  # front to back
    rows = row_segments(p, order, width, height)
    bands = _bands(rows, height, settings.max_fragments)
    vals = torch.cat([colors, torch.ones_like(colors[:, :1]), p.depths[:, None]], 1)[order]  # [M, 5]
    means2d, conics, opacities = p.means2d[order], p.conics[order], p.opacities[order]
    need_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (means2d, conics, opacities, vals))
    if need_grad:
        img = _Composite.apply(means2d, conics, opacities, vals, rows, bands, width, stats)
    else:
        with torch.no_grad():
            img = _composite(_split(means2d, conics, opacities), vals, rows, bands, width, stats)[0]
    if stats is not None:
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
