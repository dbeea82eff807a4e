"""Reading a safetensors file: the one place that turns any unreadable file into an ArtifactError."""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open
from torch import Tensor

from avatarcli.errors import ArtifactError


def read_safetensors(path: str | Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    """(metadata, tensors on the CPU) of a safetensors file. A missing or unreadable file is an
    ArtifactError naming it (safetensors raises several exception types for a bad header)."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError("file not found", path=p)
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any unreadable file is a bad artifact
        raise ArtifactError(f"not a readable safetensors file ({type(e).__name__}: {str(e)[:120]})", path=p) from None
    return meta, tensors
