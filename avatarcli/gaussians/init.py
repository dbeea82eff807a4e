"""Initial FLAME-bound Gaussians from a FLAME fit and its photo (`avatar init-gaussians`).

1. Canonical mesh: the fit's shape, expression, jaw, neck and eyes; global pose and
   translation NOT applied (avatarcli.flame.forward.canonical_vertices). The photo sees it
   through `photo_camera(fit, root_joint)`.
2. Samples: `n_gaussians` points on the surface, area-weighted and stratified (sample_surface:
   jittered strata of equal area along a Morton curve of the triangles, a rank-1 lattice inside a
   triangle; seeded), so every patch gets its share to within one sample and no hole opens where
   independent draws happen to leave one. binding = the triangle.
3. Shape: flat Gaussians in the triangle's own frame (the normal is the thin axis). Area-
   weighted sampling gives a uniform density, so the spacing between neighbours is
   spacing = sqrt(total area / n) everywhere; in-plane sigma = `scale_factor` x spacing,
   normal sigma = `thickness` x that. Opacity `opacity`.
4. Colour (SH DC; higher bands zero), from the photo where the point is seen:
   * visibility = inside the image, facing the camera enough (n . v > `min_facing`, v the unit
     vector from the point to the camera: 0.35, i.e. within ~70 degrees of the view axis; photo
     colours on triangles seen more obliquely smear into streaks from the side) and not
     occluded. Occlusion is a depth test against a depth map of the head rendered by the
     torch rasterizer (these same Gaussians, opaque, at `depth_size` px on the long side,
     gsplat-style expected depth): visible when z_point <= depth(pixel) + `depth_tol` x the
     head radius (and the pixel is covered, alpha > 0.5);
   * seen: the photo's colour at the projected point (bilinear, pixel centres at integers), from
     the photo's foreground along the head's silhouette in the photo (the head region, else the
     opaque head's rendered alpha > 0.5, as the mask; avatarcli.segment.foreground: band `edge_band`
     x the long side, matted 3x as deep), so neither the backdrop mixed into edge pixels nor a patch
     of backdrop inside the region becomes head colour;
   * not seen: the colour of the mirrored point (x -> -x in the canonical FLAME frame, which
     is left/right symmetric) when that one is seen, with the mirrored normal;
   * neither: the skin prior (`skin_rgb`, or when None the median colour of all seen points);
   * with a head region, unseen hair: the points of the hair zone (avatarcli.gaussians.hair: not
     face, above a hairline that follows the hair seen beside the face down the sides (ear level when
     none is) and arches down behind the ears to the nape, lower where the photo shows long hair; a
     soft edge) that are neither seen nor mirrored take the colour of the seen
     points the photo shows as HAIR (a skin and a hair colour model; init.hair_colours: continued
     smoothly from them, half and half with their median), when the seen crown is hair; a bald crown keeps the
     skin prior, and seen points (a bare forehead) keep the photo's colour.
5. With a head region (face, hair, ears, neck; the photo's size): before sampling, the canonical
   mesh is deformed to the region's outline (avatarcli.flame.deform: smooth per-vertex offsets,
   hair volume, the offsets stored in the PLY's HeadMeta), and samples whose projection from the
   photo's camera falls outside the region are dropped (oversampled so that `n_gaussians` remain):
   no Gaussian starts on backdrop or clothing (the neck is cut at the collar, ears under hair go).
6. Mouth interior: `mouth_fraction` of the Gaussians form a dark oral cavity, teeth and tongue behind
   the lips (avatarcli.gaussians.mouth), bound to two rigid anchors that follow the skull and the jaw
   joints (avatarcli.gaussians.anchors; stored in the head's metadata) and appended after the surface
   samples, so an opened jaw shows a mouth instead of the inside of the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt
from scipy.spatial import cKDTree
from torch import Tensor

from avatarcli.errors import InputError
from avatarcli.flame.artifact import canonical_head
from avatarcli.flame.deform import DeformConfig, HeadDeformation, deform_to_region, face_hold, outside_region
from avatarcli.gaussians.binding import bind_to_mesh
from avatarcli.gaussians.hair import HeadLandmarks, hair_points
from avatarcli.gaussians.model import Gaussians, rgb_to_sh0, sh_coeffs
from avatarcli.gaussians.mouth import mouth_for_init
from avatarcli.gaussians.ply import GaussianPly, HeadMeta
from avatarcli.geometry import matrix_to_quaternion, triangle_frames
from avatarcli.render.api import render
from avatarcli.render.camera import Camera, photo_camera, scaled_camera
from avatarcli.segment.foreground import foreground

FALLBACK_SKIN = (0.78, 0.60, 0.50)


@dataclass
class InitConfig:
    n_gaussians: int = 30_000
    sh_degree: int = 1
    seed: int = 0
    scale_factor: float = 0.8  # in-plane sigma, in units of the mean sample spacing (0.7 left 1 % see-through)
    thickness: float = 0.1  # normal sigma / in-plane sigma
    opacity: float = 0.9
    depth_size: int = 256  # long side (px) of the depth map used for the visibility test
    depth_tol: float = 0.08  # depth-test tolerance, fraction of the head radius
    min_facing: float = 0.35  # photo colours only where n . v > this (cos of ~70 degrees)
    edge_band: float = 0.01  # foreground estimation band at the silhouette, x the photo's long side (0: off)
    skin_rgb: tuple[float, float, float] | None = None  # None: median of the seen colours
    deform: DeformConfig | None = field(default_factory=DeformConfig)  # with a region; None: plain FLAME
    cut_outside: bool = True  # with a region: drop samples projecting outside it
    # share of n_gaussians given to the mouth interior (gaussians/mouth.py); 0: none
    mouth_fraction: float = 0.04

    def validate(self) -> None:
        if self.n_gaussians < 1:
            raise ValueError(f"n_gaussians must be >= 1, got {self.n_gaussians}")
        if not 0 <= self.sh_degree <= 3:
            raise ValueError(f"sh_degree must be 0..3, got {self.sh_degree}")
        if not 0.0 < self.opacity < 1.0:
            raise ValueError(f"opacity must be in (0, 1), got {self.opacity}")


@dataclass
class ColourInfo:
    """Where each Gaussian's colour came from (for tests and reports)."""

    rgb: Tensor  # [N, 3]
    visible: Tensor  # [N] bool: seen in the photo
    mirrored: Tensor  # [N] bool: not seen, its mirror point is
    prior: Tensor  # [N] bool: neither -> skin prior
    skin: Tensor  # [3] the prior used
    hair: Tensor | None = None  # [N] bool: unseen hair, coloured from the nearest seen hair (hair_colours)


GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # the rank-1 lattice's step (Fibonacci lattice)


def morton_order(points: Tensor, bits: int = 10) -> Tensor:
    """[N] long: the order of points [N, 3] along a Z-order (Morton) curve of their bounding cube,
    `bits` levels deep: points close along it are close in space."""
    p = points.detach().double().cpu()
    lo, span = p.min(0).values, float((p.max(0).values - p.min(0).values).max().clamp_min(1e-12))
    q = ((p - lo) / span * (2**bits - 1)).round().long()  # [N, 3]
    code = torch.zeros(p.shape[0], dtype=torch.long)
    for b in range(bits):
        for a in range(3):
            code |= ((q[:, a] >> b) & 1) << (3 * b + a)
    return torch.argsort(code, stable=True)


def sample_surface(vertices: Tensor, faces: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Area-weighted, stratified samples: points [n, 3], triangle index [n] (long).

    The triangles are laid end to end along a Morton curve of their centroids, each as long as its
    area; n jittered strata of equal length (sample k in [k, k + 1) x total / n) pick them, so every
    patch of the surface gets its area's share of samples to within one (independent draws leave
    holes of a few spacings where the background shows through). Inside a triangle taking c > 1
    strata the k-th is the point (t, frac(k golden + r)) of a rank-1 lattice (t its place in the
    triangle's span, r a random shift per triangle), mapped area-preservingly (square-root
    barycentrics); a triangle smaller than one stratum takes a uniform point."""
    tri = vertices[faces].double()  # [F, 3, 3]
    area = 0.5 * torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1).cpu()  # [F]
    order = morton_order(tri.mean(1))  # [F]
    end = torch.cumsum(area[order], 0) * (n / float(area.sum()))  # [F] strata covered up to each triangle
    u = torch.arange(n, dtype=torch.float64) + torch.rand(n, generator=generator, dtype=torch.float64)  # [n]
    k = torch.searchsorted(end, u, right=True).clamp(max=order.numel() - 1)  # [n] place along the curve
    start = torch.cat([end.new_zeros(1), end[:-1]])[k]
    c = (end[k] - start).clamp_min(1e-12)  # strata the triangle spans
    t = ((u - start) / c).clamp(0.0, 1.0 - 1e-12)  # [n] place inside its span, stratified
    shift = torch.rand(order.numel(), generator=generator, dtype=torch.float64)[k]
    free = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    big = c > 1
    a = torch.where(big, t, free[:, 0])
    b = torch.where(big, torch.frac(torch.floor(t * c) * GOLDEN + shift), free[:, 1])
    sa = a.sqrt()
    bary = torch.stack([1 - sa, sa * (1 - b), sa * b], -1)  # [n, 3]
    face = order[k].to(faces.device)
    pts = (bary.to(vertices)[:, :, None] * vertices[faces[face]]).sum(1)
    return pts, face


def _project(cam: Camera, pts: Tensor) -> tuple[Tensor, Tensor]:
    """-> pixels [N, 2], camera z [N]."""
    Xc = pts @ cam.viewmat[:3, :3].T + cam.viewmat[:3, 3]
    uvw = Xc @ cam.K.T
    return uvw[:, :2] / uvw[:, 2:3].clamp_min(1e-9), Xc[:, 2]


def _sample_image(img: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of img [H, W, C] at pixel coordinates uv [N, 2] (centres at integers) -> [N, C]."""
    H, W = img.shape[:2]
    g = torch.stack([uv[:, 0] / max(W - 1, 1) * 2 - 1, uv[:, 1] / max(H - 1, 1) * 2 - 1], -1)
    out = F.grid_sample(
        img.permute(2, 0, 1)[None], g[None, None], mode="bilinear", padding_mode="border", align_corners=True
    )
    return out[0, :, 0].T  # [N, C]


def visibility(
    gaussians: Gaussians, normals: Tensor, points: Tensor, cam: Camera, config: InitConfig, radius: float
) -> Tensor:
    """Which `points` [N, 3] with `normals` [N, 3] the camera sees (see the module docstring) -> [N] bool.

    The depth map is rendered from `gaussians` (the head's own surface Gaussians, made opaque)."""
    dcam = scaled_camera(cam, config.depth_size, upscale=False)
    opaque = Gaussians(
        gaussians.means,
        gaussians.quats,
        gaussians.scales,
        torch.full_like(gaussians.opacities, 0.99),
        gaussians.sh[:, :1],
    )
    with torch.no_grad():
        out = render(opaque, dcam, None, backend="torch", sh_degree=0)
    uv, z = _project(dcam, points)
    W, H = dcam.width, dcam.height
    inside = (uv[:, 0] >= -0.5) & (uv[:, 0] <= W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= H - 0.5) & (z > 0)
    to_cam = cam.position[None] - points  # [N, 3]
    facing = (normals * to_cam).sum(-1) > config.min_facing * to_cam.norm(dim=-1)
    # nearest pixel's depth and coverage
    ix = uv[:, 0].round().clamp(0, W - 1).long()
    iy = uv[:, 1].round().clamp(0, H - 1).long()
    d = out.depth[iy, ix, 0]
    a = out.alpha[iy, ix, 0]
    unoccluded = (a > 0.5) & (z <= d + config.depth_tol * radius)
    return inside & facing & unoccluded


def edge_foreground(
    gaussians: Gaussians, cam: Camera, image: Tensor, config: InitConfig, region: Tensor | None = None
) -> Tensor:
    """The photo [H, W, 3] with the backdrop taken out along the head's silhouette -> [H, W, 3].

    The silhouette: `region` [H, W] (> 0.5) when given, else the opaque head's alpha > 0.5
    (rendered at `depth_size`, resized to the photo)."""
    H, W = image.shape[:2]
    band = max(1.5, config.edge_band * max(H, W))
    if region is not None:
        return torch.from_numpy(foreground(image.numpy(), region.cpu().numpy() > 0.5, band))
    dcam = scaled_camera(cam, config.depth_size, upscale=False)
    opaque = Gaussians(gaussians.means, gaussians.quats, gaussians.scales,
                       torch.full_like(gaussians.opacities, 0.99), gaussians.sh[:, :1])  # fmt: skip
    with torch.no_grad():
        alpha = render(opaque, dcam, None, backend="torch", sh_degree=0).alpha  # [h, w, 1]
    a = F.interpolate(alpha.permute(2, 0, 1)[None], size=(H, W), mode="bilinear", align_corners=False)[0, 0]
    return torch.from_numpy(foreground(image.numpy(), a.numpy() > 0.5, band))


def colour_points(
    points: Tensor,  # [N, 3] canonical
    normals: Tensor,  # [N, 3]
    gaussians: Gaussians,  # the head's surface Gaussians (for the depth map)
    cam: Camera,
    image: Tensor,  # [H, W, 3] float 0..1
    config: InitConfig,
    region: Tensor | None = None,  # [H, W] head region, for the edge colours
) -> ColourInfo:
    """Photo colour per point, mirrored-side fallback, skin prior (see the module docstring)."""
    radius = float((points - points.mean(0)).norm(dim=-1).max())
    mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=points.dtype, device=points.device)
    vis = visibility(gaussians, normals, points, cam, config, radius)
    vis_m = visibility(gaussians, normals * mirror, points * mirror, cam, config, radius)
    if config.edge_band > 0:
        image = edge_foreground(gaussians, cam, image, config, region)
    uv, _ = _project(cam, points)
    uv_m, _ = _project(cam, points * mirror)
    rgb = torch.empty_like(points)
    if vis.any():
        rgb[vis] = _sample_image(image, uv[vis])
    mirrored = ~vis & vis_m
    if mirrored.any():
        rgb[mirrored] = _sample_image(image, uv_m[mirrored])
    prior = ~vis & ~vis_m
    if config.skin_rgb is not None:
        skin = torch.tensor(config.skin_rgb, dtype=points.dtype, device=points.device)
    elif vis.any():
        skin = rgb[vis].median(dim=0).values
    else:
        skin = torch.tensor(FALLBACK_SKIN, dtype=points.dtype, device=points.device)
    rgb[prior] = skin
    return ColourInfo(rgb=rgb.clamp(0, 1), visible=vis, mirrored=mirrored, prior=prior, skin=skin)


def _deform(model, fit, meta: HeadMeta, verts: Tensor, faces: Tensor, cam: Camera, region: Tensor, cfg: InitConfig):
    """-> (deformed vertices [V, 3], meta carrying the offsets, the HeadDeformation or None,
    the face hold [V] in 0..1 or None)."""
    if cfg.deform is None:
        return verts, meta, None, None
    params = meta.fit.canonical_params(model, "cpu", torch.float32)
    hold = face_hold(model, params, verts, faces)
    d = deform_to_region(verts, faces, cam, region, hold, cfg.deform)
    return verts + d.offsets, meta.with_deformation(d.offsets, d.hair), d, hold


def unseen_hair(model, fit, colour: ColourInfo, points: Tensor, tri: Tensor, hold: Tensor, grown: Tensor,
                clear: Tensor) -> ColourInfo:  # fmt: skip
    """The unseen points [N, 3] (on triangles with vertices tri [N, 3]) of the hair zone take the seen
    hair's colour (avatarcli.gaussians.hair; vertex face hold and deformation hair weight [V]; `clear`
    [N] bool: seen points that may lend their colour, clear of the outline) -> the ColourInfo."""
    face_p, grown_p = hold.float()[tri].mean(1), grown.float()[tri].mean(1)  # [N]
    marks = HeadLandmarks.of(model, fit.canonical_params(model, "cpu", torch.float32))
    if marks is None:  # no landmarks, no regions: everything may be hair, every seen point a source
        return hair_colours(colour, points, ((face_p < 0.5) | (grown_p > 0.5)).float(), clear)
    seen = colour.visible | colour.mirrored
    weight, is_hair = hair_points(points, colour.rgb, seen, face_p, marks)
    return hair_colours(colour, points, weight, clear & is_hair)


def inner_points(points: Tensor, cam: Camera, region: Tensor, margin_px: float) -> Tensor:
    """[N] bool: points [N, 3] projecting at least `margin_px` inside `region` [H, W] (> 0.5 is inside)."""
    dist = torch.from_numpy(distance_transform_edt(region.numpy() > 0.5)).float()  # px to the outside
    uv, _ = _project(cam, points)
    return _sample_image(dist[..., None], uv)[:, 0] >= margin_px


def hair_colours(colour: ColourInfo, points: Tensor, hair: Tensor, source: Tensor, k: int = 24) -> ColourInfo:
    """Unseen hair points (hair weight w [N] > 0, neither seen nor mirrored) take w x the colour of the
    seen hair points [N, 3] continued smoothly over them (harmonic_fill, from the mean of the k nearest
    where no seen hair reaches; among `source` [N] bool: clear of the outline, where the photo's pixels
    mix with the backdrop; w > 0.5 counts as seen hair), averaged half and half with the
    median of all seen hair, + (1 - w) x their prior colour (the hairline's soft edge), instead of the skin
    prior alone: the back of the hair continues the hair the photo shows, never a bald cap."""
    seen = (colour.visible | colour.mirrored) & (hair > 0.5) & source
    fill = colour.prior & (hair > 0)
    if int(seen.sum()) < k or not bool(fill.any()):
        return colour
    src = points[seen].double().numpy()
    _, idx = cKDTree(src).query(points[fill].double().numpy(), k=k)  # [M, k]
    rgb = colour.rgb.clone()
    near = colour.rgb[seen][torch.as_tensor(idx)].mean(1)  # [M, 3]
    near = harmonic_fill(points[seen], colour.rgb[seen], points[fill], near)  # smooth across the back: no seams
    w = hair[fill].to(rgb)[:, None]  # [M, 1]
    fur = 0.5 * near + 0.5 * colour.rgb[seen].median(dim=0).values  # half the whole hair's median: no patches
    rgb[fill] = w * fur + (1 - w) * rgb[fill]
    full = colour.prior & (hair > 0.5)
    return ColourInfo(rgb=rgb, visible=colour.visible, mirrored=colour.mirrored, prior=colour.prior & ~full,
                      skin=colour.skin, hair=full)  # fmt: skip


def harmonic_fill(src: Tensor, src_rgb: Tensor, pts: Tensor, guess: Tensor, k: int = 8, tie: float = 1e-3) -> Tensor:
    """Colours [M, 3] at pts [M, 3] continuing those of src [S, 3] (src_rgb [S, 3]) smoothly: the harmonic
    function on the k-nearest-neighbour graph of both point sets that takes src's colours, i.e. each
    point's colour the mean of its neighbours' (graph Laplacian L: L_pp x = -L_ps c), tied by `tie` x its
    degree to `guess` [M, 3] (a part of the graph that no src point reaches keeps its guess). The nearest
    seen points' mean alone jumps where the nearest set switches from one seen patch to another (a seam
    across the unseen back)."""
    S, M = int(src.shape[0]), int(pts.shape[0])
    allp = torch.cat([src, pts]).double().numpy()
    _, nb = cKDTree(allp).query(allp, k=k + 1)  # [S + M, k + 1] (itself first)
    rows = np.repeat(np.arange(S + M), k)
    W = sp.coo_matrix((np.ones(rows.size), (rows, nb[:, 1:].reshape(-1))), shape=(S + M, S + M)).tocsr()
    W = ((W + W.T) > 0).astype(np.float64).tocsr()  # symmetric kNN graph
    deg = np.asarray(W.sum(1)).ravel()
    L = (sp.diags(deg) - W).tocsr()
    A = (L[S:, S:] + sp.diags(tie * deg[S:])).tocsc()
    b = -(L[S:, :S] @ src_rgb.double().numpy()) + tie * deg[S:, None] * guess.double().numpy()  # [M, 3]
    x = np.stack([spla.spsolve(A, b[:, c]) for c in range(3)], 1)
    return torch.from_numpy(x).to(guess.dtype).clamp(0, 1)


def _samples_in_region(verts, faces, n, gen, cam, region, rounds: int = 4):
    """n stratified samples whose projection lies in `region`: sample_surface on enough of the mesh
    that about n fall inside (a few rounds of m <- m n / inside), the surplus thinned evenly along the
    curve (so the strata stay even)."""
    m = n
    for _ in range(rounds):
        pts, face = sample_surface(verts, faces, m, gen)
        keep = torch.nonzero(~outside_region(pts, cam, region)).reshape(-1)  # [k]
        if n <= keep.numel() <= n + max(2, n // 400):
            break
        m = int(math.ceil(m * (n + max(1, n // 800)) / max(keep.numel(), 1)))
    if keep.numel() < n:  # (a region the mesh barely reaches) more than enough, then thinned
        pts, face = sample_surface(verts, faces, int(math.ceil(m * n / max(keep.numel(), 1) * 1.1)) + 16, gen)
        keep = torch.nonzero(~outside_region(pts, cam, region)).reshape(-1)
    keep = keep[torch.linspace(0, keep.numel() - 1, n).round().long()] if keep.numel() > n else keep
    return pts[keep], face[keep]


def _photo_and_region(rgb: np.ndarray, fit, region: np.ndarray | Tensor | None) -> tuple[np.ndarray, Tensor | None]:
    """The photo (uint8 [H, W, 3] at fit.image_size) and the head region as float [H, W] in 0..1 (or None)."""
    rgb = np.asarray(rgb)
    H, W = (int(s) for s in np.asarray(fit.image_size).reshape(-1)[:2])
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8 [H, W, 3], got {rgb.dtype} {list(rgb.shape)}")
    if rgb.shape[:2] != (H, W):
        raise InputError(f"the image is {rgb.shape[0]}x{rgb.shape[1]} (HxW), the FLAME fit was made on {H}x{W}")
    if region is None:
        return rgb, None
    reg = torch.as_tensor(np.asarray(region), dtype=torch.float32).reshape(H, W).clamp(0, 1)
    if float((reg > 0.5).sum()) < 1:
        raise InputError("the head region is empty")
    return rgb, reg


def _surface_gaussians(
    verts: Tensor, faces: Tensor, pts: Tensor, face: Tensor, cfg: InitConfig
) -> tuple[Gaussians, Tensor, float]:
    """Flat Gaussians at the surface samples pts [N, 3] on triangles face [N], in their triangle's
    frame, sized by the mean sample spacing; SH zero -> (Gaussians, normals [N, 3], spacing)."""
    n = int(pts.shape[0])
    _, R, _ = triangle_frames(verts, faces)
    Rb = R[face]  # [N, 3, 3]
    tri = verts[faces]
    total_area = float(0.5 * torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1).sum())
    spacing = math.sqrt(total_area / n)
    sigma = cfg.scale_factor * spacing
    scales = torch.tensor([sigma, sigma, sigma * cfg.thickness]).expand(n, 3).clone()
    sh = torch.zeros(n, sh_coeffs(cfg.sh_degree), 3)
    g = Gaussians(pts, matrix_to_quaternion(Rb), scales, torch.full((n,), float(cfg.opacity)), sh)
    return g, Rb[:, :, 2], spacing


@dataclass
class InitDetails:
    """How init_gaussians made a head: its surface samples (the mouth interior, appended after them
    in the head, is not described here), their colours and the canonical mesh they were seeded on."""

    colour: ColourInfo
    points: Tensor  # [N, 3] surface samples, canonical space
    normals: Tensor  # [N, 3] their triangles' unit normals
    spacing: float  # mean distance between neighbouring samples
    camera: Camera  # the photo's camera in canonical space
    vertices: Tensor  # [V, 3] the (deformed) canonical mesh
    faces: Tensor  # [F, 3]
    deformation: HeadDeformation | None  # None without a head region


def init_gaussians(
    model,
    fit,
    rgb: np.ndarray,
    config: InitConfig | None = None,
    *,
    region: np.ndarray | Tensor | None = None,
) -> GaussianPly:
    """Seed `config.n_gaussians` FLAME-bound Gaussians on the fit's canonical head, coloured from
    the photo `rgb` (uint8 [H, W, 3], the image the fit was made on, at fit.image_size).

    region: the head region [H, W] in 0..1 at the photo's size (face, hair, ears, neck); with it the
    mesh is deformed to its outline and nothing is seeded outside it (module docstring, 5.).
    Returns a GaussianPly (canonical head, binding, HeadMeta of the fit); init_with_details also
    returns how it was made (InitDetails)."""
    return init_with_details(model, fit, rgb, config, region=region)[0]


def init_with_details(
    model,
    fit,
    rgb: np.ndarray,
    config: InitConfig | None = None,
    *,
    region: np.ndarray | Tensor | None = None,
) -> tuple[GaussianPly, InitDetails]:
    """init_gaussians, and how the head was made (InitDetails)."""

    cfg = config or InitConfig()
    cfg.validate()
    rgb, reg = _photo_and_region(rgb, fit, region)
    H, W = rgb.shape[:2]
    verts, faces, j0 = canonical_head(model, fit)
    verts, faces, j0 = verts.cpu(), faces.cpu(), j0.cpu()
    cam = photo_camera(fit, j0)
    meta = HeadMeta.from_fit(fit, j0, n_faces=int(faces.shape[0]), sh_degree=cfg.sh_degree)
    deformation: HeadDeformation | None = None
    hold = None
    if reg is not None:
        verts, meta, deformation, hold = _deform(model, fit, meta, verts, faces, cam, reg, cfg)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    mouth = mouth_for_init(model, fit, int(cfg.mouth_fraction * cfg.n_gaussians), cfg.sh_degree)
    n = int(cfg.n_gaussians) - (mouth.n if mouth is not None else 0)  # surface samples
    if reg is not None and cfg.cut_outside:
        pts, face = _samples_in_region(verts, faces, n, gen, cam, reg)
    else:
        pts, face = sample_surface(verts, faces, n, gen)  # [N, 3], [N]
    g, normals, spacing = _surface_gaussians(verts, faces, pts, face, cfg)
    image = torch.from_numpy(np.array(rgb, dtype=np.float32)) / 255.0
    colour = colour_points(pts, normals, g, cam, image, cfg, reg)
    if deformation is not None and hold is not None and reg is not None:  # (a deformation comes with a region)
        inner = inner_points(pts, cam, reg, 0.015 * max(H, W))
        colour = unseen_hair(model, fit, colour, pts, faces[face], hold, deformation.hair, inner | ~colour.visible)
    g.sh[:, 0] = rgb_to_sh0(colour.rgb)  # [N, 3] DC colour
    bound = bind_to_mesh(g, face, verts, faces)
    ply = _head_ply(bound, mouth, colour.skin, verts, faces, meta)
    details = InitDetails(colour, pts, normals, float(spacing), cam, verts, faces, deformation)
    return ply, details


def _head_ply(bound, mouth, skin: Tensor, verts: Tensor, faces: Tensor, meta: HeadMeta) -> GaussianPly:
    """The head: the surface Gaussians `bound` on the FLAME mesh, then the mouth interior (if any;
    its shell in the skin colour) bound to its rigid anchors, which the mesh and the meta gain."""
    if mouth is not None:  # appended after the surface samples (InitDetails describes those)
        mouth = mouth.with_shell_colour(skin)
        meta = mouth.head_meta(meta)  # its anchors and the lip state (the interior's gate, gaussians/mouth.py)
        verts, faces = mouth.anchors.extend(verts, faces)
        bound = bound.cat(mouth.bound(verts, faces))
    return GaussianPly.from_bound(bound, verts, faces, meta)


__all__ = [
    "InitConfig",
    "ColourInfo",
    "InitDetails",
    "init_gaussians",
    "init_with_details",
    "sample_surface",
    "colour_points",
]
