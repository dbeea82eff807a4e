"""The FLAME model as torch tensors, and `load_flame` (safe: never runs pickled code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from avatarcli.errors import ArtifactError, InputError
from avatarcli.flame.embedding import LandmarkEmbedding

N_JOINTS = 5  # root (global), neck, jaw, left eye, right eye
N_SHAPE_RELEASE = 300  # FLAME 2020 / 2023: shapedirs [V, 3, 400] = 300 identity + 100 expression


@dataclass
class FlameModel:
    """FLAME arrays in the layout the forward uses.

    `path` is the model file that was loaded (for a folder: the file picked);
    `sha256` is that file's hash; `release` is "FLAME 2020", "FLAME 2023" or "unknown".
    """

    v_template: Tensor  # [V, 3]
    shapedirs: Tensor  # [V, 3, S]
    exprdirs: Tensor  # [V, 3, E]
    posedirs: Tensor  # [P, V*3] (P = 9 * (J - 1) = 36)
    J_regressor: Tensor  # [J, V] dense
    parents: Tensor  # [J] long, parents[0] = -1
    lbs_weights: Tensor  # [V, J]
    faces: Tensor  # [F, 3] long
    landmarks: LandmarkEmbedding | None = None
    sha256: str = ""
    path: Path | None = None
    release: str = "unknown"
    embedding_path: Path | None = None
    # derived (joint regressor applied to the blend shapes; used by the forward)
    J_template: Tensor = field(init=False, repr=False)  # [J, 3]
    J_shapedirs: Tensor = field(init=False, repr=False)  # [J, 3, S]
    J_exprdirs: Tensor = field(init=False, repr=False)  # [J, 3, E]

    def __post_init__(self) -> None:
        self.J_template = self.J_regressor @ self.v_template
        self.J_shapedirs = torch.einsum("jv,vcs->jcs", self.J_regressor, self.shapedirs)
        self.J_exprdirs = torch.einsum("jv,vcs->jcs", self.J_regressor, self.exprdirs)
        self.parents_list = [int(p) for p in self.parents.tolist()]
        self._lmk_subset: object | None = None  # flame.forward's landmark-vertex cache, built on first use

    @property
    def n_shape(self) -> int:
        return self.shapedirs.shape[-1]

    @property
    def n_expr(self) -> int:
        return self.exprdirs.shape[-1]

    @property
    def n_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def n_joints(self) -> int:
        return self.J_regressor.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.v_template.dtype

    @property
    def device(self) -> torch.device:
        return self.v_template.device

    def to(self, device=None, dtype=None) -> "FlameModel":
        """A copy on `device` with float arrays cast to `dtype` (integer arrays keep theirs)."""
        f = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        return FlameModel(
            v_template=f(self.v_template),
            shapedirs=f(self.shapedirs),
            exprdirs=f(self.exprdirs),
            posedirs=f(self.posedirs),
            J_regressor=f(self.J_regressor),
            parents=self.parents.to(device=device),
            lbs_weights=f(self.lbs_weights),
            faces=self.faces.to(device=device),
            landmarks=None if self.landmarks is None else self.landmarks.to(device=device, dtype=dtype),
            sha256=self.sha256,
            path=self.path,
            release=self.release,
            embedding_path=self.embedding_path,
        )


def _dense(a) -> np.ndarray:
    if hasattr(a, "toarray"):  # scipy sparse
        return np.asarray(a.toarray())
    return np.asarray(a)


def _check(path, arrays: Mapping, key: str, ndim: int, kind: str = "f") -> np.ndarray:
    if key not in arrays:
        raise ArtifactError(f"not a FLAME model: key {key!r} is missing", path=path)
    try:
        a = _dense(arrays[key])
    except Exception as e:  # noqa: BLE001 - anything odd inside a model file is a bad file
        raise ArtifactError(f"key {key!r}: not an array ({type(e).__name__})", path=path) from None
    if a.dtype.kind not in ("fiu" if kind == "f" else "iu"):
        raise ArtifactError(f"key {key!r}: dtype {a.dtype} is not numeric", path=path)
    if a.ndim != ndim:
        raise ArtifactError(f"key {key!r}: shape {list(a.shape)}, expected {ndim} dimensions", path=path)
    if kind == "f" and not np.isfinite(a).all():
        raise ArtifactError(f"key {key!r}: contains NaN or inf", path=path)
    return a


def flame_from_arrays(
    path: str | Path,
    arrays: Mapping,
    *,
    landmarks: LandmarkEmbedding | None = None,
    sha256: str = "",
    release: str = "unknown",
    embedding_path: Path | None = None,
) -> FlameModel:
    """Validate the arrays of a FLAME file (real key names: v_template, shapedirs [V,3,S+E],
    posedirs [V,3,P], J_regressor [J,V] dense or sparse, kintree_table [2,J], weights [V,J],
    f [F,3]) and build a FlameModel. Errors name `path` and the key."""
    v = _check(path, arrays, "v_template", 2)
    V = v.shape[0]
    if v.shape[1] != 3 or V < 4:
        raise ArtifactError(f"key 'v_template': shape {list(v.shape)}, expected [V, 3]", path=path)
    sd = _check(path, arrays, "shapedirs", 3)
    if sd.shape[:2] != (V, 3) or sd.shape[2] < 1:
        raise ArtifactError(f"key 'shapedirs': shape {list(sd.shape)}, expected [{V}, 3, S]", path=path)
    pd = _check(path, arrays, "posedirs", 3)
    if pd.shape[:2] != (V, 3):
        raise ArtifactError(f"key 'posedirs': shape {list(pd.shape)}, expected [{V}, 3, P]", path=path)
    Jr = _check(path, arrays, "J_regressor", 2)
    J = Jr.shape[0]
    if Jr.shape != (N_JOINTS, V):
        raise ArtifactError(f"key 'J_regressor': shape {list(Jr.shape)}, expected [{N_JOINTS}, {V}]", path=path)
    if pd.shape[2] != 9 * (J - 1):
        raise ArtifactError(f"key 'posedirs': shape {list(pd.shape)}, expected [{V}, 3, {9 * (J - 1)}]", path=path)
    kt = _check(path, arrays, "kintree_table", 2, kind="i")
    if kt.shape != (2, J):
        raise ArtifactError(f"key 'kintree_table': shape {list(kt.shape)}, expected [2, {J}]", path=path)
    parents = kt[0].astype(np.int64)
    parents[0] = -1  # the root's parent is stored as a huge unsigned value
    if any(not (0 <= parents[j] < j) for j in range(1, J)):
        raise ArtifactError(
            f"key 'kintree_table': parents {parents.tolist()} are not a tree rooted at joint 0", path=path
        )
    w = _check(path, arrays, "weights", 2)
    if w.shape != (V, J):
        raise ArtifactError(f"key 'weights': shape {list(w.shape)}, expected [{V}, {J}]", path=path)
    f = _check(path, arrays, "f", 2, kind="i")
    if f.shape[1] != 3 or f.shape[0] < 1:
        raise ArtifactError(f"key 'f': shape {list(f.shape)}, expected [F, 3]", path=path)
    if f.min() < 0 or f.max() >= V:
        raise ArtifactError(f"key 'f': vertex index out of range [0, {V})", path=path)
    if landmarks is not None and landmarks.max_face() >= f.shape[0]:
        raise ArtifactError(
            f"landmark embedding refers to triangle {landmarks.max_face()}, the model has {f.shape[0]}",
            path=embedding_path or path,
        )
    n_shape = min(N_SHAPE_RELEASE, sd.shape[2])
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return FlameModel(
        v_template=t(v),
        shapedirs=t(sd[..., :n_shape]),
        exprdirs=t(sd[..., n_shape:]),
        posedirs=t(pd.reshape(V * 3, -1).T),
        J_regressor=t(Jr),
        parents=torch.from_numpy(parents),
        lbs_weights=t(w),
        faces=torch.from_numpy(f.astype(np.int64)),
        landmarks=landmarks,
        sha256=sha256,
        path=None if str(path).startswith("<") else Path(path),
        release=release,
        embedding_path=embedding_path,
    )


def check_model_hash(
    recorded: str | None, model: FlameModel, path: str | Path | None = None, force: bool = False
) -> bool:
    """Was the artifact at `path` (made with the FLAME model of sha256 `recorded`; empty: unknown)
    made with `model`? True when it was (or nothing is recorded). A mismatch is an InputError naming
    both hashes, unless `force`: then False (the caller warns and goes on)."""
    want = str(recorded or "")
    got = str(getattr(model, "sha256", "") or "")
    if not want or want == got:
        return True
    if force:
        return False
    raise InputError(
        f"was made with FLAME model sha256 {want[:12]}…, but {getattr(model, 'path', 'the given model')} "
        f"has sha256 {got[:12]}… (pass the same FLAME model, or `force` to go on anyway)",
        path=path,
        mentions=("force",),
    )
