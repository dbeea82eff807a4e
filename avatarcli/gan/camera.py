"""Cameras in the GAN's convention, and the FLAME fit's photo camera mapped into it.

GAN convention (EG3D's, which PanoHead keeps): c [N, 25] = cam2world [4, 4] (OpenCV axes: x
right, y down, z forward) flattened, then intrinsics [3, 3] normalised by the image size (a
pixel centre (i + 0.5) / R); the head at the origin of a world with +y up and the face towards
+z, inside the cube of side box_warp; trained cameras sit at RADIUS from the pivot with focal
FOCAL, principal point at the image centre.

FLAME -> GAN world: the same axes (FLAME is y up, +z out of the face), X_gan = s (X_flame - o).
  o  the FLAME point put at the GAN origin (the pivot): the centre of the canonical head's
     vertex bounding box (`head_pivot`)
  s  chosen per photo so that the camera's distance / focal ratio is the trained RADIUS / FOCAL:
     then the head has the GAN's own size whenever the crop gives it the trained pixel size.
The photo camera (avatarcli.render.camera.photo_camera, canonical head) composed with the crop
(a similarity of the image: scale and translation, any in-plane rotation becoming a roll of the
camera) gives the exact GAN camera: a FLAME point lands on the same crop pixel either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avatarcli.diffusion.crop import CropAlign
from avatarcli.render.camera import Camera

FOCAL = 4.2647  # EG3D / PanoHead: 18.837 mm lens on a 1-unit sensor, normalised
RADIUS = 2.7


def gan_camera(
    yaw: float, pitch: float, radius: float = RADIUS, focal: float = FOCAL, pivot=(0.0, 0.0, 0.0)
) -> torch.Tensor:  # [1, 25]
    """Camera on a sphere around `pivot`: yaw turns about world +y (positive: towards +x),
    pitch raises it towards +y; looking at the pivot, image-down = world -y at pitch 0."""
    p = torch.tensor(pivot, dtype=torch.float64)
    origin = p + radius * torch.tensor(
        [math.cos(pitch) * math.sin(yaw), math.sin(pitch), math.cos(pitch) * math.cos(yaw)], dtype=torch.float64
    )
    fwd = torch.nn.functional.normalize(p - origin, dim=0)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    right = torch.nn.functional.normalize(torch.linalg.cross(fwd, up), dim=0)
    down = torch.linalg.cross(fwd, right)
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, fwd, origin
    intr = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=torch.float64)
    return torch.cat([pose.flatten(), intr.flatten()])[None].float()


@dataclass
class GanView:
    c: Tensor  # [1, 25] the GAN camera of the aligned crop
    scale: float  # s: GAN units per FLAME metre
    pivot: Tensor  # [3] o: the FLAME point at the GAN origin

    def to_gan(self, X: Tensor) -> Tensor:
        """FLAME points [..., 3] (canonical head) -> GAN world [..., 3]."""
        return (X.double() - self.pivot.double()) * self.scale

    def to_flame(self, Y: Tensor) -> Tensor:
        """GAN world points [..., 3] -> FLAME (canonical head) [..., 3]."""
        return Y.double() / self.scale + self.pivot.double()


def head_pivot(vertices: Tensor | np.ndarray) -> Tensor:  # [3]
    """The centre of the canonical head's vertex bounding box [V, 3] -> [3]."""
    v = torch.as_tensor(np.asarray(vertices.detach().cpu() if isinstance(vertices, Tensor) else vertices))
    v = v.double().reshape(-1, 3)
    return (v.min(0).values + v.max(0).values) / 2


def project_gan(c: Tensor, Y: Tensor) -> Tensor:
    """GAN world points [M, 3] -> normalised image coordinates [M, 2] through c [1, 25]."""
    pose = c[0, :16].reshape(4, 4).double()
    K = c[0, 16:].reshape(3, 3).double()
    x = (Y.double() - pose[:3, 3]) @ pose[:3, :3]  # world -> camera (R^T (Y - t))
    uvw = x @ K.T
    return uvw[:, :2] / uvw[:, 2:3]


def _crop_camera(cam: Camera, align: CropAlign) -> tuple[Tensor, Tensor, Tensor]:
    """The canonical-head camera seen through the crop: rotation R [3, 3] and translation T [3]
    (canonical FLAME -> crop camera, the crop's in-plane rotation as a roll) and the crop's
    normalised intrinsics Kn [3, 3]."""
    A = torch.as_tensor(align.affine, dtype=torch.float64)  # [2, 3] photo px -> crop px
    sc = float(torch.linalg.det(A[:, :2]).abs().sqrt())
    K = cam.K.double()
    if abs(float(K[0, 0] - K[1, 1])) > 1e-6 * float(K[0, 0]) or abs(float(K[0, 1])) > 1e-9:
        raise ValueError("the GAN camera needs square pixels without skew (as the FLAME fit's K)")
    roll = torch.eye(3, dtype=torch.float64)
    roll[:2, :2] = A[:, :2] / sc  # in-plane rotation of the crop (identity for gan_align)
    p = A[:, :2] @ K[:2, 2] + A[:, 2]  # principal point in the crop, pixels
    f, size = float(K[0, 0]) * sc / align.size, align.size
    Kn = torch.tensor([[f, 0, (p[0] + 0.5) / size], [0, f, (p[1] + 0.5) / size], [0, 0, 1]], dtype=torch.float64)
    V = cam.viewmat.double()
    return roll @ V[:3, :3], roll @ V[:3, 3], Kn


def _gan_c(R: Tensor, T: Tensor, Kn: Tensor, pivot: Tensor, scale: float) -> Tensor:  # [1, 25]
    """x_cam = R X + T for FLAME X = Y / s + o  ->  x_cam ~ R Y + s (R o + T): the GAN cam2world."""
    o = pivot.double().reshape(3)
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = R.T
    pose[:3, 3] = -R.T @ (scale * (R @ o + T))
    return torch.cat([pose.flatten(), Kn.flatten()])[None].float()


def gan_view(cam: Camera, align: CropAlign, pivot: Tensor, radius: float = RADIUS, focal: float = FOCAL) -> GanView:
    """The photo camera of the canonical head (`photo_camera(fit, root_joint)`) seen through the
    aligned crop, as a GAN camera; `pivot` [3] is the FLAME point put at the GAN origin and the
    scale makes the camera's distance / normalised focal equal radius / focal."""
    R, T, Kn = _crop_camera(cam, align)
    o = pivot.double().reshape(3)
    s = radius * float(Kn[0, 0]) / focal / float(torch.linalg.norm(R @ o + T))
    return GanView(c=_gan_c(R, T, Kn, o, s), scale=s, pivot=o.float())


def square_cover(cam: Camera, size: int) -> CropAlign:
    """The `size` x `size` square centred on the camera's image and covering it (side = its long
    side), as a crop of that image: renders in the square map back with avatarcli.gan.align.uncrop."""
    side = max(cam.width, cam.height)
    k = size / side
    x0, y0 = (cam.width - side) / 2, (cam.height - side) / 2  # the square's corner, image px edges
    A = np.array([[k, 0.0, (0.5 - x0) * k - 0.5], [0.0, k, (0.5 - y0) * k - 0.5]])  # pixel centres at integers
    return CropAlign(affine=A, size=int(size), box=np.array([x0, y0, x0 + side, y0 + side]))


def camera_to_gan(cam: Camera, view: GanView, size: int) -> tuple[Tensor, CropAlign]:
    """Any canonical-head Camera (e.g. a denoise round's novel view) in the GAN world fixed by
    `view` (its pivot and scale): the GAN camera c [1, 25] of the square covering the image,
    and that square (render at `size`, then `uncrop(render, square, (H, W))`)."""
    sq = square_cover(cam, size)
    R, T, Kn = _crop_camera(cam, sq)
    return _gan_c(R, T, Kn, view.pivot, view.scale), sq
