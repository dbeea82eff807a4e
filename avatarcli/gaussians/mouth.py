"""A mouth interior for FLAME heads: FLAME has none, so an opened jaw would show the inside of the
back of the head through the lips. Added at init: a dark oral cavity, upper and lower teeth and a
tongue, as ordinary Gaussians bound to existing FLAME triangles (no new faces: head.ply keeps its
layout and every reader reads it).

Geometry, from the NEUTRAL face of the fit's identity (jaw, expression, pose 0; FLAME axes: x the
subject's left, y up, z out of the face) and the landmark embedding's lip points (48-67):
  w = mouth width (outer corners 48-54), c = centre of the inner lip (60-67), m = c - inset * w * z.
  cavity  the back half of an ellipsoid around m (semi-axes cavity_axes x w), opening towards the
          lips: a dark bowl, its upper half on the head, its lower half on the jaw (the two halves
          overlap at the back, so no gap opens between them when the jaw drops);
  teeth   two curved strips just behind the lips, above and below the mouth line;
  tongue  a low dome on the floor of the lower half.
Binding: the upper parts to ONE triangle that moves with the skull (no jaw or eye skinning weight,
nearest the base of the nose), the lower parts to ONE triangle that moves with the jaw (the largest
jaw weight, nearest the chin below the lower lip): rigid followers, like teeth. All of it lies behind
the lips, so a closed mouth hides it (the surface Gaussians in front are opaque).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avatarcli.flame.forward import barycentric_points, flame_forward
from avatarcli.flame.params import FlameParams
from avatarcli.gaussians.binding import bind_to_mesh
from avatarcli.gaussians.model import BoundGaussians, Gaussians, rgb_to_sh0, sh_coeffs
from avatarcli.geometry import matrix_to_quaternion

JAW_JOINT, EYE_JOINTS = 2, (3, 4)


@dataclass
class MouthConfig:
    n_cavity: int = 1500
    n_teeth: int = 400  # per row
    n_tongue: int = 250
    inset: float = 0.35  # cavity centre behind the inner lip, x mouth width
    cavity_axes: tuple[float, float, float] = (0.42, 0.42, 0.7)  # x, y, depth semi-axes, x mouth width
    teeth_inset: float = 0.28  # front of the teeth behind the inner lip, x mouth width
    cavity_rgb: tuple[float, float, float] = (0.10, 0.03, 0.03)
    teeth_rgb: tuple[float, float, float] = (0.90, 0.88, 0.80)
    tongue_rgb: tuple[float, float, float] = (0.55, 0.22, 0.22)
    opacity: float = 0.97


@dataclass
class MouthParts:
    """World Gaussians of the neutral mouth, split by what they follow."""

    upper: Gaussians  # cavity roof, upper teeth: follow the skull
    lower: Gaussians  # cavity floor, lower teeth, tongue: follow the jaw


def _frame(normal: Tensor) -> Tensor:
    """Rotations [N, 3, 3] whose third column is `normal` [N, 3] (unit)."""
    ref = torch.where(normal[:, 1:2].abs() < 0.9, torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]))
    t1 = torch.linalg.cross(ref.expand_as(normal), normal)
    t1 = t1 / t1.norm(dim=-1, keepdim=True)
    return torch.stack([t1, torch.linalg.cross(normal, t1), normal], -1)


def _flat(points: Tensor, normals: Tensor, spacing: float, rgb, opacity: float, sh_degree: int) -> Gaussians:
    """Flat Gaussians (thin along the normal) at points [N, 3], sigma 0.8 x spacing."""
    n = points.shape[0]
    normals = normals / normals.norm(dim=-1, keepdim=True)
    s = 0.8 * spacing
    sh = torch.zeros(n, sh_coeffs(sh_degree), 3)
    sh[:, 0] = rgb_to_sh0(torch.tensor(rgb, dtype=torch.float32))
    return Gaussians(points.float(), matrix_to_quaternion(_frame(normals.float())),
                     torch.tensor([s, s, 0.2 * s]).expand(n, 3).clone(), torch.full((n,), opacity), sh)  # fmt: skip


def _fibonacci_back(n: int) -> Tensor:
    """About n points [M, 3] evenly spread on the unit sphere's back half (z <= 0)."""
    k = torch.arange(2 * n, dtype=torch.float64) + 0.5
    z = 1 - 2 * k / (2 * n)
    r = (1 - z * z).clamp_min(0).sqrt()
    phi = math.pi * (3 - math.sqrt(5)) * k
    p = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)
    return p[p[:, 2] <= 0]


def mouth_parts(lips: Tensor, cfg: MouthConfig, sh_degree: int) -> MouthParts:
    """The neutral mouth from the 20 lip landmarks lips [20, 3] (iBUG 48-67) of the neutral face."""
    lips = lips.double()
    w = float((lips[6] - lips[0]).norm())  # outer corners 54 - 48
    c = lips[12:].mean(0)  # inner lip 60-67
    ez = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    ax = torch.tensor(cfg.cavity_axes, dtype=torch.float64) * w
    m = c - cfg.inset * w * ez
    u = _fibonacci_back(cfg.n_cavity)  # [M, 3] unit directions
    cav = m + u * ax
    cav_n = -(u / ax)  # inward normals (the cavity is seen from inside)
    area = (
        2
        * math.pi
        * ((ax[0] * ax[1]) ** 1.6 / 3 + (ax[0] * ax[2]) ** 1.6 / 3 + (ax[1] * ax[2]) ** 1.6 / 3) ** (1 / 1.6)
    )
    cav_sp = math.sqrt(float(area) / u.shape[0])
    back = u[:, 2] < -0.5
    up, lo = (u[:, 1] >= 0) | (back & (u[:, 1] > -0.35)), (u[:, 1] < 0) | (back & (u[:, 1] < 0.35))

    # teeth: curved strips (z = front - 0.5 k x^2) just behind the inner lip, above / below the mouth line
    nu, nv = max(2, int(round(math.sqrt(cfg.n_teeth * 4)))), max(1, int(round(math.sqrt(cfg.n_teeth / 4))))
    x = torch.linspace(-0.36, 0.36, nu, dtype=torch.float64) * w
    v = torch.linspace(0.05, 0.2, nv, dtype=torch.float64) * w
    X, Vv = torch.meshgrid(x, v, indexing="ij")
    curve = 1.5 / w
    Z = c[2] - cfg.teeth_inset * w - 0.5 * curve * X**2
    normal = torch.stack([curve * X, torch.zeros_like(X), torch.ones_like(X)], -1).reshape(-1, 3)
    t_sp = float(x[1] - x[0]) if nu > 1 else 0.01 * w

    def row(sign: float) -> Tensor:
        return torch.stack([c[0] + X, c[1] + sign * Vv, Z], -1).reshape(-1, 3)

    # tongue: a low dome on the floor of the lower half
    nt = max(2, int(round(math.sqrt(cfg.n_tongue))))
    tx, tz = torch.meshgrid(torch.linspace(-0.28, 0.28, nt, dtype=torch.float64) * w,
                            torch.linspace(0.3, 0.85, nt, dtype=torch.float64) * w, indexing="ij")  # fmt: skip
    ty = c[1] - 0.2 * w + 0.06 * w * (1 - (tx / (0.28 * w)) ** 2)
    tongue = torch.stack([c[0] + tx, ty, c[2] - tz], -1).reshape(-1, 3)
    up_n = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64).expand_as(tongue)
    t_sp2 = 0.56 * w / (nt - 1)

    g = lambda p, n, sp, rgb: _flat(p, n, sp, rgb, cfg.opacity, sh_degree)  # noqa: E731
    upper = [g(cav[up], cav_n[up], cav_sp, cfg.cavity_rgb), g(row(+1.0), normal, t_sp, cfg.teeth_rgb)]
    lower = [g(cav[lo], cav_n[lo], cav_sp, cfg.cavity_rgb), g(row(-1.0), normal, t_sp, cfg.teeth_rgb),
             g(tongue, up_n, t_sp2, cfg.tongue_rgb)]  # fmt: skip
    return MouthParts(_cat(upper), _cat(lower))


def _cat(parts: list[Gaussians]) -> Gaussians:
    return Gaussians(
        *(torch.cat([getattr(p, k) for p in parts]) for k in ("means", "quats", "scales", "opacities", "sh"))
    )


def anchor_faces(model, vertices: Tensor, faces: Tensor, lips: Tensor) -> tuple[int, int]:
    """(skull triangle, jaw triangle): see the module doc. vertices [V, 3] neutral, lips [20, 3]."""
    W = model.lbs_weights.to(vertices.device)  # [V, J]
    wf = W[faces]  # [F, 3, J]
    jaw = wf[..., JAW_JOINT].mean(-1)  # [F]
    eyes = wf[..., list(EYE_JOINTS)].sum(-1).amax(-1)
    cen = vertices[faces].mean(1)  # [F, 3]
    w = float((lips[6] - lips[0]).norm())
    nose = lips[3] + torch.tensor([0.0, 0.35 * w, 0.0], dtype=lips.dtype)  # above the upper lip
    chin = lips[9] - torch.tensor([0.0, 0.35 * w, 0.0], dtype=lips.dtype)  # below the lower lip
    d = lambda p: (cen - p.to(cen)).norm(dim=-1)  # noqa: E731
    skull_ok = (wf[..., JAW_JOINT].amax(-1) < 1e-3) & (eyes < 1e-3)
    jaw_ok = jaw >= 0.95 * float(jaw.max())
    if not bool(skull_ok.any()) or not bool(jaw_ok.any()) or float(jaw.max()) <= 0:
        raise ValueError("the FLAME model has no skull-only or jaw triangles near the mouth")
    skull = int(torch.where(skull_ok, d(nose), torch.inf).argmin())
    jawf = int(torch.where(jaw_ok, d(chin), torch.inf).argmin())
    return skull, jawf


def mouth_bound(model, shape: Tensor, cfg: MouthConfig | None = None, sh_degree: int = 1) -> BoundGaussians | None:
    """The mouth interior as BoundGaussians for a head of identity `shape` [S] (None: no landmark
    embedding, so no lips to place it by). Bound to FLAME triangles; pose it like any bound head."""
    cfg = cfg or MouthConfig()
    emb = model.landmarks
    if emb is None:
        return None
    p = FlameParams.zeros(1, int(shape.numel()), 0, dtype=model.dtype, device=model.device)
    p.shape = shape.reshape(1, -1).to(model.device, model.dtype)
    with torch.no_grad():
        verts = flame_forward(model, p, with_landmarks=False).vertices[0].float().cpu()  # [V, 3] neutral
    faces = model.faces.long().cpu()
    lips = barycentric_points(
        verts[None], faces, emb.full_faces[48:].cpu()[None], emb.full_bary[48:].float().cpu()[None]
    )[0]
    parts = mouth_parts(lips, cfg, sh_degree)
    skull, jaw = anchor_faces(model, verts, faces, lips.double())
    b_up = bind_to_mesh(parts.upper, torch.full((parts.upper.n,), skull), verts, faces)
    b_lo = bind_to_mesh(parts.lower, torch.full((parts.lower.n,), jaw), verts, faces)
    return b_up.cat(b_lo)


MIN_MOUTH = 40  # fewer Gaussians than this make no mouth


def mouth_for_init(model, fit, n: int, sh_degree: int) -> BoundGaussians | None:
    """About `n` mouth Gaussians (cavity 60 %, teeth 2 x 15 %, tongue 10 %) for the fit's identity,
    or None when n < MIN_MOUTH or the model has no landmark embedding."""
    if n < MIN_MOUTH or model.landmarks is None:
        return None
    cfg = MouthConfig(n_cavity=int(0.6 * n), n_teeth=int(0.15 * n), n_tongue=int(0.1 * n))
    shape = torch.as_tensor(np.asarray(fit.shape), dtype=torch.float32).reshape(-1)[: model.n_shape]
    return mouth_bound(model, shape, cfg, sh_degree)
