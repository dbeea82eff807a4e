"""Frames of a clip: a video file (imageio-ffmpeg: mp4, mov, webm, mkv, avi, gif) or a folder of images.

`open_frames(path)` checks the input and reads its frame count, size and frame rate before any work;
`FrameSource.frames()` then yields RGB uint8 [H, W, 3] arrays in order. A folder's images are taken
in natural name order (frame2 before frame10) and must all have one size. A video that cannot be
decoded, a folder without images, mixed sizes: one InputError naming the file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import imageio.v3 as iio
import numpy as np

from avatarcli.errors import InputError
from avatarcli.io.images import load_image

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class FrameSource:
    path: Path
    n_frames: int
    size: tuple[int, int]  # (H, W)
    fps: float | None  # None: unknown (a folder of images)
    files: list[Path] | None = None  # a folder's images, in order

    def frames(self) -> Iterator[np.ndarray]:
        """RGB uint8 [H, W, 3] per frame, in order."""
        if self.files is not None:
            for f in self.files:
                im = load_image(f, max_side=1 << 30)
                if im.size != self.size:
                    raise InputError(
                        f"frame is {im.size[1]}x{im.size[0]}, the first frame {self.size[1]}x{self.size[0]}", path=f
                    )
                yield im.rgb
            return
        yield from _video_frames(self.path)


def natural_key(p: Path) -> list:
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]


def _video_frames(path: Path) -> Iterator[np.ndarray]:
    try:
        for frame in iio.imiter(path):
            a = np.asarray(frame)
            if a.ndim == 2:
                a = np.repeat(a[..., None], 3, -1)
            yield np.ascontiguousarray(a[..., :3]).astype(np.uint8, copy=False)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad video for the user
        raise InputError(
            f"cannot decode the video ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", path=path
        ) from None


def _video_info(path: Path) -> tuple[int, tuple[int, int], float | None]:
    """(frame count, (H, W), fps) of a video, by decoding it once (containers' counts are unreliable)."""
    try:
        meta = iio.immeta(path)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"not a readable video ({type(e).__name__})", path=path) from None
    fps = meta.get("fps")
    n, size = 0, None
    for frame in _video_frames(path):
        n += 1
        size = size or (int(frame.shape[0]), int(frame.shape[1]))
    if n == 0 or size is None:
        raise InputError("the video holds no frames", path=path)
    ok = isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0
    return n, size, float(fps) if ok and fps is not None else None


def open_frames(path: str | Path) -> FrameSource:
    """Check a video file or a folder of images and read its frame count, size and fps."""
    path = Path(path)
    if not path.exists():
        raise InputError("not found", path=path)
    if path.is_dir():
        files = sorted(
            (q for q in path.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()), key=natural_key
        )
        if not files:
            raise InputError(f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})", path=path)
        first = load_image(files[0], max_side=1 << 30)
        return FrameSource(path, len(files), first.size, None, files)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"not a video ({', '.join(VIDEO_SUFFIXES)}) or a folder of frames", path=path)
    n, size, fps = _video_info(path)
    return FrameSource(path, n, size, fps)
