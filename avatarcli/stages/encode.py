"""The `encode` stage for one photo: find and check its landmarks, then encode the aligned face
crop (avatarcli.diffusion.encode.encode_face) in the photo's working pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avatarcli.diffusion.encode import EncodeModels, encode_face
from avatarcli.diffusion.features import Features
from avatarcli.errors import InputError
from avatarcli.io.images import load_image
from avatarcli.landmarks.artifact import Landmarks
from avatarcli.landmarks.points import find_points_file
from avatarcli.progress import warn

LANDMARK_SUFFIXES = (
    ".npz",
    ".landmarks.npz",
)  # NAME.npz (what `avatar landmarks` writes for a folder), NAME.landmarks.npz


@dataclass
class EncodeJob:
    """One photo to encode, its landmarks checked against it (sha256, alignable)."""

    image: Path
    landmarks_path: Path
    output: Path
    landmarks: Landmarks
    sha256: str


def landmarks_for(image: Path, landmarks: Path, several: bool) -> Path:
    """The landmarks file of `image`: `landmarks` itself when it is a file (one image only),
    else NAME.npz or NAME.landmarks.npz in the folder `landmarks`."""
    if not landmarks.exists():
        raise InputError("landmarks file or folder not found", path=landmarks)
    if landmarks.is_file():
        if several:
            raise InputError(
                "several images need `landmarks` to be a folder of NAME.npz files",
                path=landmarks,
                mentions=("landmarks",),
            )
        return landmarks
    for suffix in LANDMARK_SUFFIXES:
        p = landmarks / f"{image.stem}{suffix}"
        if p.is_file():
            return p
    try:
        return find_points_file(landmarks, image.stem)  # NAME.npy / .txt / .csv / .pts
    except InputError:
        raise InputError(
            f"no landmarks for {image.name} in this folder (expected {image.stem}.npz, .npy, .txt, .csv or .pts)",
            path=landmarks,
        ) from None


def encode_job(job: EncodeJob, models: EncodeModels, size: int, force: bool) -> Features:
    """Decode the photo, map the landmarks into the working image, encode the face."""
    image = load_image(job.image)
    lm = job.landmarks
    points = lm.landmarks.astype("float64")  # [68, 2] original-image pixels
    if tuple(lm.image_size) != tuple(image.original_size):
        msg = f"landmarks are for a {lm.image_size[1]}x{lm.image_size[0]} image, {job.image.name} is {image.original_size[1]}x{image.original_size[0]}"
        if not force:
            raise InputError(
                f"{msg}; re-run `avatar landmarks` or pass `force`", path=job.landmarks_path, mentions=("force",)
            )
        warn(f"{job.landmarks_path}: {msg}; points rescaled (`force`)", mentions=("force",))
        sy = image.original_size[0] / lm.image_size[0]
        sx = image.original_size[1] / lm.image_size[1]
        points = (points + 0.5) * [sx, sy] - 0.5
    working = image.to_working(points)  # [68, 2] working-image pixels
    feats, _ = encode_face(image.rgb, working, models, size=size, image_sha256=image.sha256)
    return feats


__all__ = ["EncodeJob", "LANDMARK_SUFFIXES", "encode_job", "landmarks_for"]
