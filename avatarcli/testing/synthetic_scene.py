"""A synthetic "photo" of a textured head, for tests and the fit-quality bench.

Ground truth: flat Gaussians bound to a mesh (a FLAME-format model's canonical
head, or a head-sized ellipsoid when no model is at hand), several per
triangle, coloured by a smooth procedural texture of the 3D position. The
"photo" is their render from a known camera over a plain backdrop; the head
mask is the rendered alpha. Novel views of the same truth give true images
for checking generalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from avatarcli.flame.forward import canonical_vertices
from avatarcli.flame.params import FlameParams
from avatarcli.gaussians.binding import bind_to_mesh, world_gaussians
from avatarcli.gaussians.model import BoundGaussians, Gaussians, rgb_to_sh0, sh_coeffs
from avatarcli.geometry import matrix_to_quaternion, triangle_frames
from avatarcli.render.api import render
from avatarcli.render.camera import Camera, orbit_camera

PHOTO_BACKGROUND = (0.35, 0.45, 0.55)  # the backdrop of the synthetic photo (not the render background)

# barycentric sample points per triangle (centroid first, then towards each corner)
_BARY = torch.tensor(
    [[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3]], dtype=torch.float32
)


def ellipsoid_mesh(
    n_lat: int = 12, n_lon: int = 24, radii: tuple[float, float, float] = (0.075, 0.1, 0.085)
) -> tuple[Tensor, Tensor]:
    """A closed, outward-wound ellipsoid (head-sized, metres): vertices [V, 3], faces [F, 3] long."""
    verts = [[0.0, radii[1], 0.0]]
    for i in range(1, n_lat):
        th = math.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * math.pi * j / n_lon
            verts.append(
                [
                    radii[0] * math.sin(th) * math.sin(ph),
                    radii[1] * math.cos(th),
                    radii[2] * math.sin(th) * math.cos(ph),
                ]
            )
    verts.append([0.0, -radii[1], 0.0])
    V = len(verts)
    ring = lambda i, j: 1 + (i - 1) * n_lon + (j % n_lon)  # noqa: E731
    faces = []
    for j in range(n_lon):
        faces.append([0, ring(1, j), ring(1, j + 1)])
        faces.append([V - 1, ring(n_lat - 1, j + 1), ring(n_lat - 1, j)])
    for i in range(1, n_lat - 1):
        for j in range(n_lon):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces += [[a, c, b], [b, c, d]]
    v = torch.tensor(verts, dtype=torch.float32)
    f = torch.tensor(faces, dtype=torch.long)
    # make every normal point outwards
    c, R, _ = triangle_frames(v, f)
    flip = (R[:, :, 2] * c).sum(-1) < 0
    f[flip] = f[flip][:, [0, 2, 1]]
    return v, f


def procedural_texture(points: Tensor, center: Tensor | None = None) -> Tensor:
    """Smooth colour pattern of 3D points [N, 3] (metres) -> rgb [N, 3] in [0.1, 0.9].

    Skin-like base with colour waves of 3-6 cm and a darker band pattern, so
    every region of a head has structure at the scale a 256-pixel photo shows."""
    p = points - (points.mean(0) if center is None else center)
    x, y, z = p.unbind(-1)
    base = torch.tensor([0.78, 0.60, 0.50], device=points.device)
    waves = torch.stack(
        [
            0.10 * torch.sin(2 * math.pi * (x / 0.05 + 0.3 * y / 0.04)),
            0.08 * torch.sin(2 * math.pi * (y / 0.04 + z / 0.06) + 1.0),
            0.10 * torch.cos(2 * math.pi * (z / 0.05 - x / 0.07)),
        ],
        -1,
    )
    band = 0.18 * torch.sigmoid(8.0 * torch.sin(2 * math.pi * y / 0.03))[:, None]
    return (base + waves - band).clamp(0.1, 0.9)


def ground_truth_gaussians(
    vertices: Tensor, faces: Tensor, sh_degree: int = 0, opacity: float = 0.97
) -> BoundGaussians:
    """Four flat Gaussians per triangle (vertices [V, 3], faces [F, 3]) painted with procedural_texture."""
    F_ = faces.shape[0]
    tri = vertices[faces]  # [F, 3, 3]
    pts = torch.einsum("sk,fkc->fsc", _BARY.to(vertices), tri).reshape(-1, 3)  # [4F, 3]
    binding = torch.arange(F_, device=vertices.device).repeat_interleave(_BARY.shape[0])  # [4F]
    _, R, k = triangle_frames(vertices, faces)
    n = pts.shape[0]
    scales = torch.stack([0.3 * k[binding], 0.3 * k[binding], 0.03 * k[binding]], -1)  # [4F, 3] flat, in-plane
    quats = matrix_to_quaternion(R[binding])  # the triangle's own frame: flat along the surface
    rgb = procedural_texture(pts, vertices.mean(0))
    sh = torch.zeros(n, sh_coeffs(sh_degree), 3, device=vertices.device)
    sh[:, 0] = rgb_to_sh0(rgb)
    g = Gaussians(
        means=pts, quats=quats, scales=scales, opacities=torch.full((n,), opacity, device=vertices.device), sh=sh
    )
    return bind_to_mesh(g, binding, vertices, faces)


@dataclass
class SyntheticScene:
    vertices: Tensor  # [V, 3] canonical mesh
    faces: Tensor  # [F, 3]
    truth: BoundGaussians
    camera: Camera  # the photo's camera (for the canonical head)
    image: Tensor  # [H, W, 3] the "photo": truth over PHOTO_BACKGROUND
    mask: Tensor  # [H, W, 1] head region (the truth's alpha)
    distance: float
    fov_deg: float

    @property
    def center(self) -> Tensor:
        return self.vertices.mean(0)

    def orbit(self, yaw_deg: float, pitch_deg: float = 0.0) -> Camera:
        s = self.camera.width
        return orbit_camera(
            yaw_deg,
            pitch_deg,
            distance=self.distance,
            target=tuple(self.center.tolist()),
            fov_deg=self.fov_deg,
            width=s,
            height=s,
        )

    def true_view(self, camera: Camera, background=PHOTO_BACKGROUND, backend: str = "torch") -> tuple[Tensor, Tensor]:
        """The truth seen by `camera`: rgb [H, W, 3] over `background`, alpha [H, W, 1]."""
        with torch.no_grad():
            out = render(
                world_gaussians(self.truth, self.vertices, self.faces),
                camera,
                torch.tensor(background),
                backend=backend,
            )
        return out.rgb.clamp(0, 1), out.alpha


def make_scene(
    vertices: Tensor,
    faces: Tensor,
    *,
    size: int = 64,
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    fov_deg: float = 20.0,
    fill: float = 0.85,
    backend: str = "torch",
) -> SyntheticScene:
    """Truth Gaussians on the mesh and their photo from (yaw, pitch), the head filling `fill` of the frame."""
    vertices = vertices.float()
    truth = ground_truth_gaussians(vertices, faces)
    c = vertices.mean(0)
    r = float((vertices - c).norm(dim=-1).max())
    distance = r / (fill * math.tan(math.radians(fov_deg) / 2))
    cam = orbit_camera(
        yaw_deg, pitch_deg, distance=distance, target=tuple(c.tolist()), fov_deg=fov_deg, width=size, height=size
    )
    scene = SyntheticScene(vertices, faces, truth, cam, torch.empty(0), torch.empty(0), distance, fov_deg)
    scene.image, scene.mask = scene.true_view(cam, backend=backend)
    return scene


def flame_head_scene(model, size: int = 256, **kw) -> SyntheticScene:
    """make_scene on a FLAME-format model's template head (zero shape, expression and pose)."""
    params = FlameParams.zeros(1, model.n_shape, model.n_expr)
    with torch.no_grad():
        v = canonical_vertices(model, params)[0].float()
    return make_scene(v, model.faces.long(), size=size, **kw)


def perturbed(
    bound: BoundGaussians,
    *,
    xyz: float = 0.15,
    log_scale: float = 0.3,
    rgb: float = 0.15,
    opacity_logit: float = 1.0,
    seed: int = 0,
) -> BoundGaussians:
    """A copy with noisy positions (triangle units), scales, colours and opacities: a fit's starting point."""
    g = torch.Generator().manual_seed(seed)
    noise = lambda t, s: t + s * torch.randn(t.shape, generator=g).to(t)  # noqa: E731
    sh = bound.sh.clone()
    sh[:, 0] = noise(sh[:, 0], rgb / 0.28209479177387814)
    return BoundGaussians(
        binding=bound.binding.clone(),
        local_xyz=noise(bound.local_xyz, xyz),
        local_rot=noise(bound.local_rot, 0.1),
        local_log_scale=noise(bound.local_log_scale, log_scale),
        opacity_logit=noise(bound.opacity_logit, opacity_logit),
        sh=sh,
    )
