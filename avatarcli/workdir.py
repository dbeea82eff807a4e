"""Per-image work folders for `avatar reconstruct --workdir DIR`: DIR/NAME/<artifact>.

Each artifact written there gets a sidecar `<artifact>.inputs.json` recording
the content hashes of what it was made from (input files, upstream artifacts,
the stage's settings). A re-run reuses an artifact only when the artifact and
its sidecar both exist and the recorded key equals the key of the current
inputs: change the photo, the FLAME model or a setting and that stage and
everything downstream are redone. Sidecars are written after their artifact
(both atomically), so a run killed between the two redoes the stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avatarcli.io.atomic import atomic_write_bytes
from avatarcli.io.hashing import sha256_bytes, sha256_file


def stage_key(**parts: Any) -> str:
    """A stable hash of a stage's inputs: file paths are hashed by content."""

    def norm(v: Any) -> Any:
        if isinstance(v, Path):
            return {"sha256": sha256_file(v)} if v.is_file() else {"missing": str(v)}
        if isinstance(v, dict):
            return {k: norm(x) for k, x in sorted(v.items())}
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        return v

    blob = json.dumps(norm(parts), sort_keys=True, default=str).encode()
    return sha256_bytes(blob)


@dataclass
class WorkDir:
    root: Path

    def path(self, name: str) -> Path:
        return self.root / name

    def _sidecar(self, name: str) -> Path:
        return self.root / f"{name}.inputs.json"

    def is_fresh(self, name: str, key: str) -> bool:
        art, side = self.path(name), self._sidecar(name)
        if not (art.is_file() and side.is_file()):
            return False
        try:
            return json.loads(side.read_text()).get("key") == key
        except (OSError, ValueError):
            return False

    def mark_done(self, name: str, key: str) -> None:
        atomic_write_bytes(self._sidecar(name), json.dumps({"key": key, "artifact": name}).encode())

    def invalidate(self, name: str) -> None:
        self._sidecar(name).unlink(missing_ok=True)
