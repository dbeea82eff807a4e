"""Find the FLAME model file and its landmark embedding from `--flame` / $AVATAR_FLAME.

`locate_flame(path)` accepts a model file or a folder (None -> $AVATAR_FLAME).

Model files, in order of preference (first = preferred):
  generic_model.pkl (FLAME 2020), flame2023.pkl, flame2023_Open.pkl, flame2023_no_jaw.pkl,
  male_model.pkl, female_model.pkl (names compared case-insensitively), generic_model.npz /
  flame2023*.npz, then any other *.npz FLAME export, then any other *.pkl whose name or folder
  says "flame" (FLAME2020/FLAME2023-style folders are searched too). A folder is searched itself first,
  then its subfolders two levels down; a better name wins over a shallower folder, ties go
  to the shallower folder, then to the alphabetically first path.
Embeddings (DECA `landmark_embedding.npy`, or FLAME_PyTorch `flame_static_embedding.pkl`
  + `flame_dynamic_embedding.npy`, both in one folder): beside the model file first, then
  the given folder and its subfolders (same order as above); in one folder DECA's is
  preferred (it has the full 68-point embedding and the dynamic contour).
A model file given directly uses the embedding beside it (or none).
When several candidates exist the choice is reported in `notes` (one line each).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from avatarcli.errors import EnvironmentProblem

ENV = "AVATAR_FLAME"
WHERE = (
    "FLAME is licensed and cannot be downloaded by this tool: register at https://flame.is.tue.mpg.de, "
    "download FLAME 2020 or 2023, then pass `flame` PATH (the model file or its folder) or set AVATAR_FLAME"
)
MENTIONS = ("flame",)  # the setting WHERE names (the CLI shows --flame)

MODEL_NAMES = (
    "generic_model.pkl",
    "flame2023.pkl",
    "flame2023_open.pkl",  # FLAME 2023 Open (CC-BY-4.0, downloadable without registration)
    "flame2023_no_jaw.pkl",
    "male_model.pkl",
    "female_model.pkl",
    "generic_model.npz",
    "flame2023.npz",
    "flame2023_no_jaw.npz",
)
DECA_EMBEDDING = "landmark_embedding.npy"
FP_STATIC = "flame_static_embedding.pkl"
FP_DYNAMIC = "flame_dynamic_embedding.npy"
MAX_DEPTH = 2
# folders never worth descending into (caches, VCS)
_SKIP_DIRS = {".git", "__pycache__", ".cache", "node_modules", ".venv"}


@dataclass
class FlameLocation:
    """The files `load_located` reads."""

    model: Path  # the model file (.pkl or .npz)
    embedding: Path | None = None  # DECA landmark_embedding.npy or FLAME_PyTorch flame_static_embedding.pkl
    dynamic_embedding: Path | None = None  # FLAME_PyTorch flame_dynamic_embedding.npy (with the static one)
    layout: str = "none"  # embedding layout: "deca", "flame_pytorch" or "none"
    notes: list[str] = field(default_factory=list)  # choices made among several candidates

    @property
    def model_format(self) -> str:
        return "npz" if self.model.suffix.lower() == ".npz" else "pkl"


def _folders(root: Path) -> list[tuple[int, Path]]:
    """(depth, folder) for root and its subfolders up to MAX_DEPTH, in a deterministic order."""
    out = [(0, root)]
    frontier = [root]
    for depth in range(1, MAX_DEPTH + 1):
        nxt = []
        for d in frontier:
            try:
                subs = sorted(p for p in d.iterdir() if p.is_dir() and p.name not in _SKIP_DIRS)
            except OSError:
                continue
            nxt.extend(subs)
        out.extend((depth, p) for p in nxt)
        frontier = nxt
    return out


def _model_rank(p: Path) -> int | None:
    name = p.name.lower()
    if name in MODEL_NAMES:
        return MODEL_NAMES.index(name)
    flamey = "flame" in (name + " " + p.parent.name.lower())
    if p.suffix.lower() == ".npz" and flamey:
        return len(MODEL_NAMES)  # another FLAME export, e.g. FLAME2020/flame_model.npz
    if p.suffix.lower() == ".pkl" and flamey and name not in (FP_STATIC,):
        return len(MODEL_NAMES) + 1  # another FLAME pickle under a name of its own
    return None


def _models_in(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_file() and _model_rank(p) is not None]
    except OSError:
        return []


def _embedding_in(folder: Path) -> tuple[str, Path, Path | None] | None:
    """(layout, embedding, dynamic) found directly in `folder`, DECA first."""
    deca = folder / DECA_EMBEDDING
    if deca.is_file():
        return "deca", deca, None
    st, dy = folder / FP_STATIC, folder / FP_DYNAMIC
    if st.is_file() and dy.is_file():
        return "flame_pytorch", st, dy
    return None


def _other_embeddings(folder: Path, chosen: tuple) -> list[str]:
    out = []
    if chosen[0] == "deca" and (folder / FP_STATIC).is_file() and (folder / FP_DYNAMIC).is_file():
        out.append(str(folder / FP_STATIC))
    return out


def _where(p: Path | None, how: str) -> str:
    return f"{p} ({how})" if p is not None else how


def locate_flame(path_or_folder: str | Path | None = None) -> FlameLocation:
    """Find the model and embedding; EnvironmentProblem (exit 3) when there is no FLAME model."""
    how = "`flame`"
    if path_or_folder is None or str(path_or_folder) == "":
        env = os.environ.get(ENV, "").strip()
        if not env:
            raise EnvironmentProblem(f"no FLAME model given. {WHERE}", mentions=MENTIONS)
        path_or_folder, how = env, f"from ${ENV}"
    p = Path(path_or_folder).expanduser()
    if not p.exists():
        raise EnvironmentProblem(f"FLAME model not found: {_where(p, how)} does not exist. {WHERE}", mentions=MENTIONS)

    notes: list[str] = []
    if p.is_file():
        model = p
        emb = _embedding_in(p.parent)
        if emb is None:
            return FlameLocation(model=model, notes=notes)
        notes.extend(f"also found {o}; using {emb[1]}" for o in _other_embeddings(p.parent, emb))
        return FlameLocation(model=model, embedding=emb[1], dynamic_embedding=emb[2], layout=emb[0], notes=notes)

    folders = _folders(p)
    cands = sorted(
        ((_model_rank(m), depth, str(m), m) for depth, d in folders for m in _models_in(d)),
        key=lambda c: c[:3],
    )
    if not cands:
        raise EnvironmentProblem(
            f"no FLAME model file (generic_model.pkl, flame2023.pkl, ... or a FLAME .npz) in the folder "
            f"{_where(p, how)}. {WHERE}",
            mentions=MENTIONS,
        )
    model = cands[0][3]
    if len(cands) > 1:
        others = ", ".join(str(c[3].relative_to(p)) for c in cands[1:4]) + (" ..." if len(cands) > 4 else "")
        notes.append(f"several FLAME model files in {p}: using {model.relative_to(p)} (also: {others})")

    # embedding: beside the model, then the given folder tree
    emb = _embedding_in(model.parent)
    if emb is not None:
        notes.extend(f"also found {o}; using {emb[1]}" for o in _other_embeddings(model.parent, emb))
    else:
        found = [(e, depth) for depth, d in folders if (e := _embedding_in(d)) is not None]
        if found:
            emb = found[0][0]
            if len(found) > 1:
                notes.append(f"several landmark embeddings under {p}: using {emb[1]}")
    if emb is None:
        return FlameLocation(model=model, notes=notes)
    return FlameLocation(model=model, embedding=emb[1], dynamic_embedding=emb[2], layout=emb[0], notes=notes)
