"""Landmark embedding: where the 68 iBUG points sit on the FLAME mesh.

Each landmark is a triangle index plus barycentric coordinates. The 68 points
are 17 jaw-line (contour) points followed by 51 static points (eyebrows, nose,
eyes, mouth), the iBUG order. The contour either comes from a dynamic table
(79 yaw bins x 17 points, chosen per frame by the head's yaw) or, without one,
from the static `full` embedding.

Layouts read (see `embedding_from_mapping`):
  DECA `landmark_embedding.npy` (a pickled dict inside .npy): static_lmk_faces_idx [51],
    static_lmk_bary_coords [51,3], dynamic_lmk_faces_idx [79,17],
    dynamic_lmk_bary_coords [79,17,3], full_lmk_faces_idx [1,68], full_lmk_bary_coords [1,68,3]
    (in DECA's file the two dynamic_* entries are pickled torch tensors; the restricted
    unpickler in pickle_safe.py turns them into numpy arrays)
  FLAME_PyTorch `flame_static_embedding.pkl` (lmk_face_idx [51] uint32, lmk_b_coords [51,3]) and
    `flame_dynamic_embedding.npy` (lmk_face_idx [79,17], lmk_b_coords [79,17,3]; possibly
    stored as lists of 79 per-bin arrays, which np.asarray stacks)
Files are read by avatarcli.flame.loader; the synthetic test files by
avatarcli.testing.synthetic_flame.write_synthetic_flame follow these layouts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from avatarcli.errors import ArtifactError

N_CONTOUR = 17
N_STATIC = 51
N_LANDMARKS = 68
N_YAW_BINS = 79


@dataclass
class LandmarkEmbedding:
    """Triangle + barycentric embedding of the 68 iBUG landmarks."""

    static_faces: Tensor  # [51] long
    static_bary: Tensor  # [51, 3]
    full_faces: Tensor  # [68] long (17 contour, frontal, + the 51 static)
    full_bary: Tensor  # [68, 3]
    dynamic_faces: Tensor | None = None  # [79, 17] long, per yaw bin
    dynamic_bary: Tensor | None = None  # [79, 17, 3]

    @property
    def has_dynamic(self) -> bool:
        return self.dynamic_faces is not None

    def to(self, device=None, dtype=None) -> "LandmarkEmbedding":
        out: dict[str, Any] = {}  # field name -> moved tensor (None stays None)
        for f in fields(self):
            t = getattr(self, f.name)
            if t is None:
                out[f.name] = None
            elif t.is_floating_point():
                out[f.name] = t.to(device=device, dtype=dtype)
            else:
                out[f.name] = t.to(device=device)
        return LandmarkEmbedding(**out)

    def max_face(self) -> int:
        m = int(max(self.static_faces.max(), self.full_faces.max()))
        if self.dynamic_faces is not None:
            m = max(m, int(self.dynamic_faces.max()))
        return m


def _arr(path, d: Mapping, key: str, shape: tuple, kind: str) -> np.ndarray:
    if key not in d:
        raise ArtifactError(f"landmark embedding lacks key {key!r}", path=path)
    a = np.asarray(d[key])
    if a.dtype.kind not in kind:
        raise ArtifactError(
            f"key {key!r}: dtype {a.dtype}, expected {'integer' if 'i' in kind else 'float'}", path=path
        )
    if a.size != int(np.prod(shape)):
        raise ArtifactError(f"key {key!r}: shape {list(a.shape)}, expected {list(shape)}", path=path)
    a = a.reshape(shape)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ArtifactError(f"key {key!r}: contains NaN or inf", path=path)
    if a.dtype.kind in "iu" and (a < 0).any():
        raise ArtifactError(f"key {key!r}: negative face index", path=path)
    return a


def _t_long(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a).astype(np.int64))


def _t_float(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a).astype(np.float32))


def embedding_from_mapping(path: str | Path, d: Mapping, dynamic: Mapping | None = None) -> LandmarkEmbedding:
    """Build an embedding from a DECA dict, or a FLAME_PyTorch static dict (+ optional dynamic dict).

    `path` is used in error messages only."""
    if "static_lmk_faces_idx" in d:  # DECA
        sf = _arr(path, d, "static_lmk_faces_idx", (N_STATIC,), "iu")
        sb = _arr(path, d, "static_lmk_bary_coords", (N_STATIC, 3), "f")
        df = db = ff = fb = None
        if "dynamic_lmk_faces_idx" in d:
            df = _arr(path, d, "dynamic_lmk_faces_idx", (N_YAW_BINS, N_CONTOUR), "iu")
            db = _arr(path, d, "dynamic_lmk_bary_coords", (N_YAW_BINS, N_CONTOUR, 3), "f")
        if "full_lmk_faces_idx" in d:
            ff = _arr(path, d, "full_lmk_faces_idx", (N_LANDMARKS,), "iu")
            fb = _arr(path, d, "full_lmk_bary_coords", (N_LANDMARKS, 3), "f")
    elif "lmk_face_idx" in d:  # FLAME_PyTorch static (+ dynamic from a second file)
        sf = _arr(path, d, "lmk_face_idx", (N_STATIC,), "iu")
        sb = _arr(path, d, "lmk_b_coords", (N_STATIC, 3), "f")
        df = db = ff = fb = None
        if dynamic is not None:
            df = _arr(path, dynamic, "lmk_face_idx", (N_YAW_BINS, N_CONTOUR), "iu")
            db = _arr(path, dynamic, "lmk_b_coords", (N_YAW_BINS, N_CONTOUR, 3), "f")
    else:
        keys = sorted(map(str, d.keys()))[:8]
        raise ArtifactError(f"not a FLAME landmark embedding (keys {keys})", path=path)

    if ff is None or fb is None:
        if df is None or db is None:
            raise ArtifactError(
                "landmark embedding has no jaw-line contour (neither a dynamic table nor full_lmk_*)", path=path
            )
        ff = np.concatenate([df[0], sf])  # frontal contour bin + static
        fb = np.concatenate([db[0], sb])
    return LandmarkEmbedding(
        static_faces=_t_long(sf),
        static_bary=_t_float(sb),
        full_faces=_t_long(ff),
        full_bary=_t_float(fb),
        dynamic_faces=None if df is None else _t_long(df),
        dynamic_bary=None if db is None else _t_float(db),
    )
