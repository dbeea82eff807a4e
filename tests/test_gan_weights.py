"""GAN checkpoints: a code-bearing pickle built like a StyleGAN persistence snapshot is read as
data only (its embedded source and its reconstructor never run), mapped and converted to
safetensors. The snapshots hold the state dict PanoHead's (and EG3D's) code builds, with its
tensor names and shapes written here from that code's module structure (not from
avatarcli.gan's names): each tensor must land where the reference uses it, none left over, and
the full-size names and shapes must fit GanConfig.panohead(). What this cannot show: that the
computation matches the reference numerically with trained weights (see docs/gan.md)."""

from __future__ import annotations

import collections
import dataclasses
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch

from avatarcli.errors import ArtifactError, UnsafePickleError
from avatarcli.gan.checkpoint import load_checkpoint
from avatarcli.gan.convert import convert_checkpoint, load_generator
from avatarcli.gan.generator import GanConfig, offset_camera

# ----------------------------------------------------------------------------- the reference's names
# Written from the public EG3D / PanoHead module structure (training/triplane.py, networks_stylegan2.py,
# superresolution.py): attribute names and tensor shapes, independently of avatarcli.gan's own names.


@dataclasses.dataclass(frozen=True)
class RefSizes:
    z: int = 512
    w: int = 512
    c: int = 25
    map_layers: int = 2
    triplane_size: int = 256
    depth: int = 3  # PanoHead's triplane_depth
    cbase: int = 32768
    cmax: int = 512
    feat: int = 32  # plane channels = decoder output features (the reference fixes both at 32)
    hidden: int = 64  # OSGDecoder's hidden_dim
    sr: tuple = ((32, 256, 256), (256, 128, 512))  # 8XDC: (in, out, resolution) per block
    neural: int = 64
    img: int = 512


TINY_REF = RefSizes(z=16, w=16, triplane_size=16, depth=2, cbase=128, cmax=16, feat=4, hidden=8,
                    sr=((4, 8, 16), (8, 8, 32)), neural=4, img=32)  # fmt: skip


def _fc(name: str, cin: int, cout: int) -> dict:
    return {f"{name}.weight": (cout, cin), f"{name}.bias": (cout,)}


def _mapping(prefix: str, z: int, c: int, w: int, layers: int) -> dict:
    """StyleGAN2 MappingNetwork: embed (c -> w), fc0 (z + w -> w), fc1.. (w -> w), w_avg."""
    out = {**_fc(f"{prefix}.embed", c, w), f"{prefix}.w_avg": (w,)}
    for i in range(layers):
        out.update(_fc(f"{prefix}.fc{i}", z + w if i == 0 else w, w))
    return out


def _layer(prefix: str, cin: int, cout: int, w: int, res: int) -> dict:
    """StyleGAN2 SynthesisLayer: affine, weight, bias, noise buffers, resample filter."""
    return {**_fc(f"{prefix}.affine", w, cin), f"{prefix}.weight": (cout, cin, 3, 3), f"{prefix}.bias": (cout,),
            f"{prefix}.noise_const": (res, res), f"{prefix}.noise_strength": (), f"{prefix}.resample_filter": (4, 4)}  # fmt: skip


def _block(prefix: str, cin: int, cout: int, w: int, res: int, img: int) -> dict:
    """StyleGAN2 SynthesisBlock ('skip'): const or conv0, conv1, torgb, resample filter."""
    out = {f"{prefix}.resample_filter": (4, 4), **_layer(f"{prefix}.conv1", cout, cout, w, res)}
    out.update({f"{prefix}.const": (cout, res, res)} if cin == 0 else _layer(f"{prefix}.conv0", cin, cout, w, res))
    out.update({**_fc(f"{prefix}.torgb.affine", w, cout), f"{prefix}.torgb.weight": (img, cout, 1, 1),
                f"{prefix}.torgb.bias": (img,)})  # fmt: skip
    return out


def _synthesis(prefix: str, w: int, res: int, img: int, cbase: int, cmax: int) -> dict:
    out: dict = {}
    r = 4
    while r <= res:
        ch = lambda x: min(cbase // x, cmax)  # noqa: E731
        out.update(_block(f"{prefix}.b{r}", 0 if r == 4 else ch(r // 2), ch(r), w, r, img))
        r *= 2
    return out


def reference_shapes(k: RefSizes, background: bool = True, t_mapping: bool = True) -> dict[str, tuple]:
    """Every tensor of a PanoHead TriPlaneGenerator (G_ema) state dict: name -> shape."""
    out = {**_mapping("backbone.mapping", k.z, k.c, k.w, k.map_layers)}
    out.update(_synthesis("backbone.synthesis", k.w, k.triplane_size, 3 * k.feat * k.depth, k.cbase, k.cmax))
    out.update({**_fc("decoder.net.0", k.feat, k.hidden), **_fc("decoder.net.2", k.hidden, 1 + k.feat)})
    out.update({**_fc("torgb.affine", k.w, k.feat), "torgb.weight": (3, k.feat, 1, 1), "torgb.bias": (3,)})
    for i, (cin, cout, res) in enumerate(k.sr):
        out.update(_block(f"superresolution.block{i}", cin, cout, k.w, res, 3))
    if background:  # SynthesisNetwork at the super-resolution's input size, half the channel base
        out.update(_synthesis("bcg_synthesis", k.w, k.sr[0][2] // 2, k.feat, k.cbase // 2, k.cmax))
    if t_mapping:  # MappingNetwork(z, c, w_dim=3, num_ws=1)
        out.update(_mapping("t_mapping", k.z, k.c, 3, k.map_layers))
    return out


def reference_state(k: RefSizes, seed: int = 0, **kw) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(shape, generator=g) * 0.3 for n, shape in reference_shapes(k, **kw).items()}


def reference_kwargs(k: RefSizes, easydict=dict, **rendering) -> tuple[dict, dict]:
    """(init kwargs, rendering_kwargs) as PanoHead's train.py sets them (ffhq config)."""
    rk = easydict(
        image_resolution=k.img, superresolution_module="training.superresolution.SuperresolutionHybrid8XDC",
        c_gen_conditioning_zero=False, c_scale=1.0, superresolution_noise_mode="none", decoder_activation="none",
        use_torgb_raw=True, triplane_size=k.triplane_size, triplane_depth=k.depth, use_background=True,
        sr_antialias=True, depth_resolution=48, depth_resolution_importance=48, ray_start=2.25, ray_end=3.3,
        box_warp=1, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2], clamp_mode="softplus",
    )  # fmt: skip
    rk.update(rendering)
    ik = easydict(
        z_dim=k.z, w_dim=k.w, c_dim=k.c, img_resolution=k.img, img_channels=3, sr_num_fp16_res=4,
        mapping_kwargs=easydict(num_layers=k.map_layers), rendering_kwargs=rk, channel_base=k.cbase,
        channel_max=k.cmax, conv_clamp=None, architecture="skip", num_fp16_res=0,
    )  # fmt: skip
    return ik, rk


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


def _write_snapshot(path: Path, flat: dict, marker: Path, easydict, k: RefSizes = TINY_REF, **rendering) -> None:
    """A training pickle holding G_ema (and G, D) as persistence records, PanoHead's constructor
    arguments and its neural_rendering_resolution attribute."""
    net = _module_tree(flat, marker, "training.triplane.TriPlaneGenerator")
    ik, _ = reference_kwargs(k, easydict, **rendering)
    net.state["_init_kwargs"] = ik
    net.state["neural_rendering_resolution"] = k.neural
    d = _module_tree({"b4.weight": torch.ones(2, 2)}, marker, "training.dual_discriminator.DualDiscriminator")
    path.write_bytes(pickle.dumps({"G": net, "D": d, "G_ema": net, "augment_pipe": None}, protocol=4))


def _camera(n: int = 1) -> torch.Tensor:
    c = torch.zeros(n, 25)
    pose = torch.eye(4)
    pose[2, 3] = -2.7
    c[:, :16] = pose.flatten()
    c[:, 16:] = torch.tensor([[4.26, 0, 0.5], [0, 4.26, 0.5], [0, 0, 1]]).flatten()
    return c


def test_a_panohead_snapshot_is_read_as_data_and_every_tensor_lands_where_the_reference_uses_it(tmp_path, fake_modules):
    marker, easydict = fake_modules
    flat = reference_state(TINY_REF)
    pkl = tmp_path / "network-snapshot.pkl"
    _write_snapshot(pkl, flat, marker, easydict)

    ck = load_checkpoint(pkl)
    assert not marker.exists()  # neither the reconstructor nor the embedded source ran
    assert ck.class_name == "training.triplane.TriPlaneGenerator" and ck.source_chars > 0
    assert ck.rendering_kwargs["triplane_depth"] == 2 and ck.attrs["neural_rendering_resolution"] == 4

    out = tmp_path / "gan.safetensors"
    res = convert_checkpoint(pkl, out)
    assert not marker.exists()
    assert res.unmapped == [] and res.tensors == len(flat)  # every reference tensor used, none left over
    cfg = res.config
    assert (cfg.layout, cfg.triplane_crop, cfg.decoder_activation, cfg.triplane_depth) == ("panohead", 0.1, "none", 2)
    assert (cfg.sr_channels, cfg.sr_input_resolution, cfg.sr_first_up, cfg.neural_resolution) == ((8, 8), 8, True, 4)
    assert cfg.use_background and cfg.camera_offset and cfg.use_torgb_raw and cfg.sr_noise_mode == "none"
    assert cfg.conv_clamp is None and cfg.sr_conv_clamp == 256 and cfg.c_scale == 1.0

    g = load_generator(out)
    mine = g.state_dict()
    for theirs, ours in (
        ("backbone.synthesis.b4.const", "backbone.blocks.0.const"),
        ("backbone.synthesis.b16.conv0.weight", "backbone.blocks.2.conv0.weight"),
        ("backbone.mapping.fc1.bias", "mapping.layers.1.bias"),
        ("decoder.net.2.weight", "decoder.fc1.weight"),
        ("superresolution.block1.torgb.affine.weight", "superres.blocks.1.torgb.affine.weight"),
        ("bcg_synthesis.b8.conv1.noise_const", "bcg.blocks.1.conv1.noise_const"),
        ("t_mapping.fc1.weight", "t_mapping.layers.1.weight"),
        ("t_mapping.w_avg", "t_mapping.w_avg"),
    ):
        torch.testing.assert_close(mine[ours], flat[theirs], msg=theirs)
    with torch.no_grad():
        o = g(torch.randn(2, 16), _camera(2))
    assert o.image.shape == (2, 3, 32, 32) and o.features.shape == (2, 4, 4, 4) and torch.isfinite(o.image).all()
    c = _camera(1)
    with torch.no_grad():  # the camera offset: a translation of the rendering camera only
        moved = offset_camera(c, g.camera_offset(c))
    assert torch.equal(moved[:, 16:], c[:, 16:]) and not torch.equal(moved[:, [3, 7, 11]], c[:, [3, 7, 11]])

    # the fixture really is code-bearing: a plain pickle.load (never done by avatarcli) runs it
    pickle.loads(pkl.read_bytes())
    assert marker.read_text() == "the embedded source ran"


def test_the_full_size_panohead_names_and_shapes_fit_the_published_configuration():
    """Every tensor of a 512 px PanoHead G_ema (names and shapes as its code builds them, no
    values) maps onto GanConfig.panohead()'s generator, and the converter's config from
    PanoHead's train.py settings is that configuration."""
    import numpy as np

    from avatarcli.gan.checkpoint import Checkpoint
    from avatarcli.gan.convert import config_from_checkpoint, map_state

    k = RefSizes()
    shapes = reference_shapes(k)
    ik, rk = reference_kwargs(k)
    st = {n: np.broadcast_to(np.float32(0), s) for n, s in shapes.items()}  # no memory for the values
    ck = Checkpoint("training.triplane.TriPlaneGenerator", st, ik, rk, 0, {"neural_rendering_resolution": 64})
    cfg = config_from_checkpoint(ck)
    assert cfg == GanConfig.panohead()
    got, unmapped = map_state(ck, cfg, Path("panohead.pkl"))
    assert unmapped == [] and len(got) == len(shapes)
    n = sum(int(np.prod(s)) for s in shapes.values())
    assert 45e6 < n < 60e6, n  # about 50 M parameters and buffers (backbone ~ 30 M, background ~ 15 M)


@pytest.mark.parametrize(
    "module,first_up,sr_in", [("SuperresolutionHybrid4X", False, 16), ("SuperresolutionHybrid2X", False, 16)]
)
def test_an_eg3d_snapshot_gets_eg3d_s_layout(tmp_path, fake_modules, module, first_up, sr_in):
    """No tri-grid depth, no t_mapping or background: EG3D's plane axes and output scaling, no
    density crop; a super-resolution whose first block keeps the resolution."""
    marker, easydict = fake_modules
    k = dataclasses.replace(TINY_REF, depth=1, sr=((4, 8, 16), (8, 8, 32)))
    flat = reference_state(k, background=False, t_mapping=False)
    pkl = tmp_path / "eg3d.pkl"
    _write_snapshot(pkl, flat, marker, easydict, k, decoder_activation="sigmoid",
                    superresolution_module=f"training.superresolution.{module}")  # fmt: skip
    ck = load_checkpoint(pkl)
    del ck.rendering_kwargs["triplane_depth"]
    from avatarcli.gan.convert import config_from_checkpoint

    cfg = config_from_checkpoint(ck)
    assert (cfg.layout, cfg.triplane_crop, cfg.decoder_activation) == ("eg3d", 0.0, "sigmoid")
    assert (cfg.sr_first_up, cfg.sr_input_resolution) == (first_up, sr_in)
    assert not cfg.use_background and not cfg.camera_offset


def test_auto_ray_bounds_convert_and_render_inside_the_box(tmp_path, fake_modules):
    """PanoHead's ray_start = ray_end = 'auto': converted, not a crash; depths lie in the box."""
    marker, easydict = fake_modules
    pkl = tmp_path / "auto.pkl"
    _write_snapshot(pkl, reference_state(TINY_REF), marker, easydict, ray_start="auto", ray_end="auto")
    out = tmp_path / "auto.safetensors"
    res = convert_checkpoint(pkl, out)
    assert res.config.ray_start is None and res.config.ray_end is None
    g = load_generator(out)
    with torch.no_grad():
        o = g.synthesis(g.map(torch.randn(1, 16), _camera(1)), _camera(1))
    # the camera sits 2.7 from the unit box's centre: every depth is within [2.2, 2.7 + sqrt(3)/2]
    assert float(o.depth.min()) >= 2.2 - 1e-4 and float(o.depth.max()) <= 2.7 + 3**0.5 / 2 + 1e-4
    bad = tmp_path / "bad.pkl"
    _write_snapshot(bad, reference_state(TINY_REF), marker, easydict, ray_start="auto")
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
    pkl = tmp_path / "snap.pkl"
    flat = {**reference_state(TINY_REF), "backbone.synthesis.b4.const": torch.zeros(16, 5, 5)}
    _write_snapshot(pkl, flat, marker, easydict)
    with pytest.raises(ArtifactError, match=r"does not fit the generator .*blocks\.0\.const"):
        convert_checkpoint(pkl, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    (tmp_path / "nonet.pkl").write_bytes(pickle.dumps({"D": 1}))
    with pytest.raises(ArtifactError, match="no network 'G_ema'"):
        load_checkpoint(tmp_path / "nonet.pkl")
    _write_snapshot(pkl, reference_state(TINY_REF), marker, easydict, superresolution_module="x.SuperresolutionNew")
    with pytest.raises(ArtifactError, match="super-resolution module 'SuperresolutionNew' is not supported"):
        convert_checkpoint(pkl, tmp_path / "x.safetensors")


def test_cli_convert_then_list_shows_the_model_and_its_licence(tmp_path, fake_modules, monkeypatch, capsys):
    from avatarcli.cli import main

    monkeypatch.setenv("AVATAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AVATAR_WEIGHTS_LOCK", raising=False)
    marker, easydict = fake_modules
    assert main(["weights", "fetch", "panohead"]) == 3  # cannot be downloaded: one line naming convert
    err = capsys.readouterr().err
    assert "avatar weights convert panohead --from" in err and "Traceback" not in err
    pkl = tmp_path / "snap.pkl"
    _write_snapshot(pkl, reference_state(TINY_REF), marker, easydict)
    assert main(["weights", "convert", "panohead", "--from", str(pkl)]) == 0
    out_text = capsys.readouterr()
    assert (
        "layout panohead, tri-grid depth 2" in out_text.err + out_text.out
        and "camera offset yes" in out_text.err + out_text.out
    )
    assert not marker.exists()
    out = tmp_path / "cache" / "panohead" / "easy-khair-180-gpc0.8-trans10-025000" / "panohead.safetensors"
    assert load_generator(out).cfg.triplane_depth == 2
    capsys.readouterr()
    assert main(["weights", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "panohead" in line)
    assert "non-commercial research use" in row and "present" in row
    assert main(["weights", "convert", "panohead", "--from", str(tmp_path / "nope.pkl")]) == 2
    assert main(["weights", "convert", "fan-2d", "--from", str(pkl)]) == 2
