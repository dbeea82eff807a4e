"""3DGS PLY read/write: layout seen by plyfile, bit-exact round trips, foreign files, bad files."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plyfile import PlyData, PlyElement

from avatarcli.errors import ArtifactError, InputError
from avatarcli.flame.artifact import FlameFit
from avatarcli.gaussians.model import Gaussians
from avatarcli.gaussians.ply import META_TAG, GaussianPly, HeadMeta, ply_bytes, read_gaussian_ply, write_gaussian_ply


def make_meta(n_faces=50, sh_degree=1, n_shape=5, n_expr=4) -> HeadMeta:
    rng = np.random.default_rng(0)
    return HeadMeta.from_fit(
        SimpleNamespace(shape=rng.normal(size=n_shape), expr=rng.normal(size=n_expr).astype(np.float32).astype(np.float64),
        global_pose=np.array([0.1, -0.2, 0.05]), neck_pose=np.zeros(3), jaw_pose=np.array([0.2, 0, 0]),
        eyes_pose=np.zeros(6), translation=np.array([0.0, 0.01, -0.5]),
        K=np.array([[500.0, 0, 255.5], [0, 500.0, 255.5], [0, 0, 1]]), viewmat=np.diag([1.0, -1, -1, 1]),
        image_size=(512, 512), flame_model_sha256="ab" * 32),
        np.array([0.0, -0.02, 0.01]), n_faces=n_faces, sh_degree=sh_degree,
    )  # fmt: skip


def make_gaussians(n=64, k=4, seed=0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g)
    return Gaussians(
        means=torch.randn(n, 3, generator=g) * 0.1,
        quats=q / q.norm(dim=-1, keepdim=True),
        scales=torch.rand(n, 3, generator=g) * 0.01 + 1e-4,
        opacities=torch.rand(n, generator=g) * 0.98 + 0.01,
        sh=torch.randn(n, k, 3, generator=g),
    )


@pytest.fixture
def head(tmp_path):
    ply = GaussianPly(make_gaussians(), torch.randint(0, 50, (64,)), make_meta())
    path = tmp_path / "head.ply"
    write_gaussian_ply(path, ply)
    return path, ply


def test_plain_plyfile_sees_the_standard_layout(head):
    path, ply = head
    pd = PlyData.read(str(path))
    assert pd.text is False and pd.byte_order == "<"
    v = pd["vertex"]
    names = [p.name for p in v.properties]
    expect = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(9)]
    expect += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "binding"]
    assert names == expect
    assert all(p.val_dtype == "f4" for p in v.properties[:-1]) and v.properties[-1].val_dtype == "i4"
    g = ply.gaussians
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1), g.means.numpy())
    np.testing.assert_allclose(np.stack([v[f"scale_{i}"] for i in range(3)], 1), np.log(g.scales.numpy()), rtol=1e-6)
    np.testing.assert_allclose(v["opacity"], np.log(g.opacities.numpy() / (1 - g.opacities.numpy())), atol=1e-5)
    # channel-major f_rest: all R coefficients, then G, then B
    for c in range(3):
        for j in range(3):
            np.testing.assert_array_equal(v[f"f_rest_{c * 3 + j}"], g.sh[:, 1 + j, c].numpy())
    np.testing.assert_array_equal(v["binding"], ply.binding.numpy())
    assert all(c.startswith(META_TAG + " ") and len(c) < 260 for c in pd.comments) and len(pd.comments) >= 2


def test_round_trip_values_and_meta(head):
    path, ply = head
    back = read_gaussian_ply(path)
    g, h = ply.gaussians, back.gaussians
    assert torch.equal(h.means, g.means) and torch.equal(h.sh, g.sh)
    torch.testing.assert_close(h.scales, g.scales, rtol=1e-6, atol=0)
    torch.testing.assert_close(h.opacities, g.opacities, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(h.quats, g.quats, rtol=0, atol=1e-6)
    assert torch.equal(back.binding, ply.binding)
    pairs = [(f.name, getattr(back.meta, f.name), getattr(ply.meta, f.name)) for f in dataclasses.fields(HeadMeta)]
    pairs = [p for p in pairs if p[0] != "fit"] + [
        (f.name, getattr(back.meta.fit, f.name), getattr(ply.meta.fit, f.name)) for f in dataclasses.fields(FlameFit)
    ]
    for name, a, b in pairs:
        if isinstance(b, np.ndarray):
            assert np.array_equal(a, b, equal_nan=True), name  # exact: JSON floats round-trip
        else:
            assert a == b, name
    params = back.meta.fit.params()
    assert params.shape.shape == (1, 5) and params.eyes_pose.shape == (1, 6)


def test_rewrite_is_byte_identical(head, tmp_path):
    path, _ = head
    again = tmp_path / "again.ply"
    write_gaussian_ply(again, read_gaussian_ply(path))
    assert again.read_bytes() == path.read_bytes()


def test_edited_gaussians_are_not_written_with_stale_raw_values(head, tmp_path):
    path, _ = head
    p = read_gaussian_ply(path)
    p.gaussians.scales[3] *= 2.0
    p.gaussians.opacities[5] = 0.5
    out = tmp_path / "edited.ply"
    write_gaussian_ply(out, p)
    q = read_gaussian_ply(out)
    torch.testing.assert_close(q.gaussians.scales, p.gaussians.scales, rtol=1e-6, atol=0)
    assert abs(float(q.gaussians.opacities[5]) - 0.5) < 1e-6


def test_foreign_minimal_degree0_ply(tmp_path):
    """A file as another 3DGS tool writes it: degree 0, no normals, no binding, no comments."""
    n = 5
    rng = np.random.default_rng(1)
    names = [
        "x",
        "y",
        "z",
        "f_dc_0",
        "f_dc_1",
        "f_dc_2",
        "opacity",
        "scale_0",
        "scale_1",
        "scale_2",
        "rot_0",
        "rot_1",
        "rot_2",
        "rot_3",
    ]
    arr = np.empty(n, dtype=[(nm, "f4") for nm in names])
    vals = rng.normal(size=(n, len(names))).astype(np.float32)
    vals[:, 10:14] *= 3  # unnormalised quaternions, as 3DGS stores them
    for i, nm in enumerate(names):
        arr[nm] = vals[:, i]
    path = tmp_path / "other.ply"
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(path))
    p = read_gaussian_ply(path)
    assert p.binding is None and p.meta is None and p.gaussians.sh_degree == 0 and p.gaussians.n == n
    np.testing.assert_array_equal(p.gaussians.sh[:, 0].numpy(), vals[:, 3:6])
    np.testing.assert_allclose(p.gaussians.scales.numpy(), np.exp(vals[:, 7:10]), rtol=1e-6)
    np.testing.assert_allclose(p.gaussians.opacities.numpy(), 1 / (1 + np.exp(-vals[:, 6])), rtol=1e-6)
    q = vals[:, 10:14] / np.linalg.norm(vals[:, 10:14], axis=1, keepdims=True)
    np.testing.assert_allclose(p.gaussians.quats.numpy(), q, atol=1e-6)
    again = tmp_path / "again.ply"
    write_gaussian_ply(again, p)  # stored raw values are reused: same numbers, our layout
    back = PlyData.read(str(again))["vertex"]
    for i, nm in enumerate(names):
        np.testing.assert_array_equal(back[nm], vals[:, i])


@pytest.mark.parametrize("text", [True, False])
def test_foreign_degree1_ascii_and_big_endian(tmp_path, text):
    n = 3
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(9)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "red"]
    arr = np.zeros(n, dtype=[(nm, "f8" if nm == "x" else "u1" if nm == "red" else "f4") for nm in names])
    for i in range(9):
        arr[f"f_rest_{i}"] = i + 10 * np.arange(n)
    arr["rot_0"] = 1
    path = tmp_path / "t.ply"
    PlyData([PlyElement.describe(arr, "vertex")], text=text, byte_order=">").write(str(path))
    p = read_gaussian_ply(path)
    assert p.gaussians.sh_degree == 1
    sh = p.gaussians.sh.numpy()
    for c in range(3):
        for j in range(3):
            np.testing.assert_array_equal(sh[:, 1 + j, c], c * 3 + j + 10 * np.arange(n))


def _expect_artifact_error(path, fragment):
    with pytest.raises(ArtifactError) as e:
        read_gaussian_ply(path)
    msg = str(e.value)
    assert str(path) in msg and fragment in msg and "\n" not in msg, msg


def test_bad_files_give_one_line_artifact_errors(head, tmp_path):
    path, ply = head
    data = path.read_bytes()
    bad = tmp_path / "bad.ply"
    bad.write_bytes(data[: len(data) - 7])
    _expect_artifact_error(bad, "truncated")
    bad.write_bytes(data[:100])
    _expect_artifact_error(bad, "end_header")
    bad.write_bytes(b"hello world")
    _expect_artifact_error(bad, "not a PLY")

    g = dataclasses.replace(ply.gaussians, means=ply.gaussians.means.clone())
    nan_file = tmp_path / "nan.ply"
    b = bytearray(data)
    header_len = data.index(b"end_header\n") + len(b"end_header\n")
    b[header_len : header_len + 4] = np.array([np.nan], "<f4").tobytes()  # x of Gaussian 0
    nan_file.write_bytes(bytes(b))
    _expect_artifact_error(nan_file, "non-finite")

    out_of_range = tmp_path / "oor.ply"
    write_gaussian_ply(out_of_range, GaussianPly(g, torch.full((64,), 50), ply.meta))  # meta.n_faces == 50
    _expect_artifact_error(out_of_range, "binding out of range")

    newer = tmp_path / "newer.ply"
    newer.write_bytes(data.replace(b'"version":1}', b'"version":7}'))
    _expect_artifact_error(newer, "newer")

    arr = np.zeros(2, dtype=[(nm, "f4") for nm in ["x", "y", "z", "opacity"]])
    missing = tmp_path / "missing.ply"
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(missing))
    _expect_artifact_error(missing, "lacks f_dc_0")

    with pytest.raises(InputError, match="not found"):
        read_gaussian_ply(tmp_path / "nope.ply")


def test_write_refuses_nan_and_leaves_no_file(tmp_path):
    g = make_gaussians(8)
    g.means[2, 1] = float("nan")
    out = tmp_path / "x.ply"
    with pytest.raises(ArtifactError):
        write_gaussian_ply(out, GaussianPly(g))
    assert list(tmp_path.iterdir()) == []


_VALID = ply_bytes(GaussianPly(make_gaussians(6, k=4), torch.arange(6), make_meta(n_faces=10)))


def _read_bytes(tmp_path_factory, data: bytes):
    p = tmp_path_factory.mktemp("h") / "f.ply"
    p.write_bytes(data)
    try:
        out = read_gaussian_ply(p)
    except ArtifactError:
        return None
    assert isinstance(out, GaussianPly) and out.gaussians.n > 0
    assert all(torch.isfinite(t).all() for t in (out.gaussians.means, out.gaussians.scales, out.gaussians.sh))
    return out


_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_settings
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(tmp_path_factory, data):
    _read_bytes(tmp_path_factory, b"ply\n" + data if data[:1] == b"\x00" else data)


@_settings
@given(st.integers(0, len(_VALID)))
def test_fuzz_truncations(tmp_path_factory, cut):
    out = _read_bytes(tmp_path_factory, _VALID[:cut])
    assert (out is not None) == (cut == len(_VALID))


@_settings
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_fuzz_byte_edits(tmp_path_factory, edits):
    b = bytearray(_VALID)
    for i, v in edits:
        b[i] = v
    _read_bytes(tmp_path_factory, bytes(b))
