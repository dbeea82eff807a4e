"""A run killed mid-write leaves the previous output intact: a real subprocess writing a large
artifact through avatarcli.io.atomic is killed (SIGKILL: no cleanup possible; SIGINT: the
KeyboardInterrupt path) while the bytes are going out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

WRITER = textwrap.dedent(
    """
    import signal, sys, time
    from avatarcli.io.atomic import atomic_write, atomic_path
    # a shell without job control starts background jobs with SIGINT ignored (and Python then keeps
    # it ignored): restore Ctrl-C's KeyboardInterrupt, which is what the SIGINT test is about
    signal.signal(signal.SIGINT, signal.default_int_handler)
    path, how = sys.argv[1], sys.argv[2]
    block = b"N" * (1 << 20)
    if how == "write":
        with atomic_write(path) as f:
            for i in range(10_000):  # far more than the parent waits for
                f.write(block)
                f.flush()
                if i == 4:
                    print("writing", flush=True)
                time.sleep(0.01)
    else:  # atomic_path: writers that want a file name (ffmpeg, plyfile)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                for i in range(10_000):
                    f.write(block)
                    f.flush()
                    if i == 4:
                        print("writing", flush=True)
                    time.sleep(0.01)
    print("finished", flush=True)
    """
)


def _start(path: Path, how: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), how], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    line = proc.stdout.readline().decode().strip()
    assert line == "writing", proc.stderr.read().decode()
    return proc


def _temps(folder: Path, final: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p != final]


@pytest.mark.parametrize("how", ["write", "path"])
def test_sigkill_mid_write_keeps_the_previous_output(tmp_path, how):
    final = tmp_path / "head.ply"
    final.write_bytes(b"previous good output")
    proc = _start(final, how)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert final.read_bytes() == b"previous good output"
    # the half-written bytes sit in a hidden temp file next to it, never under the final name
    left = _temps(tmp_path, final)
    assert left and all(p.name.startswith(".head.") for p in left)
    assert any(p.stat().st_size >= 5 << 20 for p in left)  # it really was mid-write

    # a later run is not confused by the leftover and replaces the output
    from avatarcli.io.atomic import atomic_write_bytes

    atomic_write_bytes(final, b"new output")
    assert final.read_bytes() == b"new output"


def test_sigkill_mid_write_with_no_previous_output_leaves_no_file(tmp_path):
    final = tmp_path / "out.npz"
    proc = _start(final, "write")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not final.exists()


def test_sigint_mid_write_removes_the_temp_file(tmp_path):
    final = tmp_path / "features.safetensors"
    final.write_bytes(b"old")
    proc = _start(final, "write")
    proc.send_signal(signal.SIGINT)  # KeyboardInterrupt inside the with-block
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert final.read_bytes() == b"old"
    assert _temps(tmp_path, final) == []  # cleaned up on the way out
