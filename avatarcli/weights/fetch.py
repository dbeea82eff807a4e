"""Download a pinned model into the cache (the only code here that uses the network).

"hf" models: huggingface_hub.snapshot_download at the pinned revision, only
the lock's files (allow_patterns). "url" models: a streamed download into a
.part file that resumes with an HTTP Range request. Both are assembled in
<cache>/<name>/.<revision>.partial and renamed to <revision> once every file
is there and every pinned sha256 matches; a file with a wrong hash is deleted.
Offline (HF_HUB_OFFLINE=1 or AVATAR_OFFLINE=1) nothing is attempted.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from avatarcli.errors import EnvironmentProblem, MissingModelError
from avatarcli.io.hashing import sha256_file
from avatarcli.weights.lock import ModelEntry, get_entry
from avatarcli.weights.resolver import cache_complete, cache_folder, override_path, pinned_sha256, resolve

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None)
CHUNK = 1 << 20
TIMEOUT_S = 60


def offline() -> bool:
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "AVATAR_OFFLINE")
    )


def _check_hashes(entry: ModelEntry, folder: Path) -> None:
    for f in entry.files:
        p = folder / f.path
        if not p.is_file():
            raise EnvironmentProblem(f"download of {entry.name!r} is missing {f.path}", path=folder)
        want = pinned_sha256(entry, f.path)
        if want is None:
            continue
        sha = sha256_file(p)
        if not sha.startswith(want):
            p.unlink(missing_ok=True)
            raise EnvironmentProblem(
                f"{entry.name}: downloaded {f.path} has sha256 {sha[:16]}..., the lock pins {want[:16]}...; "
                "the file was deleted (re-run the fetch; if it persists the source changed)"
            )


def _fetch_hf(entry: ModelEntry, partial: Path) -> None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a declared dependency
        raise EnvironmentProblem("huggingface_hub is not installed (pip install huggingface_hub)") from None
    try:
        snapshot_download(
            entry.repo,  # type: ignore[arg-type]
            revision=entry.revision,
            local_dir=partial,
            allow_patterns=[f.path for f in entry.files],
        )
    except Exception as e:  # noqa: BLE001 - network/hub errors of many kinds -> one line
        raise EnvironmentProblem(
            f"could not download {entry.name!r} from hf:{entry.repo}@{entry.revision[:12]} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None


def _fetch_url(entry: ModelEntry, partial: Path, progress: Progress | None) -> None:
    dest = partial / entry.files[0].path
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(entry.url, headers={"User-Agent": "avatarcli"})  # type: ignore[arg-type]
    if done:
        req.add_header("Range", f"bytes={done}-")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
            if done and r.status != 206:  # server ignored Range: start over
                done = 0
            length = r.headers.get("Content-Length")
            total = done + int(length) if length else None
            with open(part, "ab" if done else "wb") as f:
                while block := r.read(CHUNK):
                    f.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
    except urllib.error.HTTPError as e:
        if e.code == 416 and done:  # already complete
            pass
        else:
            raise EnvironmentProblem(f"could not download {entry.name!r} from {entry.url} (HTTP {e.code})") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise EnvironmentProblem(
            f"could not download {entry.name!r} from {entry.url} ({reason}); re-run to resume"
        ) from None
    os.replace(part, dest)


def fetch(name: str, progress: Progress | None = None, force: bool = False) -> Path:
    """Make model `name` present in the cache; returns its folder.

    With an override env var set nothing is downloaded (the override wins anyway)."""
    entry = get_entry(name)
    ov = override_path(entry)
    if ov is not None:
        return resolve(name)
    folder = cache_folder(entry)
    if entry.kind == "pip":  # installed by pip, never downloaded here
        return resolve(name)
    if cache_complete(entry, folder) and not force:
        return folder
    if entry.kind == "manual":
        raise MissingModelError(
            f"{name!r} cannot be downloaded automatically: download {entry.source_file} from {entry.url} "
            f"(see {entry.homepage}), then run `avatar weights convert {name} --from {entry.source_file}`"
        )
    if offline():
        raise MissingModelError(
            f"cannot download {name!r} ({entry.source}): offline (HF_HUB_OFFLINE/AVATAR_OFFLINE is set); "
            f"unset it and run `avatar weights fetch {name}`, or set {entry.env_var} to a local copy"
        )
    partial = folder.parent / f".{entry.revision}.partial"
    try:
        partial.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentProblem(f"cannot create the weights cache ({e.strerror})", path=folder.parent) from None
    if entry.kind == "hf":
        _fetch_hf(entry, partial)
    else:
        _fetch_url(entry, partial, progress)
    _check_hashes(entry, partial)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)
    return folder
