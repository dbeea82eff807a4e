"""The pure-torch rasterizer's compositing as it was before the row-segment rewrite (kept as a reference).

Fragments from every pixel of each Gaussian's bounding box, alpha recomputed per pass, one global sort by
(pixel, depth rank), autograd through the compositing. Slow but simple; tests compare the library's
rasterizer (its hand-written backward included) against it."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor

from avatarcli.render import torch_raster
from avatarcli.render.torch_raster import ALPHA_MAX, ALPHA_THRESHOLD, T_MIN, Projected, RasterSettings


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


@contextlib.contextmanager
def use_reference() -> Iterator[None]:
    """Within the block, the library's torch backend composites with this reference (benches' "old" path)."""
    new = torch_raster.rasterize
    torch_raster.rasterize = rasterize
    try:
        yield
    finally:
        torch_raster.rasterize = new
