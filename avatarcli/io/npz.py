"""Validated .npz artifacts: `format` + `version` keys, shapes, dtypes, finiteness.

Every reader goes through `read_npz`, so every bad file gives the same kind of
one-line error naming the file and the field. Pickled objects are never loaded.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from avatarcli.errors import ArtifactError
from avatarcli.io.atomic import atomic_write

Dim = int | str | None  # int: exact; str: named (must agree across fields); None: any


@dataclass(frozen=True)
class Field:
    """One expected array. `shape` entries: an int (exact), a name (all fields
    using that name must agree; the value is returned in `dims`), or None (any).
    `kind`: numpy dtype kinds allowed ('f' float, 'i'/'u' integer, 'U'/'S' text, 'b' bool)."""

    name: str
    shape: Sequence[Dim] | None = None
    kind: str = "f"
    finite: bool = True
    optional: bool = False


def load_npz_bytes(path: Path) -> Mapping[str, np.ndarray]:
    if not path.exists():
        raise ArtifactError("file not found", path=path)
    if path.is_dir():
        raise ArtifactError("is a folder, expected an .npz file", path=path)
    data = path.read_bytes()
    if not data:
        raise ArtifactError("file is empty", path=path)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ArtifactError("not an .npz archive", path=path)
            return {k: z[k] for k in z.files}
    except ArtifactError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise ArtifactError("contains pickled objects, which are never loaded", path=path) from None
        raise ArtifactError(f"not a readable .npz archive ({e})", path=path) from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, Exception) as e:  # noqa: BLE001 - any decode failure is a bad file
        raise ArtifactError(f"not a readable .npz archive ({type(e).__name__})", path=path) from None


def _text(a: np.ndarray) -> str:
    """A scalar or first element as text; "" for an empty array (then no format matches)."""
    a = np.asarray(a)
    if a.size == 0:
        return ""
    return str(a.item() if a.ndim == 0 else a.reshape(-1)[0])


def check_format(path: Path, arrays: Mapping[str, np.ndarray], fmt: str, version: int) -> int:
    """Check the `format`/`version` header; return the file's version."""
    if "format" not in arrays or "version" not in arrays:
        raise ArtifactError(f"missing 'format'/'version': not an {fmt} file", path=path)
    got_fmt = _text(arrays["format"])
    if got_fmt != fmt:
        raise ArtifactError(f"format is {got_fmt!r}, expected {fmt!r}", path=path)
    try:
        got_version = int(np.asarray(arrays["version"]).reshape(-1)[0])
    except (TypeError, ValueError, IndexError, OverflowError):
        raise ArtifactError("field 'version': not an integer", path=path) from None
    if got_version > version:
        raise ArtifactError(
            f"version {got_version} is newer than this avatarcli reads ({version}); upgrade avatarcli",
            path=path,
        )
    if got_version < 1:
        raise ArtifactError(f"field 'version': invalid value {got_version}", path=path)
    return got_version


def validate_arrays(path: Path | str, arrays: Mapping[str, np.ndarray], fields: Sequence[Field]) -> dict[str, int]:
    """Check shapes/dtypes/finiteness of `arrays` against `fields`; return named dims."""
    path = Path(path)
    dims: dict[str, int] = {}
    for f in fields:
        if f.name not in arrays:
            if f.optional:
                continue
            raise ArtifactError(f"missing field {f.name!r}", path=path)
        a = np.asarray(arrays[f.name])
        if a.dtype.kind not in f.kind and not (f.kind == "f" and a.dtype.kind in "iu"):
            raise ArtifactError(f"field {f.name!r}: dtype {a.dtype} not allowed", path=path)
        if f.shape is not None:
            if a.ndim != len(f.shape):
                raise ArtifactError(
                    f"field {f.name!r}: shape {list(a.shape)}, expected {len(f.shape)} dimensions", path=path
                )
            for i, (n, want) in enumerate(zip(a.shape, f.shape)):
                if isinstance(want, int) and n != want:
                    raise ArtifactError(
                        f"field {f.name!r}: shape {list(a.shape)}, dimension {i} should be {want}", path=path
                    )
                if isinstance(want, str):
                    if dims.setdefault(want, n) != n:
                        raise ArtifactError(
                            f"field {f.name!r}: dimension {i} is {n}, inconsistent with {want}={dims[want]}", path=path
                        )
        if f.finite and a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise ArtifactError(f"field {f.name!r}: contains NaN or infinity", path=path)
    return dims


def read_npz(path: str | Path, fmt: str, version: int, fields: Sequence[Field]) -> dict[str, np.ndarray]:
    """Load and validate an artifact; returns the arrays (text fields as str arrays)."""
    path = Path(path)
    arrays = dict(load_npz_bytes(path))
    arrays["version"] = np.asarray(check_format(path, arrays, fmt, version))
    validate_arrays(path, arrays, fields)
    return arrays


def write_npz(path: str | Path, fmt: str, version: int, arrays: Mapping[str, np.ndarray]) -> None:
    """Atomically write `arrays` plus the `format`/`version` header (uncompressed npz)."""
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload["format"] = np.asarray(fmt)
    payload["version"] = np.asarray(version, dtype=np.int32)
    for k, v in payload.items():
        if v.dtype == object:
            raise TypeError(f"field {k!r} is an object array; artifacts hold plain arrays only")
    with atomic_write(path) as f:
        np.savez(f, **payload)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
