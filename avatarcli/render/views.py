"""Views of a Gaussian PLY: framing from the Gaussians' extent, up axes, turntables,
the photo's camera, backgrounds. Used by `avatar render` and `avatar animate`.

Framing. The scene's centre and radius come from the Gaussians themselves (no
metadata needed): the 1st..99th percentile box of the positions of the Gaussians
with opacity >= 0.05 (so that a few far floaters of a captured scene do not
shrink the subject), centre = the box's middle, radius = the 99th percentile of the
distances from the centre (so that every view direction frames the subject).
The default distance puts a sphere of 1.15 x radius inside the field of view.

Up axis. `--up auto` is +y for avatarcli heads (FLAME space: y up, face towards
+z) and -y for any other 3DGS PLY: scenes made by the original 3DGS code from
COLMAP keep the capture cameras' OpenCV axes (y down, z forward). Yaw 0 looks at
the scene from its "front": from +z for +y up (the head's face), from -z for
-y up (the way the capture cameras looked), and likewise rotated for x/z up.
A file's recorded up axis (header comment `avatarcli-up AXIS`, which `avatar export`
writes into PLY exports of our heads) wins over both defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avatarcli.errors import InputError
from avatarcli.render.camera import Camera, orbit_camera, photo_camera, scaled_camera

UP_AXES = ("auto", "y", "-y", "z", "-z", "x", "-x")
NAMED_BACKGROUNDS = {
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "grey": (0.5, 0.5, 0.5),
    "gray": (0.5, 0.5, 0.5),
}
DEFAULT_FOV = 20.0
FRAME_MARGIN = 1.15
MIN_FRAMING_OPACITY = 0.05

# canonical view frame (y up, +z towards the default camera) -> world: columns are the world
# directions of the canonical x, y (up) and z (front). All proper rotations.
_UP_BASES = {
    "y": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    "-y": ((1, 0, 0), (0, -1, 0), (0, 0, -1)),  # 180 degrees about x
    "z": ((1, 0, 0), (0, 0, 1), (0, -1, 0)),  # +90 degrees about x
    "-z": ((1, 0, 0), (0, 0, -1), (0, 1, 0)),
    "x": ((0, -1, 0), (1, 0, 0), (0, 0, 1)),  # -90 degrees about z
    "-x": ((0, 1, 0), (-1, 0, 0), (0, 0, 1)),
}


def parse_background(text: str) -> tuple[float, float, float]:
    """'white', 'black', 'grey', '#rrggbb' or 'r,g,b' (0-1 floats or 0-255 ints) -> rgb in [0, 1]."""
    s = text.strip().lower()
    if s in NAMED_BACKGROUNDS:
        return NAMED_BACKGROUNDS[s]
    try:
        if s.startswith("#") and len(s) == 7:
            return tuple(int(s[i : i + 2], 16) / 255.0 for i in (1, 3, 5))  # type: ignore[return-value]
        vals = [float(v) for v in s.split(",")]
    except ValueError:
        vals = []
    if len(vals) == 3 and all(math.isfinite(v) and v >= 0 for v in vals):
        if max(vals) > 1.0:
            vals = [v / 255.0 for v in vals]
        if max(vals) <= 1.0:
            return tuple(vals)  # type: ignore[return-value]
    raise InputError(f"background {text!r}: expected white, black, grey, #rrggbb or r,g,b", setting="background")


def up_basis(up: str) -> Tensor:
    """[3, 3] rotation whose columns are the world directions of the view frame's x, up, front."""
    if up not in _UP_BASES:
        raise InputError(f"up {up!r}: expected one of {', '.join(UP_AXES)}", setting="up")
    return torch.tensor(_UP_BASES[up], dtype=torch.float64).T


def resolve_up(up: str, is_head: bool, hint: str | None = None) -> str:
    """auto -> the file's recorded up axis (`hint`), else 'y' for avatarcli heads, '-y' (OpenCV /
    COLMAP) for any other PLY."""
    if up == "auto":
        return hint or ("y" if is_head else "-y")
    if up not in UP_AXES:
        raise InputError(f"up {up!r}: expected one of {', '.join(UP_AXES)}", setting="up")
    return up


@dataclass
class Framing:
    center: Tensor  # [3] world
    radius: float  # robust bounding-sphere radius
    basis: Tensor  # [3, 3] view frame -> world (columns x, up, front)

    def distance(self, fov_deg: float = DEFAULT_FOV) -> float:
        """Camera distance at which the framing sphere (margin included) fills the field of view."""
        return FRAME_MARGIN * self.radius / math.tan(math.radians(fov_deg) / 2.0)


def frame_gaussians(means: Tensor, opacities: Tensor | None = None, up: str = "y") -> Framing:
    """Robust centre / radius of a cloud (see the module doc). means [N, 3], opacities [N]."""
    pts = means.detach().double().cpu()
    if opacities is not None:
        keep = opacities.detach().cpu() >= MIN_FRAMING_OPACITY
        if int(keep.sum()) >= 1:
            pts = pts[keep]
    robust = pts.shape[0] >= 20
    if robust:
        lo = torch.quantile(pts, 0.01, dim=0)
        hi = torch.quantile(pts, 0.99, dim=0)
    else:
        lo, hi = pts.min(0).values, pts.max(0).values
    center = (lo + hi) / 2
    dist = (pts - center).norm(dim=-1)  # [N]
    radius = float(torch.quantile(dist, 0.99) if robust else dist.max())
    if not radius > 0:  # a single point, or all on one spot
        radius = max(float(pts.abs().max()) * 1e-3, 1e-3)
    return Framing(center=center.float(), radius=radius, basis=up_basis(up))


def view_camera(
    framing: Framing,
    yaw_deg: float,
    pitch_deg: float = 0.0,
    *,
    width: int = 512,
    height: int = 512,
    distance: float | None = None,
    fov_deg: float = DEFAULT_FOV,
) -> Camera:
    """A camera on a sphere around the framing's centre, in its up frame (see orbit_camera)."""
    d = framing.distance(fov_deg) if distance is None else float(distance)
    c = orbit_camera(
        yaw_deg, pitch_deg, distance=d, target=(0.0, 0.0, 0.0), fov_deg=fov_deg, width=width, height=height
    )
    # world -> view frame: X_v = B^T (X_w - center)
    B = framing.basis.double()
    M = torch.eye(4, dtype=torch.float64)
    M[:3, :3] = B.T
    M[:3, 3] = -B.T @ framing.center.double()
    return Camera(c.K, (c.viewmat.double() @ M).float(), width, height)


def turntable_cameras(framing: Framing, n_frames: int, yaw0: float = 0.0, pitch: float = 0.0, **kw) -> list[Camera]:
    """n_frames cameras going once around (yaw0 + 360 i / n)."""
    return [view_camera(framing, yaw0 + 360.0 * i / n_frames, pitch, **kw) for i in range(n_frames)]


def fit_camera(fit, root_joint, size: int | None = None) -> Camera:
    """The photo's camera for a canonical head (photo_camera), optionally resized."""
    return scaled_camera(photo_camera(fit, np.asarray(root_joint, dtype=np.float64).reshape(3)), size)
