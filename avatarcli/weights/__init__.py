"""Pinned model weights: weights.lock, the resolver (override -> cache), fetch and verify.

resolve(name) -> Path            local folder of `name` (MissingModelError if absent)
resolve_file(name, path=None)    one file of it
status(name) / verify(name)      presence / sha256 check -> ModelStatus
fetch(name, progress=None)       download into the cache (pinned revision, sha256 checked)
"""

from avatarcli.weights.fetch import fetch, offline
from avatarcli.weights.lock import ModelEntry, env_var_for, flame_info, get_entry, load_lock, lock_path
from avatarcli.weights.resolver import (
    ModelStatus,
    cache_folder,
    cache_root,
    resolve,
    resolve_file,
    status,
    verify,
)

__all__ = [
    "ModelEntry",
    "ModelStatus",
    "cache_folder",
    "cache_root",
    "env_var_for",
    "fetch",
    "flame_info",
    "get_entry",
    "load_lock",
    "lock_path",
    "offline",
    "resolve",
    "resolve_file",
    "status",
    "verify",
]
