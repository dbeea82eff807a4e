"""landmarks.npz: 68 iBUG face landmarks of one photo (format avatarcli.landmarks, version 1).

Coordinates are pixels of the ORIGINAL photo as a viewer shows it (EXIF
orientation applied, before any downscaling), x right, y down, pixel centres
at integer coordinates; `image_size` is that photo's (H, W). A stage that works
on a downscaled copy maps points with LoadedImage.to_working / Landmarks.scaled.

Fields: image_size [2] int, landmarks [68, 2] float32, scores [68] float32
(detector confidence per point, higher is better; 1.0 for user-given points),
bbox [4] float32 x0 y0 x1 y1 (the face box the points were computed in),
image_sha256 (of the photo file's bytes), detector (free text, e.g.
"face-alignment 1.5 2DFAN4 + s3fd").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from avatarcli.errors import ArtifactError
from avatarcli.io.npz import Field, read_npz, validate_arrays, write_npz

FORMAT = "avatarcli.landmarks"
VERSION = 1
N_LANDMARKS = 68

FIELDS = [
    Field("image_size", (2,), kind="iu"),
    Field("landmarks", (N_LANDMARKS, 2)),
    Field("scores", (N_LANDMARKS,)),
    Field("bbox", (4,)),
    Field("image_sha256", (), kind="U", finite=False),
    Field("detector", (), kind="U", finite=False),
]


@dataclass
class Landmarks:
    image_size: tuple[int, int]  # (H, W) of the original photo
    landmarks: np.ndarray  # [68, 2] float32, x right, y down, pixel centres at integers
    scores: np.ndarray  # [68] float32
    bbox: np.ndarray  # [4] float32 x0 y0 x1 y1
    image_sha256: str
    detector: str

    def __post_init__(self) -> None:
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.bbox = np.asarray(self.bbox, dtype=np.float32)

    def scaled(self, scale: float) -> "Landmarks":
        """The same points in an image resized by `scale` (centres at integers both sides)."""
        h, w = self.image_size
        return replace(
            self,
            image_size=(max(1, round(h * scale)), max(1, round(w * scale))),
            landmarks=(self.landmarks + 0.5) * scale - 0.5,
            bbox=(self.bbox + 0.5) * scale - 0.5,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "image_size": np.asarray(self.image_size, dtype=np.int64),
            "landmarks": self.landmarks.astype(np.float32),
            "scores": self.scores.astype(np.float32),
            "bbox": self.bbox.astype(np.float32),
            "image_sha256": np.asarray(str(self.image_sha256)),
            "detector": np.asarray(str(self.detector)),
        }


def validate_landmarks(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Shapes, dtypes, finiteness (via npz.validate_arrays) plus value checks."""
    validate_arrays(path, arrays, FIELDS)
    h, w = (int(v) for v in np.asarray(arrays["image_size"]))
    if h < 1 or w < 1:
        raise ArtifactError(f"field 'image_size': ({h}, {w}) must be positive", path=path)
    x0, y0, x1, y1 = (float(v) for v in np.asarray(arrays["bbox"]))
    if not (x1 > x0 and y1 > y0):
        raise ArtifactError(f"field 'bbox': ({x0:g}, {y0:g}, {x1:g}, {y1:g}) needs x1 > x0 and y1 > y0", path=path)
    # boxes may stick out of the photo a little (cropped faces), not lie entirely outside it
    if x1 < 0 or y1 < 0 or x0 > w or y0 > h:
        raise ArtifactError(f"field 'bbox': ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {w}x{h} image", path=path)


def write_landmarks(path: str | Path, lm: Landmarks) -> None:
    """Validate, then atomically write `lm` to `path`."""
    arrays = lm.arrays()
    validate_landmarks(path, arrays)
    write_npz(path, FORMAT, VERSION, arrays)


def read_landmarks(path: str | Path) -> Landmarks:
    a = read_npz(path, FORMAT, VERSION, FIELDS)
    validate_landmarks(path, a)
    return Landmarks(
        image_size=(int(a["image_size"][0]), int(a["image_size"][1])),
        landmarks=a["landmarks"],
        scores=a["scores"],
        bbox=a["bbox"],
        image_sha256=str(a["image_sha256"]),
        detector=str(a["detector"]),
    )
