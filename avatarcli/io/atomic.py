"""Atomic writes: a killed run never leaves a half-written file under the final name.

Write to a temporary file in the destination folder, flush and fsync, then
`os.replace` onto the final name (atomic on POSIX within one filesystem).
The temporary name is unique per process and call, so concurrent jobs writing
different outputs into one folder never share a temp file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

from avatarcli.errors import EnvironmentProblem, InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(fd_or_path: int | str | Path, directory: bool = False) -> None:
    """mkstemp/mkdtemp create 0600/0700; give the final output the usual 0666/0777 & ~umask."""
    with contextlib.suppress(OSError):
        mode = (0o777 if directory else 0o666) & ~_umask()
        if isinstance(fd_or_path, int):
            os.fchmod(fd_or_path, mode)
        else:
            os.chmod(fd_or_path, mode)


def check_output_path(path: str | Path) -> Path:
    """Fail early (before any work) if `path` cannot be written as a file.

    The nearest existing folder on the way is probed by creating (and removing) a temp file or
    folder in it: permission bits do not tell (root, /proc, /sys, read-only mounts), the
    filesystem does. Any refusal is an EnvironmentProblem (exit 3) with the system's reason."""
    path = Path(path)
    if path.is_dir():
        raise InputError("output path is a folder, expected a file name", path=path)
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise InputError("the output's parent is not a folder", path=path)
    probe_writable(parent)
    return path


def probe_writable(folder: Path) -> None:
    """Raise EnvironmentProblem unless a file can be created in `folder` (or, if it does not exist
    yet, a folder in its nearest existing ancestor)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError("the output's parent is not a folder", path=existing)
    try:
        if existing == folder:
            fd, tmp = tempfile.mkstemp(prefix=".avatar-probe.", dir=existing)
            os.close(fd)
            os.unlink(tmp)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".avatar-probe.", dir=existing))
    except OSError as e:
        raise EnvironmentProblem(f"output folder is not writable ({e.strerror or e})", path=existing) from None


@contextlib.contextmanager
def _fs_errors(path: Path) -> Iterator[None]:
    """OSErrors of the filesystem steps (mkdir, temp files, rename) -> one-line EnvironmentProblem."""
    try:
        yield
    except OSError as e:
        raise EnvironmentProblem(f"cannot write output ({e.strerror or e})", path=path) from None


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file next to `path`; on success fsync and rename it onto `path`.

    On any exception (or KeyboardInterrupt) the temp file is removed and `path`
    keeps whatever it held before.
    """
    path = check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentProblem(f"cannot create output folder ({e.strerror})", path=path.parent) from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise EnvironmentProblem(f"cannot write output ({e.strerror})", path=path) from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            with _fs_errors(path):
                f.flush()
                os.fsync(f.fileno())
                _publish_mode(f.fileno())
        with _fs_errors(path):
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """For writers that want a file *name* (ffmpeg, plyfile): yield a temp path
    in the destination folder with the same suffix, then rename it onto `path`."""
    path = check_output_path(path)
    with _fs_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix or path.suffix, dir=path.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with _fs_errors(path):
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            _publish_mode(tmp_path)
            os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a folder of outputs (PNG frames, a PLY sequence) under a temp name,
    then swap it in: `path` either keeps its old content or holds the new set."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("output path exists and is not a folder", path=path)
    with _fs_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        with _fs_errors(path):
            _publish_mode(tmp, directory=True)
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / "x")
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
