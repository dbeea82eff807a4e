"""Bring-your-own landmarks: read 68 (x, y) points from the files other tools write.

`read_points(path) -> [68, 2] float64`, ORIGINAL image pixels, x right, y down,
pixel centres at integer coordinates (0-based, our convention). Accepted:

  .npy   an array [68, 2] (or [68, 3], z dropped; or [1, 68, 2/3], e.g. face-alignment's output)
  .txt / .csv   68 rows "x y" (whitespace or comma separated; '#' comments)
  .pts   iBUG 300-W format ("version: 1", "n_points: 68", "{", 68 lines "x y", "}").
         Its coordinates are 1-based (Matlab convention: the first pixel's centre is
         at 1), so 1 is subtracted.
  .npz   a landmarks.npz of ours (its `landmarks`), or any npz with one of the keys
         landmarks / lmk / points / pts / kpts, or holding a single array.

Anything else, or the wrong shape, or NaN: InputError naming the file. Pickles are never loaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from avatarcli.errors import ArtifactError, InputError
from avatarcli.landmarks.artifact import read_landmarks
from avatarcli.landmarks.detect import landmarks_from_points
from avatarcli.progress import warn

SUFFIXES = (".npy", ".txt", ".csv", ".pts", ".npz")
_NPZ_KEYS = ("landmarks", "lmk", "lmks", "points", "pts", "kpts", "keypoints")


def _shape68(path: Path, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise InputError(f"expected numbers, got an array of dtype {a.dtype}", path=path)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 1 and a.size in (136, 204):
        a = a.reshape(68, -1)
    if a.ndim != 2 or a.shape[0] != 68 or a.shape[1] not in (2, 3):
        raise InputError(f"expected 68 (x, y) points, got an array of shape {tuple(a.shape)}", path=path)
    a = a[:, :2].astype(np.float64)
    if not np.isfinite(a).all():
        raise InputError("some points are NaN or infinite", path=path)
    return a


def _read_pts(path: Path, text: str) -> np.ndarray:
    m = re.search(r"\{(.*)\}", text, flags=re.S)
    if m is None:
        raise InputError("not an iBUG .pts file (no '{ ... }' block of points)", path=path)
    n = re.search(r"n_points\s*:\s*(\d+)", text)
    rows = [ln.split() for ln in m.group(1).strip().splitlines() if ln.strip()]
    try:
        a = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError:
        raise InputError("iBUG .pts file: a point line is not two numbers", path=path) from None
    if n is not None and int(n.group(1)) != len(rows):
        raise InputError(f"iBUG .pts file says n_points: {n.group(1)} but holds {len(rows)} points", path=path)
    return _shape68(path, a) - 1.0  # 1-based -> 0-based


def _read_txt(path: Path, text: str) -> np.ndarray:
    rows = []
    for ln in text.splitlines():
        ln = ln.split("#", 1)[0].strip()
        if ln:
            rows.append(ln.replace(",", " ").split())
    try:
        a = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError:
        raise InputError("text points: every line must be numbers 'x y' (a header line?)", path=path) from None
    return _shape68(path, a)


def _read_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - zip/npy errors of every kind mean the same to the user
        raise InputError(f"cannot read as .npz ({type(e).__name__})", path=path) from None
    if "format" in arrays:
        return read_landmarks(path).landmarks.astype(np.float64)
    for k in _NPZ_KEYS:
        if k in arrays:
            return _shape68(path, arrays[k])
    if len(arrays) == 1:
        return _shape68(path, next(iter(arrays.values())))
    raise InputError(
        f"no landmarks array in this .npz (keys {sorted(arrays)}; expected one of {list(_NPZ_KEYS)})", path=path
    )


def read_points(path: str | Path) -> np.ndarray:
    """68 points [68, 2] float64 in original image pixels from `path` (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise InputError("landmarks file not found", path=path)
    if path.is_dir():
        raise InputError("is a folder, expected a landmarks file", path=path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"unknown landmarks file type {suffix!r} (expected one of {', '.join(SUFFIXES)})", path=path)
    if suffix == ".npz":
        return _read_npz(path)
    if suffix == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"cannot read as .npy ({type(e).__name__})", path=path) from None
        return _shape68(path, a)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, OSError) as e:
        raise InputError(f"cannot read as text ({type(e).__name__})", path=path) from None
    return _read_pts(path, text) if suffix == ".pts" else _read_txt(path, text)


def find_points_file(folder: Path, stem: str) -> Path:
    """folder/<stem><one of SUFFIXES> (the first that exists); InputError when none does."""
    for s in SUFFIXES:
        p = folder / f"{stem}{s}"
        if p.is_file():
            return p
    raise InputError(f"no landmarks file for {stem!r} ({stem}.npz/.npy/.pts/.txt)", path=folder)


def given_landmarks(path: str | Path, image, force: bool = False):
    """The landmarks file a user gives for `image` (a LoadedImage), in any format read_points
    reads, as Landmarks of that photo: the one reader of `--landmarks` in every command.

    An avatarcli landmarks.npz records the photo it was made from: another size is refused
    (ArtifactError), another file (sha256) too unless `force` (then a warning). Other formats
    carry no photo: their points are taken as this photo's (landmarks_from_points)."""

    path = Path(path)
    if is_landmarks_artifact(path):
        lm = read_landmarks(path)
        check_same_photo(path, lm, image, force)
        return lm
    return landmarks_from_points(image, read_points(path))


def is_landmarks_artifact(path: Path) -> bool:
    """Is `path` an avatarcli landmarks.npz (it has a `format` entry), not bare points?"""
    if path.suffix.lower() != ".npz":
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return "format" in z.files
    except Exception:  # noqa: BLE001 - read_points reports what is wrong with the file
        return False


def check_same_photo(path: Path, lm, image, force: bool) -> None:
    """landmarks.npz `lm` must come from `image`: same size always, same file (sha256) unless force."""
    if tuple(lm.image_size) != tuple(image.original_size):
        (h, w), (H, W) = lm.image_size, image.original_size
        raise ArtifactError(f"landmarks are for a {w}x{h} image, but {image.path.name} is {W}x{H}", path=path)
    check_photo_file(path, lm, image.path.name, image.sha256, force)


def check_photo_file(path: Path, lm, name: str, sha256: str, force: bool) -> None:
    """landmarks.npz `lm` (read from `path`) must have been made from the photo file `name` of
    `sha256`, when it records one: another photo is an InputError unless `force` (then a warning)."""
    if not lm.image_sha256 or lm.image_sha256 == sha256:
        return
    msg = f"landmarks were made from another photo (sha256 {lm.image_sha256[:12]}..., {name} has {sha256[:12]}...)"
    if not force:
        raise InputError(f"{msg}; re-run `avatar landmarks` on it or pass `force`", path=path, mentions=("force",))
    warn(f"{path}: {msg}; used anyway (`force`)", mentions=("force",))
