"""The `landmarks` stage for one photo: its 68 points from the user's own file or from a detector,
in original-photo pixels (`avatar landmarks`, `avatar reconstruct`)."""

from __future__ import annotations

import numpy as np

from avatarcli.io.images import LoadedImage
from avatarcli.landmarks.artifact import Landmarks
from avatarcli.landmarks.choose import Detector
from avatarcli.landmarks.detect import detect_landmarks, landmarks_from_points


def photo_landmarks(
    image: LoadedImage,
    detector: Detector | None = None,
    *,
    points: np.ndarray | None = None,  # [68, 2] the user's points, original pixels
    bbox: tuple[float, float, float, float] | None = None,  # face box in original pixels: no face detection
    face_index: int | None = None,  # with several faces, the K-th by box size (None: the largest)
) -> Landmarks:
    """The photo's Landmarks: the given `points` when there are any (no model), else the detector's."""
    if points is not None:
        return landmarks_from_points(image, points)
    if detector is None:
        raise ValueError("photo_landmarks needs a detector when no points are given")
    return detect_landmarks(image, detector, bbox=bbox, face_index=face_index)


__all__ = ["photo_landmarks"]
