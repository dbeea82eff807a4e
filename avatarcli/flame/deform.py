"""The canonical FLAME mesh deformed to the head region's outline (hair volume, the real silhouette).

    deformation = deform_to_region(vertices, faces, camera, region, hold)
    vertices + deformation.offsets                   # the haired canonical head, same topology

Offsets are d_v = s_v u_v: a scalar field s [V] along u [V, 3], the vertex normals of a heavily
smoothed copy of the mesh (so the directions vary slowly and large offsets do not fold the
surface around ears or the nose). s minimises, by sparse least squares (a few Gauss-Newton
rounds, each re-finding the silhouette of the current mesh):

    E(s) = sum_rim (s_v - a_v)^2                      silhouette: rim vertices onto the outline
         + membrane s^T L s + bending |L s|^2          smooth (uniform graph Laplacian L)
         + sum_v hold_v s_v^2                          the face stays where the landmark fit put it
         + mirror |s - s o m|^2                        left/right symmetry (m: the mirror vertex)
         + eps |s|^2

Rim vertices are the outer silhouette of the current mesh seen by the photo's camera: grazing
(|n . view| < `rim_cos`) and with nothing of the mesh just outside them in the image. Each one's
target a_v moves its projection along its image-space outward normal to the head region's
boundary: outward (hair volume) while the region continues, inward when the vertex lies outside
the region and the region is found within `max_shrink_px` (ears under hair); a rim vertex with no
region inward (the neck below the collar) gets no target. After the solve the neck ends where the
region does (`neck_cut`): neck vertices projecting below the region's lowest row in their column move
up onto it (the neck below the collar folds flat at the collar, its triangles keep almost no area, so
no Gaussians are seeded there), and the samples outside the region are cut away by projection
(`outside_region`). Vertices behind the rim are reached through the smoothness
terms: the back of the head continues the outline smoothly, mirrored left/right.

Animation (`pose_deformed`): a vertex with hair weight h in [0, 1] (offset outward, not face) is
posed by (1 - h) (FLAME(frame) + M_v d_v) + h M_v (v + d_v), M_v = sum_j w'_vj A_j(frame) A_j(canon)^-1
with the LBS weights w' of FLAME whose jaw and eye columns are moved to the neck joint: hair turns
and nods with the head and does not stretch when the jaw opens. At the canonical parameters it
gives v + d exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import Tensor

from avatarcli.flame.forward import _chain, flame_forward, pose_rotations, shaped_joints
from avatarcli.flame.params import FlameParams
from avatarcli.render.camera import Camera


@dataclass
class DeformConfig:
    size: int = 256  # working resolution: the region's long side in px
    iterations: int = 8
    rim_cos: float = 0.35  # |n . view direction| below this: grazing, a silhouette candidate
    max_grow_px: float = 24.0  # largest outward move of a rim vertex per iteration (working px)
    max_shrink_px: float = 12.0  # inward search range for rim vertices outside the region
    inset_px: float = 1.0  # the mesh outline aims this far inside the region's (the splats reach beyond it)
    membrane: float = 0.3
    bending: float = 3.0
    hold: float = 200.0  # weight of the face hold (x the per-vertex hold in 0..1)
    mirror: float = 0.2
    eps: float = 1e-3
    max_out: float = 0.8  # |s| caps, in head radii
    max_in: float = 0.15
    smooth_iters: int = 30  # Laplacian smoothing rounds of the copy that gives the directions u
    hair_scale: float = 0.05  # offset (head radii) at which a vertex is fully hair (rigid with the head)
    cut_neck: bool = True  # neck vertices below the region's lower edge move up onto it (`neck_cut`)

    def validate(self) -> None:
        if self.size < 32 or self.iterations < 0:
            raise ValueError(f"deform size must be >= 32 and iterations >= 0, got {self.size}, {self.iterations}")


@dataclass
class HeadDeformation:
    offsets: Tensor  # [V, 3] canonical-space offsets (metres)
    hair: Tensor  # [V] 0..1: weight of the rigid-head posing of each vertex
    coverage: float  # fraction of the region covered by the deformed mesh's projection
    spill: float  # fraction of the mesh's projection outside the region
    coverage_before: float
    spill_before: float
    cut: Tensor | None = None  # [V] bool: neck vertices moved up onto the region's lower edge (neck_cut)


# ----------------------------------------------------------------------------- mesh helpers


def graph_laplacian(faces: Tensor | np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Uniform graph Laplacian D - A [V, V] of the mesh's edges, divided by the mean degree."""
    f = np.asarray(faces, dtype=np.int64)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    A = sp.coo_matrix((np.ones(i.size), (i, j)), shape=(n_vertices, n_vertices)).tocsr()
    A = ((A + A.T) > 0).astype(np.float64)
    deg = np.asarray(A.sum(1)).ravel()
    L = sp.diags(deg) - A
    return (L / max(deg.mean(), 1.0)).tocsr()


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals [V, 3]."""
    tri = vertices[faces]  # [F, 3, 3]
    fn = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # [F, 3], |.| = 2 area
    n = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), fn.repeat_interleave(3, 0))
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def smoothed_normals(vertices: Tensor, faces: Tensor, iters: int) -> Tensor:
    """Normals [V, 3] of the mesh after `iters` rounds of uniform Laplacian smoothing (lambda 0.5)."""
    L = graph_laplacian(faces, vertices.shape[0])
    deg = np.maximum(L.diagonal(), 1e-12)[:, None]
    v = vertices.detach().cpu().double().numpy()
    for _ in range(iters):
        v = v - 0.5 * (L @ v) / deg
    return vertex_normals(torch.from_numpy(v).float(), faces.cpu())


def mirror_index(vertices: Tensor) -> Tensor:
    """[V] long: the vertex nearest each vertex's mirror image (x -> -x; FLAME is left/right symmetric)."""
    v = vertices.detach().cpu().double().numpy()
    _, idx = cKDTree(v).query(v * np.array([-1.0, 1.0, 1.0]))
    return torch.as_tensor(idx, dtype=torch.long)


def _inside_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule: pts [N, 2] inside the closed polygon poly [K, 2] -> [N] bool."""
    x, y = pts[:, :1], pts[:, 1:]
    x0, y0 = poly[:, 0][None], poly[:, 1][None]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (crosses & (x < xc)).sum(1) % 2 == 1


def face_hold(model, params: FlameParams, vertices: Tensor, faces: Tensor, inset: float = 0.15) -> Tensor:
    """[V] in 0..1: 1 on the face (inside the jaw line and the brows of the canonical landmarks, that
    polygon shrunk by `inset` towards its centre, seen from the front, in front of the jaw-line ends),
    fading over a few vertex rings.

    `params`: the canonical FLAME parameters of `vertices` (global pose and translation zero)."""
    if model.landmarks is None:
        return torch.zeros(vertices.shape[0])
    with torch.no_grad():
        out = flame_forward(model, params).landmarks
    assert out is not None  # the model has landmarks (checked above)
    lmk = out[0].float().cpu().numpy()  # [68, 3]
    poly = np.concatenate([lmk[0:17], lmk[17:27][::-1]])[:, :2]  # jaw line, then brows right to left
    centre = poly.mean(0)
    poly = centre + (1.0 - inset) * (poly - centre)  # the outline itself is the silhouette's to place
    v = vertices.detach().cpu().float().numpy()
    z_cut = min(lmk[0, 2], lmk[16, 2])
    inside = _inside_polygon(v[:, :2], poly) & (v[:, 2] > z_cut)
    L = graph_laplacian(faces, vertices.shape[0])
    adj = (L.diagonal().max() * sp.identity(L.shape[0]) - L).tocsr()  # off-diagonal >= 0
    adj.setdiag(0)
    deg = np.maximum(np.asarray(adj.sum(1)).ravel(), 1e-12)
    hold = inside.astype(np.float64)
    for _ in range(3):  # soft edge: decays over a few rings outside the face
        hold = np.maximum(hold, 0.6 * (adj @ hold) / deg)
    return torch.as_tensor(hold, dtype=torch.float32)


def scalp(model, params: FlameParams, vertices: Tensor, hold: Tensor) -> Tensor:
    """[V] bool: where hair may grow: not face (hold < 0.5) and above the jaw line's upper ends
    (landmarks 0 and 16, about ear level) of the canonical head."""
    if model.landmarks is None:
        return hold < 0.5
    with torch.no_grad():
        out = flame_forward(model, params).landmarks
    assert out is not None  # the model has landmarks (checked above)
    lmk = out[0].float().cpu()  # [68, 3]
    return (hold.cpu() < 0.5) & (vertices.detach().cpu()[:, 1] > 0.5 * float(lmk[0, 1] + lmk[16, 1]))


# ----------------------------------------------------------------------------- silhouette


def _region_at(region: Tensor, size: int) -> Tensor:
    """region [H, W] (or [H, W, 1]) 0..1 -> float [h, w] with long side `size` (area filter)."""
    r = region.reshape(region.shape[0], region.shape[1]).float()
    H, W = r.shape
    s = size / max(H, W)
    h, w = max(1, round(H * s)), max(1, round(W * s))
    if (h, w) == (H, W):
        return r
    return F.interpolate(r[None, None], size=(h, w), mode="area" if s < 1 else "bilinear")[0, 0]


def _camera_at(cam: Camera, h: int, w: int) -> Camera:
    sx, sy = w / cam.width, h / cam.height
    K = cam.K.clone().float()
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return Camera(K, cam.viewmat.float(), w, h)


def mesh_coverage(pix: Tensor, faces: Tensor, h: int, w: int) -> np.ndarray:
    """Binary image [h, w] (uint8 0/1) of the projected triangles (pix [V, 2], pixel centres at integers)."""
    tri = np.round(pix.detach().cpu().numpy()[faces.cpu().numpy()] * 4).astype(np.int32)  # [F, 3, 2], 2 fractional bits
    img = np.zeros((h, w), np.uint8)
    cv2.fillPoly(img, list(tri), 1, lineType=cv2.LINE_8, shift=2)
    return cv2.morphologyEx(img, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))  # sub-pixel triangles leave pinholes


def _sample(img: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of img [h, w] at pixels uv [..., 2] (centres at integers; outside = 0) -> [...]."""
    h, w = img.shape
    g = torch.stack([(uv[..., 0] + 0.5) / w * 2 - 1, (uv[..., 1] + 0.5) / h * 2 - 1], -1)
    out = F.grid_sample(img[None, None], g.reshape(1, 1, -1, 2), mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # fmt: skip
    return out.reshape(uv.shape[:-1])


def rim_targets(
    verts: Tensor, faces: Tensor, u: Tensor, cam: Camera, region: Tensor, cfg: DeformConfig
) -> tuple[Tensor, Tensor]:
    """Outer-silhouette vertices of `verts` [V, 3] seen by `cam` and the change of s [R] that puts
    each onto the boundary of `region` [h, w] -> (vertex ids [R] long, delta s [R] metres)."""
    eps = 1e-3
    p = cam.project(verts)  # [V, 2]
    n = vertex_normals(verts, faces)
    view = cam.position[None] - verts
    cosv = (n * view).sum(-1) / view.norm(dim=-1).clamp_min(1e-12)
    m = cam.project(verts + eps * n) - p  # image-space outward direction
    m = m / m.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cover = torch.from_numpy(mesh_coverage(p, faces, region.shape[0], region.shape[1])).float()
    outer = (_sample(cover, p + 3.0 * m) < 0.5) & (_sample(cover, p - 2.0 * m) > 0.5)
    cand = torch.nonzero((cosv.abs() < cfg.rim_cos) & outer).reshape(-1)
    if cand.numel() == 0:
        return cand, torch.zeros(0)
    pc, mc = p[cand], m[cand]
    ts = torch.arange(0.0, max(cfg.max_grow_px, cfg.max_shrink_px) + 1.0)  # [T]
    inside0 = _sample(region, pc) >= 0.5  # [R]
    out_prof = _sample(region, pc[:, None] + ts[None, :, None] * mc[:, None]) >= 0.5  # [R, T] marching outward
    in_prof = _sample(region, pc[:, None] - ts[None, :, None] * mc[:, None]) >= 0.5  # marching inward
    T = ts.numel()
    first_out = torch.where(~out_prof, ts, torch.full_like(ts, float(T))).min(1).values  # first step leaving
    first_in = torch.where(in_prof, ts, torch.full_like(ts, float(T))).min(1).values  # first step entering
    grow = (first_out - 0.5 - cfg.inset_px).clamp(max=cfg.max_grow_px)
    shrink = -(first_in - 0.5 + cfg.inset_px)
    found_in = first_in <= cfg.max_shrink_px
    t = torch.where(inside0, grow, shrink)  # px along m
    ok = inside0 | found_in
    # pixels moved per metre of s: projection of u onto m
    g = ((cam.project(verts[cand] + eps * u[cand]) - pc) * mc).sum(-1) / eps  # [R]
    z = (verts[cand] @ cam.viewmat[:3, :3].T + cam.viewmat[:3, 3])[:, 2]
    ok = ok & (g > 0.3 * float(cam.K[0, 0]) / z.clamp_min(1e-6))
    return cand[ok], (t / g)[ok]


def silhouette_scores(verts: Tensor, faces: Tensor, cam: Camera, region: Tensor) -> tuple[float, float]:
    """(coverage, spill) of the mesh's projection against `region` [h, w] (> 0.5)."""
    cover = torch.from_numpy(mesh_coverage(cam.project(verts), faces, region.shape[0], region.shape[1])) > 0
    inside = region > 0.5
    cov = float((cover & inside).sum()) / max(1, int(inside.sum()))
    spill = float((cover & ~inside).sum()) / max(1, int(cover.sum()))
    return cov, spill


def region_bottom(region: Tensor) -> np.ndarray:
    """[w] float: per column of `region` [h, w] (> 0.5 is inside) its lowest inside row; -1 where none."""
    inside = (region > 0.5).cpu().numpy()
    h = inside.shape[0]
    last = h - 1 - np.argmax(inside[::-1], axis=0)  # [w]
    return np.where(inside.any(0), last, -1).astype(np.float64)


def neck_cut(verts: Tensor, cam: Camera, region: Tensor, hold: Tensor, steps: int = 3) -> tuple[Tensor, Tensor]:
    """The neck ends where the region does (the collar): neck vertices of `verts` [V, 3] (canonical y
    below the lowest face vertex, hold > 0.5) whose projection by `cam` falls below the lowest row of
    `region` [h, w] in their column move up (canonical +y, never above the face's lowest vertex) until
    they project onto that row. The neck below the collar folds flat onto it: its triangles keep almost
    no area, so area-weighted seeding puts (almost) no Gaussians there, from any view.
    -> (offsets [V, 3] to add, the vertices moved [V] bool)."""
    V = verts.shape[0]
    held = hold.cpu() > 0.5
    if not bool(held.any()):
        return torch.zeros(V, 3), torch.zeros(V, dtype=torch.bool)
    top = float(verts[held, 1].min())
    bottom = torch.from_numpy(region_bottom(region)).float()  # [w]
    w = bottom.shape[0]
    ey = torch.tensor([0.0, 1.0, 0.0])
    p = cam.project(verts)
    b = bottom[p[:, 0].round().clamp(0, w - 1).long()]  # [V] the region's lowest row in each vertex's column
    cut = (verts[:, 1] < top) & (b >= 0) & (p[:, 1] > b + 0.5)
    dy = torch.zeros(V)
    for _ in range(steps):  # Newton steps on the projection's row (perspective: nearly linear)
        cur = verts + dy[:, None] * ey
        pc = cam.project(cur[cut])
        rate = (cam.project(cur[cut] + 1e-4 * ey)[:, 1] - pc[:, 1]) / 1e-4  # px per metre up (< 0)
        step = (b[cut] - pc[:, 1]) / torch.where(rate.abs() > 1e-6, rate, torch.full_like(rate, -1e-6))
        dy[cut] = (dy[cut] + step).clamp(min=0.0)
        dy[cut] = torch.minimum(dy[cut], top - verts[cut, 1])
    return dy[:, None] * ey, cut


# ----------------------------------------------------------------------------- the solve


def _system(L: sp.csr_matrix, hold: np.ndarray, mirror: np.ndarray, cfg: DeformConfig) -> sp.csr_matrix:
    V = L.shape[0]
    eye = sp.identity(V, format="csr")
    P = sp.csr_matrix((np.ones(V), (np.arange(V), mirror)), shape=(V, V))
    D = eye - P
    return (cfg.membrane * L + cfg.bending * (L.T @ L) + sp.diags(cfg.hold * hold + cfg.eps)
            + cfg.mirror * (D.T @ D)).tocsr()  # fmt: skip


def deform_to_region(
    vertices: Tensor,  # [V, 3] canonical mesh
    faces: Tensor,  # [F, 3] long
    camera: Camera,  # the photo's camera of the canonical head
    region: Tensor,  # [H, W] (or [H, W, 1]) 0..1 head region at the camera's size
    hold: Tensor,  # [V] 0..1 face hold (face_hold)
    config: DeformConfig | None = None,
) -> HeadDeformation:
    """Smooth per-vertex offsets that bring the mesh's outline onto the region's (module docstring)."""
    cfg = config or DeformConfig()
    cfg.validate()
    verts = vertices.detach().cpu().float()
    faces = faces.detach().cpu().long()
    V = verts.shape[0]
    reg = _region_at(region.detach().cpu(), cfg.size)
    cam = _camera_at(camera.to("cpu"), reg.shape[0], reg.shape[1])
    radius = float((verts - verts.mean(0)).norm(dim=-1).max())
    u = smoothed_normals(verts, faces, cfg.smooth_iters)
    L = graph_laplacian(faces, V)
    base = _system(L, hold.detach().cpu().double().numpy(), mirror_index(verts).numpy(), cfg)
    cov0, spill0 = silhouette_scores(verts, faces, cam, reg)
    s = np.zeros(V)
    for _ in range(cfg.iterations):
        cur = verts + torch.from_numpy(s).float()[:, None] * u
        ids, ds = rim_targets(cur, faces, u, cam, reg, cfg)
        if ids.numel() == 0:
            break
        idx = ids.numpy()
        w = np.zeros(V)
        w[idx] = 1.0
        a = np.zeros(V)
        a[idx] = s[idx] + ds.double().numpy()
        s = spla.spsolve((base + sp.diags(w)).tocsc(), w * a)
        s = np.clip(s, -cfg.max_in * radius, cfg.max_out * radius)
    st = torch.from_numpy(s).float()
    offsets = st[:, None] * u
    hair = (st / (cfg.hair_scale * radius)).clamp(0, 1) * (1 - hold.float().cpu())
    cut = None
    if cfg.cut_neck:  # the neck ends at the region's lower edge (the collar)
        pull, cut = neck_cut(verts + offsets, cam, reg, hold)
        offsets = offsets + pull
        hair = torch.where(cut, torch.zeros_like(hair), hair)  # posed as FLAME's neck
    cov, spill = silhouette_scores(verts + offsets, faces, cam, reg)
    return HeadDeformation(offsets, hair, cov, spill, cov0, spill0, cut)


def outside_region(points: Tensor, camera: Camera, region: Tensor, tol_px: float = 0.0) -> Tensor:
    """[N] bool: points [N, 3] whose projection by `camera` falls outside `region` [H, W] (at the
    camera's size; > 0.5 is inside), dilated by `tol_px`, or behind the camera."""
    r = region.reshape(region.shape[0], region.shape[1]).float().cpu()
    if tol_px > 0:
        k = int(np.ceil(tol_px))
        r = F.max_pool2d(r[None, None], 2 * k + 1, stride=1, padding=k)[0, 0]
    uv = camera.to("cpu").project(points.detach().cpu().float())
    z = points.detach().cpu().float() @ camera.viewmat[:3, :3].float().cpu().T + camera.viewmat[:3, 3].float().cpu()
    return (_sample(r, uv) < 0.5) | (z[:, 2] <= 0)


# ----------------------------------------------------------------------------- posing


def head_weights(lbs_weights: Tensor) -> Tensor:
    """LBS weights [V, J] with the jaw (2) and eye (3, 4) columns moved onto the neck joint (1)."""
    w = lbs_weights.clone()
    if w.shape[1] >= 3:
        w[:, 1] = w[:, 1:].sum(1)
        w[:, 2:] = 0
    return w


def skinning_transforms(model, params: FlameParams) -> Tensor:
    """Skinning transforms [B, J, 4, 4] of `params` (translation not included)."""
    rot = pose_rotations(params)
    joints = shaped_joints(model, params.shape, params.expr)
    _, A = _chain(rot, joints, model.parents_list)  # [B, J, 3, 4]
    last = torch.zeros(*A.shape[:2], 1, 4, dtype=A.dtype, device=A.device)
    last[..., 0, 3] = 1
    return torch.cat([A, last], dim=-2)


def pose_deformed(
    model,
    canon: FlameParams,  # batch 1: the canonical parameters the offsets were made on
    frames: FlameParams,  # batch B
    canonical: Tensor,  # [V, 3] canonical FLAME vertices (without offsets)
    base: Tensor,  # [B, V, 3] FLAME vertices of `frames` (flame_forward)
    offsets: Tensor,  # [V, 3]
    hair: Tensor,  # [V]
) -> Tensor:
    """Posed vertices of the deformed head [B, V, 3] (see the module docstring)."""
    A_c = skinning_transforms(model, canon).to(base.dtype)  # [1, J, 4, 4]
    A_f = skinning_transforms(model, frames).to(base.dtype)  # [B, J, 4, 4]
    rel = (A_f @ torch.linalg.inv(A_c))[..., :3, :]  # [B, J, 3, 4]
    w = head_weights(model.lbs_weights.to(base))  # [V, J]
    B, J = rel.shape[:2]
    M = torch.matmul(w, rel.reshape(B, J, 12)).view(B, -1, 3, 4)  # [B, V, 3, 4]
    d = offsets.to(base)
    p = canonical.to(base) + d  # [V, 3]
    rigid = (M[..., :3] @ p[None, :, :, None]).squeeze(-1) + M[..., 3] + frames.translation.to(base)[:, None]
    soft = base + (M[..., :3] @ d[None, :, :, None]).squeeze(-1)
    h = hair.to(base)[None, :, None]
    return (1 - h) * soft + h * rigid


__all__ = [
    "DeformConfig",
    "HeadDeformation",
    "deform_to_region",
    "face_hold",
    "scalp",
    "outside_region",
    "neck_cut",
    "region_bottom",
    "pose_deformed",
    "head_weights",
    "mesh_coverage",
    "graph_laplacian",
]
