"""The FLAME fit artifact `flame.npz`: one fitted photo's FLAME parameters, camera and fit quality.

Camera model (what `flame.npz` stores)
--------------------------------------
A FLAME point X (metres, y up, +z out of the face, global rotation applied,
translation NOT yet applied) projects to pixels as

    x_cam = viewmat[:3, :3] @ (X + translation) + viewmat[:3, 3]     (OpenCV: x right, y down, z forward)
    u, v  = (K @ x_cam)[:2] / (K @ x_cam)[2]                          (pixel centres at integers)

The fit keeps `viewmat` FIXED at diag(1, -1, -1, 1) (FIT_VIEWMAT): the camera sits at the FLAME
origin looking down -z, so `translation` carries the head's position and depth. K is square-pixel
pinhole with the principal point at the image centre; only its focal length is fitted
(avatarcli.flame.fit). The photo's camera for the canonical head: avatarcli.render.camera.photo_camera.

Poor fits: `fit_quality` flags a fit whose mean landmark error exceeds 5 px or 2 % of the face size
(the diagonal of the landmarks' bounding box), whichever is larger.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avatarcli.errors import ArtifactError, InputError
from avatarcli.flame.forward import canonical_vertices, root_joint
from avatarcli.flame.model import FlameModel
from avatarcli.flame.params import FlameParams
from avatarcli.io.npz import Field, read_npz, write_npz

FIT_FORMAT = "avatarcli.flame_fit"
FIT_VERSION = 1
N_LANDMARKS = 68

#: The fixed world(FLAME)-to-camera matrix of every fit: y and z flipped (OpenCV axes).
FIT_VIEWMAT = np.diag([1.0, -1.0, -1.0, 1.0]).astype(np.float32)


@dataclass
class FlameFit:
    """One fitted photo: FLAME parameters (1-D, batch-free), camera and fit quality."""

    shape: np.ndarray  # [n_shape]
    expr: np.ndarray  # [n_expr]
    global_pose: np.ndarray  # [3] axis-angle, about the root joint
    neck_pose: np.ndarray  # [3]
    jaw_pose: np.ndarray  # [3]
    eyes_pose: np.ndarray  # [6]
    translation: np.ndarray  # [3]
    K: np.ndarray  # [3, 3] pixels, centres at integers
    viewmat: np.ndarray  # [4, 4] world-to-camera (OpenCV)
    image_size: tuple[int, int]  # (H, W)
    landmark_error_px: np.ndarray  # [68] distance of each projected landmark to its target
    flame_model_sha256: str

    def params(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> FlameParams:
        """FlameParams with batch 1."""
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device).reshape(1, -1)  # noqa: E731
        return FlameParams(
            t(self.shape),
            t(self.expr),
            t(self.global_pose),
            t(self.neck_pose),
            t(self.jaw_pose),
            t(self.eyes_pose),
            t(self.translation),
        )

    def canonical_params(
        self, model: FlameModel, device: torch.device | str | None = None, dtype: torch.dtype | None = None, path=None
    ) -> FlameParams:
        """The canonical parameters (global pose, translation zero; flame.forward.canonical_params)."""
        return canonical_params(model, self, device, dtype, path)

    def canonical(self, model: FlameModel) -> tuple[Tensor, Tensor, Tensor]:
        """The canonical head: vertices [V, 3], faces [F, 3], root joint [3] (flame.forward.canonical_head)."""
        return canonical_head(model, self)

    @property
    def mean_error_px(self) -> float:
        return float(np.mean(self.landmark_error_px))

    def project(self, X: np.ndarray | Tensor) -> np.ndarray:
        """FLAME points [..., 3] (translation not applied) -> pixels [..., 2] (numpy, float64)."""
        X = np.asarray(X.detach().cpu() if isinstance(X, Tensor) else X, dtype=np.float64)
        xc = (X + self.translation) @ self.viewmat[:3, :3].T.astype(np.float64) + self.viewmat[:3, 3]
        uvw = xc @ np.asarray(self.K, np.float64).T
        return uvw[..., :2] / uvw[..., 2:3]


def _fit_fields() -> list[Field]:
    return [
        Field("shape", ("S",)),
        Field("expr", ("E",)),
        Field("global_pose", (3,)),
        Field("neck_pose", (3,)),
        Field("jaw_pose", (3,)),
        Field("eyes_pose", (6,)),
        Field("translation", (3,)),
        Field("K", (3, 3)),
        Field("viewmat", (4, 4)),
        Field("image_size", (2,), kind="iu"),
        Field("landmark_error_px", (N_LANDMARKS,)),
        Field("flame_model_sha256", None, kind="US"),
    ]


def write_flame_fit(path: str | Path, fit: FlameFit) -> None:
    """Atomically write `fit` as flame.npz (float32 arrays, int64 image_size, str hash)."""
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    write_npz(
        path,
        FIT_FORMAT,
        FIT_VERSION,
        {
            "shape": f32(fit.shape).reshape(-1),
            "expr": f32(fit.expr).reshape(-1),
            "global_pose": f32(fit.global_pose).reshape(3),
            "neck_pose": f32(fit.neck_pose).reshape(3),
            "jaw_pose": f32(fit.jaw_pose).reshape(3),
            "eyes_pose": f32(fit.eyes_pose).reshape(6),
            "translation": f32(fit.translation).reshape(3),
            "K": f32(fit.K).reshape(3, 3),
            "viewmat": f32(fit.viewmat).reshape(4, 4),
            "image_size": np.asarray(fit.image_size, dtype=np.int64).reshape(2),
            "landmark_error_px": f32(fit.landmark_error_px).reshape(N_LANDMARKS),
            "flame_model_sha256": np.asarray(str(fit.flame_model_sha256)),
        },
    )


def read_flame_fit(path: str | Path) -> FlameFit:
    """Read and validate flame.npz (format, version, shapes, finiteness); ArtifactError if bad."""
    a = read_npz(path, FIT_FORMAT, FIT_VERSION, _fit_fields())
    H, W = (int(v) for v in a["image_size"])
    if H <= 0 or W <= 0:
        raise ArtifactError(f"field 'image_size': {[H, W]} is not a positive size", path=path)
    if abs(float(a["K"][2, 2]) - 1.0) > 1e-6 or float(a["K"][0, 0]) <= 0 or float(a["K"][1, 1]) <= 0:
        raise ArtifactError("field 'K': not a pinhole intrinsics matrix (K[2,2] = 1, positive focal)", path=path)
    return FlameFit(
        shape=a["shape"], expr=a["expr"], global_pose=a["global_pose"], neck_pose=a["neck_pose"], jaw_pose=a["jaw_pose"],
        eyes_pose=a["eyes_pose"], translation=a["translation"], K=a["K"], viewmat=a["viewmat"], image_size=(H, W),
        landmark_error_px=a["landmark_error_px"], flame_model_sha256=str(a["flame_model_sha256"]),
    )  # fmt: skip


def fit_quality(
    fit: FlameFit, landmarks_px: np.ndarray, max_px: float = 5.0, max_frac: float = 0.02
) -> tuple[float, bool]:
    """(mean error px, poor?) — poor when the mean error exceeds max(max_px, max_frac x face diagonal)."""
    lm = np.asarray(landmarks_px, np.float64)  # [68, 2]
    diag = float(np.linalg.norm(lm.max(0) - lm.min(0)))
    err = fit.mean_error_px
    return err, err > max(max_px, max_frac * diag)


def canonical_params(
    model: FlameModel,
    fit: FlameFit,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    path=None,
) -> FlameParams:
    """The one canonical parameter set of a fit, batch 1: its shape, expression and joint poses with
    global pose and translation zero, on `device` / `dtype` (default: the model's). An InputError
    (naming `path`) when the fit has more shape or expression coefficients than the model."""
    params = fit.params(
        device=model.device if device is None else device, dtype=model.dtype if dtype is None else dtype
    )
    if params.shape.shape[1] > model.n_shape or params.expr.shape[1] > model.n_expr:
        raise InputError(
            f"the fit has {params.shape.shape[1]} shape / {params.expr.shape[1]} expression coefficients, "
            f"the FLAME model only {model.n_shape} / {model.n_expr}",
            path=path,
        )
    return params.canonical()


def canonical_head(
    model: FlameModel, fit: FlameFit, offsets: np.ndarray | Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The one canonical head of a fit (canonical_params): vertices [V, 3] float32 (+ the head's mesh
    `offsets` [V, 3], avatarcli.flame.deform), faces [F, 3] long, root joint [3]."""
    params = canonical_params(model, fit)
    with torch.no_grad():
        v = canonical_vertices(model, params)[0].float()
        j0 = root_joint(model, params.shape, params.expr)[0].float()
    if offsets is not None:
        v = v + mesh_offsets(offsets, v)
    return v, model.faces.long(), j0


def mesh_offsets(offsets: np.ndarray | Tensor, verts: Tensor, path: str | Path | None = None) -> Tensor:
    """A head's mesh offsets as a tensor like the canonical vertices `verts` [V, 3]; an InputError
    (naming `path`) when they are not [V, 3] (a head made with another FLAME model)."""
    if tuple(offsets.shape) != tuple(verts.shape):
        raise InputError(
            f"the head's mesh offsets are {list(offsets.shape)}, the FLAME model has {verts.shape[0]} vertices "
            "(wrong model?)",
            path=path,
        )
    return torch.as_tensor(np.asarray(offsets), dtype=verts.dtype, device=verts.device)


__all__ = ["FIT_FORMAT", "canonical_head", "canonical_params", "FIT_VERSION", "FIT_VIEWMAT", "FlameFit", "N_LANDMARKS", "fit_quality", "mesh_offsets", "read_flame_fit",
           "write_flame_fit"]  # fmt: skip
