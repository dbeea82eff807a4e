"""68 landmarks for every frame of a clip: detected (one face followed through the clip) or read from
files, with lost frames filled by linear interpolation in time and reported.

Following the face: frame 0 takes the largest face (or `face_index`); every later frame takes the
detection that overlaps the last tracked box best (IoU >= MIN_IOU), or, after a fast move, one whose
centre lies within half a box side of it at a similar size. A face anywhere else (a second person) is
never taken: that frame is lost instead, and interpolated. The landmark network (FAN) runs on the
tracked crops in batches of `batch` frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from avatarcli.errors import InputError, NoFaceError
from avatarcli.io.images import LoadedImage
from avatarcli.io.npz import load_npz_bytes
from avatarcli.landmarks.artifact import N_LANDMARKS
from avatarcli.landmarks.detect import (
    crop_image,
    crop_transform,
    decode_heatmaps,
    detect_faces,
    heatmap_to_image,
    heatmaps_batch,
)
from avatarcli.landmarks.points import SUFFIXES, read_points
from avatarcli.track.frames import natural_key

MIN_IOU = 0.3
MAX_JUMP = 0.5  # centre distance, x box side
SIZE_RATIO = 1.6  # largest accepted change of box side between tracked frames


@dataclass
class ClipLandmarks:
    points: np.ndarray  # [T, 68, 2] float64, original pixels (lost frames interpolated)
    scores: np.ndarray  # [T, 68] float64 (0 on lost frames)
    lost: np.ndarray  # [T] bool: no landmarks of the tracked face in this frame
    source: str  # "detector NAME" or the landmark file

    @property
    def n_frames(self) -> int:
        return self.points.shape[0]

    def lost_frames(self) -> list[int]:
        return [int(i) for i in np.nonzero(self.lost)[0]]


def fill_lost(points: np.ndarray, scores: np.ndarray, lost: np.ndarray, path=None) -> ClipLandmarks:
    """Interpolate the lost frames' points linearly in time (held at the clip's ends); scores 0 there."""
    pts = np.array(points, np.float64).reshape(-1, N_LANDMARKS, 2)
    sc = np.array(scores, np.float64).reshape(-1, N_LANDMARKS)
    lost = np.asarray(lost, bool).reshape(-1)
    good = np.nonzero(~lost)[0]
    if good.size == 0:
        raise NoFaceError("no face found in any frame of the clip", path=path)
    T = pts.shape[0]
    flat = pts.reshape(T, -1)
    for k in range(flat.shape[1]):
        flat[lost, k] = np.interp(np.nonzero(lost)[0], good, flat[good, k])
    sc[lost] = 0.0
    return ClipLandmarks(flat.reshape(T, N_LANDMARKS, 2), sc, lost, str(path) if path is not None else "")


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [N, 4] with one box b [4]."""
    ix = np.clip(np.minimum(a[:, 2], b[2]) - np.maximum(a[:, 0], b[0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[3]) - np.maximum(a[:, 1], b[1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def follow(boxes: np.ndarray, last: np.ndarray | None, face_index: int | None = None) -> int | None:
    """Index of the detection (boxes [N, >=4], largest first) that continues the track, or None.

    `last` [4]: the last tracked box (None: the track starts here, take face_index or the largest)."""
    if len(boxes) == 0:
        return None
    if last is None:
        k = 0 if face_index is None else int(face_index)
        return k if k < len(boxes) else None
    iou = _iou(boxes[:, :4], last)
    k = int(np.argmax(iou))
    if iou[k] >= MIN_IOU:
        return k
    side = lambda b: np.sqrt(np.maximum((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]), 1e-9))  # noqa: E731
    centre = lambda b: np.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2], -1)  # noqa: E731
    d = np.linalg.norm(centre(boxes[:, :4]) - centre(last), axis=-1) / side(last)
    ratio = side(boxes[:, :4]) / side(last)
    ok = (d <= MAX_JUMP) & (ratio <= SIZE_RATIO) & (ratio >= 1 / SIZE_RATIO)
    return int(np.argmin(np.where(ok, d, np.inf))) if ok.any() else None


def detect_clip(
    frames, detector, *, face_index: int | None = None, batch: int = 16, on_frame: Callable[[], None] | None = None
) -> ClipLandmarks:
    """Detect, follow and landmark the face through `frames` (a FrameSource) with a LandmarkDetector
    (FAN, batched) or a DlibDetector (its own boxes and points, frame by frame)."""
    T = frames.n_frames
    pts = np.full((T, N_LANDMARKS, 2), np.nan)
    sc = np.zeros((T, N_LANDMARKS))
    lost = np.ones(T, bool)
    last = None
    pending: list[tuple[int, np.ndarray, np.ndarray, float]] = []

    def flush() -> None:
        if not pending:
            return
        hms = heatmaps_batch(detector, np.stack([c for _, c, _, _ in pending]))  # [B, 68, 64, 64]
        for (t, _, centre, side), hm in zip(pending, hms):
            p_hm, s = decode_heatmaps(hm)
            pts[t], sc[t], lost[t] = heatmap_to_image(p_hm, centre, side), np.nan_to_num(s), False
        pending.clear()

    own_points = hasattr(detector, "points")  # dlib (avatarcli.landmarks.dlib_detector): boxes and points itself
    for t, rgb in enumerate(frames.frames()):
        image = LoadedImage(rgb, Path(frames.path), "", (rgb.shape[0], rgb.shape[1]), 1.0)
        boxes = detector.faces(image) if own_points else detect_faces(image, detector)
        k = follow(boxes, last, face_index)
        if k is not None:
            last = boxes[k, :4]
            if own_points:
                p, s = detector.points(image, last)
                pts[t], sc[t], lost[t] = p, s, False
            else:
                centre, side = crop_transform(last)
                pending.append((t, crop_image(rgb, centre, side), centre, side))
        if len(pending) >= batch:
            flush()
        if on_frame is not None:
            on_frame()
    flush()
    if T == 0:
        raise InputError("the clip has no frames", path=frames.path)
    return fill_lost(pts, sc, lost, frames.path) if (~lost).any() else _no_face(frames.path)


def _no_face(path) -> ClipLandmarks:
    raise NoFaceError(
        "no face found in any frame (give `landmarks` with your own points per frame)",
        path=path,
        mentions=("landmarks",),
    )


def read_clip_landmarks(path: str | Path, n_frames: int) -> ClipLandmarks:
    """Landmarks of every frame from a file or folder:
    .npy [T, 68, 2|3]; .npz with `landmarks` [T, 68, 2] (+ optional `scores` [T, 68]); a row of NaN
    marks a lost frame. A folder: one point file per frame (any format `avatar landmarks --landmarks`
    reads), in natural name order, as many as there are frames."""
    path = Path(path)
    if not path.exists():
        raise InputError("landmark file not found", path=path)
    if path.is_dir():
        files = sorted((q for q in path.iterdir() if q.suffix.lower() in SUFFIXES and q.is_file()), key=natural_key)
        if len(files) != n_frames:
            raise InputError(f"holds {len(files)} landmark files, the clip has {n_frames} frames", path=path)
        arr = np.stack([read_points(q) for q in files])
        sc = np.ones(arr.shape[:2])
    else:
        arr, sc = _read_array(path)
    if arr.shape[0] != n_frames:
        raise InputError(f"landmarks for {arr.shape[0]} frames, the clip has {n_frames}", path=path)
    lost = ~np.isfinite(arr).all(axis=(1, 2))
    return fill_lost(np.nan_to_num(arr), np.where(lost[:, None], 0.0, sc), lost, path)


def _read_array(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix.lower() == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"not a readable .npy array ({type(e).__name__})", path=path) from None
        s = None
    elif path.suffix.lower() == ".npz":
        z = load_npz_bytes(path)
        key = next((k for k in ("landmarks", "lmk", "points", "pts") if k in z), None)
        if key is None:
            raise InputError(f"no 'landmarks' array in it (keys: {sorted(z)})", path=path)
        a, s = z[key], z.get("scores")
    else:
        raise InputError("clip landmarks: expected .npy / .npz [T, 68, 2] or a folder of per-frame files", path=path)
    a = np.asarray(a)
    if a.dtype.kind not in "fiu" or a.ndim != 3 or a.shape[1] != N_LANDMARKS or a.shape[2] not in (2, 3):
        raise InputError(f"expected landmarks [T, 68, 2], got an array of shape {list(a.shape)}", path=path)
    a = a[..., :2].astype(np.float64)
    if s is None:
        s = np.ones(a.shape[:2])
    s = np.asarray(s, np.float64)
    if s.shape != a.shape[:2] or not np.isfinite(s).all():
        raise InputError(f"'scores' must be finite [T, 68], got shape {list(s.shape)}", path=path)
    return a, s
