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
  tongue  a low dome on the floor of the lower half;
  shell   the cavity's bowl again, (1 + shell_gap) x larger, skin-coloured (init gives it the head's
          skin) and facing out: the skin's Gaussians are not quite opaque, and through their gaps the
          head showed skin before the mouth existed; the shell keeps it so (a closed mouth renders as
          without the interior), while from the opening it lies behind the cavity wall.
Placement and binding (`mouth_interior`): all of this is built on the NEUTRAL face (identity only,
no expression, every joint at rest: lips closed and relaxed), then carried into the head's canonical
space by FLAME's joint transforms, the upper parts (cavity roof, upper teeth) by the skull's (joint
1), the lower ones (floor, lower teeth, tongue) by the jaw's (joint 2). They are bound to two rigid
anchors (avatarcli.gaussians.anchors), extra triangles that follow those joints exactly, never a
skin triangle: the photo's expression, which moves lips and chin, moves none of it, and re-posing
moves it as the skull and the jaw bone move. All of it lies behind the lips, so a closed mouth
hides it (the surface Gaussians in front are opaque).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from avatarcli.flame.forward import barycentric_points, flame_forward
from avatarcli.flame.params import FlameParams
from avatarcli.gaussians.anchors import HEAD_JOINT, JAW_JOINT, RigidAnchors, joint_transforms
from avatarcli.gaussians.binding import bind_to_mesh
from avatarcli.gaussians.model import BoundGaussians, Gaussians, rgb_to_sh0, sh_coeffs
from avatarcli.geometry import matrix_to_quaternion, quaternion_multiply


@dataclass
class MouthConfig:
    n_cavity: int = 1500
    n_shell: int = 900
    n_teeth: int = 400  # per row
    n_tongue: int = 250
    inset: float = 0.35  # cavity centre behind the inner lip, x mouth width
    cavity_axes: tuple[float, float, float] = (0.42, 0.42, 0.7)  # x, y, depth semi-axes, x mouth width
    teeth_inset: float = 0.28  # front of the teeth behind the inner lip, x mouth width
    shell_gap: float = 0.1  # the shell's ellipsoid, x (1 + this) the cavity's
    cavity_rgb: tuple[float, float, float] = (0.10, 0.03, 0.03)
    shell_rgb: tuple[float, float, float] = (0.78, 0.60, 0.50)  # init sets the head's skin colour
    teeth_rgb: tuple[float, float, float] = (0.90, 0.88, 0.80)
    tongue_rgb: tuple[float, float, float] = (0.55, 0.22, 0.22)
    opacity: float = 0.97


@dataclass
class MouthParts:
    """World Gaussians of the neutral mouth, split by what they follow."""

    upper: Gaussians  # cavity roof, upper teeth, upper shell: follow the skull
    lower: Gaussians  # cavity floor, lower teeth, tongue, lower shell: follow the jaw
    upper_shell: Tensor  # [upper.n] bool: the skin-coloured outer shell
    lower_shell: Tensor  # [lower.n] bool


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
    cav_sp = math.sqrt(_half_ellipsoid_area(ax) / u.shape[0])
    back = u[:, 2] < -0.5
    up, lo = (u[:, 1] >= 0) | (back & (u[:, 1] > -0.35)), (u[:, 1] < 0) | (back & (u[:, 1] < 0.35))
    # the shell: the same bowl a little larger, skin-coloured, facing out; seen through gaps between
    # the skin's Gaussians from outside it shows what the head showed there before (skin), not the
    # dark cavity, and from the mouth opening it lies behind the cavity wall
    us = _fibonacci_back(cfg.n_shell)
    sax = ax * (1 + cfg.shell_gap)
    shell, shell_n, shell_sp = m + us * sax, us / sax, math.sqrt(_half_ellipsoid_area(sax) / us.shape[0])
    s_back = us[:, 2] < -0.5
    s_up, s_lo = (us[:, 1] >= 0) | (s_back & (us[:, 1] > -0.35)), (us[:, 1] < 0) | (s_back & (us[:, 1] < 0.35))

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
    upper = [g(cav[up], cav_n[up], cav_sp, cfg.cavity_rgb), g(row(+1.0), normal, t_sp, cfg.teeth_rgb),
             g(shell[s_up], shell_n[s_up], shell_sp, cfg.shell_rgb)]  # fmt: skip
    lower = [g(cav[lo], cav_n[lo], cav_sp, cfg.cavity_rgb), g(row(-1.0), normal, t_sp, cfg.teeth_rgb),
             g(tongue, up_n, t_sp2, cfg.tongue_rgb), g(shell[s_lo], shell_n[s_lo], shell_sp, cfg.shell_rgb)]  # fmt: skip
    mark = lambda parts: torch.cat([torch.zeros(p.n, dtype=torch.bool) for p in parts[:-1]]  # noqa: E731
                                   + [torch.ones(parts[-1].n, dtype=torch.bool)])  # fmt: skip
    return MouthParts(_cat(upper), _cat(lower), mark(upper), mark(lower))


def _half_ellipsoid_area(ax: Tensor) -> float:
    """Half the surface area of the ellipsoid with semi-axes ax [3] (Knud Thomsen's approximation)."""
    p = 1.6
    a, b, c = (float(x) for x in ax)
    return 2 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


def _cat(parts: list[Gaussians]) -> Gaussians:
    return Gaussians(
        *(torch.cat([getattr(p, k) for p in parts]) for k in ("means", "quats", "scales", "opacities", "sh"))
    )


@dataclass
class MouthInterior:
    """The mouth interior of one head, in its canonical space, bound to two rigid anchors."""

    gaussians: Gaussians  # [M] world Gaussians on the canonical head
    anchor: Tensor  # [M] long: 0 the skull anchor, 1 the jaw anchor
    anchors: RigidAnchors  # 2 anchors: (skull, HEAD_JOINT), (jaw, JAW_JOINT)
    shell: Tensor  # [M] bool: the skin-coloured outer shell
    opening: float = float("nan")  # lip_opening of the canonical head (the photo's expression and jaw)
    rest_opening: float = 0.0  # lip_opening of the neutral face (interior_visibility's zero)

    @property
    def n(self) -> int:
        return self.gaussians.n

    def with_shell_colour(self, rgb: Tensor) -> "MouthInterior":
        """The shell coloured `rgb` [3] in 0..1 (the head's skin)."""
        sh = self.gaussians.sh.clone()
        sh[self.shell, 0] = rgb_to_sh0(rgb.to(sh).reshape(3))
        g = self.gaussians
        return replace(self, gaussians=Gaussians(g.means, g.quats, g.scales, g.opacities, sh))

    def head_meta(self, meta):
        """The head's HeadMeta (avatarcli.gaussians.ply) with these anchors and this lip state (version 4)."""
        return meta.with_anchors(self.anchors).with_mouth(self.opening, self.rest_opening)

    def bound(self, vertices: Tensor, faces: Tensor) -> BoundGaussians:
        """Bound to the anchors on the head mesh extended by them (anchors.extend(vertices, faces))."""
        F = faces.shape[0] - self.anchors.n  # the FLAME faces come first
        return bind_to_mesh(self.gaussians.to(vertices.device), F + self.anchor.to(vertices.device), vertices, faces)


def _rigid(g: Gaussians, T: Tensor) -> Gaussians:
    """Gaussians moved by the rigid transform T [4, 4]."""
    R, t = T[:3, :3].to(g.means), T[:3, 3].to(g.means)
    q = matrix_to_quaternion(R[None].double()).to(g.quats).expand_as(g.quats)
    return Gaussians(g.means @ R.T + t, quaternion_multiply(q, g.quats), g.scales, g.opacities, g.sh)


def _anchor_triangle(centre: Tensor, w: float) -> Tensor:
    """A triangle [3, 3] of size ~w about `centre` [3], in the x-y plane."""
    d = torch.tensor([[-0.5, -0.3, 0.0], [0.5, -0.3, 0.0], [0.0, 0.6, 0.0]], dtype=centre.dtype)
    return centre + w * d


def mouth_interior(model, params, cfg: MouthConfig | None = None, sh_degree: int = 1) -> MouthInterior | None:
    """The mouth interior of the canonical head of FlameParams `params` (batch 1; global pose and
    translation are ignored), None without a landmark embedding (no lips to place it by).

    Built on the NEUTRAL face (the identity only: no expression, every joint at rest), where the lips
    are closed and relaxed, then moved into the canonical head by the joint transforms: the upper
    parts by the skull's (joint 1), the lower ones by the jaw's (joint 2). The photo's expression
    (which moves lips and chin) therefore moves nothing of it, and the jaw's pose carries the lower
    teeth exactly as it carries the jaw bone."""
    cfg = cfg or MouthConfig()
    emb = model.landmarks
    if emb is None:
        return None
    shape = params.shape.reshape(1, -1).to(model.device, model.dtype)
    rest = FlameParams.zeros(1, int(shape.shape[1]), 0, dtype=model.dtype, device=model.device)
    rest.shape = shape
    with torch.no_grad():
        verts = flame_forward(model, rest, with_landmarks=False).vertices[0].float().cpu()  # [V, 3] neutral
        canon = FlameParams(shape=shape, expr=params.expr.reshape(1, -1).to(shape),
                            global_pose=torch.zeros_like(shape[:, :3]), neck_pose=params.neck_pose.reshape(1, 3).to(shape),
                            jaw_pose=params.jaw_pose.reshape(1, 3).to(shape), eyes_pose=params.eyes_pose.reshape(1, 6).to(shape),
                            translation=torch.zeros_like(shape[:, :3]))  # fmt: skip
        A = joint_transforms(model, canon)[0].double().cpu()  # [J, 4, 4] rest -> canonical
        opening = float(lip_opening(model, flame_forward(model, canon, with_landmarks=False).vertices)[0])
        rest_opening = float(lip_opening(model, verts.to(model.device, model.dtype)[None])[0])
    faces = model.faces.long().cpu()
    lips = barycentric_points(
        verts[None], faces, emb.full_faces[48:].cpu()[None], emb.full_bary[48:].float().cpu()[None]
    )[0].double()  # [20, 3]
    parts = mouth_parts(lips, cfg, sh_degree)
    w = float((lips[6] - lips[0]).norm())
    c = lips[12:].mean(0) - torch.tensor([0.0, 0.0, cfg.inset * w], dtype=torch.float64)
    tri = _anchor_triangle(c, w)  # [3, 3] rest
    corners = torch.stack([tri @ A[j, :3, :3].T + A[j, :3, 3] for j in (HEAD_JOINT, JAW_JOINT)]).float()
    up, lo = _rigid(parts.upper, A[HEAD_JOINT]), _rigid(parts.lower, A[JAW_JOINT])
    anchor = torch.cat([torch.zeros(up.n, dtype=torch.long), torch.ones(lo.n, dtype=torch.long)])
    anchors = RigidAnchors(corners, torch.tensor([HEAD_JOINT, JAW_JOINT]))
    shell = torch.cat([parts.upper_shell, parts.lower_shell])
    return MouthInterior(_cat([up, lo]), anchor, anchors, shell, opening, rest_opening)


MIN_MOUTH = 40  # fewer Gaussians than this make no mouth


def mouth_for_init(model, fit, n: int, sh_degree: int) -> MouthInterior | None:
    """About `n` mouth Gaussians (cavity 40 %, shell 25 %, teeth 2 x 12 %, tongue 10 %) for the fit's
    canonical head, or None when n < MIN_MOUTH or the model has no landmark embedding."""
    if n < MIN_MOUTH or model.landmarks is None:
        return None
    cfg = MouthConfig(n_cavity=int(0.4 * n), n_shell=int(0.25 * n), n_teeth=int(0.12 * n), n_tongue=int(0.1 * n))
    return mouth_interior(model, fit.canonical_params(model, model.device, model.dtype), cfg, sh_degree)


# Inner-lip landmarks (iBUG) facing each other across the mouth line, and the mouth corners.
_UPPER_INNER, _LOWER_INNER, _CORNERS = (61, 62, 63), (67, 66, 65), (48, 54)
SHOW_OPENING = (0.01, 0.04)  # lip opening (x mouth width) over which the interior fades in


def lip_opening(model, vertices: Tensor) -> Tensor:
    """Distance between the inner lips over the mouth width, from posed FLAME vertices [..., V, 3] -> [...]
    (the model's landmark embedding; its lip points are static, no contour bins)."""
    emb = model.landmarks
    ids = torch.tensor(_UPPER_INNER + _LOWER_INNER + _CORNERS, device=vertices.device)
    lead = vertices.shape[:-2]
    v = vertices.reshape(-1, *vertices.shape[-2:])  # [B, V, 3]
    B = v.shape[0]
    fi = emb.full_faces.to(vertices.device)[ids][None].expand(B, -1)
    bary = emb.full_bary.to(vertices)[ids][None].expand(B, -1, -1)
    p = barycentric_points(v, model.faces, fi, bary)  # [B, 8, 3]
    gap = (p[:, 0:3] - p[:, 3:6]).norm(dim=-1).mean(-1)
    return (gap / (p[:, 7] - p[:, 6]).norm(dim=-1).clamp_min(1e-9)).reshape(lead)


def interior_visibility(opening: Tensor, rest_opening: float) -> Tensor:
    """Opacity factor [...] of the mouth interior for lip openings [...]: 0 with the lips together as in
    the neutral face (`rest_opening`: FLAME's closed lips are not exactly at 0), 1 from SHOW_OPENING[1]
    on, smooth in between. A closed mouth then renders exactly as a head without the interior: no
    teeth through the lip slit, whatever the skin's opacity."""
    lo, hi = SHOW_OPENING
    t = ((opening - rest_opening - lo) / (hi - lo)).clamp(0.0, 1.0)
    return t * t * (3 - 2 * t)


def rest_lip_opening(model, shape: Tensor) -> float:
    """lip_opening of the neutral face of identity `shape` [1, S] (no expression, every joint at rest)."""
    rest = FlameParams.zeros(1, int(shape.shape[-1]), 0, dtype=model.dtype, device=model.device)
    rest.shape = shape.reshape(1, -1).to(model.device, model.dtype)
    with torch.no_grad():
        v = flame_forward(model, rest, with_landmarks=False).vertices  # [1, V, 3]
    return float(lip_opening(model, v)[0])


# ----------------------------------------------------------------------------- the one opacity gate


@dataclass(frozen=True)
class MouthGate:
    """How visible a head's mouth interior is in one pose: the Gaussians bound to a rigid anchor
    (binding >= n_faces, FLAME's face count) are the interior, their opacity x `visibility`
    (interior_visibility of that pose's lip opening). Still renders, the fit and the diffusion rounds
    see the canonical head, so one float; animate gates every frame by its own (gate_opacities)."""

    n_faces: int  # FLAME's face count: a binding >= n_faces is on an anchor, i.e. the interior
    visibility: float  # 0: the lips touch (interior invisible) .. 1: open

    def interior(self, binding: Tensor) -> Tensor:
        """[N] bool: the Gaussians of `binding` [N] that are the mouth interior."""
        return binding >= self.n_faces


def gate_opacities(opacities: Tensor, interior: Tensor, visibility: Tensor | float) -> Tensor:
    """THE mouth gate: opacities [..., N] with the interior's ([N] bool) x visibility [...] (a float or
    one per leading index, e.g. per frame); the rest unchanged. Differentiable in the opacities."""
    vis = torch.as_tensor(visibility, dtype=opacities.dtype, device=opacities.device)[..., None]  # [..., 1]
    return torch.where(interior.to(opacities.device), opacities * vis, opacities)


def gate_interior(g: Gaussians, binding: Tensor | None, gate: MouthGate | None) -> Gaussians:
    """World Gaussians `g` (bound by `binding` [N]) with the interior's opacity gated; `g` itself
    when there is no gate (no interior, or an old head whose lip state is unknown) or no binding."""
    if gate is None or binding is None:
        return g
    op = gate_opacities(g.opacities, gate.interior(binding), gate.visibility)
    return Gaussians(g.means, g.quats, g.scales, op, g.sh)


def gate_logits(logits: Tensor, binding: Tensor | None, gate: MouthGate | None) -> Tensor:
    """Stored opacity logits [N] with the interior's gated (gate_opacities on their sigmoid, clamped to
    1e-7: a hidden interior gets logit -16); every other logit returned bit for bit (exports)."""
    if gate is None or binding is None:
        return logits
    interior = gate.interior(binding.to(logits.device))
    p = gate_opacities(torch.sigmoid(logits.double()), interior, gate.visibility).clamp(1e-7, 1 - 1e-7)
    return torch.where(interior, torch.logit(p).to(logits.dtype), logits)


def head_gate(meta, model=None) -> MouthGate | None:
    """The gate of a head's canonical pose (what render, the fit and the rounds show) from its HeadMeta:
    None without an interior (no anchors). The lip state stored in head.ply (version 4) when there;
    for older heads derived from `model` (FLAME, with its landmark embedding) when given, else None
    (the interior drawn as stored, as before version 4)."""
    if meta is None or not getattr(meta, "n_anchors", 0):
        return None
    if getattr(meta, "lip_opening", None) is not None:
        opening, rest = float(meta.lip_opening), float(meta.rest_lip_opening)
    elif model is not None and getattr(model, "landmarks", None) is not None:
        params = meta.fit.canonical_params(model)
        with torch.no_grad():
            opening = float(lip_opening(model, flame_forward(model, params, with_landmarks=False).vertices)[0])
        rest = rest_lip_opening(model, params.shape)
    else:
        return None
    return MouthGate(int(meta.n_faces), float(interior_visibility(torch.tensor(opening), rest)))
