"""Load a located FLAME model (pickle or npz) and its landmark embedding, safely.

Pickles go through avatarcli.flame.pickle_safe (no code runs); .npz files are read with
allow_pickle=False. The result is validated by avatarcli.flame.model.flame_from_arrays.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from avatarcli.errors import ArtifactError
from avatarcli.flame.embedding import LandmarkEmbedding, embedding_from_mapping
from avatarcli.flame.locate import FlameLocation, locate_flame
from avatarcli.flame.model import FlameModel, flame_from_arrays
from avatarcli.flame.pickle_safe import load_npy, load_pickle, loads_restricted
from avatarcli.progress import info


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"cannot read ({e.strerror or type(e).__name__})", path=path) from None


def _str_keys(path: Path, d, what: str) -> dict:
    if not isinstance(d, Mapping):
        raise ArtifactError(f"not a {what}: the file holds a {type(d).__name__}, expected a dict", path=path)
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in d.items()}


def _model_arrays(path: Path, data: bytes) -> dict:
    if path.suffix.lower() == ".npz":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001 - includes object arrays (pickles) in an npz
            raise ArtifactError(f"not a readable FLAME .npz ({type(e).__name__}: {str(e)[:120]})", path=path) from None
    return _str_keys(path, loads_restricted(data, path), "FLAME model")


def detect_release(path: Path, arrays: Mapping | None = None) -> str:
    """ "FLAME 2020", "FLAME 2023" or "unknown": from the file name, the folder names,
    or a release/version string stored in the file (npz exports)."""
    name = path.name.lower()
    if "2023" in name and "open" in name:
        return "FLAME 2023 Open"
    if name.startswith("flame2023") or "2023" in name:
        return "FLAME 2023"
    if name in ("generic_model.pkl", "male_model.pkl", "female_model.pkl", "generic_model.npz") or "2020" in name:
        return "FLAME 2020"
    for key in ("release", "version", "flame_version"):
        v = None if arrays is None else arrays.get(key)
        if v is not None:
            m = re.search(r"20(20|23)", str(np.asarray(v)))
            if m:
                return f"FLAME {m.group(0)}"
    for parent in path.parents[:2]:
        m = re.search(r"flame[ _-]?(2020|2023)", parent.name.lower())
        if m:
            return f"FLAME {m.group(1)}"
    return "unknown"


def load_embedding(loc: FlameLocation) -> LandmarkEmbedding | None:
    """The landmark embedding of `loc` (None when it has none)."""
    if loc.embedding is None:
        return None
    if loc.layout == "deca":
        d = _str_keys(loc.embedding, load_npy(loc.embedding), "landmark embedding")
        return embedding_from_mapping(loc.embedding, d)
    if loc.layout == "flame_pytorch":
        st = _str_keys(loc.embedding, load_pickle(loc.embedding), "landmark embedding")
        dyn = None
        if loc.dynamic_embedding is not None:
            dyn = _str_keys(loc.dynamic_embedding, load_npy(loc.dynamic_embedding), "landmark embedding")
            dyn = {k: _stack(loc.dynamic_embedding, k, v) for k, v in dyn.items()}
        return embedding_from_mapping(loc.embedding, st, dyn)
    raise ArtifactError(f"unknown landmark embedding layout {loc.layout!r}", path=loc.embedding)


def _stack(path: Path, key: str, v):
    """FLAME_PyTorch's dynamic table may be a list of per-bin arrays: one array."""
    if isinstance(v, (list, tuple)):
        try:
            return np.stack([np.asarray(x) for x in v])
        except ValueError:
            raise ArtifactError(f"key {key!r}: rows of different shapes", path=path) from None
    return v


def load_flame(path_or_folder: str | Path | None = None) -> FlameModel:
    """Load FLAME from a model file or a folder (None -> $AVATAR_FLAME).

    Missing -> EnvironmentProblem (exit 3) saying where to get FLAME."""
    return load_located(locate_flame(path_or_folder))


def load_located(loc: FlameLocation) -> FlameModel:
    """Read, validate and build the FlameModel of a located FLAME (notes are shown as info)."""
    for n in loc.notes:
        info(n)
    data = _read(loc.model)
    sha = hashlib.sha256(data).hexdigest()
    arrays = _model_arrays(loc.model, data)
    release = detect_release(loc.model, arrays)
    lm = load_embedding(loc)
    return flame_from_arrays(
        loc.model,
        arrays,
        landmarks=lm,
        sha256=sha,
        release=release,
        embedding_path=loc.embedding,
    )
