"""A synthetic "photo" of a posed FLAME head with known everything, for tests and benches.

    photo = make_synthetic_photo(size=96)            # the synthetic FLAME model by default
    photo.rgb          uint8 [H, W, 3]               the "photo" (head over a plain backdrop)
    photo.landmarks    float64 [68, 2]               true iBUG landmarks, pixels (centres at integers)
    photo.fit          FlameFit                       true params + camera (what fit-flame should find)
    photo.camera       Camera                         photo camera of the CANONICAL head (photo_camera(fit, root))
    photo.truth        BoundGaussians                 ground truth on the canonical mesh (photo.vertices, photo.faces)
    photo.mask         float32 [H, W, 1]              the truth's alpha (head region)
    photo.orbit(dyaw)  Camera                         novel view: the photo camera orbited by dyaw degrees about the head
    photo.true_view(c) (rgb [H, W, 3], alpha)         the truth seen by camera c (novel-view ground truth)

How it is made: the model's head with a seeded small expression, a slightly open jaw and a
global yaw (`yaw_deg`), is covered by flat Gaussians (four per triangle,
avatarcli.testing.synthetic_scene.ground_truth_gaussians) painted with the smooth procedural
texture of their canonical 3D position, and rendered with the torch rasterizer through a
pinhole camera in flame.npz's convention (viewmat diag(1, -1, -1, 1), focal `focal_factor` x
the image side, principal point at the centre; the head placed by `translation` so that it
fills `fill` of the frame). Landmarks are the model's own (avatarcli.flame.forward) projected
through the same camera, so a perfect landmark detector + FLAME fit would recover `fit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avatarcli.flame.artifact import FIT_VIEWMAT, FlameFit
from avatarcli.flame.forward import canonical_vertices, flame_forward, root_joint
from avatarcli.flame.model import FlameModel
from avatarcli.flame.params import FlameParams
from avatarcli.gaussians.binding import world_gaussians
from avatarcli.gaussians.model import BoundGaussians
from avatarcli.geometry import axis_angle_to_matrix
from avatarcli.render.api import render, to_uint8
from avatarcli.render.camera import Camera, orbit_camera, photo_camera
from avatarcli.testing.synthetic_flame import make_synthetic_flame
from avatarcli.testing.synthetic_scene import PHOTO_BACKGROUND, ground_truth_gaussians

__all__ = ["SyntheticPhoto", "make_synthetic_photo", "PHOTO_BACKGROUND"]


@dataclass
class SyntheticPhoto:
    rgb: np.ndarray  # [H, W, 3] uint8
    landmarks: np.ndarray  # [68, 2] float64 pixels
    fit: FlameFit  # the true parameters and camera
    camera: Camera  # the photo's camera for the canonical head
    truth: BoundGaussians  # ground truth, bound to (vertices, faces)
    vertices: Tensor  # [V, 3] canonical mesh (global pose and translation not applied)
    faces: Tensor  # [F, 3] long
    root_joint: Tensor  # [3]
    mask: Tensor  # [H, W, 1] float, the truth's alpha in the photo
    model: FlameModel
    background: tuple[float, float, float] = PHOTO_BACKGROUND

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])

    @property
    def image(self) -> Tensor:
        """The photo as float [H, W, 3] in [0, 1]."""
        return torch.from_numpy(self.rgb).float() / 255.0

    @property
    def center(self) -> Tensor:
        """Centre of the canonical head's bounding box [3]."""
        return 0.5 * (self.vertices.amin(0) + self.vertices.amax(0))

    def orbit(self, yaw_offset_deg: float, pitch_deg: float = 0.0, size: int | None = None) -> Camera:
        """The photo camera moved on its orbit about the head centre (canonical frame):
        `yaw_offset_deg` degrees of azimuth from the photo's viewpoint, same distance and fov."""
        cam = self.camera
        c = self.center
        d = cam.position - c
        dist = float(d.norm())
        yaw0 = math.degrees(math.atan2(float(d[0]), float(d[2])))
        fov = 2 * math.degrees(math.atan(0.5 * cam.height / float(cam.K[1, 1])))
        s = size or cam.width
        return orbit_camera(
            yaw0 + yaw_offset_deg, pitch_deg, distance=dist, target=tuple(c.tolist()), fov_deg=fov, width=s, height=s
        )

    def true_view(self, camera: Camera, background=None, backend: str = "torch") -> tuple[Tensor, Tensor]:
        """The truth seen by `camera`: rgb [H, W, 3] over `background` (default: the photo's), alpha [H, W, 1]."""
        bg = torch.tensor(self.background if background is None else background, dtype=torch.float32)
        with torch.no_grad():
            out = render(world_gaussians(self.truth, self.vertices, self.faces), camera, bg, backend=backend)
        return out.rgb.clamp(0, 1), out.alpha


def make_synthetic_photo(
    model=None,
    *,
    size: int | tuple[int, int] = 128,
    yaw_deg: float = 12.0,
    pitch_deg: float = 3.0,
    expr_scale: float = 1.0,
    jaw_open: float = 0.06,
    fill: float = 0.8,
    focal_factor: float = 1.2,
    seed: int = 0,
    background: tuple[float, float, float] = PHOTO_BACKGROUND,
) -> SyntheticPhoto:
    """Render a posed, textured FLAME head (see the module docstring).

    model: a FlameModel (default: avatarcli.testing.synthetic_flame.make_synthetic_flame()).
    size: side (square) or (H, W). yaw/pitch: the head's global rotation (degrees; positive yaw
    turns the face towards the subject's left, +x). expr_scale: std of the first 10 expression
    coefficients (seeded). jaw_open: jaw rotation (radians) about x."""
    if model is None:
        model = make_synthetic_flame()
    H, W = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    rng = np.random.default_rng(seed)
    expr = np.zeros(min(model.n_expr, 50))
    expr[: min(10, expr.size)] = rng.normal(0.0, expr_scale, min(10, expr.size))
    shape = np.zeros(min(model.n_shape, 100))
    shape[: min(10, shape.size)] = rng.normal(0.0, 1.0, min(10, shape.size))
    global_pose = np.array([math.radians(pitch_deg), math.radians(yaw_deg), 0.0])
    jaw = np.array([float(jaw_open), 0.0, 0.0])
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)[None]  # noqa: E731
    params = FlameParams(t(shape), t(expr), t(global_pose), t(np.zeros(3)), t(jaw), t(np.zeros(6)), t(np.zeros(3)))

    with torch.no_grad():
        verts = canonical_vertices(model, params)[0].float()  # [V, 3]
        J0 = root_joint(model, params.shape, params.expr)[0].float()  # [3]
    faces = model.faces.long()
    # place the head: posed = Rg (X - J0) + J0 + translation; its bbox centre goes to (0, 0, -dist)
    c = 0.5 * (verts.amin(0) + verts.amax(0))
    r = float((verts - c).norm(dim=-1).max())
    focal = focal_factor * max(H, W)
    dist = r / (fill * (0.5 * min(H, W) / focal))
    Rg = axis_angle_to_matrix(torch.as_tensor(global_pose, dtype=torch.float32))
    translation = torch.tensor([0.0, 0.0, -dist]) - (Rg @ (c - J0) + J0)
    params.translation = translation[None]
    K = np.array([[focal, 0.0, (W - 1) / 2.0], [0.0, focal, (H - 1) / 2.0], [0.0, 0.0, 1.0]])
    viewmat = FIT_VIEWMAT.astype(np.float64)

    with torch.no_grad():
        lmk3d = flame_forward(model, params).landmarks  # [1, 68, 3], world (translation applied)
    if lmk3d is None:
        raise ValueError("the FLAME model has no landmark embedding")
    xc = lmk3d[0].double().numpy() @ viewmat[:3, :3].T + viewmat[:3, 3]
    uvw = xc @ K.T
    landmarks = uvw[:, :2] / uvw[:, 2:3]  # [68, 2]

    fit = FlameFit(
        shape=shape.astype(np.float32), expr=expr.astype(np.float32), global_pose=global_pose.astype(np.float32),
        neck_pose=np.zeros(3, np.float32), jaw_pose=jaw.astype(np.float32), eyes_pose=np.zeros(6, np.float32),
        translation=translation.numpy().astype(np.float32), K=K.astype(np.float32), viewmat=viewmat.astype(np.float32),
        image_size=(H, W), landmark_error_px=np.zeros(68, np.float32), flame_model_sha256=str(model.sha256),
    )  # fmt: skip
    camera = photo_camera(fit, J0)
    truth = ground_truth_gaussians(verts, faces)
    bg = torch.tensor(background, dtype=torch.float32)
    with torch.no_grad():
        out = render(world_gaussians(truth, verts, faces), camera, bg, backend="torch")
    return SyntheticPhoto(
        rgb=to_uint8(out.rgb), landmarks=landmarks, fit=fit, camera=camera, truth=truth, vertices=verts, faces=faces,
        root_joint=J0, mask=out.alpha.detach().clone(), model=model, background=(float(background[0]), float(background[1]), float(background[2])),
    )  # fmt: skip
