"""The track stage: a video (or a folder of frames) -> an expression file that `animate --expr` plays.

    result = track_video("me.mp4", "me.npz", flame="~/flame")          # FAN + S3FD landmarks
    result = track_video("frames/", "me.npz", landmarks="lm.npy")      # your own points per frame

Everything that can be checked is checked before the slow work (input, output path, landmark file,
FLAME); the output is written atomically, once, at the end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from avatarcli.errors import InputError
from avatarcli.flame.loader import load_flame
from avatarcli.flame.model import FlameModel
from avatarcli.io.atomic import check_output_path
from avatarcli.landmarks.choose import Detector, load_detector
from avatarcli.progress import warn
from avatarcli.track.artifact import write_track
from avatarcli.track.fit import TrackConfig, TrackFit, track_flame
from avatarcli.track.frames import open_frames
from avatarcli.track.gaze import has_eyeballs, track_gaze
from avatarcli.track.landmarks import detect_clip, read_clip_landmarks
from avatarcli.track.pupils import locate_clip_pupils


@dataclass
class TrackResult:
    output: Path
    n_frames: int
    fps: float
    fit: TrackFit
    lost: list[int]  # frames whose landmarks were interpolated
    landmark_source: str
    times: dict[str, float] = field(default_factory=dict)  # seconds: read, landmarks, fit, gaze, write (CPU: cpu_*)

    def summary(self) -> dict:
        err = self.fit.landmark_error_px.mean(-1)  # [T]
        return {
            "output": str(self.output),
            "frames": self.n_frames,
            "fps": self.fps,
            "lost_frames": self.lost,
            "landmarks": self.landmark_source,
            "focal_px": round(self.fit.focal_px, 2),
            "mean_landmark_error_px": round(float(err.mean()), 3),
            "max_landmark_error_px": round(float(err.max()), 3),
            "landmark_error_px": [round(float(e), 3) for e in err],
            "gaze_frames": _gaze_frames(self.fit),
            "times_s": {k: round(v, 3) for k, v in self.times.items()},
        }


def _gaze_frames(fit: TrackFit) -> int | None:
    """Frames whose gaze was seen (an iris of confidence >= 0.5); None: gaze not fitted."""
    c = fit.gaze_confidence
    return None if c is None else int((np.asarray(c) >= 0.5).sum())


class _Clock:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, name: str, fn):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        self.times[name] = time.perf_counter() - w
        self.times[f"cpu_{name}"] = time.process_time() - c
        return out


def _gaze(model, fit: TrackFit, frames, clip, rate: float) -> None:
    """eyes_pose of `fit` from the irises in the frames (a second pass over them; see avatarcli.track.gaze)."""
    if not has_eyeballs(model):  # a FLAME-like model without eye vertices: nothing to turn
        warn("the FLAME model has no vertices skinned to its eye joints: gaze not tracked (eyes_pose 0)")
        return
    pupils = locate_clip_pupils(frames.frames(), clip.points, clip.lost)
    gaze = track_gaze(model, fit, pupils, rate)
    fit.eyes_pose = gaze.eyes_pose
    fit.gaze_confidence = gaze.confidence.max(-1).astype(np.float32)


def track_video(
    source: str | Path,
    output: str | Path,
    *,
    flame: FlameModel | str | Path | None = None,
    landmarks: str | Path | None = None,
    detector: Detector | str | None = None,
    fps: float | None = None,
    face_index: int | None = None,
    config: TrackConfig | None = None,
    device: str = "auto",
    progress: Callable[[str, int, int], None] | None = None,
) -> TrackResult:
    """Track the face of `source` and write the expression file `output` (see the module doc).

    flame: a FlameModel or a path (None: $AVATAR_FLAME). detector: auto | fan | dlib or a loaded detector
    (None: auto), loaded here unless `landmarks` are given. fps: overrides the video's (needed for a folder: 30).
    progress: a callable (stage, done, total) for progress bars."""
    clock = _Clock()
    out = check_output_path(Path(output))
    if out.suffix.lower() != ".npz":
        raise InputError("the output is an expression file: give a name ending in .npz", path=out)
    if landmarks is not None and (face_index is not None or detector is not None):
        raise InputError("the landmark file gives the points: it cannot be combined with a face index or a detector")
    frames = clock("read", lambda: open_frames(source))
    rate = float(fps or frames.fps or 30.0)
    if not (rate > 0 and np.isfinite(rate)):
        raise InputError(f"fps {fps}: must be a positive number", setting="fps")
    clip = read_clip_landmarks(landmarks, frames.n_frames) if landmarks is not None else None
    model = flame if isinstance(flame, FlameModel) else load_flame(flame)
    tick = progress or (lambda stage, done, total: None)
    if clip is None:
        if detector is None or isinstance(detector, str):
            detector = load_detector(detector or "auto", device)
        done = [0]

        def on_frame() -> None:
            done[0] += 1
            tick("landmarks", done[0], frames.n_frames)

        clip = clock("landmarks", lambda: detect_clip(frames, detector, face_index=face_index, on_frame=on_frame))
    cfg = config or TrackConfig()
    it = [0]

    def on_iter() -> None:
        it[0] += 1
        tick("fit", it[0], cfg.iters)

    fit = clock("fit", lambda: track_flame(model, clip.points, clip.scores, frames.size, rate, cfg, on_iter))
    if cfg.gaze:
        clock("gaze", lambda: _gaze(model, fit, frames, clip, rate))
    clock("write", lambda: write_track(out, fit, rate, clip.lost))
    return TrackResult(out, frames.n_frames, rate, fit, clip.lost_frames(), clip.source, clock.times)
