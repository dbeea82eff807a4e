"""Expression files: FLAME parameters per frame, loaded, validated and normalised.

Accepted keys (docs/formats.md), each [T, d] or, for a single frame, [d]:
    expr [T, n]            expression coefficients (fewer than the model has: zero-padded)
    jaw_pose [T, 3]        axis-angle
    neck_pose [T, 3]
    eyes_pose [T, 6]       left eye, right eye
    global_pose [T, 3]     axis-angle about the root joint (alias: `rotation`)
    translation [T, 3]     metres, added after the rotation
    fps []                 frames per second of the clip (optional)
A key that is absent means zeros (the FLAME neutral) for every frame.

The keys of common FLAME trackers are accepted as they are: GaussianAvatars'
`flame_param.npz` and VHAP's `tracked_flame_params*.npz` / per-frame
`flame_param/00000.npz` use `rotation` for the global pose and carry extras
that do not drive a re-posed head (`shape`, `static_offset`, `dynamic_offset`,
`timestep_id`, ...): those are ignored and named in `ExpressionClip.ignored`.
A `flame.npz` fit (format avatarcli.flame_fit) can be used as a target pose: its
expression, jaw, neck and eyes are used; its global pose and translation (the
photo's head placement) and camera are ignored.

Pickles are never loaded (np.load(allow_pickle=False)).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avatarcli.errors import ArtifactError, InputError
from avatarcli.flame.artifact import FIT_FORMAT
from avatarcli.io.npz import load_npz_bytes

# Parameter name -> (width, accepted key names in priority order).
PARAMS: dict[str, tuple[int | None, tuple[str, ...]]] = {
    "expr": (None, ("expr", "expression")),
    "jaw_pose": (3, ("jaw_pose",)),
    "neck_pose": (3, ("neck_pose",)),
    "eyes_pose": (6, ("eyes_pose", "eye_pose")),
    "global_pose": (3, ("global_pose", "rotation")),
    "translation": (3, ("translation",)),
}

# Keys written by FLAME trackers (GaussianAvatars, VHAP) that do not drive a
# re-posed avatarcli head: identity, per-vertex offsets, texture, lighting, camera, bookkeeping.
TRACKER_EXTRAS = frozenset(
    {
        "shape",
        "static_offset",
        "dynamic_offset",
        "timestep_id",
        "n_processed_frames",
        "focal_length",
        "tex",
        "tex_extra",
        "lights",
        "image_size",
        # written by `avatar track` for the record (avatarcli.track.artifact)
        "landmark_error_px",
        "lost",
        "translation_ref",
        "gaze_confidence",
    }
)
# Keys of an avatarcli flame.npz fit that are not a target pose.
FIT_EXTRAS = frozenset(
    {"shape", "global_pose", "translation", "K", "viewmat", "image_size", "landmark_error_px", "flame_model_sha256"}
)
EXPRESSION_FORMAT = "avatarcli.expression"
NPZ_SUFFIX = ".npz"


@dataclass
class ExpressionClip:
    """One expression file as T frames of FLAME parameters (float32 numpy)."""

    path: Path
    expr: np.ndarray  # [T, n] (n may be 0)
    jaw_pose: np.ndarray  # [T, 3]
    neck_pose: np.ndarray  # [T, 3]
    eyes_pose: np.ndarray  # [T, 6]
    global_pose: np.ndarray  # [T, 3]
    translation: np.ndarray  # [T, 3]
    fps: float | None = None
    ignored: tuple[str, ...] = ()  # keys present in the file and deliberately not used
    present: tuple[str, ...] = field(default=())  # parameter names the file set

    @property
    def n_frames(self) -> int:
        return self.jaw_pose.shape[0]

    @property
    def is_target(self) -> bool:
        """A single frame: a pose to blend to and back."""
        return self.n_frames == 1

    @property
    def name(self) -> str:
        return self.path.stem


def _text(a: np.ndarray) -> str:
    """A scalar or first element as text; "" for an empty array (then no format matches)."""
    a = np.asarray(a)
    if a.size == 0:
        return ""
    return str(a.item() if a.ndim == 0 else a.reshape(-1)[0])


def _param_frames(raw: np.ndarray, key: str, width: int | None, path: Path) -> np.ndarray:
    """One parameter's frames as float32 [T, width] ([width] is one frame; width None: any)."""
    a = np.asarray(raw)
    if a.dtype.kind not in "fiu":
        raise ArtifactError(f"key {key!r}: dtype {a.dtype} is not numeric", path=path)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or (width is not None and a.shape[1] != width):
        want = f"[T, {width}] or [{width}]" if width is not None else "[T, n] or [n]"
        raise ArtifactError(f"key {key!r}: shape {list(np.shape(raw))}, expected {want}", path=path)
    if a.shape[0] == 0:
        raise ArtifactError(f"key {key!r}: has no frames", path=path)
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ArtifactError(f"key {key!r}: contains NaN or infinity", path=path)
    return a


def clip_from_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> ExpressionClip:
    """Validate and normalise the arrays of one expression file (see the module doc)."""
    path = Path(path)
    arrays = dict(arrays)
    ignored: list[str] = []
    fmt = None
    if "format" in arrays:
        fmt = _text(np.asarray(arrays.pop("format")))
        arrays.pop("version", None)
        ignored += ["format", "version"]
        if fmt not in (EXPRESSION_FORMAT, FIT_FORMAT):
            raise ArtifactError(
                f"format is {fmt!r}: not an expression file ({EXPRESSION_FORMAT} or FLAME parameters per frame)",
                path=path,
            )
    extras = FIT_EXTRAS | TRACKER_EXTRAS if fmt == FIT_FORMAT else TRACKER_EXTRAS
    if fmt == FIT_FORMAT:
        for k in ("global_pose", "translation"):  # the photo's head placement, not an expression
            if k in arrays:
                arrays.pop(k)
                ignored.append(k)

    fps = None
    if "fps" in arrays:
        f = np.asarray(arrays.pop("fps"))
        if (
            f.size != 1
            or f.dtype.kind not in "fiu"
            or not np.isfinite(f.astype(np.float64)).all()
            or float(f.reshape(-1)[0]) <= 0
        ):
            raise ArtifactError(f"key 'fps': expected one positive number, got {f.tolist()!r}", path=path)
        fps = float(f.reshape(-1)[0])

    found: dict[str, tuple[str, np.ndarray]] = {}
    for name, (_, keys) in PARAMS.items():
        hits = [k for k in keys if k in arrays]
        if len(hits) > 1:
            raise ArtifactError(f"keys {hits} both give {name}: keep one", path=path)
        if hits:
            found[name] = (hits[0], arrays.pop(hits[0]))
    for k in sorted(arrays):
        if k in extras:
            ignored.append(k)
    unknown = sorted(k for k in arrays if k not in extras)
    if unknown:
        known = sorted({k for _, ks in PARAMS.values() for k in ks} | {"fps"})
        raise ArtifactError(f"unknown key(s) {unknown}; an expression file holds {known}", path=path)
    if not found:
        raise ArtifactError(
            "no FLAME parameters in it (expected at least one of expr, jaw_pose, neck_pose, eyes_pose, global_pose/rotation, translation)",
            path=path,
        )

    frames: dict[str, int] = {}
    out: dict[str, np.ndarray] = {}
    for name, (key, a) in found.items():
        out[name] = _param_frames(a, key, PARAMS[name][0], path)
        frames[key] = out[name].shape[0]
    counts = set(frames.values())
    if len(counts) > 1:
        detail = ", ".join(f"{k}: {t}" for k, t in frames.items())
        raise ArtifactError(f"keys disagree on the number of frames ({detail})", path=path)
    T = counts.pop()
    for name, (width, _) in PARAMS.items():
        if name not in out:
            out[name] = np.zeros((T, width or 0), np.float32)
    return ExpressionClip(path=path, fps=fps, ignored=tuple(ignored), present=tuple(found), **out)


def load_expression(path: str | Path) -> ExpressionClip:
    """Read one expression .npz (never unpickles); one-line ArtifactError naming file and key."""
    path = Path(path)
    arrays = dict(load_npz_bytes(path))
    return clip_from_arrays(path, arrays)


def _is_frame_folder(files: list[Path]) -> bool:
    """VHAP's export writes one npz per frame named by number (flame_param/00000.npz ...)."""
    return len(files) > 1 and all(re.fullmatch(r"\d+", p.stem) for p in files)


def concat_clips(path: Path, clips: list[ExpressionClip]) -> ExpressionClip:
    """Frames of several clips as one clip (the per-frame-file layout)."""
    widths = {c.expr.shape[1] for c in clips}
    n = max(widths)
    pad = lambda e: np.pad(e, ((0, 0), (0, n - e.shape[1])))  # noqa: E731
    fps = {c.fps for c in clips if c.fps is not None}
    if len(fps) > 1:
        raise ArtifactError(f"per-frame files disagree on fps ({sorted(fps)})", path=path)
    return ExpressionClip(
        path=path,
        expr=np.concatenate([pad(c.expr) for c in clips]),
        jaw_pose=np.concatenate([c.jaw_pose for c in clips]),
        neck_pose=np.concatenate([c.neck_pose for c in clips]),
        eyes_pose=np.concatenate([c.eyes_pose for c in clips]),
        global_pose=np.concatenate([c.global_pose for c in clips]),
        translation=np.concatenate([c.translation for c in clips]),
        fps=fps.pop() if fps else None,
        ignored=tuple(sorted({k for c in clips for k in c.ignored})),
        present=tuple(sorted({k for c in clips for k in c.present})),
    )


def load_expressions(paths: Sequence[str | Path]) -> list[ExpressionClip]:
    """Files and folders, in the order given, as clips to play one after another.

    A folder contributes its *.npz files sorted by name, each a clip; a folder whose
    files are all named by number (VHAP's flame_param/00000.npz ...) is one clip,
    one frame per file."""
    clips: list[ExpressionClip] = []
    if not paths:
        raise InputError("no expression file given (`expr` FILE.npz or a folder of them)", mentions=("expr",))
    for p in map(Path, paths):
        if not p.exists():
            raise InputError("expression file not found", path=p)
        if p.is_dir():
            files = sorted(q for q in p.iterdir() if q.suffix.lower() == NPZ_SUFFIX and q.is_file())
            if not files:
                raise InputError("folder holds no .npz expression files", path=p)
            loaded = [load_expression(q) for q in files]
            if _is_frame_folder(files):
                clips.append(concat_clips(p, loaded))
            else:
                clips.extend(loaded)
        else:
            if p.suffix.lower() != NPZ_SUFFIX:
                raise InputError(
                    f"{p.suffix or 'a file without a suffix'} is not an expression file: expected an .npz of FLAME "
                    "parameters per frame (an avatarcli expression file, a GaussianAvatars / VHAP flame_param.npz, "
                    "or a flame.npz fit), or a folder of them",
                    path=p,
                )
            clips.append(load_expression(p))
    return clips


def pad_expr(expr: np.ndarray, n_model: int, path: str | Path | None = None) -> np.ndarray:
    """[T, n] -> [T, n_model], zero-padding; more coefficients than the model has is an error."""
    n = expr.shape[1]
    if n > n_model:
        raise ArtifactError(
            f"key 'expr': {n} expression coefficients, but the FLAME model has only {n_model}", path=path
        )
    return np.pad(expr, ((0, 0), (0, n_model - n)))
