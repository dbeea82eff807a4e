"""Reading the web-viewer formats `avatar export` writes (gsplat's exporter), so `render` takes them.

    .splat           antimatter15's layout, 32 bytes per Gaussian, no header: position f32x3,
                     linear scale f32x3, RGBA u8x4 (rgb = 0.5 + SH_C0 * f_dc, alpha = opacity,
                     both x255 and truncated), quaternion u8x4 (wxyz, q * 128 + 128, truncated).
    .compressed.ply  SuperSplat's compressed PLY: a `chunk` element (per 256 Gaussians: min/max of
                     position, log scale and colour), a `vertex` element of four packed uint32
                     (position 11/10/11 bits, rotation "largest three" 2+10+10+10, log scale
                     11/10/11, colour + opacity 8/8/8/8) and an optional `sh` element (u8 higher
                     SH, v = (q / 256 - 0.5) * 8, channel-major like f_rest).

Quantised values are decoded to the middle of their bin (truncation) or to the bin value
(rounding), so a round trip export -> read is within half a step of each quantiser.
The decoders return activated Gaussians (linear scales, opacities in [0, 1], unit quaternions).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from avatarcli.errors import ArtifactError
from avatarcli.gaussians.model import SH_C0, Gaussians

SPLAT_RECORD = 32
_CHUNK = 256
_SPLAT_DTYPE = np.dtype([("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


def _gaussians(means, quats, scales, opac, sh) -> Gaussians:
    q = quats.astype(np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), np.array([1.0, 0, 0, 0]))
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return Gaussians(means=t(means), quats=t(q), scales=t(scales), opacities=t(opac), sh=t(sh))


def _check_finite(path, **arrays) -> None:
    for name, a in arrays.items():
        if not np.isfinite(a).all():
            raise ArtifactError(f"{name} has non-finite values", path=path)


def read_splat_bytes(data: bytes, path) -> Gaussians:
    """antimatter15 .splat content -> Gaussians (SH degree 0)."""
    if len(data) == 0 or len(data) % SPLAT_RECORD:
        raise ArtifactError(
            f"not a .splat file: {len(data)} bytes is not a positive multiple of {SPLAT_RECORD}", path=path
        )
    rec = np.frombuffer(data, dtype=_SPLAT_DTYPE)
    means, scales = rec["pos"].astype(np.float32), rec["scale"].astype(np.float32)
    _check_finite(path, position=means, scale=scales)
    if (scales < 0).any():
        raise ArtifactError("negative scales: not a .splat file", path=path)
    rgba = (rec["rgba"].astype(np.float64) + 0.5) / 255.0  # [N, 4] truncated bins -> their middle
    quats = (rec["rot"].astype(np.float64) - 127.5) / 128.0  # [N, 4]
    sh = ((rgba[:, :3] - 0.5) / SH_C0)[:, None, :]  # [N, 1, 3]
    return _gaussians(means, quats, scales, rgba[:, 3], sh)


def is_compressed_ply(elements) -> bool:
    names = {e.name: e for e in elements}
    return "chunk" in names and "vertex" in names and any(p[0] == "packed_position" for p in names["vertex"].props)


def _element_tables(data: bytes, fmt: str, elements, offset: int, path) -> dict[str, np.ndarray]:
    if fmt != "binary_little_endian":
        raise ArtifactError(f"compressed PLY in {fmt}: only binary_little_endian is read", path=path)
    tables = {}
    for e in elements:
        if any(p[1] is not None for p in e.props):
            raise ArtifactError(f"compressed PLY element {e.name!r} has list properties", path=path)
        dtype = np.dtype([(p[0], "<" + p[2]) for p in e.props])
        need = offset + e.count * dtype.itemsize
        if len(data) < need:
            raise ArtifactError(f"truncated PLY: {len(data)} bytes, the header needs {need}", path=path)
        tables[e.name] = np.frombuffer(data, dtype=dtype, count=e.count, offset=offset)
        offset = need
    return tables


def _cols(table: np.ndarray, names: list[str], path, what: str) -> np.ndarray:
    missing = [n for n in names if n not in (table.dtype.names or ())]
    if missing:
        raise ArtifactError(f"compressed PLY: {what} lacks {', '.join(missing)}", path=path)
    return np.stack([table[n].astype(np.float64) for n in names], axis=1)


def _unpack_111011(p: np.ndarray) -> np.ndarray:
    """uint32 [N] -> [N, 3] in [0, 1] (11, 10, 11 bits)."""
    return np.stack([((p >> 21) & 0x7FF) / 2047.0, ((p >> 11) & 0x3FF) / 1023.0, (p & 0x7FF) / 2047.0], axis=1)


def _unpack_rotation(p: np.ndarray) -> np.ndarray:
    """'largest three' uint32 [N] -> wxyz quaternions [N, 4]."""
    largest = (p >> 30).astype(np.int64)
    three = np.stack([(p >> 20) & 0x3FF, (p >> 10) & 0x3FF, p & 0x3FF], axis=1) / 1023.0
    three = (three - 0.5) / (math.sqrt(2) * 0.5)  # [N, 3]
    q = np.zeros((p.shape[0], 4))
    rest = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]  # [N, 3]
    np.put_along_axis(q, rest, three, axis=1)
    q[np.arange(p.shape[0]), largest] = np.sqrt(np.clip(1.0 - (three * three).sum(1), 0.0, None))
    return q


def read_compressed_ply(data: bytes, fmt: str, elements, offset: int, path) -> Gaussians:
    """SuperSplat compressed PLY content (header already parsed) -> Gaussians."""
    t = _element_tables(data, fmt, elements, offset, path)
    chunk, vert = t["chunk"], t["vertex"]
    n = vert.shape[0]
    if n == 0:
        raise ArtifactError("the PLY holds no Gaussians", path=path)
    if chunk.shape[0] != -(-n // _CHUNK):
        raise ArtifactError(f"{chunk.shape[0]} chunks for {n} Gaussians (expected 256 per chunk)", path=path)
    xyz = ["x", "y", "z"]
    lo_p, hi_p = (_cols(chunk, [f"{m}_{a}" for a in xyz], path, "chunk") for m in ("min", "max"))
    lo_s, hi_s = (_cols(chunk, [f"{m}_scale_{a}" for a in xyz], path, "chunk") for m in ("min", "max"))
    has_colour = "min_r" in (chunk.dtype.names or ())
    packed = _cols(vert, ["packed_position", "packed_rotation", "packed_scale", "packed_color"], path, "vertex")
    packed = packed.astype(np.uint64)  # [N, 4]
    ci = np.arange(n) // _CHUNK  # chunk of each Gaussian
    lerp = lambda lo, hi, u: lo[ci] + (hi[ci] - lo[ci]) * u  # noqa: E731
    means = lerp(lo_p, hi_p, _unpack_111011(packed[:, 0]))
    log_scales = lerp(lo_s, hi_s, _unpack_111011(packed[:, 2]))
    c = packed[:, 3]
    rgba = np.stack([(c >> 24) & 0xFF, (c >> 16) & 0xFF, (c >> 8) & 0xFF, c & 0xFF], axis=1) / 255.0
    rgb = rgba[:, :3]
    if has_colour:
        lo_c, hi_c = (_cols(chunk, [f"{m}_{a}" for a in "rgb"], path, "chunk") for m in ("min", "max"))
        rgb = lerp(lo_c, hi_c, rgb)
    sh = ((rgb - 0.5) / SH_C0)[:, None, :]  # [N, 1, 3]
    if "sh" in t:
        k_rest = len(t["sh"].dtype.names or ())
        if k_rest not in (0, 9, 24, 45) or t["sh"].shape[0] != n:
            raise ArtifactError(f"compressed PLY: {k_rest} f_rest values for {t['sh'].shape[0]} rows", path=path)
        if k_rest:
            q = _cols(t["sh"], [f"f_rest_{i}" for i in range(k_rest)], path, "sh")
            rest = ((q + 0.5) / 256.0 - 0.5) * 8.0  # [N, 3 (K-1)] channel-major
            sh = np.concatenate([sh, rest.reshape(n, 3, k_rest // 3).transpose(0, 2, 1)], axis=1)
    _check_finite(path, position=means, scale=log_scales, colour=sh)
    return _gaussians(means, _unpack_rotation(packed[:, 1]), np.exp(log_scales), rgba[:, 3], sh)
