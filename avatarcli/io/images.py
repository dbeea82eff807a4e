"""Loading photos: one RGB uint8 array per file, or one clear InputError naming the file.

What every stage gets from `load_image`:
  * EXIF orientation applied (the array is the photo as a viewer shows it);
  * RGB uint8 [H, W, 3]: grayscale is replicated; palette/CMYK/YCbCr/LAB go
    through Pillow's conversion (embedded ICC profiles are ignored); 16-bit
    ("I;16*") and 32-bit integer ("I") images are taken as 0..65535 and scaled
    to 0..255 with rounding (x / 257); float ("F") images as 0..1 when their
    maximum is <= 1, else as 0..255;
  * transparency (RGBA, LA, PA, palette with a transparent colour) is
    composited onto WHITE: dropping alpha would expose whatever colour the
    encoder left under transparent pixels;
  * photos whose long side exceeds `max_side` are downscaled (Lanczos; JPEG
    decoding uses DCT draft scaling first) and `scale` = working / original.
    Pixel centres sit at integer coordinates, so a point maps as
    x_work = (x_orig + 0.5) * scale - 0.5 (see to_original / to_working).

Refused (InputError, exit 2): missing file, folder, empty file, not an image,
truncated or corrupt data (a full decode is forced; Pillow's
LOAD_TRUNCATED_IMAGES is kept False), a side below MIN_SIDE, more than
`max_pixels` pixels (checked from the header, before any decoding).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from avatarcli.errors import InputError
from avatarcli.io.hashing import sha256_bytes

MIN_SIDE = 32  # pixels: smaller than this cannot hold a usable face
MAX_SIDE = 2048  # pixels: default working resolution (long side)
MAX_PIXELS = 100_000_000  # 100 megapixels: larger is refused as a likely decompression bomb


@dataclass
class LoadedImage:
    rgb: np.ndarray  # [H, W, 3] uint8, the working image
    path: Path
    sha256: str  # of the file's bytes
    original_size: tuple[int, int]  # (H, W) after EXIF orientation, before downscaling
    scale: float  # working / original (1.0 when not downscaled)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the working image."""
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """Working-image pixel coordinates [..., 2] -> original-image ones (centres at integers)."""
        return (np.asarray(xy, dtype=np.float64) + 0.5) / self.scale - 0.5

    def to_working(self, xy: np.ndarray) -> np.ndarray:
        """Original-image pixel coordinates [..., 2] -> working-image ones."""
        return (np.asarray(xy, dtype=np.float64) + 0.5) * self.scale - 0.5


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    size: tuple[int, int]  # (H, W) as stored (before EXIF orientation)
    format: str


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputError("file not found", path=path)
    if path.is_dir():
        raise InputError("is a folder, expected an image file", path=path)
    if path.stat().st_size == 0:
        raise InputError("file is empty (0 bytes)", path=path)


def _read_bytes(path: Path) -> bytes:
    _check_path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror})", path=path) from None
    if not data:
        raise InputError("file is empty (0 bytes)", path=path)
    return data


def _open(path: Path, data: bytes | None = None) -> Image.Image:
    """Open (header only) and apply the size and pixel-count limits."""
    src = io.BytesIO(data) if data is not None else path
    try:
        with warnings.catch_warnings():
            # our own MAX_PIXELS check below replaces Pillow's warning; its hard error is caught
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(src)
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise InputError(
            f"image is too large: over {limit:.0f} megapixels, Pillow's decompression bomb limit "
            f"(ours is {MAX_PIXELS / 1e6:.0f}; refused before decoding)",
            path=path,
        ) from None
    except UnidentifiedImageError:
        raise InputError("not an image file Pillow can read (wrong extension or corrupt header?)", path=path) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot open image ({e})", path=path) from None
    return im


def _check_size(path: Path, im: Image.Image, max_pixels: int, min_side: int) -> None:
    w, h = im.size
    if w * h > max_pixels:
        raise InputError(
            f"image is {w}x{h} = {w * h / 1e6:.0f} megapixels, above the limit of {max_pixels / 1e6:.0f} "
            "(refused before decoding)",
            path=path,
        )
    if min(w, h) < min_side:
        raise InputError(f"image is {w}x{h}, smaller than the minimum {min_side}x{min_side}", path=path)


def check_image(path: str | Path, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> ImageInfo:
    """Cheap up-front validation (header and size only; truncation is found by load_image)."""
    path = Path(path)
    _check_path(path)
    im = _open(path)
    try:
        _check_size(path, im, max_pixels, min_side)
        return ImageInfo(path, (im.size[1], im.size[0]), im.format or "?")
    finally:
        im.close()


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB (see the module docstring for the rules)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I") or mode == "F":
        a = np.asarray(im)
        if mode == "F":
            a = a.astype(np.float64)
            a = a * 255.0 if np.nanmax(a) <= 1.0 else a
        else:
            a = a.astype(np.float64) / 257.0  # 0..65535 -> 0..255
        a = np.clip(np.nan_to_num(np.rint(a)), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _decode(path: Path, im: Image.Image, max_side: int) -> tuple[Image.Image, bool]:
    """Force a full decode (truncation -> InputError), apply EXIF orientation, downscale.

    Returns the image and whether the orientation swapped width and height. The EXIF block is
    read only after the full decode: asking a PNG for it earlier decodes it outside this guard
    (and an eXIf chunk after the pixel data is only seen then)."""
    if im.format == "JPEG" and max(im.size) > 2 * max_side:
        im.draft("RGB", (max_side, max_side))  # DCT scaling: decodes at >= the requested size
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
        raise InputError(f"truncated or corrupt image data ({e})", path=path) from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
    before = im.size
    try:
        im = ImageOps.exif_transpose(im) or im
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the photo
        pass
    swapped = im.size != before and im.size == (before[1], before[0])
    return im, swapped


def load_image(
    path: str | Path, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE
) -> LoadedImage:
    """Read one photo as RGB uint8 [H, W, 3], long side <= max_side (see the module docstring)."""
    path = Path(path)
    if max_side < min_side:
        raise InputError(f"max_side {max_side} is below the minimum image side {min_side}", setting="max_side")
    data = _read_bytes(path)
    im = _open(path, data)
    _check_size(path, im, max_pixels, min_side)
    # original size after orientation, from the header (draft decoding may shrink the pixels)
    w0, h0 = im.size
    im, swapped = _decode(path, im, max_side)
    if swapped:
        w0, h0 = h0, w0
    im = _to_rgb(im)
    w, h = im.size
    if max(w, h) > max_side:
        s = max_side / max(w, h)
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
    rgb = np.asarray(im, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:  # pragma: no cover - _to_rgb guarantees it
        raise InputError(f"unexpected decoded shape {rgb.shape}", path=path)
    scale = rgb.shape[1] / w0 if w0 >= h0 else rgb.shape[0] / h0
    return LoadedImage(np.ascontiguousarray(rgb), path, sha256_bytes(data), (h0, w0), float(scale))
