"""avatarcli.io.images on a corpus of awkward photos generated here (no binary fixtures).

Refused inputs must raise InputError (exit 2) with one line naming the file; accepted ones must
come out as the RGB uint8 photo a viewer would show, with the original size and scale recorded.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatarcli.errors import InputError
from avatarcli.io.images import MAX_PIXELS, MIN_SIDE, check_image, load_image


def _pattern(h: int = 60, w: int = 80) -> np.ndarray:
    """An asymmetric photo-like RGB image [h, w, 3] uint8: smooth ramps + a block in one corner."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, 90)], -1).astype(np.uint8)
    rgb[: h // 4, : w // 4] = (250, 20, 20)  # top-left marker
    return rgb


def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose IHDR claims w x h (RGB 8-bit) with a tiny, wrong IDAT: only the header is real."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
    return path


def _refused(path: Path, *, words: tuple[str, ...], load_only: bool = False) -> None:
    if not load_only:
        with pytest.raises(InputError) as e1:
            check_image(path)
        _one_line(e1.value, path, words)
    with pytest.raises(InputError) as e2:
        load_image(path)
    _one_line(e2.value, path, words)


def _one_line(err: Exception, path: Path, words: tuple[str, ...]) -> None:
    msg = str(err)
    assert "\n" not in msg
    assert str(path) in msg
    assert any(w in msg.lower() for w in words), msg


# ------------------------------------------------------------------------------------------ refused


def test_zero_byte(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    _refused(p, words=("empty",))


def test_text_renamed_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a photo\n" * 20)
    _refused(p, words=("not an image",))


def test_missing_and_folder(tmp_path):
    _refused(tmp_path / "nope.png", words=("not found",))
    d = tmp_path / "photos.jpg"
    d.mkdir()
    _refused(d, words=("folder",))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(tmp_path, fmt):
    full = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(full, fmt)
    data = full.read_bytes()
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    info = check_image(p)  # the header is intact: the cheap check passes...
    assert info.size == (120, 160)
    _refused(p, words=("truncated", "corrupt"), load_only=True)  # ...the full decode does not


def test_too_small(tmp_path):
    p = tmp_path / "dot.png"
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(p)
    _refused(p, words=("smaller than the minimum",))
    q = tmp_path / "thin.png"
    Image.fromarray(np.zeros((MIN_SIDE - 1, 200, 3), np.uint8)).save(q)
    _refused(q, words=("smaller than the minimum",))


@pytest.mark.parametrize("w,h", [(12_000, 10_000), (40_000, 40_000)])
def test_decompression_bomb_refused_from_header(tmp_path, w, h):
    assert w * h > MAX_PIXELS
    p = _png_header_only(tmp_path / "bomb.png", w, h)
    assert p.stat().st_size < 200
    _refused(p, words=("megapixels",))


def test_custom_pixel_limit(tmp_path):
    p = tmp_path / "photo.png"
    Image.fromarray(_pattern(100, 100)).save(p)
    with pytest.raises(InputError, match="above the limit"):
        load_image(p, max_pixels=5_000)
    with pytest.raises(InputError, match="above the limit"):
        check_image(p, max_pixels=5_000)


# ------------------------------------------------------------------------------------------ accepted


def _ok(im, shape) -> None:
    assert im.rgb.dtype == np.uint8 and im.rgb.shape == shape and im.rgb.flags.c_contiguous


def test_rgb_png_exact(tmp_path):
    rgb = _pattern()
    p = tmp_path / "p.png"
    Image.fromarray(rgb).save(p)
    im = load_image(p)
    _ok(im, rgb.shape)
    np.testing.assert_array_equal(im.rgb, rgb)
    assert im.original_size == (60, 80) and im.scale == 1.0
    import hashlib

    assert im.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()


def test_grayscale(tmp_path):
    g = _pattern()[..., 0]
    p = tmp_path / "g.png"
    Image.fromarray(g, "L").save(p)
    im = load_image(p)
    _ok(im, (60, 80, 3))
    for c in range(3):
        np.testing.assert_array_equal(im.rgb[..., c], g)


def test_cmyk_jpeg(tmp_path):
    rgb = _pattern()
    p = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(p, "JPEG", quality=98)
    assert Image.open(p).mode == "CMYK"
    im = load_image(p)
    _ok(im, rgb.shape)
    err = np.abs(im.rgb.astype(int) - rgb.astype(int))
    assert err.mean() < 4 and np.percentile(err, 99) < 25  # colours preserved, not inverted


def test_16bit_gray_png(tmp_path):
    a = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I")
    im = load_image(p)
    _ok(im, (48, 64, 3))
    want = np.rint(a / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(im.rgb[..., 1], want)
    assert im.rgb[0, 0, 0] == 0 and im.rgb[-1, -1, 0] == 255


def test_16bit_rgb_png(tmp_path):
    import cv2

    hi = _pattern()
    a16 = hi.astype(np.uint16) * 257  # 0..255 -> 0..65535
    p = tmp_path / "rgb48.png"
    assert cv2.imwrite(str(p), a16[..., ::-1])  # OpenCV writes BGR, 16 bits per channel
    im = load_image(p)
    _ok(im, hi.shape)
    assert np.abs(im.rgb.astype(int) - hi.astype(int)).max() <= 1  # channels in RGB order, top byte


def test_rgba_composited_on_white(tmp_path):
    rgb = _pattern()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, 40:] = 0  # right half fully transparent (colour under it: the pattern)
    alpha[:10, :20] = 128  # half transparent patch over the red marker
    p = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(p)
    im = load_image(p)
    _ok(im, rgb.shape)
    assert (im.rgb[:, 40:] == 255).all()  # white, not the hidden colour
    np.testing.assert_array_equal(im.rgb[20:, :40], rgb[20:, :40])
    want = (rgb[:10, :20].astype(float) * 128 + 255 * 127) / 255
    assert np.abs(im.rgb[:10, :20] - want).max() <= 1.5


def test_gray_alpha_composited_on_white(tmp_path):
    g = _pattern()[..., 1]
    alpha = np.where(np.arange(80)[None, :] < 40, 255, 0).astype(np.uint8).repeat(60, 0)
    p = tmp_path / "la.png"
    Image.fromarray(np.dstack([g, alpha]), "LA").save(p)
    im = load_image(p)
    _ok(im, (60, 80, 3))
    assert (im.rgb[:, 40:] == 255).all()
    np.testing.assert_array_equal(im.rgb[:, :40, 0], g[:, :40])


def test_palette_with_transparency(tmp_path):
    idx = np.zeros((40, 50), np.uint8)
    idx[:, 25:] = 1
    idx[:10, :10] = 2
    pal = Image.fromarray(idx, "P")
    pal.putpalette([200, 10, 10, 10, 200, 10, 0, 0, 0] + [0] * (3 * 253))
    p = tmp_path / "pal.png"
    pal.save(p, transparency=2)  # palette entry 2 (black) is transparent
    im = load_image(p)
    _ok(im, (40, 50, 3))
    assert (im.rgb[:10, :10] == 255).all()  # transparent -> white, not black
    assert tuple(im.rgb[20, 5]) == (200, 10, 10) and tuple(im.rgb[20, 40]) == (10, 200, 10)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation,k", [(6, -1), (8, 1), (3, 2), (1, 0)])
def test_exif_orientation(tmp_path, fmt, orientation, k):
    """Orientation 6: the stored image must be turned 90 degrees clockwise to display; 8:
    counter-clockwise; 3: 180. The loaded array is the displayed photo."""
    stored = _pattern(60, 80)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"rot{orientation}.{fmt.lower()}"
    Image.fromarray(stored).save(p, fmt, exif=exif.tobytes(), **({"quality": 98} if fmt == "JPEG" else {}))
    im = load_image(p)
    shown = np.rot90(stored, k=k)
    _ok(im, shown.shape)
    assert im.original_size == shown.shape[:2]
    if fmt == "PNG":
        np.testing.assert_array_equal(im.rgb, shown)
    else:
        assert np.abs(im.rgb.astype(int) - shown.astype(int)).mean() < 3
    # the red marker ends up where a viewer shows it
    red = np.argwhere((im.rgb[..., 0] > 200) & (im.rgb[..., 1] < 80))
    want = np.argwhere((shown[..., 0] > 200) & (shown[..., 1] < 80))
    np.testing.assert_allclose(red.mean(0), want.mean(0), atol=2.0)  # JPEG chroma blur; a wrong turn moves it ~40 px


def test_exif_rotated_and_downscaled(tmp_path):
    """Orientation 6 plus downscaling: original_size is the displayed (H, W), scale matches."""
    stored = _pattern(300, 400)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rot_big.jpg"
    Image.fromarray(stored).save(p, "JPEG", exif=exif.tobytes(), quality=95)
    im = load_image(p, max_side=100)
    assert im.original_size == (400, 300)
    assert im.size == (100, 75)
    assert im.scale == pytest.approx(0.25)


@pytest.mark.parametrize(
    "w,h,max_side,fmt", [(600, 400, 256, "PNG"), (1600, 1200, 256, "JPEG"), (1200, 1600, 400, "JPEG")]
)
def test_large_photo_downscaled(tmp_path, w, h, max_side, fmt):
    """Long side above max_side: downscaled (JPEG more than 2x via DCT draft decoding), the scale
    recorded, and to_original/to_working map a feature between the two frames."""
    rgb = np.full((h, w, 3), 128, np.uint8)
    cx, cy, r = int(w * 0.3), int(h * 0.6), max(w, h) // 40  # a dark disc at a known place
    yy, xx = np.mgrid[0:h, 0:w]
    rgb[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = 0
    p = tmp_path / f"big.{fmt.lower()}"
    Image.fromarray(rgb).save(p, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    im = load_image(p, max_side=max_side)
    assert im.original_size == (h, w)
    assert max(im.size) == max_side
    s = max_side / max(w, h)
    assert im.scale == pytest.approx(s)
    assert im.size == (round(h * s), round(w * s))
    dark = np.argwhere(im.rgb.mean(-1) < 64)[:, ::-1].mean(0)  # (x, y) centroid, working pixels
    np.testing.assert_allclose(im.to_original(dark), (cx, cy), atol=1.0 / s)
    np.testing.assert_allclose(im.to_working(im.to_original(dark)), dark, atol=1e-9)


def test_not_downscaled_when_small_enough(tmp_path):
    p = tmp_path / "p.png"
    Image.fromarray(_pattern(100, 200)).save(p)
    im = load_image(p, max_side=200)
    assert im.size == (100, 200) and im.scale == 1.0


def test_max_side_below_minimum(tmp_path):
    p = tmp_path / "p.png"
    Image.fromarray(_pattern()).save(p)
    with pytest.raises(InputError, match="max_side") as e:  # the library names its argument...
        load_image(p, max_side=MIN_SIDE - 1)
    assert e.value.setting == "max_side"  # ...and the CLI shows its flag (tests/test_render_cli.py)


def test_webp(tmp_path):
    from PIL import features

    if not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    p = tmp_path / "p.webp"
    Image.fromarray(_pattern()).save(p, "WEBP", lossless=True)
    np.testing.assert_array_equal(load_image(p).rgb, _pattern())
