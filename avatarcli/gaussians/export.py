"""Exporting a Gaussian PLY to the formats gsplat's exporter writes (gsplat.exporter.export_splats).

    OUT.splat           antimatter15's .splat: 32 bytes per Gaussian (position f32x3, linear
                        scale f32x3, RGBA u8x4 from the DC colour and opacity, quaternion u8x4 as
                        q*128+128), sorted in Morton order; view-dependent colour is dropped.
    OUT.compressed.ply  SuperSplat's compressed PLY: chunks of 256 Gaussians with quantised
                        positions, scales, rotations, colours and u8 higher SH; Gaussians with
                        opacity <= 1/255 are dropped.
    OUT.ply             a plain 3DGS PLY (no normals, no binding, no avatarcli metadata).

Up axis. Our heads are +y up; other 3DGS files are taken as y-down (COLMAP) unless they say
otherwise. So that an exported head stays upright in `avatar render` (and in viewers): the two
PLY formats get a header comment `avatarcli-up y` (viewers skip comments), and a .splat, which
has no header, is written in the y-down convention of the scenes .splat viewers show: the head
turned 180 degrees about x (positions and rotations; a proper rotation, not a mirror).

The exporter is plain torch (no CUDA needed); it is given the stored values (log scales,
logit opacities, quaternions) exactly as the PLY holds them, except that the mouth interior of a head
whose lip state is stored (head.ply version 4) is gated as `render` draws it (avatarcli.gaussians.mouth:
hidden while the lips touch; a .compressed.ply then drops it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avatarcli.errors import EnvironmentProblem, InputError
from avatarcli.gaussians.mouth import gate_logits, head_gate
from avatarcli.gaussians.ply import UP_TAG
from avatarcli.io.atomic import atomic_write_bytes

FORMATS = {"splat": ".splat", "ply_compressed": ".compressed.ply", "ply": ".ply"}


def format_for_path(path: str | Path, fmt: str | None = None) -> str:
    """gsplat format name from `fmt` (splat | compressed | ply) or from the output's name."""
    name = Path(path).name.lower()
    if fmt is not None:
        key = {"splat": "splat", "compressed": "ply_compressed", "ply_compressed": "ply_compressed", "ply": "ply"}.get(
            fmt.lower()
        )
        if key is None:
            raise InputError(f"format {fmt!r}: expected splat, compressed or ply", setting="format")
        return key
    if name.endswith(".splat"):
        return "splat"
    if name.endswith(".compressed.ply"):
        return "ply_compressed"
    if name.endswith(".ply"):
        return "ply"
    raise InputError(
        "output must end with .splat, .compressed.ply or .ply (or give `format`)", path=path, mentions=("format",)
    )


def stored_values(ply) -> dict[str, torch.Tensor]:
    """The PLY's stored (pre-activation) parameters in export_splats' argument layout."""
    g = ply.gaussians
    raw = getattr(ply, "raw", None)
    n = g.n
    if (
        raw is not None
        and raw.log_scales.shape == (n, 3)
        and raw.opacity_logits.shape == (n,)
        and raw.quats.shape == (n, 4)
    ):
        log_scales = torch.from_numpy(np.asarray(raw.log_scales, np.float32).copy())
        logits = torch.from_numpy(np.asarray(raw.opacity_logits, np.float32).copy())
        quats = torch.from_numpy(np.asarray(raw.quats, np.float32).copy())
    else:
        log_scales = torch.log(g.scales.detach().float().cpu().clamp_min(1e-30))
        p = g.opacities.detach().double().cpu().clamp(1e-7, 1 - 1e-7)
        logits = torch.log(p / (1 - p)).float()
        quats = g.quats.detach().float().cpu()
    sh = g.sh.detach().float().cpu()  # [N, K, 3]
    return dict(
        means=g.means.detach().float().cpu().contiguous(),
        scales=log_scales.contiguous(),
        quats=quats.contiguous(),
        opacities=logits.contiguous(),
        sh0=sh[:, :1].contiguous(),  # [N, 1, 3]
        shN=sh[:, 1:].contiguous(),  # [N, K-1, 3]
    )


def turn_y_down(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stored values of a +y-up scene turned 180 degrees about x (y, z -> -y, -z): y-down."""
    out = dict(values)
    out["means"] = values["means"] * torch.tensor([1.0, -1.0, -1.0])
    w, x, y, z = values["quats"].unbind(-1)
    out["quats"] = torch.stack([-x, w, -z, y], -1).contiguous()  # (0, 1, 0, 0) * q, wxyz
    return out


def _with_up_comment(data: bytes, up: str) -> bytes:
    """Insert `comment avatarcli-up UP` after a PLY's format line."""
    first = data.index(b"\n", data.index(b"format")) + 1
    return data[:first] + f"comment {UP_TAG} {up}\n".encode("ascii") + data[first:]


def export_bytes(ply, fmt: str) -> bytes:
    """The file content of `ply` in gsplat format `fmt` (splat | ply_compressed | ply)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    try:
        from gsplat.exporter import export_splats
    except Exception as e:  # noqa: BLE001 - an install problem, one line
        raise EnvironmentProblem(f"gsplat's exporter cannot be imported ({type(e).__name__}: {e})") from None
    up = getattr(ply, "known_up", None)
    values = stored_values(ply)
    values["opacities"] = gate_logits(values["opacities"], ply.binding, head_gate(ply.meta))  # closed: no teeth
    if fmt == "splat" and up == "y":
        values = turn_y_down(values)
    with torch.no_grad():
        data = export_splats(**values, format=fmt)
    return _with_up_comment(data, up) if fmt != "splat" and up is not None else data


def export_file(ply, out: str | Path, fmt: str | None = None) -> tuple[Path, str]:
    """Write `ply` to `out` atomically in `fmt` (default: from the name). -> (path, format)."""
    out = Path(out)
    fmt = format_for_path(out, fmt)
    atomic_write_bytes(out, export_bytes(ply, fmt))
    return out, fmt
