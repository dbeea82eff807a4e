"""Writing rendered frames: mp4 (imageio-ffmpeg, libx264, yuv420p), gif (Pillow), PNG.

Every writer is atomic (avatarcli.io.atomic): if the frame source raises half
way, no file appears under the final name. Frames are consumed as they are
produced; the encoder runs on a background thread so that rendering the next
frame overlaps with encoding the last one.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from avatarcli.errors import InputError
from avatarcli.io.atomic import atomic_dir, atomic_path

VIDEO_SUFFIXES = (".mp4", ".gif")
_DONE = object()


def as_uint8(img) -> np.ndarray:
    """uint8 [H, W, 3] from a numpy array or tensor (uint8, or float in [0, 1])."""
    if hasattr(img, "detach"):
        img = img.detach().cpu().numpy()
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an image [H, W, 3], got shape {img.shape}")
    return np.ascontiguousarray(img[..., :3])


def _pad_even(img: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row / column when odd."""
    h, w = img.shape[:2]
    if h % 2 or w % 2:
        img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return img


def _pump(frames: Iterable, consume: Callable[[np.ndarray], None], threaded: bool) -> int:
    """Feed frames to `consume`, on a background thread if asked. Returns the frame count.

    An exception on either side stops both and is re-raised here."""
    if not threaded:
        n = 0
        for f in frames:
            consume(as_uint8(f))
            n += 1
        return n
    q: queue.Queue = queue.Queue(maxsize=4)
    error: list[BaseException] = []

    def worker():
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                consume(item)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            error.append(e)
            while q.get() is not _DONE:  # drain so the producer never blocks
                pass

    t = threading.Thread(target=worker, name="avatar-encoder", daemon=True)
    t.start()
    n = 0
    try:
        for f in frames:
            if error:
                break
            q.put(as_uint8(f))
            n += 1
    finally:
        q.put(_DONE)
        t.join()
    if error:
        raise error[0]
    return n


def write_video(path: str | Path, frames: Iterable, fps: float = 30.0, *, crf: int = 18, threaded: bool = True) -> Path:
    """Encode frames (uint8 [H, W, 3], all one size) to .mp4 (H.264, yuv420p) or .gif. Atomic.

    Odd sizes are padded by one edge row/column for mp4. Returns `path`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(f"video output must end with {' or '.join(VIDEO_SUFFIXES)}", path=path)
    if not fps > 0:
        raise InputError(f"fps must be positive, got {fps}", path=path)
    with atomic_path(path) as tmp:
        n = (_write_mp4 if suffix == ".mp4" else _write_gif)(tmp, frames, fps, crf, threaded)
        if n == 0:
            raise InputError("no frames to write", path=path)
    return path


def _write_mp4(tmp: Path, frames: Iterable, fps: float, crf: int, threaded: bool) -> int:
    import imageio_ffmpeg

    state: dict = {}

    def consume(img: np.ndarray) -> None:
        img = _pad_even(img)
        if "gen" not in state:
            state["size"] = img.shape[:2]
            gen = imageio_ffmpeg.write_frames(
                str(tmp),
                (img.shape[1], img.shape[0]),
                fps=fps,
                codec="libx264",
                pix_fmt_out="yuv420p",
                quality=None,
                macro_block_size=1,
                ffmpeg_log_level="error",
                output_params=["-crf", str(int(crf)), "-preset", "medium", "-movflags", "+faststart", "-f", "mp4"],
            )
            gen.send(None)
            state["gen"] = gen
        elif img.shape[:2] != state["size"]:
            raise ValueError(f"frame size changed from {state['size']} to {img.shape[:2]}")
        state["gen"].send(img.tobytes())

    try:
        n = _pump(frames, consume, threaded)
    finally:
        if "gen" in state:
            state["gen"].close()
    return n


def _write_gif(tmp: Path, frames: Iterable, fps: float, crf: int, threaded: bool) -> int:
    pal: list = []

    def consume(img: np.ndarray) -> None:
        if pal and img.shape[:2] != (pal[0].height, pal[0].width):
            raise ValueError("frame size changed")
        pal.append(Image.fromarray(img).quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))

    n = _pump(frames, consume, threaded)
    if pal:
        duration = max(20, int(round(1000.0 / fps / 10.0)) * 10)  # GIF delays are in 1/100 s
        pal[0].save(tmp, format="GIF", save_all=True, append_images=pal[1:], duration=duration, loop=0, disposal=1)
    return n


def write_png(path: str | Path, img) -> Path:
    """One image (uint8 [H, W, 3] or float in [0, 1]) -> PNG, atomically."""
    path = Path(path)
    arr = as_uint8(img)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return path


def write_png_sequence(folder: str | Path, frames: Iterable) -> list[Path]:
    """frames -> folder/frame_00000.png, ... (one per frame; the folder is swapped in whole). Returns the paths."""
    folder = Path(folder)
    names: list[str] = []
    with atomic_dir(folder) as tmp:
        for i, f in enumerate(frames):
            name = f"frame_{i:05d}.png"
            Image.fromarray(as_uint8(f)).save(tmp / name, format="PNG")
            names.append(name)
    return [folder / n for n in names]
