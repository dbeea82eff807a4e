"""`avatar export`: gsplat's exporter formats, parsed here byte by byte and compared with the input
within each format's quantisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatarcli.cli import main
from avatarcli.gaussians.model import SH_C0
from avatarcli.gaussians.ply import GaussianPly, HeadMeta, read_gaussian_ply, write_gaussian_ply
from tests.fixtures.scenes import make_random_gaussians

N = 600  # 3 chunks of the compressed format (256 per chunk), the last one partial


@pytest.fixture
def head_ply(tmp_path):
    """A head-like PLY with binding and metadata, SH degree 1, a few near-transparent Gaussians."""
    from avatarcli.flame.artifact import FIT_VIEWMAT, FlameFit

    g = make_random_gaussians(N, 3, sh_degree=1, scale=(0.001, 0.02))
    g.opacities[:7] = 1e-3  # below the compressed format's 1/255 cut
    fit = FlameFit(
        shape=np.zeros(4, np.float32), expr=np.zeros(2, np.float32), global_pose=np.zeros(3, np.float32),
        neck_pose=np.zeros(3, np.float32), jaw_pose=np.zeros(3, np.float32), eyes_pose=np.zeros(6, np.float32),
        translation=np.array([0, 0, -0.6], np.float32), K=np.eye(3, dtype=np.float32), viewmat=FIT_VIEWMAT,
        image_size=(8, 8), landmark_error_px=np.zeros(68, np.float32), flame_model_sha256="d" * 64,
    )  # fmt: skip
    meta = HeadMeta.from_fit(fit, np.zeros(3), n_faces=50, sh_degree=1)
    path = tmp_path / "head.ply"
    write_gaussian_ply(path, GaussianPly(g, binding=torch.arange(N) % 50, meta=meta))
    return path


def _by_position(means: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Index into `ref` [N, 3] of each exported position [M, 3] (exact float32 match)."""
    key = {tuple(p): i for i, p in enumerate(ref.astype(np.float32).tolist())}
    idx = [key.get(tuple(p)) for p in means.astype(np.float32).tolist()]
    assert None not in idx, "every exported position is an input position"
    return np.array(idx)


def _turned_y_down(q_wxyz: np.ndarray) -> np.ndarray:
    """Quaternions of the rotations R_x(180) @ R(q), with the sign the exporter's formula gives,
    checked against scipy's composition (up to the sign, which scipy does not fix)."""
    from scipy.spatial.transform import Rotation

    w, x, y, z = q_wxyz.T
    mine = np.stack([-x, w, -z, y], 1)
    ref = (Rotation.from_euler("x", 180, degrees=True) * Rotation.from_quat(q_wxyz[:, [1, 2, 3, 0]])).as_quat()
    ref = ref[:, [3, 0, 1, 2]]
    np.testing.assert_allclose(np.abs((mine * ref).sum(1)), 1.0, atol=1e-6)  # same rotation
    return mine


def test_splat_bytes_match_the_input(head_ply, tmp_path):
    """.splat has no header: a +y-up head is written turned 180 degrees about x (y-down, the
    convention of the scenes .splat viewers show), so that it stays upright."""
    out = tmp_path / "head.splat"
    assert main(["export", str(head_ply), "-o", str(out)]) == 0
    src = read_gaussian_ply(head_ply).gaussians
    data = out.read_bytes()
    assert len(data) == 32 * N
    rec = np.frombuffer(data, dtype=[("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    idx = _by_position(rec["pos"], src.means.numpy() * np.array([1, -1, -1], np.float32))
    assert sorted(idx.tolist()) == list(range(N)), "each Gaussian exactly once"
    np.testing.assert_allclose(rec["scale"], src.scales.numpy()[idx], rtol=1e-6)
    rgb = (SH_C0 * src.sh[:, 0].numpy() + 0.5)[idx]  # [N, 3] base colour
    rgba = np.concatenate([rgb, src.opacities.numpy()[idx, None]], 1)
    # u8 = floor(255 * clamp(v, 0, 1)): within one step below the value
    diff = np.clip(rgba, 0, 1) * 255 - rec["rgba"].astype(np.float64)
    assert (diff > -1e-3).all() and (diff < 1 + 1e-3).all(), (diff.min(), diff.max())
    q = _turned_y_down(src.quats.numpy()[idx].astype(np.float64))
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    dq = q - (rec["rot"].astype(np.float64) - 128) / 128  # wxyz, u8 = floor(q * 128 + 128) (255 at q = 1)
    assert (dq > -1e-6).all() and (dq < 1 / 128 + 1e-6).all(), (dq.min(), dq.max())


def _unpack(v: np.ndarray, shifts_bits) -> list[np.ndarray]:
    return [((v >> s) & ((1 << b) - 1)).astype(np.float64) / ((1 << b) - 1) for s, b in shifts_bits]


def test_compressed_ply_decodes_to_the_input(head_ply, tmp_path):
    from plyfile import PlyData

    out = tmp_path / "head.compressed.ply"
    assert main(["export", str(head_ply), "-o", str(out)]) == 0
    src = read_gaussian_ply(head_ply).gaussians
    kept = src.opacities.numpy() > 1 / 255
    ply = PlyData.read(str(out))
    chunk, vert, sh = ply["chunk"].data, ply["vertex"].data, ply["sh"].data
    M = len(vert)
    assert M == kept.sum() == N - 7 and len(chunk) == -(-M // 256) and len(sh) == M
    ci = np.arange(M) // 256
    lo = np.stack([chunk[f"min_{a}"] for a in "xyz"], 1)[ci]
    hi = np.stack([chunk[f"max_{a}"] for a in "xyz"], 1)[ci]
    u = np.stack(_unpack(vert["packed_position"].astype(np.int64), [(21, 11), (11, 10), (0, 11)]), 1)
    pos = lo + u * (hi - lo)  # [M, 3]
    ref = src.means.numpy()
    d = np.linalg.norm(pos[:, None] - ref[None], axis=-1)  # [M, N]
    idx = d.argmin(1)
    step = (hi - lo) / np.array([2047, 1023, 2047])  # quantisation step per axis
    assert np.all(np.abs(pos - ref[idx]) <= 0.5 * step + 1e-6)
    assert len(set(idx.tolist())) == M and kept[idx].all(), "one decoded point per kept Gaussian"
    # colour (DC) and opacity: 8 bits in the chunk's colour range; opacity 8 bits absolute
    clo = np.stack([chunk[f"min_{c}"] for c in "rgb"], 1)[ci]
    chi = np.stack([chunk[f"max_{c}"] for c in "rgb"], 1)[ci]
    cu = np.stack(_unpack(vert["packed_color"].astype(np.int64), [(24, 8), (16, 8), (8, 8), (0, 8)]), 1)
    rgb = clo + cu[:, :3] * (chi - clo)
    want_rgb = SH_C0 * src.sh[:, 0].numpy()[idx] + 0.5
    assert np.all(np.abs(rgb - want_rgb) <= 0.5 * (chi - clo) / 255 + 1e-5)
    np.testing.assert_allclose(cu[:, 3], src.opacities.numpy()[idx], atol=0.5 / 255 + 1e-6)
    # log scales: 11/10/11 bits in the chunk's range
    slo = np.stack([chunk[f"min_scale_{a}"] for a in "xyz"], 1)[ci]
    shi = np.stack([chunk[f"max_scale_{a}"] for a in "xyz"], 1)[ci]
    su = np.stack(_unpack(vert["packed_scale"].astype(np.int64), [(21, 11), (11, 10), (0, 11)]), 1)
    np.testing.assert_array_less(
        np.abs(slo + su * (shi - slo) - np.log(src.scales.numpy()[idx])),
        0.5 * (shi - slo) / np.array([2047, 1023, 2047]) + 1e-5,
    )
    # higher SH (degree 1: 9 values, channel-major) as u8 of (v / 8 + 0.5) * 256
    rest = np.stack([sh[f"f_rest_{j}"] for j in range(9)], 1).astype(np.float64)
    want_rest = src.sh[:, 1:].numpy()[idx].transpose(0, 2, 1).reshape(M, 9)
    assert np.all(np.abs(((rest + 0.5) / 256 - 0.5) * 8 - want_rest) <= 0.5 * 8 / 256 + 1e-6)


def test_plain_ply_export_drops_binding_and_meta(head_ply, tmp_path):
    out = tmp_path / "plain.ply"
    assert main(["export", str(head_ply), "-o", str(out)]) == 0
    a, b = read_gaussian_ply(head_ply), read_gaussian_ply(out)
    assert b.binding is None and b.meta is None and a.binding is not None
    for f in ("means", "scales", "opacities", "quats", "sh"):
        torch.testing.assert_close(getattr(b.gaussians, f), getattr(a.gaussians, f), atol=0, rtol=0)
    assert b"avatarcli-meta" not in out.read_bytes()[:4096]


def test_format_option_and_errors(head_ply, tmp_path, capsys):
    out = tmp_path / "x.bin"
    assert main(["export", str(head_ply), "-o", str(out), "--format", "splat"]) == 0
    assert out.stat().st_size == 32 * N
    capsys.readouterr()
    for argv, needle in [
        (["export", str(head_ply), "-o", str(tmp_path / "y.obj")], ".splat, .compressed.ply or .ply"),
        (["export", str(head_ply), "-o", str(tmp_path / "y.bin"), "--format", "gltf"], "--format"),
        (["export", str(tmp_path / "none.ply"), "-o", str(tmp_path / "y.splat")], "file not found"),
        (["export", str(head_ply), "-o", str(head_ply)], "output is the input"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    bad = tmp_path / "bad.ply"
    bad.write_bytes(head_ply.read_bytes()[:-10])
    assert main(["export", str(bad), "-o", str(tmp_path / "z.splat")]) == 2
    assert "truncated" in capsys.readouterr().err
    assert not (tmp_path / "z.splat").exists() and not (tmp_path / "y.splat").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp files left"


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Index into b [N, 3] of the nearest point of each row of a [M, 3]."""
    return np.linalg.norm(a[:, None] - b[None], axis=-1).argmin(1)


@pytest.mark.parametrize("name", ["head.splat", "head.compressed.ply", "plain.ply"])
def test_exports_read_back_within_their_quantisation(head_ply, tmp_path, name):
    """read_gaussian_ply decodes each export format (issue 13, item 5); the decoded Gaussians are
    the input's within each quantiser's step (positions of a .splat exactly, turned y-down)."""
    out = tmp_path / name
    assert main(["export", str(head_ply), "-o", str(out)]) == 0
    src, back = read_gaussian_ply(head_ply), read_gaussian_ply(out)
    g, s = back.gaussians, src.gaussians
    ref_means = s.means.numpy() * (np.array([1, -1, -1], np.float32) if name.endswith(".splat") else 1)
    idx = _nearest(g.means.numpy(), ref_means)
    extent = ref_means.max(0) - ref_means.min(0)
    err = np.abs(g.means.numpy() - ref_means[idx])  # [M, 3]
    assert (err <= extent / 1023 + 1e-7).all(), err.max(0)
    log_s = np.log(s.scales.numpy()[idx])
    tol_s = {"head.splat": 1e-6, "head.compressed.ply": (log_s.max() - log_s.min()) / 1023, "plain.ply": 1e-6}[name]
    np.testing.assert_allclose(np.log(g.scales.numpy()), log_s, atol=tol_s, rtol=0)
    np.testing.assert_allclose(g.opacities.numpy(), s.opacities.numpy()[idx], atol=0.5 / 255 + 1e-6, rtol=0)
    rgb = lambda sh: SH_C0 * sh[:, 0] + 0.5  # noqa: E731
    np.testing.assert_allclose(rgb(g.sh.numpy()), np.clip(rgb(s.sh.numpy()[idx]), 0, 1), atol=0.5 / 255 + 1e-5)
    q_ref = s.quats.numpy()[idx].astype(np.float64)
    if name.endswith(".splat"):
        q_ref = _turned_y_down(q_ref)
    cos = np.abs((g.quats.numpy() * q_ref / np.linalg.norm(q_ref, axis=1, keepdims=True)).sum(1))
    assert cos.min() > 0.999, cos.min()  # 8- or 10-bit components: within about 2.5 degrees
    assert back.binding is None and back.meta is None
    assert back.up == (None if name.endswith(".splat") else "y")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def test_render_shows_every_export_upright_and_from_the_front(head_ply, tmp_path):
    """`avatar render` of each export looks like the head itself (auto up axis): the same view
    within quantisation. The same check fails for a plain PLY forced to the y-down default."""
    import imageio.v3 as iio

    def view(path, *extra):
        out = tmp_path / f"{path.name}.{len(extra)}.png"
        args = ["render", str(path), "-o", str(out), "--size", "48", "--sh-degree", "0", "--backend", "torch"]
        assert main(args + list(extra)) == 0
        return iio.imread(out)

    ref = view(head_ply)
    for name in ("head.splat", "head.compressed.ply", "plain.ply"):
        out = tmp_path / name
        assert main(["export", str(head_ply), "-o", str(out)]) == 0
        assert _psnr(view(out), ref) > 30, name
    assert _psnr(view(tmp_path / "plain.ply", "--up", "-y"), ref) < 20, "the test can tell upside down"


def test_bad_splat_and_compressed_files_are_one_line_exit_2(head_ply, tmp_path, capsys):
    splat, comp = tmp_path / "h.splat", tmp_path / "h.compressed.ply"
    for out in (splat, comp):
        assert main(["export", str(head_ply), "-o", str(out)]) == 0
    cut_splat, cut_comp = tmp_path / "cut.splat", tmp_path / "cut.compressed.ply"
    cut_splat.write_bytes(splat.read_bytes()[:-5])
    cut_comp.write_bytes(comp.read_bytes()[:-5])
    nan = bytearray(splat.read_bytes())
    nan[0:4] = np.array([np.nan], "<f4").tobytes()
    (tmp_path / "nan.splat").write_bytes(bytes(nan))
    capsys.readouterr()
    for bad, needle in [(cut_splat, "multiple of 32"), (cut_comp, "truncated"), (tmp_path / "nan.splat", "non-finite")]:
        assert main(["render", str(bad), "-o", str(tmp_path / "x.png"), "--size", "16"]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.png").exists()
