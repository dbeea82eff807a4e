"""The frame sequence: clips resampled to the output fps, single-frame targets
blended neutral -> target -> neutral, everything concatenated in order."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avatarcli.animate.expressions import PARAMS, ExpressionClip, pad_expr
from avatarcli.errors import InputError

DEFAULT_FPS = 30.0
DEFAULT_DURATION = 2.0
POSE_KEYS = ("jaw_pose", "neck_pose", "eyes_pose", "global_pose", "translation")


@dataclass
class FrameSequence:
    """T frames of FLAME parameters (float32 numpy), without identity (shape)."""

    expr: np.ndarray  # [T, n_expr] (padded to the model's count)
    jaw_pose: np.ndarray  # [T, 3]
    neck_pose: np.ndarray  # [T, 3]
    eyes_pose: np.ndarray  # [T, 6]
    global_pose: np.ndarray  # [T, 3]
    translation: np.ndarray  # [T, 3]
    fps: float
    clip: np.ndarray  # [T] int, index of the clip each frame comes from

    @property
    def n_frames(self) -> int:
        return self.jaw_pose.shape[0]

    def slice(self, start: int, stop: int) -> "FrameSequence":
        sl = slice(start, stop)
        return FrameSequence(
            **{k: getattr(self, k)[sl] for k in ("expr", *POSE_KEYS)}, fps=self.fps, clip=self.clip[sl]
        )


def smoothstep(u: np.ndarray) -> np.ndarray:
    """3u^2 - 2u^3 on [0, 1]: zero slope at both ends."""
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def there_and_back_weights(n_frames: int) -> np.ndarray:
    """[n] blend weights 0 -> 1 -> 0, eased: smoothstep of a triangle; first and last are 0."""
    if n_frames < 3:
        raise InputError(
            f"a single-frame target needs at least 3 frames, got {n_frames} (raise `duration` or `fps`)",
            mentions=("duration", "fps"),
        )
    s = np.arange(n_frames, dtype=np.float64) / (n_frames - 1)  # [n] in [0, 1]
    return smoothstep(1.0 - np.abs(2.0 * s - 1.0)).astype(np.float32)


def _resample(a: np.ndarray, fps_in: float, fps_out: float) -> np.ndarray:
    """[T, d] sampled at fps_in -> [T', d] at fps_out, linear in time, same duration."""
    T = a.shape[0]
    if T == 1 or math.isclose(fps_in, fps_out):
        return a
    n_out = int(math.floor((T - 1) * fps_out / fps_in + 1e-6)) + 1
    t = np.arange(n_out) * (fps_in / fps_out)  # [T'] in input-frame units
    i0 = np.clip(np.floor(t).astype(int), 0, T - 1)
    i1 = np.clip(i0 + 1, 0, T - 1)
    w = (t - i0)[:, None].astype(np.float32)
    return (1.0 - w) * a[i0] + w * a[i1]


def clip_frames(
    clip: ExpressionClip, n_expr: int, fps: float, duration: float = DEFAULT_DURATION
) -> dict[str, np.ndarray]:
    """One clip as frames at `fps`: a target (one frame) is blended in and out over
    `duration` seconds; a sequence plays at its own speed (resampled when its fps differs)."""
    expr = pad_expr(clip.expr, n_expr, clip.path)  # [T, n_expr]
    params = {"expr": expr, **{k: getattr(clip, k) for k in POSE_KEYS}}
    if clip.is_target:
        w = there_and_back_weights(max(3, int(round(duration * fps))))[:, None]  # [n, 1]
        # axis-angle * w is the exact slerp from identity to the target rotation
        return {k: (w * v).astype(np.float32) for k, v in params.items()}
    fps_in = clip.fps or fps
    return {k: _resample(v, fps_in, fps).astype(np.float32) for k, v in params.items()}


def build_sequence(
    clips: list[ExpressionClip],
    n_expr: int,
    fps: float | None = None,
    duration: float = DEFAULT_DURATION,
) -> FrameSequence:
    """Clips played one after another. fps: --fps, else the first clip's fps, else 30."""
    if not clips:
        raise InputError("no expression clips to play")
    if fps is None:
        fps = next((c.fps for c in clips if c.fps is not None), DEFAULT_FPS)
    if not (fps > 0 and math.isfinite(fps)):
        raise InputError(f"fps {fps}: must be a positive number", setting="fps")
    if not (duration > 0 and math.isfinite(duration)):
        raise InputError(f"duration {duration}: must be a positive number of seconds", setting="duration")
    parts = [clip_frames(c, n_expr, fps, duration) for c in clips]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in PARAMS}
    clip_idx = np.concatenate([np.full(p["jaw_pose"].shape[0], i) for i, p in enumerate(parts)])
    return FrameSequence(**cat, fps=float(fps), clip=clip_idx)
