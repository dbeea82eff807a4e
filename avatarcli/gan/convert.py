"""EG3D / PanoHead checkpoint -> avatarcli.gan TriplaneGenerator weights (safetensors).

    res = convert_checkpoint(pkl, out)   # out.safetensors: state dict + the GanConfig as JSON metadata
    G = load_generator(out)

Names map as: backbone.mapping.{fcI,embed,w_avg} -> mapping.{layers.I,embed,w_avg};
backbone.synthesis.b<R>. -> backbone.blocks.<log2 R - 2>.; decoder.net.{0,2}. -> decoder.fc{0,1}.;
superresolution.block<K>. -> superres.blocks.<K>.; torgb. -> torgb. Every generator tensor must be
given with its exact shape; checkpoint tensors with no counterpart (e.g. PanoHead's t_mapping
camera offsets, a background network) are listed in the result, never silently used.
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
from avatarcli.io.atomic import atomic_path, atomic_write_bytes
from avatarcli.io.tensors import read_safetensors

_RULES = (
    (re.compile(r"^backbone\.mapping\.fc(\d+)\."), lambda m: f"mapping.layers.{m[1]}."),
    (re.compile(r"^backbone\.mapping\.embed\."), lambda m: "mapping.embed."),
    (re.compile(r"^backbone\.mapping\.w_avg$"), lambda m: "mapping.w_avg"),
    (re.compile(r"^backbone\.synthesis\.b(\d+)\."), lambda m: f"backbone.blocks.{int(math.log2(int(m[1]))) - 2}."),
    (re.compile(r"^decoder\.net\.0\."), lambda m: "decoder.fc0."),
    (re.compile(r"^decoder\.net\.2\."), lambda m: "decoder.fc1."),
    (re.compile(r"^superresolution\.block(\d+)\."), lambda m: f"superres.blocks.{m[1]}."),
    (re.compile(r"^torgb\."), lambda m: "torgb."),
)


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


def config_from_checkpoint(ck: Checkpoint) -> GanConfig:
    """GanConfig from the pickle's constructor arguments, with the sizes read off the tensors."""
    ik, rk, st = ck.init_kwargs, ck.rendering_kwargs, ck.state
    sr = sorted({int(m[1]) for k in st if (m := re.match(r"superresolution\.block(\d+)\.conv1\.weight$", k))})
    base = GanConfig()
    if (_ray_limit(rk, "ray_start", 0.0) is None) != (_ray_limit(rk, "ray_end", 0.0) is None):
        raise ArtifactError("rendering_kwargs: ray_start and ray_end must both be numbers or both 'auto'")
    act = rk.get("decoder_activation", "sigmoid")
    if act not in ("sigmoid", "none"):
        raise ArtifactError(f"decoder_activation {act!r} is not supported (sigmoid or none)")
    return dataclasses.replace(
        base,
        z_dim=int(ik.get("z_dim", base.z_dim)),
        w_dim=int(ik.get("w_dim", base.w_dim)),
        c_dim=int(ik.get("c_dim", base.c_dim)),
        mapping_layers=int((ik.get("mapping_kwargs") or {}).get("num_layers", base.mapping_layers)),
        backbone_resolution=int(rk.get("triplane_size", 256)),
        triplane_depth=int(rk.get("triplane_depth", 1)),
        channel_base=int(ik.get("channel_base", base.channel_base)),
        channel_max=int(ik.get("channel_max", base.channel_max)),
        img_resolution=int(ik.get("img_resolution", base.img_resolution)),
        plane_channels=int(st["decoder.net.0.weight"].shape[1]),
        decoder_hidden=int(st["decoder.net.0.weight"].shape[0]),
        decoder_features=int(st["decoder.net.2.weight"].shape[0]) - 1,
        decoder_sigmoid=act == "sigmoid",
        sr_channels=tuple(int(st[f"superresolution.block{i}.conv1.weight"].shape[0]) for i in sr),
        neural_resolution=int(ik.get("img_resolution", 512)) >> len(sr),
        depth_samples=int(rk.get("depth_resolution", base.depth_samples)),
        importance_samples=int(rk.get("depth_resolution_importance", base.importance_samples)),
        ray_start=_ray_limit(rk, "ray_start", base.ray_start),
        ray_end=_ray_limit(rk, "ray_end", base.ray_end),
        box_warp=float(rk.get("box_warp", base.box_warp)),
        white_background=bool(rk.get("white_back", False)),
        use_torgb_raw=any(k.startswith("torgb.") for k in st),
        c_scale=float(rk.get("c_scale", 1.0)),
        c_zero=bool(rk.get("c_gen_conditioning_zero", False)),
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
    raw = json.loads(meta["config"])
    raw["sr_channels"] = tuple(raw["sr_channels"])
    g = TriplaneGenerator(GanConfig(**raw))
    g.load_state_dict(state, strict=True)
    return g.eval().requires_grad_(False).to(device)
