"""Iris centres in the image, per frame, from the pixels inside the 68-point eye contours.

The 68 iBUG landmarks have no pupil, so gaze needs the image. Per eye (points 36-41 / 42-47):

1. The eye is resampled into a canonical crop (cv2.warpAffine): the corner-to-corner line horizontal,
   CANON_WIDTH px between the corners, so eyes of any size and head roll look alike.
2. Darkness d = how much darker a pixel is than the eye's bright part (the sclera), in [0, 1], from
   the 5th / 95th brightness percentiles inside the lid polygon (eroded by a pixel: lashes and lid
   edges are dark too).
3. The iris is the disc of the expected radius (IRIS_RATIOS x the eye width; the human iris is
   ~11.7 mm across an eye of ~30 mm, relatively larger when the head turns and the eye's width is
   foreshortened) that best explains d inside the lids, in the least-squares
   sense (see _fit_disc: one filter2D per radius, a parabola through the peak for sub-pixel).
   (OpenCV's HoughCircles was tried first: on eye crops 20-50 px wide, with the lids cutting the
   iris, it returned no circle or circles on the lid edge in most synthetic frames; a matched disc on
   the darkness map has no edge threshold to tune and degrades gracefully.)
4. Confidence in [0, 1]: the contrast between the disc and the rest of the eye (a dark iris on a
   white sclera: ~0.6; skin only: ~0), times the eye's openness, from the eye aspect ratio
   (|p1 - p5| + |p2 - p4|) / (2 |p0 - p3|): open eyes ~0.25-0.3, a blink < 0.12 gives 0. Eyes
   narrower than MIN_EYE_PX get 0 (too few pixels to see an iris).

Limits: the lids hide the top and bottom of the iris, so the vertical centre is that of the visible
part (biased towards the middle of the opening when looking far up or down); glasses' glints and
heavy mascara lower the confidence rather than move the centre much.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np

CANON_WIDTH = 40.0  # px between the eye corners in the canonical crop
CROP = (64, 32)  # canonical crop (W, H)
# iris radius / eye width tried: anatomy gives ~0.2 frontally, but the corner-to-corner width shrinks as the
# head turns (cos yaw) and the iris's height does not, so the range reaches 0.29 (a yaw of ~45 degrees);
# bench/bench_gaze.py, true-head gaze error over (0.19, 0.21, 0.23): 4.41 -> 3.11 deg (seed 0), 3.38 ->
# 2.62 (seed 1), 7.64 -> 6.74 (seed 2, --amp 25)
IRIS_RATIOS = (0.17, 0.19, 0.21, 0.23, 0.25, 0.27, 0.29)
MIN_EYE_PX = 8.0
EYE_FIRST = (36, 42)  # iBUG first point of the subject's right eye, left eye


@dataclass
class ClipPupils:
    xy: np.ndarray  # [T, 2, 2] iris centres, pixels; eye 0 = subject's right (36-41), 1 = left (42-47)
    confidence: np.ndarray  # [T, 2] in [0, 1]; 0 = not seen (closed, too small, lost frame)


def eye_openness(eye: np.ndarray) -> float:
    """Eye aspect ratio of the 6 contour points [6, 2] (corner, top, top, corner, bottom, bottom)."""
    w = float(np.linalg.norm(eye[3] - eye[0]))
    h = float(np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4]))
    return h / (2.0 * w) if w > 0 else 0.0


def _canonical(eye: np.ndarray) -> np.ndarray:
    """The 2x3 affine map image -> canonical crop for the eye contour [6, 2]."""
    a, b = eye[0], eye[3]
    if b[0] < a[0]:  # corner order differs between the eyes: always left-to-right in the image
        a, b = b, a
    u = (b - a) / max(float(np.linalg.norm(b - a)), 1e-9)
    s = CANON_WIDTH / max(float(np.linalg.norm(b - a)), 1e-9)
    R = s * np.array([[u[0], u[1]], [-u[1], u[0]]])
    c = 0.5 * (a + b)
    t = np.array([CROP[0] / 2.0, CROP[1] / 2.0]) - R @ c
    return np.concatenate([R, t[:, None]], 1)


def _disc(r: float) -> np.ndarray:
    """An anti-aliased disc of radius r (px), [2k+1, 2k+1] float32."""
    k = int(np.ceil(r)) + 1
    y, x = np.mgrid[-k : k + 1, -k : k + 1]
    return np.clip(r + 0.5 - np.sqrt(x**2 + y**2), 0.0, 1.0).astype(np.float32)


def _fit_disc(d: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre [2] (x, y, sub-pixel) and radius of the disc D best matching the darkness d [H, W] inside
    the visible mask: the least-squares fit min sum_mask (d - D)^2, i.e. max sum_mask D (2 d - 1), which
    one filter2D evaluates at every centre (per radius). Unlike the centroid of the dark pixels it is not
    pulled towards the middle of the opening when the lids cut the iris: the template is cut the same way."""
    g = np.where(mask, 2.0 * d - 1.0, 0.0).astype(np.float32)
    best = (-np.inf, np.zeros(2), 0.0)
    for ratio in IRIS_RATIOS:
        r = ratio * CANON_WIDTH
        score = cv2.filter2D(g, -1, _disc(r), borderType=cv2.BORDER_CONSTANT)
        score[~mask] = -np.inf
        cy, cx = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[cy, cx] > best[0]:
            best = (float(score[cy, cx]), _subpixel(score, int(cx), int(cy)), r)
    return best[1], best[2]


def _subpixel(score: np.ndarray, cx: int, cy: int) -> np.ndarray:
    """Peak of the parabola through the 3 scores about (cx, cy), along x and along y."""
    c = np.array([cx, cy], np.float64)
    H, W = score.shape
    for k, (n, m) in enumerate(((cx, W), (cy, H))):
        if 0 < n < m - 1:
            a, b, e = (score[cy, cx - 1], score[cy, cx], score[cy, cx + 1]) if k == 0 else (
                score[cy - 1, cx], score[cy, cx], score[cy + 1, cx])  # fmt: skip
            den = a - 2 * b + e
            if np.isfinite(den) and den < 0:
                c[k] += float(np.clip(0.5 * (a - e) / den, -0.5, 0.5))
    return c


def locate_iris(gray: np.ndarray, eye: np.ndarray) -> tuple[np.ndarray, float]:
    """Iris centre [2] (pixels) and confidence of one eye: gray float32 [H, W] in [0, 1], the eye's 6
    contour points [6, 2]. See the module doc."""
    width = float(np.linalg.norm(eye[3] - eye[0]))
    openness = float(np.clip((eye_openness(eye) - 0.12) / 0.08, 0.0, 1.0))
    centre = eye.mean(0)
    if width < MIN_EYE_PX or openness <= 0:
        return centre, 0.0
    M = _canonical(eye)
    src = gray
    if CANON_WIDTH / width < 0.7:  # shrinking a large eye: blur first (no aliasing)
        src = cv2.GaussianBlur(gray, (0, 0), 0.4 * width / CANON_WIDTH)
    crop = cv2.warpAffine(src, M, CROP, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    poly = eye @ M[:, :2].T + M[:, 2]
    mask = np.zeros((CROP[1], CROP[0]), np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 4).astype(np.int32)], 1, shift=2)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)
    if mask.sum() < 12:
        return centre, 0.0
    lo, hi = np.percentile(crop[mask], [5, 95])
    d = np.where(mask, np.clip((hi - crop) / max(hi - lo, 0.05), 0.0, 1.0), 0.0).astype(np.float32)
    c, r = _fit_disc(d, mask)
    yy, xx = np.mgrid[0 : CROP[1], 0 : CROP[0]]
    inside = ((xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= r * r) & mask
    outside = mask & ~inside
    contrast = float(d[inside].mean() - d[outside].mean()) if inside.any() and outside.any() else 0.0
    conf = float(np.clip((contrast - 0.15) / 0.3, 0.0, 1.0)) * openness
    Minv = cv2.invertAffineTransform(M)
    return Minv[:, :2] @ c + Minv[:, 2], conf


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def locate_clip_pupils(frames: Iterable[np.ndarray], points: np.ndarray, lost: np.ndarray | None = None) -> ClipPupils:
    """Iris centres of both eyes in every frame: frames yield RGB uint8 [H, W, 3], points [T, 68, 2] (the
    clip's landmarks), lost [T] (frames without landmarks get confidence 0)."""
    T = points.shape[0]
    xy = np.zeros((T, 2, 2))
    conf = np.zeros((T, 2))
    for t, rgb in enumerate(frames):
        if t >= T:
            break
        gray = _gray(rgb)
        for e, first in enumerate(EYE_FIRST):
            xy[t, e], conf[t, e] = locate_iris(gray, points[t, first : first + 6])
        if lost is not None and lost[t]:
            conf[t] = 0.0
    return ClipPupils(xy, conf)
