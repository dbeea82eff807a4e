"""Where a pinned model lives on this machine: override env var, then the cache.

Order (first hit wins):
  1. AVATAR_WEIGHTS_<NAME> (e.g. AVATAR_WEIGHTS_SD_IMAGE_VARIATIONS): a folder in
     hub layout, or for "url" models the file itself or a folder holding it.
     Trusted as given (tests point it at tiny save_pretrained models).
  2. The cache: $AVATAR_CACHE (else $XDG_CACHE_HOME/avatarcli, else
     ~/.cache/avatarcli) / <name> / <revision> / <the lock's files>. A cache
     folder only counts when every file the lock lists is there (downloads are
     assembled under a temp name and renamed into place when complete).

Nothing here downloads: a missing model raises MissingModelError naming the
one command that fetches it (`avatar weights fetch NAME`).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from avatarcli.errors import MissingModelError
from avatarcli.io.hashing import sha256_file
from avatarcli.weights.lock import ModelEntry, get_entry


def cache_root() -> Path:
    p = os.environ.get("AVATAR_CACHE")
    if p:
        return Path(p).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "avatarcli"


def package_folder(module: str) -> Path | None:
    """The folder of an installed package, found WITHOUT importing it (its __init__ may fail)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def missing_modules(entry: ModelEntry) -> list[str]:
    """The modules a "pip" entry needs that cannot be found (nothing is imported)."""
    return [m for m in entry.requires if importlib.util.find_spec(m) is None]


def cache_folder(entry: ModelEntry) -> Path:
    """<cache>/<name>/<revision>: where `fetch` puts the model; for "pip" models the package's folder."""
    if entry.kind == "pip":
        assert entry.module is not None
        folder = package_folder(entry.module)
        return (
            folder if folder is not None else cache_root() / entry.name / f"(pip package {entry.package} not installed)"
        )
    return cache_root() / entry.name / entry.revision


def override_path(entry: ModelEntry) -> Path | None:
    v = os.environ.get(entry.env_var)
    return Path(v).expanduser() if v else None


# What replaces each model when it cannot be downloaded (the settings of landmarks / reconstruct /
# encode / denoise that make the model unnecessary, named as AvatarError mentions: the CLI shows
# their flags). One place: the missing-model errors, doctor and `weights list` all say it.
WITHOUT_DOWNLOAD = {
    "fan-2d": "`landmarks` FILE (your own 68 points) or `detector` dlib (pip install 'avatarcli[dlib]')",
    "s3fd": "`landmarks` FILE (your own 68 points) or `detector` dlib (pip install 'avatarcli[dlib]')",
    "sd-image-variations": "`no_diffusion`",
    "face-parsing": "`no_diffusion`",
}
ROUTE_SETTINGS = ("landmarks", "detector", "no_diffusion")  # the settings WITHOUT_DOWNLOAD mentions


def without_download(names) -> str:
    """'; or without it: OPTIONS' for models `names` that an option can replace ('' if none can)."""
    opts = list(dict.fromkeys(WITHOUT_DOWNLOAD[n] for n in names if n in WITHOUT_DOWNLOAD))
    if not opts:
        return ""
    return f"; or do without {'it' if len(list(names)) == 1 else 'them'}: {' and '.join(opts)}"


def _missing_error(entry: ModelEntry, why: str) -> MissingModelError:
    if entry.kind == "pip":
        return MissingModelError(
            f"model {entry.name!r} ({entry.source}) {why}; run `{entry.install}` (or set {entry.env_var} to a local copy)"
        )
    get = f"download {entry.source_file} from {entry.url}, then " if entry.kind == "manual" else ""
    return MissingModelError(
        f"model {entry.name!r} ({entry.source}) {why}; {get}run `{entry.fix}` "
        f"(or set {entry.env_var} to a local copy){without_download([entry.name])}",
        mentions=ROUTE_SETTINGS,
    )


def _override_folder(entry: ModelEntry, p: Path) -> Path:
    if not p.exists():
        raise MissingModelError(f"{entry.env_var} points to {p}, which does not exist")
    if entry.kind in ("url", "pip", "manual"):
        return p.parent if p.is_file() else p
    if not p.is_dir():
        raise MissingModelError(f"{entry.env_var} points to {p}, which is not a folder")
    return p


def cache_complete(entry: ModelEntry, folder: Path) -> bool:
    return folder.is_dir() and all((folder / f.path).is_file() for f in entry.files)


def resolve(name: str) -> Path:
    """The local folder of model `name` (hub layout for "hf" models)."""
    entry = get_entry(name)
    ov = override_path(entry)
    if ov is not None:
        return _override_folder(entry, ov)
    folder = cache_folder(entry)
    if entry.kind == "pip" and missing_modules(entry):
        raise _missing_error(entry, f"needs {', '.join(missing_modules(entry))}, which is not installed")
    if cache_complete(entry, folder):
        return folder
    if entry.kind == "pip":
        raise _missing_error(entry, "is not installed" if not folder.exists() else f"lacks {entry.files[0].path}")
    why = "is not downloaded" if not folder.exists() else "is incomplete in the cache"
    raise _missing_error(entry, why)


def resolve_file(name: str, path: str | None = None) -> Path:
    """One file of model `name`: `path` relative to its folder; default the lock's only/first file.

    For "url" models an override may name the file directly (any file name)."""
    entry = get_entry(name)
    rel = path or entry.files[0].path
    ov = override_path(entry)
    if ov is not None and entry.kind in ("url", "pip", "manual") and ov.is_file():
        return ov
    folder = resolve(name)
    f = folder / rel
    if not f.is_file():
        if ov is not None:
            raise MissingModelError(f"{entry.env_var}={ov}: no file {rel!r} there")
        raise _missing_error(entry, f"lacks {rel}")
    return f


@dataclass
class ModelStatus:
    """What `avatar weights list/verify` shows for one model."""

    name: str
    state: str  # "present" | "missing" | "incomplete" | "bad hash"
    source: str  # "override" | "cache"
    folder: Path
    size: int = 0  # bytes of the lock's files found
    problems: list[str] = field(default_factory=list)
    hashes_checked: int = 0

    @property
    def ok(self) -> bool:
        return self.state == "present"


def pinned_sha256(entry: ModelEntry, rel: str) -> str | None:
    """The pinned sha256 (full, or the url's hash prefix) of file `rel`; None when nothing is pinned."""
    lf = next(f for f in entry.files if f.path == rel)
    if lf.sha256:
        return lf.sha256
    if entry.kind == "url" and entry.sha256_prefix:
        return entry.sha256_prefix
    return None


def status(name: str, check_hashes: bool = False) -> ModelStatus:
    """Presence (and, with check_hashes, sha256) of every file the lock lists for `name`."""
    entry = get_entry(name)
    ov = override_path(entry)
    if ov is not None:
        source = "override"
        if not ov.exists():
            return ModelStatus(name, "missing", source, ov, problems=[f"{entry.env_var}={ov} does not exist"])
        if entry.kind in ("url", "pip", "manual") and ov.is_file():
            files = {entry.files[0].path: ov}
            folder = ov.parent
        else:
            folder = ov
            files = {f.path: folder / f.path for f in entry.files}
    else:
        source, folder = ("pip" if entry.kind == "pip" else "cache"), cache_folder(entry)
        files = {f.path: folder / f.path for f in entry.files}
    st = ModelStatus(name, "present", source, folder)
    present = {rel: p for rel, p in files.items() if p.is_file()}
    st.size = sum(p.stat().st_size for p in present.values())
    absent = [rel for rel in files if rel not in present]
    if source == "pip" and missing_modules(entry):
        st.state = "missing"
        st.problems.append(f"not installed: {', '.join(missing_modules(entry))}")
        return st
    if absent and source in ("cache", "pip") and not present:
        st.state = "missing"
        return st
    if absent:
        # An override is trusted by resolve(); only verify() holds it to the lock's file list.
        if source in ("cache", "pip") or check_hashes:
            st.state = "incomplete"
        st.problems += [f"missing {rel}" for rel in absent]
    if check_hashes:
        for rel, p in present.items():
            lf = next(f for f in entry.files if f.path == rel)
            if lf.size is not None and p.stat().st_size != lf.size:
                st.state = "bad hash"
                st.problems.append(f"{rel}: size {p.stat().st_size}, expected {lf.size}")
                continue
            want = pinned_sha256(entry, rel)
            if want is None:
                continue  # nothing pinned for this file
            sha = sha256_file(p)
            st.hashes_checked += 1
            if not sha.startswith(want):
                st.state = "bad hash"
                st.problems.append(f"{rel}: sha256 {sha[:16]}..., expected {want[:16]}...")
    return st


def verify(name: str) -> ModelStatus:
    """status() with every pinned sha256 recomputed."""
    return status(name, check_hashes=True)
