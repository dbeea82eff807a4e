"""Unwritable outputs: one line and exit 3 whatever the filesystem says (issue 13, item 9).

Permission bits do not tell when the tests run as root, so the filesystem's own refusal is what is
tested: /proc and /sys (Linux), and a temp-file creation made to fail as a read-only mount does."""

from __future__ import annotations

import errno
import os
import sys
import tempfile

import pytest

from avatarcli.cli import main
from avatarcli.gaussians.ply import GaussianPly, write_gaussian_ply
from tests.fixtures.scenes import make_random_gaussians


@pytest.fixture
def scene_ply(tmp_path):
    path = tmp_path / "scene.ply"
    write_gaussian_ply(path, GaussianPly(make_random_gaussians(200, 1, scale=(0.005, 0.02))))
    return path


def _one_error_line(capsys) -> str:
    out = capsys.readouterr()
    lines = [ln for ln in (out.out + out.err).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert "internal error" not in lines[0] and "Traceback" not in lines[0]
    return lines[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and /sys are Linux's")
@pytest.mark.parametrize(
    "target",
    ["/proc/avatar-x.png", "/proc/avatar-x.mp4", "/sys/avatar-x.gif", "/proc/no-such-dir/x.png"],
)
def test_render_into_a_pseudo_filesystem_is_exit_3(scene_ply, capsys, target):
    assert main(["render", str(scene_ply), "-o", target, "--size", "16", "--frames", "2"]) == 3
    line = _one_error_line(capsys)
    assert "not writable" in line


@pytest.mark.parametrize("cmd", ["render", "export"])
def test_read_only_filesystem_is_exit_3_and_leaves_nothing(scene_ply, tmp_path, capsys, monkeypatch, cmd):
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    real_mkstemp = tempfile.mkstemp

    def refuse(*a, dir=None, **kw):  # what a read-only mount answers
        if dir is not None and os.path.realpath(dir) == os.path.realpath(out_dir):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkstemp(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    out = out_dir / ("v.png" if cmd == "render" else "v.splat")
    args = [cmd, str(scene_ply), "-o", str(out)] + (["--size", "16"] if cmd == "render" else [])
    assert main(args) == 3
    assert "Read-only file system" in _one_error_line(capsys)
    assert list(out_dir.iterdir()) == []


def test_an_oserror_escaping_a_command_is_one_line_exit_3(scene_ply, tmp_path, capsys, monkeypatch):
    import avatarcli.stages.render as video  # where render_file looks write_png up

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "v.png"))

    monkeypatch.setattr(video, "write_png", full_disk)
    assert main(["render", str(scene_ply), "-o", str(tmp_path / "v.png"), "--size", "16"]) == 3
    assert "No space left on device" in _one_error_line(capsys)
