"""EG3D / PanoHead checkpoint -> avatarcli.gan TriplaneGenerator weights (safetensors).

    res = convert_checkpoint(pkl, out)   # out.safetensors: state dict + the GanConfig as JSON metadata
    G = load_generator(out)

Names (the reference's module attributes: training/triplane.py, networks_stylegan2.py and
superresolution.py of EG3D / PanoHead) map as: backbone.mapping.{fcI,embed,w_avg} ->
mapping.{layers.I,embed,w_avg}; backbone.synthesis.b<R>. -> backbone.blocks.<log2 R - 2>.;
decoder.net.{0,2}. -> decoder.fc{0,1}.; superresolution.block<K>. -> superres.blocks.<K>.;
torgb. -> torgb.; bcg_synthesis.b<R>. -> bcg.blocks.<log2 R - 2>. (PanoHead's background);
t_mapping.{fcI,embed,w_avg} -> t_mapping.{layers.I,embed,w_avg} (its camera offsets). Every
generator tensor must be given with its exact shape; checkpoint tensors with no counterpart
are listed in the result, never silently used.

The config comes from the pickle's constructor arguments and rendering_kwargs, with the
reference's defaults where a key is absent (c_scale 0, decoder_activation sigmoid), and the
sizes read off the tensors. The layout (plane axes, output scaling, PanoHead's density crop)
is PanoHead's when the checkpoint has a tri-grid depth or camera-offset network, else EG3D's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save, save_file

from avatarcli.errors import ArtifactError
from avatarcli.gan.checkpoint import Checkpoint, load_checkpoint
from avatarcli.gan.generator import GanConfig, TriplaneGenerator
from avatarcli.gan.volume import DECODER_ACTIVATIONS
from avatarcli.io.atomic import atomic_path, atomic_write_bytes
from avatarcli.io.tensors import read_safetensors


def _block(prefix: str):
    return lambda m: f"{prefix}.blocks.{int(math.log2(int(m[1]))) - 2}."


_RULES = (
    (re.compile(r"^backbone\.mapping\.fc(\d+)\."), lambda m: f"mapping.layers.{m[1]}."),
    (re.compile(r"^backbone\.mapping\.embed\."), lambda m: "mapping.embed."),
    (re.compile(r"^backbone\.mapping\.w_avg$"), lambda m: "mapping.w_avg"),
    (re.compile(r"^backbone\.synthesis\.b(\d+)\."), _block("backbone")),
    (re.compile(r"^decoder\.net\.0\."), lambda m: "decoder.fc0."),
    (re.compile(r"^decoder\.net\.2\."), lambda m: "decoder.fc1."),
    (re.compile(r"^superresolution\.block(\d+)\."), lambda m: f"superres.blocks.{m[1]}."),
    (re.compile(r"^torgb\."), lambda m: "torgb."),
    (re.compile(r"^bcg_synthesis\.b(\d+)\."), _block("bcg")),
    (re.compile(r"^t_mapping\.fc(\d+)\."), lambda m: f"t_mapping.layers.{m[1]}."),
    (re.compile(r"^t_mapping\.embed\."), lambda m: "t_mapping.embed."),
    (re.compile(r"^t_mapping\.w_avg$"), lambda m: "t_mapping.w_avg"),
)

# EG3D's super-resolution modules (training/superresolution.py): does the first block double the
# resolution? (8X / 8XDC: 128 -> 256 -> 512; 4X: 128 -> 128 -> 256; 2X: 64 -> 64 -> 128)
SR_FIRST_UP = {
    "SuperresolutionHybrid8XDC": True,
    "SuperresolutionHybrid8X": True,
    "SuperresolutionHybrid4X": False,
    "SuperresolutionHybridDeepfp32": False,
    "SuperresolutionHybrid2X": False,
}
_SR_BY_RESOLUTION = {512: "SuperresolutionHybrid8XDC", 256: "SuperresolutionHybrid4X", 128: "SuperresolutionHybrid2X"}


def map_key(name: str) -> str | None:
    """A checkpoint tensor name -> this generator's, or None when it has no counterpart."""
    for pat, rep in _RULES:
        m = pat.match(name)
        if m:
            return rep(m) + name[m.end() :]
    return None


def _ray_limit(rk: dict, key: str, default: float | None) -> float | None:
    """A rendering ray bound: a number, or "auto" (None: the ray's entry / exit of the box)."""
    v = rk.get(key, default)
    if v is None or (isinstance(v, str) and v.strip().lower() == "auto"):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ArtifactError(f"rendering_kwargs {key}={v!r} is neither a number nor 'auto'") from None


def _sr_module(rk: dict, st: dict, img_resolution: int) -> tuple[int, bool]:
    """(input resolution, first block doubles) of the checkpoint's super-resolution module: the
    module's kind by its class name (train.py's choice by resolution when absent), the sizes off
    the first block's noise buffer."""
    name = str(rk.get("superresolution_module") or _SR_BY_RESOLUTION.get(img_resolution, "")).rsplit(".", 1)[-1]
    if name not in SR_FIRST_UP:
        raise ArtifactError(f"super-resolution module {name!r} is not supported ({', '.join(SR_FIRST_UP)})")
    noise = st.get("superresolution.block0.conv1.noise_const")
    if noise is None:
        raise ArtifactError("the checkpoint has no superresolution.block0.conv1.noise_const")
    first = int(noise.shape[-1])
    return (first // 2 if SR_FIRST_UP[name] else first), SR_FIRST_UP[name]


def _count(st: dict, pattern: str) -> list[int]:
    return sorted({int(m[1]) for k in st if (m := re.match(pattern, k))})


def config_from_checkpoint(ck: Checkpoint) -> GanConfig:
    """GanConfig from the pickle's constructor arguments, with the sizes read off the tensors."""
    ik, rk, st = ck.init_kwargs, ck.rendering_kwargs, ck.state
    sr = _count(st, r"superresolution\.block(\d+)\.conv1\.weight$")
    base = GanConfig()
    if (_ray_limit(rk, "ray_start", 0.0) is None) != (_ray_limit(rk, "ray_end", 0.0) is None):
        raise ArtifactError("rendering_kwargs: ray_start and ray_end must both be numbers or both 'auto'")
    act = rk.get("decoder_activation", "sigmoid")
    if act not in DECODER_ACTIVATIONS:
        raise ArtifactError(f"decoder_activation {act!r} is not supported ({', '.join(DECODER_ACTIVATIONS)})")
    noise = rk.get("superresolution_noise_mode", "none")
    if noise not in ("none", "random", "const"):
        raise ArtifactError(f"superresolution_noise_mode {noise!r} is not supported (none, random, const)")
    img_res = int(ik.get("img_resolution", base.img_resolution))
    sr_in, sr_up = _sr_module(rk, st, img_res)
    panohead = "triplane_depth" in rk or any(k.startswith("t_mapping.") for k in st)
    return dataclasses.replace(
        base,
        z_dim=int(ik.get("z_dim", base.z_dim)),
        w_dim=int(ik.get("w_dim", base.w_dim)),
        c_dim=int(ik.get("c_dim", base.c_dim)),
        mapping_layers=len(_count(st, r"backbone\.mapping\.fc(\d+)\.weight$")),
        backbone_resolution=int(rk.get("triplane_size", 256)),
        triplane_depth=int(rk.get("triplane_depth", 1)),
        channel_base=int(ik.get("channel_base", base.channel_base)),
        channel_max=int(ik.get("channel_max", base.channel_max)),
        conv_clamp=None if ik.get("conv_clamp") is None else float(ik["conv_clamp"]),
        layout="panohead" if panohead else "eg3d",
        triplane_crop=0.1 if panohead else 0.0,
        img_resolution=img_res,
        plane_channels=int(st["decoder.net.0.weight"].shape[1]),
        decoder_hidden=int(st["decoder.net.0.weight"].shape[0]),
        decoder_features=int(st["decoder.net.2.weight"].shape[0]) - 1,
        decoder_activation=act,
        sr_channels=tuple(int(st[f"superresolution.block{i}.conv1.weight"].shape[0]) for i in sr),
        sr_input_resolution=sr_in,
        sr_first_up=sr_up,
        sr_noise_mode=noise,
        sr_conv_clamp=256.0 if int(ik.get("sr_num_fp16_res", 0) or 0) > 0 else None,
        use_background=any(k.startswith("bcg_synthesis.") for k in st),
        camera_offset=any(k.startswith("t_mapping.") for k in st),
        neural_resolution=int(ck.attrs.get("neural_rendering_resolution", 64)),
        depth_samples=int(rk.get("depth_resolution", base.depth_samples)),
        importance_samples=int(rk.get("depth_resolution_importance", base.importance_samples)),
        ray_start=_ray_limit(rk, "ray_start", base.ray_start),
        ray_end=_ray_limit(rk, "ray_end", base.ray_end),
        camera_radius=float(rk.get("avg_camera_radius", base.camera_radius)),
        box_warp=float(rk.get("box_warp", base.box_warp)),
        white_background=bool(rk.get("white_back", False)),
        use_torgb_raw=any(k.startswith("torgb.") for k in st),
        c_scale=float(rk.get("c_scale", 0.0)),  # the reference reads c_scale with a default of 0
        c_zero=bool(rk.get("c_gen_conditioning_zero", False)),
    )


def describe(cfg: GanConfig) -> str:
    """The settings worth checking against the paper, on one line (what `weights convert` prints)."""
    rays = "auto (the box)" if cfg.ray_start is None else f"{cfg.ray_start:g}..{cfg.ray_end:g}"
    return (
        f"layout {cfg.layout}, tri-grid depth {cfg.triplane_depth}, {cfg.backbone_resolution} px planes, decoder "
        f"{cfg.decoder_activation}, c_scale {cfg.c_scale:g}{' (conditioning zeroed)' if cfg.c_zero else ''}, rays "
        f"{rays}, rendering {cfg.neural_resolution} px -> super-resolution {cfg.sr_input_resolution} px -> "
        f"{cfg.img_resolution} px, background {'yes' if cfg.use_background else 'no'}, camera offset "
        f"{'yes' if cfg.camera_offset else 'no'}"
    )


@dataclass
class ConversionResult:
    config: GanConfig
    tensors: int  # generator tensors written
    unmapped: list[str]  # checkpoint tensors with no counterpart here (not used)
    source_chars: int  # embedded source skipped (never run)


def map_state(ck: Checkpoint, cfg: GanConfig, path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    want = TriplaneGenerator(cfg).state_dict()
    got: dict[str, torch.Tensor] = {}
    unmapped = []
    for k, v in ck.state.items():
        mine = map_key(k)
        if mine is None or mine not in want:
            unmapped.append(k)
            continue
        got[mine] = torch.from_numpy(np.array(v, dtype=np.float32, order="C"))  # keeps 0-d scalars 0-d
    bad = [f"{k} {tuple(got[k].shape)} != {tuple(want[k].shape)}" for k in got if got[k].shape != want[k].shape]
    missing = [k for k in want if k not in got]
    if bad or missing:
        why = "; ".join(bad[:3] + [f"missing {k}" for k in missing[:3]])
        n = len(bad) + len(missing)
        raise ArtifactError(f"checkpoint does not fit the generator ({n} problem(s): {why})", path=path)
    return got, unmapped


def convert_checkpoint(pkl: str | Path, out: str | Path) -> ConversionResult:
    """Read `pkl` as data only, map it, write `out` (.safetensors) atomically."""
    ck = load_checkpoint(pkl)
    cfg = config_from_checkpoint(ck)
    tensors, unmapped = map_state(ck, cfg, Path(pkl))
    meta = {"format": "avatarcli.gan/1", "config": json.dumps(cfg.to_dict()), "source_class": ck.class_name}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return ConversionResult(cfg, len(tensors), unmapped, ck.source_chars)


def save_generator(G: TriplaneGenerator, out: str | Path) -> None:
    """Write G in the converted format (what `load_generator` reads), atomically."""
    meta = {"format": "avatarcli.gan/1", "config": json.dumps(G.cfg.to_dict()), "source_class": type(G).__name__}
    atomic_write_bytes(out, save({k: v.contiguous() for k, v in G.state_dict().items()}, metadata=meta))


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> TriplaneGenerator:
    """A TriplaneGenerator from a converted .safetensors (eval mode, no gradients on weights)."""
    p = Path(path)
    meta, state = read_safetensors(p)
    if meta.get("format") != "avatarcli.gan/1":
        raise ArtifactError("not an avatarcli GAN weights file (run `avatar weights convert`)", path=p)
    try:
        cfg = GanConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"GAN weights file has an unreadable config ({type(e).__name__})", path=p) from None
    g = TriplaneGenerator(cfg)
    g.load_state_dict(state, strict=True)
    return g.eval().requires_grad_(False).to(device)
