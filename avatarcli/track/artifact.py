"""The tracked clip as an expression file (format avatarcli.expression), what `animate --expr` plays.

Keys: expr [T, E], jaw_pose, neck_pose, global_pose, translation [T, 3], eyes_pose [T, 6], fps, and
for the record (animate ignores them): shape [S] (the tracked person), focal_length, image_size,
landmark_error_px [T] (mean per frame), lost [T] (frames whose landmarks were interpolated),
gaze_confidence [T] (the iris confidence eyes_pose was fitted from; absent without a gaze fit) and
translation_ref [3]. `translation` is RELATIVE to translation_ref, the clip's median head position in
the video camera: the head moves about its own place, so any head plays the clip where it stands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatarcli.animate.expressions import EXPRESSION_FORMAT
from avatarcli.io.npz import write_npz

TRACK_VERSION = 1


def track_arrays(fit, fps: float, lost: np.ndarray) -> dict[str, np.ndarray]:
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    ref = np.median(np.asarray(fit.translation, np.float64), axis=0)  # [3]
    out: dict[str, np.ndarray] = {
        "expr": f32(fit.expr),
        "jaw_pose": f32(fit.jaw_pose),
        "neck_pose": f32(fit.neck_pose),
        "eyes_pose": f32(fit.eyes_pose),
        "global_pose": f32(fit.global_pose),
        "translation": f32(np.asarray(fit.translation) - ref),
        "fps": np.asarray(float(fps), np.float32),
        "shape": f32(fit.shape),
        "focal_length": np.asarray(fit.focal_px, np.float32),
        "image_size": np.asarray(fit.image_size, np.int64),
        "landmark_error_px": f32(np.asarray(fit.landmark_error_px).mean(-1)),
        "lost": np.asarray(lost, bool),
        "translation_ref": f32(ref),
    }
    if getattr(fit, "gaze_confidence", None) is not None:
        out["gaze_confidence"] = f32(fit.gaze_confidence)
    return out


def write_track(path: str | Path, fit, fps: float, lost: np.ndarray) -> None:
    """Atomically write the tracked clip (see the module doc)."""
    write_npz(path, EXPRESSION_FORMAT, TRACK_VERSION, track_arrays(fit, fps, lost))
