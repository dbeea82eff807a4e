"""Video / PNG writers: read back, frame counts, sizes, atomicity."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from avatarcli.errors import InputError
from avatarcli.render.video import write_png, write_png_sequence, write_video


def _frames(n: int, h: int = 32, w: int = 48):
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        img[..., 1] = int(255 * i / max(n - 1, 1))
        img[: h // 2, : w // 2, 2] = 200
        yield img


def _broken(n_ok: int):
    yield from _frames(n_ok)
    raise RuntimeError("renderer died")


def _only_final(folder, name):
    return sorted(p.name for p in folder.iterdir()) == [name]


@pytest.mark.parametrize("threaded", [True, False])
def test_mp4_roundtrip(tmp_path, threaded):
    out = write_video(tmp_path / "a.mp4", _frames(7), fps=12, threaded=threaded)
    frames = list(iio.imiter(out))
    assert len(frames) == 7
    assert frames[0].shape == (32, 48, 3)
    ref = list(_frames(7))
    assert np.abs(frames[3].astype(int) - ref[3].astype(int)).mean() < 6  # libx264 crf 18
    assert _only_final(tmp_path, "a.mp4")


def test_mp4_odd_size_is_padded(tmp_path):
    out = write_video(tmp_path / "odd.mp4", _frames(3, h=31, w=45), fps=10)
    frames = list(iio.imiter(out))
    assert len(frames) == 3 and frames[0].shape == (32, 46, 3)


def test_gif_roundtrip(tmp_path):
    out = write_video(tmp_path / "a.gif", _frames(5), fps=10)
    frames = iio.imread(out, index=None)
    assert frames.shape[:3] == (5, 32, 48)
    assert np.abs(frames[4][..., :3].astype(int) - list(_frames(5))[4].astype(int)).mean() < 4


@pytest.mark.parametrize("name", ["b.mp4", "b.gif"])
def test_interrupted_source_leaves_no_file(tmp_path, name):
    with pytest.raises(RuntimeError, match="renderer died"):
        write_video(tmp_path / name, _broken(4), fps=10)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_source_keeps_old_file(tmp_path):
    target = tmp_path / "c.mp4"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        write_video(target, _broken(2), fps=10)
    assert target.read_bytes() == b"old" and _only_final(tmp_path, "c.mp4")


def test_bad_suffix_and_no_frames(tmp_path):
    with pytest.raises(InputError):
        write_video(tmp_path / "x.avi", _frames(2), fps=10)
    with pytest.raises(InputError):
        write_video(tmp_path / "x.mp4", iter([]), fps=10)
    assert list(tmp_path.iterdir()) == []


def test_png_and_sequence(tmp_path):
    img = next(_frames(1))
    p = write_png(tmp_path / "one.png", img)
    np.testing.assert_array_equal(iio.imread(p), img)
    f = np.linspace(0, 1, 32 * 48 * 3).reshape(32, 48, 3).astype(np.float32)  # float input in [0, 1]
    np.testing.assert_array_equal(iio.imread(write_png(tmp_path / "f.png", f)), (f * 255 + 0.5).astype(np.uint8))
    paths = write_png_sequence(tmp_path / "seq", _frames(4))
    assert [q.name for q in paths] == [f"frame_{i:05d}.png" for i in range(4)]
    assert sorted(q.name for q in (tmp_path / "seq").iterdir()) == [q.name for q in paths]
    np.testing.assert_array_equal(iio.imread(paths[2]), list(_frames(4))[2])
    with pytest.raises(RuntimeError):
        write_png_sequence(tmp_path / "seq2", _broken(2))
    assert not (tmp_path / "seq2").exists()
    assert sorted(q.name for q in tmp_path.iterdir()) == ["f.png", "one.png", "seq"]
