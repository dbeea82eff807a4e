"""Read a StyleGAN-family training pickle (EG3D / PanoHead `network-snapshot-*.pkl`) as data only.

Those pickles are code-bearing: each network is a `torch_utils.persistence` object whose state
carries the source of its module (`module_src`), which `pickle.load` would exec. Here the FLAME
loader's restricted unpickler (avatarcli.flame.pickle_safe) runs with a list that turns every
network into an inert `PersistentStandIn` (class name, state dict, source length; the source is
never compiled), plain torch modules into `ModuleStandIn`, `dnnlib.util.EasyDict` into a dict,
tensors and parameters into numpy arrays. Anything else is refused before it is built.

    ck = load_checkpoint(path)       # ck.state: {"backbone.synthesis.b4.const": ndarray, ...}
    ck.init_kwargs, ck.rendering_kwargs
"""

from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avatarcli.errors import ArtifactError
from avatarcli.flame.pickle_safe import data_builders, loads_restricted


class PersistentStandIn:
    """A persistence-wrapped network: its class name and state; the module source is kept only as
    a length (never compiled or executed)."""

    def __init__(self, class_name: str, state: dict, source_chars: int):
        self.class_name, self.state, self.source_chars = class_name, state, source_chars


class ModuleStandIn:
    """A plain torch.nn module (Sequential, Softplus, ...) pickled inside a network: data only."""

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}


class EasyDictStandIn(dict):
    """dnnlib.util.EasyDict: a dict (attribute access is not needed)."""

    def __setstate__(self, state):  # EasyDict pickles an (empty) __dict__ state
        pass


def _reconstruct_persistent(meta) -> PersistentStandIn:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise pickle.UnpicklingError("persistence record without type 'class' and a class_name")
    src = meta.get("module_src")
    state = meta.get("state")
    if isinstance(state, tuple):  # a reduce-style state: the first dict in it is __dict__
        state = next((s for s in state if isinstance(s, dict)), None)
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"{meta['class_name']}: state is not a dict")
    return PersistentStandIn(meta["class_name"], state, len(src) if isinstance(src, str) else 0)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    if not isinstance(data, np.ndarray):
        raise pickle.UnpicklingError("torch parameter without tensor data")
    return data


def _newobj(cls, *args):
    if cls not in (ModuleStandIn, EasyDictStandIn) or args:
        raise pickle.UnpicklingError("copyreg.__newobj__ is allowed only for the module / EasyDict stand-ins")
    return cls.__new__(cls)


class _TorchModules(dict):
    """torch.nn.modules.<sub>: every class name -> ModuleStandIn."""

    def get(self, name, default=None):
        return ModuleStandIn if isinstance(name, str) and name.isidentifier() else default


def checkpoint_globals() -> dict[str, dict[str, Any]]:
    allowed = data_builders()
    allowed["torch_utils.persistence"] = {"_reconstruct_persistent_obj": _reconstruct_persistent}
    allowed["dnnlib.util"] = {"EasyDict": EasyDictStandIn}
    allowed["dnnlib"] = {"EasyDict": EasyDictStandIn}
    allowed["torch._utils"]["_rebuild_parameter"] = _rebuild_parameter
    allowed["torch._utils"]["_rebuild_parameter_with_state"] = _rebuild_parameter
    for m in ("copyreg", "copy_reg"):
        allowed[m] = {"__newobj__": _newobj}
    for sub in ("container", "activation", "linear", "conv", "module"):
        allowed[f"torch.nn.modules.{sub}"] = _TorchModules()
    return allowed


@dataclass
class Checkpoint:
    class_name: str  # e.g. "training.triplane.TriPlaneGenerator"
    state: dict[str, np.ndarray]  # the network's state dict, flattened
    init_kwargs: dict
    rendering_kwargs: dict
    source_chars: int  # how much embedded source was skipped (never run)
    attrs: dict = field(default_factory=dict)  # the network's plain attributes (e.g. neural_rendering_resolution)


def _module_state(obj, prefix: str, out: dict[str, np.ndarray], depth: int = 0) -> None:
    if depth > 40:
        raise ValueError("modules nested too deeply")
    st = obj.state
    skip = set(st.get("_non_persistent_buffers_set", ()) or ())
    for group in ("_parameters", "_buffers"):
        for k, v in (st.get(group) or {}).items():
            if v is not None and k not in skip:
                if not isinstance(v, np.ndarray):
                    raise ValueError(f"{prefix}{k} is not an array")
                out[prefix + k] = v
    for k, child in (st.get("_modules") or {}).items():
        if isinstance(child, (PersistentStandIn, ModuleStandIn)):
            _module_state(child, f"{prefix}{k}.", out, depth + 1)


def _plain(d: Any) -> dict:
    return {k: _plain(v) if isinstance(v, dict) else v for k, v in d.items()} if isinstance(d, dict) else {}


def load_checkpoint(path: str | Path, key: str = "G_ema") -> Checkpoint:
    """The network `key` of a training pickle, as data; ArtifactError / UnsafePickleError otherwise."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ArtifactError(f"cannot read ({e.strerror or type(e).__name__})", path=p) from None
    top = loads_restricted(data, p, checkpoint_globals(), "a GAN checkpoint", post=lambda o: o, label="GAN checkpoint")
    net = top.get(key) if isinstance(top, dict) else None
    if not isinstance(net, PersistentStandIn):
        keys = ", ".join(map(str, top)) if isinstance(top, dict) else type(top).__name__
        raise ArtifactError(f"no network {key!r} in the checkpoint (it holds: {keys})", path=p)
    state: dict[str, np.ndarray] = collections.OrderedDict()
    try:
        _module_state(net, "", state)
    except ValueError as e:
        raise ArtifactError(f"malformed network state ({e})", path=p) from None
    init = _plain(net.state.get("_init_kwargs"))
    rk = _plain(init.get("rendering_kwargs")) or _plain(net.state.get("rendering_kwargs"))
    attrs = {k: v for k, v in net.state.items() if isinstance(v, (bool, int, float, str)) and not k.startswith("_")}
    return Checkpoint(net.class_name, dict(state), init, rk, net.source_chars, attrs)
