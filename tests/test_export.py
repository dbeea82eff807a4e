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


def test_splat_bytes_match_the_input(head_ply, tmp_path):
    out = tmp_path / "head.splat"
    assert main(["export", str(head_ply), "-o", str(out)]) == 0
    src = read_gaussian_ply(head_ply).gaussians
    data = out.read_bytes()
    assert len(data) == 32 * N
    rec = np.frombuffer(data, dtype=[("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    idx = _by_position(rec["pos"], src.means.numpy())
    assert sorted(idx.tolist()) == list(range(N)), "each Gaussian exactly once"
    np.testing.assert_allclose(rec["scale"], src.scales.numpy()[idx], rtol=1e-6)
    rgb = (SH_C0 * src.sh[:, 0].numpy() + 0.5)[idx]  # [N, 3] base colour
    rgba = np.concatenate([rgb, src.opacities.numpy()[idx, None]], 1)
    # u8 = floor(255 * clamp(v, 0, 1)): within one step below the value
    diff = np.clip(rgba, 0, 1) * 255 - rec["rgba"].astype(np.float64)
    assert (diff > -1e-3).all() and (diff < 1 + 1e-3).all(), (diff.min(), diff.max())
    q = src.quats.numpy()[idx]
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
