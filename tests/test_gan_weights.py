"""GAN checkpoints: a code-bearing pickle built like a StyleGAN persistence snapshot is read as
data only (its embedded source and its reconstructor never run), mapped, converted to
safetensors, and the converted generator renders what the source generator renders."""

from __future__ import annotations

import collections
import math
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch

from avatarcli.errors import ArtifactError, UnsafePickleError
from avatarcli.gan.checkpoint import load_checkpoint
from avatarcli.gan.convert import convert_checkpoint, load_generator
from avatarcli.gan.generator import GanConfig, TriplaneGenerator


def _their_name(mine: str) -> str:
    """This generator's tensor name -> the EG3D layout's, written out independently of convert.py."""
    parts = mine.split(".")
    if parts[0] == "mapping" and parts[1] == "layers":
        return ".".join(["backbone", "mapping", f"fc{parts[2]}", *parts[3:]])
    if parts[0] == "mapping":
        return "backbone." + mine
    if parts[0] == "backbone":
        return ".".join(["backbone", "synthesis", f"b{2 ** (int(parts[2]) + 2)}", *parts[3:]])
    if parts[0] == "decoder":
        return ".".join(["decoder", "net", {"fc0": "0", "fc1": "2"}[parts[1]], *parts[2:]])
    if parts[0] == "superres":
        return ".".join(["superresolution", f"block{parts[2]}", *parts[3:]])
    return mine


class _Persistent:
    """Pickles like torch_utils.persistence: a reconstructor call with the module source inside."""

    def __init__(self, class_name: str, state: dict, marker: Path):
        self.class_name, self.state, self.marker = class_name, state, marker

    def __reduce__(self):
        src = f"open({str(self.marker)!r}, 'w').write('the embedded source ran')\n"
        meta = dict(type="class", version=6, module_src=src, class_name=self.class_name, state=self.state)
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))


def _module_tree(flat: dict[str, torch.Tensor], marker: Path, class_name: str) -> _Persistent:
    """Nested _parameters/_buffers/_modules states (as nn.Module.__dict__ holds them)."""
    tree: dict = {}
    for k, v in flat.items():
        *path, leaf = k.split(".")
        node = tree
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = v

    def build(node: dict, name: str) -> _Persistent:
        params = collections.OrderedDict(
            (k, torch.nn.Parameter(v.clone()) if k in ("weight", "bias", "const") else None)
            for k, v in node.items()
            if isinstance(v, torch.Tensor) and k in ("weight", "bias", "const", "noise_strength")
        )
        for k in list(params):
            if params[k] is None:
                params[k] = torch.nn.Parameter(node[k].clone())
        bufs = collections.OrderedDict(
            (k, v.clone()) for k, v in node.items() if isinstance(v, torch.Tensor) and k not in params
        )
        mods = collections.OrderedDict((k, build(v, k)) for k, v in node.items() if isinstance(v, dict))
        state = {"_parameters": params, "_buffers": bufs, "_modules": mods, "training": False}
        return _Persistent(name, state, marker)

    root = build(tree, class_name)
    return root


@pytest.fixture()
def fake_modules(tmp_path, monkeypatch):
    """torch_utils.persistence / dnnlib.util exist only while the test pickles (and for the plain
    pickle.load that shows the file is really code-bearing)."""
    marker = tmp_path / "ran.txt"
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # what the real one does: exec the module source
        exec(compile(meta["module_src"], "<embedded>", "exec"), {})
        return meta["state"]

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    dnnlib_util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    dnnlib_util.EasyDict = EasyDict
    for name, mod in (
        ("torch_utils", types.ModuleType("torch_utils")),
        ("torch_utils.persistence", persistence),
        ("dnnlib", types.ModuleType("dnnlib")),
        ("dnnlib.util", dnnlib_util),
    ):
        monkeypatch.setitem(sys.modules, name, mod)
    return marker, EasyDict


def _auto(v):
    return "auto" if v is None else v


def _write_snapshot(path: Path, g: TriplaneGenerator, marker: Path, easydict, extra=None) -> None:
    cfg = g.cfg
    flat = {_their_name(k): v for k, v in g.state_dict().items()}
    flat.update(extra or {})
    net = _module_tree(flat, marker, "training.triplane.TriPlaneGenerator")
    net.state["_init_kwargs"] = easydict(
        z_dim=cfg.z_dim, w_dim=cfg.w_dim, c_dim=cfg.c_dim, img_resolution=cfg.img_resolution,
        channel_base=cfg.channel_base, channel_max=cfg.channel_max, mapping_kwargs=easydict(num_layers=2),
        rendering_kwargs=easydict(
            triplane_size=cfg.backbone_resolution, triplane_depth=cfg.triplane_depth,
            depth_resolution=cfg.depth_samples, depth_resolution_importance=cfg.importance_samples,
            ray_start=_auto(cfg.ray_start), ray_end=_auto(cfg.ray_end), box_warp=cfg.box_warp, decoder_activation="none",
            c_scale=cfg.c_scale, c_gen_conditioning_zero=False,
        ),
    )  # fmt: skip
    d = _module_tree({"b4.weight": torch.ones(2, 2)}, marker, "training.dual_discriminator.DualDiscriminator")
    path.write_bytes(pickle.dumps({"G": net, "D": d, "G_ema": net, "augment_pipe": None}, protocol=4))


def _camera(n: int = 1) -> torch.Tensor:
    c = torch.zeros(n, 25)
    pose = torch.eye(4)
    pose[2, 3] = -2.7
    c[:, :16] = pose.flatten()
    c[:, 16:] = torch.tensor([[4.26, 0, 0.5], [0, 4.26, 0.5], [0, 0, 1]]).flatten()
    return c


def test_snapshot_is_read_as_data_and_converts_to_the_same_generator(tmp_path, fake_modules):
    marker, easydict = fake_modules
    torch.manual_seed(3)
    src = TriplaneGenerator(GanConfig.tiny())
    src.mapping.w_avg.normal_()
    pkl = tmp_path / "network-snapshot.pkl"
    extra = {"t_mapping.fc0.weight": torch.zeros(3, 16)}  # PanoHead's camera offsets: not used here
    _write_snapshot(pkl, src, marker, easydict, extra)

    ck = load_checkpoint(pkl)
    assert not marker.exists()  # neither the reconstructor nor the embedded source ran
    assert ck.class_name == "training.triplane.TriPlaneGenerator" and ck.source_chars > 0
    assert ck.rendering_kwargs["triplane_depth"] == 2

    out = tmp_path / "gan.safetensors"
    res = convert_checkpoint(pkl, out)
    assert not marker.exists()
    assert res.unmapped == ["t_mapping.fc0.weight"] and res.tensors == len(src.state_dict())
    assert res.config.sr_channels == (8,) and res.config.neural_resolution == 8 and not res.config.decoder_sigmoid
    g = load_generator(out)
    z = torch.randn(2, 16)
    with torch.no_grad():
        a, b = src(z, _camera(2)), g(z, _camera(2))
    torch.testing.assert_close(b.image, a.image)
    torch.testing.assert_close(b.depth, a.depth)

    # the fixture really is code-bearing: a plain pickle.load (never done by avatarcli) runs it
    pickle.loads(pkl.read_bytes())
    assert marker.read_text() == "the embedded source ran"


def test_auto_ray_bounds_convert_and_render_inside_the_box(tmp_path, fake_modules):
    """PanoHead's ray_start = ray_end = 'auto': converted, not a crash; depths lie in the box."""
    import dataclasses

    marker, easydict = fake_modules
    torch.manual_seed(4)
    src = TriplaneGenerator(dataclasses.replace(GanConfig.tiny(), ray_start=None, ray_end=None))
    pkl = tmp_path / "auto.pkl"
    _write_snapshot(pkl, src, marker, easydict)
    out = tmp_path / "auto.safetensors"
    res = convert_checkpoint(pkl, out)
    assert res.config.ray_start is None and res.config.ray_end is None
    g = load_generator(out)
    with torch.no_grad():
        o = g(torch.randn(1, 16), _camera(1))
    # the camera sits 2.7 from the unit box's centre: every depth is within [2.2, 2.7 + sqrt(3)/2]
    assert float(o.depth.min()) >= 2.2 - 1e-4 and float(o.depth.max()) <= 2.7 + 3**0.5 / 2 + 1e-4
    bad = tmp_path / "bad.pkl"
    _write_snapshot(bad, TriplaneGenerator(dataclasses.replace(GanConfig.tiny(), ray_start=None)), marker, easydict)
    with pytest.raises(ArtifactError, match="must both be numbers or both 'auto'"):
        convert_checkpoint(bad, tmp_path / "bad.safetensors")


def test_foreign_globals_are_refused_before_anything_runs(tmp_path, fake_modules):
    marker, _ = fake_modules

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"G_ema": Evil()}))
    with pytest.raises(UnsafePickleError, match="builtins.exec"):
        load_checkpoint(bad)
    assert not marker.exists()
    posix = tmp_path / "posix.pkl"
    posix.write_bytes(b"\x80\x04cposix\nsystem\n\x8c\x04true\x85R.")
    with pytest.raises(UnsafePickleError, match="posix.system"):
        load_checkpoint(posix)


def test_a_checkpoint_that_does_not_fit_is_one_clear_error(tmp_path, fake_modules):
    marker, easydict = fake_modules
    src = TriplaneGenerator(GanConfig.tiny())
    pkl = tmp_path / "snap.pkl"
    _write_snapshot(pkl, src, marker, easydict, {"backbone.synthesis.b4.const": torch.zeros(16, 5, 5)})
    with pytest.raises(ArtifactError, match=r"does not fit the generator .*b4|blocks\.0\.const"):
        convert_checkpoint(pkl, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    (tmp_path / "nonet.pkl").write_bytes(pickle.dumps({"D": 1}))
    with pytest.raises(ArtifactError, match="no network 'G_ema'"):
        load_checkpoint(tmp_path / "nonet.pkl")
    assert math.isfinite(1.0)


def test_cli_convert_then_list_shows_the_model_and_its_licence(tmp_path, fake_modules, monkeypatch, capsys):
    from avatarcli.cli import main

    monkeypatch.setenv("AVATAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AVATAR_WEIGHTS_LOCK", raising=False)
    marker, easydict = fake_modules
    assert main(["weights", "fetch", "panohead"]) == 3  # cannot be downloaded: one line naming convert
    err = capsys.readouterr().err
    assert "avatar weights convert panohead --from" in err and "Traceback" not in err
    src = TriplaneGenerator(GanConfig.tiny())
    pkl = tmp_path / "snap.pkl"
    _write_snapshot(pkl, src, marker, easydict)
    assert main(["weights", "convert", "panohead", "--from", str(pkl)]) == 0
    assert not marker.exists()
    out = tmp_path / "cache" / "panohead" / "easy-khair-180-gpc0.8-trans10-025000" / "panohead.safetensors"
    assert load_generator(out).cfg.triplane_depth == 2
    capsys.readouterr()
    assert main(["weights", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "panohead" in line)
    assert "non-commercial research use" in row and "present" in row
    assert main(["weights", "convert", "panohead", "--from", str(tmp_path / "nope.pkl")]) == 2
    assert main(["weights", "convert", "fan-2d", "--from", str(pkl)]) == 2
