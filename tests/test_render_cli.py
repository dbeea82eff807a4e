"""`avatar render`: outputs decode with the right sizes and frame counts, any 3DGS PLY is framed,
--camera lays the head over the photo pixel for pixel, bad inputs fail in one line with no output."""

from __future__ import annotations

import dataclasses

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from avatarcli.cli import main
from avatarcli.gaussians.model import SH_C0, Gaussians
from avatarcli.gaussians.ply import GaussianPly, HeadMeta, write_gaussian_ply
from tests.fixtures.scenes import make_random_gaussians


def _write(path, g: Gaussians, **kw):
    write_gaussian_ply(path, GaussianPly(g, **kw))
    return path


@pytest.fixture
def scene_ply(tmp_path):
    return _write(tmp_path / "scene.ply", make_random_gaussians(800, 1, sh_degree=1, scale=(0.005, 0.02)))


def _only(folder, *names):
    return sorted(p.name for p in folder.iterdir()) == sorted(names)


# ----------------------------------------------------------------------------- outputs


def test_png_view(scene_ply, tmp_path):
    out = tmp_path / "v.png"
    assert main(["render", str(scene_ply), "-o", str(out), "--size", "48", "--yaw", "30", "--backend", "torch"]) == 0
    img = iio.imread(out)
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    assert (img < 250).any(axis=-1).mean() > 0.1, "the scene is in view"
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    assert (border < 240).any(-1).mean() < 0.05, "framed with a margin: (almost) white border"


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_turntable_frame_count_and_size(scene_ply, tmp_path, suffix):
    out = tmp_path / f"t{suffix}"
    assert main(["render", str(scene_ply), "-o", str(out), "--size", "32", "--frames", "5", "--fps", "10"]) == 0
    frames = list(iio.imiter(out))
    assert len(frames) == 5 and frames[0].shape[:2] == (32, 32)
    # the frames differ (the camera turns), first and a later one
    assert np.abs(frames[0].astype(int) - frames[2].astype(int)).mean() > 1.0
    assert _only(tmp_path, "scene.ply", out.name), "no temp files left"


def test_background_and_black(scene_ply, tmp_path):
    out = tmp_path / "b.png"
    assert main(["render", str(scene_ply), "-o", str(out), "--size", "24", "--background", "#ff0000"]) == 0
    img = iio.imread(out)
    assert tuple(img[0, 0]) == (255, 0, 0) and tuple(img[-1, -1]) == (255, 0, 0)


# ----------------------------------------------------------------------------- any 3DGS PLY


def _plain_3dgs_ply(path, means, rgb, scale=0.02, n_rest=45):
    """A PLY laid out as the original 3DGS code writes it (normals, 45 f_rest), written with plyfile."""
    from plyfile import PlyData, PlyElement

    n = len(means)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(n_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    rec = np.zeros(n, dtype=[(k, "f4") for k in names])
    for i, k in enumerate("xyz"):
        rec[k] = means[:, i]
    for i in range(3):
        rec[f"f_dc_{i}"] = (rgb[:, i] - 0.5) / SH_C0
        rec[f"scale_{i}"] = np.log(scale)
    rec["opacity"] = 4.0
    rec["rot_0"] = 1.0
    PlyData([PlyElement.describe(rec, "vertex")]).write(str(path))
    return path


def _two_tone_scene(rng, n=600, center=(0.0, 0.0, 0.0), extent=1.0, floaters=0):
    """A slab of Gaussians: red at -y (the 'up' of OpenCV-style scenes), blue at +y."""
    means = rng.uniform(-1, 1, size=(n, 3)) * np.array([1.0, 0.6, 0.3])
    rgb = np.where(means[:, 1:2] < 0, [[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]])
    if floaters:
        far = rng.normal(size=(floaters, 3)) * 60.0
        means = np.concatenate([means, far])
        rgb = np.concatenate([rgb, np.full((floaters, 3), 0.0)])
    return (means * extent + np.asarray(center)).astype(np.float32), rgb


def _red_blue_rows(img):
    red = (img[..., 0] > 150) & (img[..., 2] < 100)
    blue = (img[..., 2] > 150) & (img[..., 0] < 100)
    rows = np.arange(img.shape[0])[:, None]
    return (rows * red).sum() / max(red.sum(), 1), (rows * blue).sum() / max(blue.sum(), 1), red.sum(), blue.sum()


@pytest.mark.parametrize("center, extent, floaters", [((0, 0, 0), 1.0, 0), ((120.0, -40.0, 75.0), 30.0, 4)])
def test_any_3dgs_ply_is_framed_y_down_by_default(tmp_path, center, extent, floaters):
    """A PLY from another tool (no binding, no meta, anywhere, any scale, a few far floaters) fills
    the view; by default it is taken as y-down (COLMAP/OpenCV), so -y (red) is at the top."""
    rng = np.random.default_rng(0)
    means, rgb = _two_tone_scene(rng, center=center, extent=extent, floaters=floaters)
    ply = _plain_3dgs_ply(tmp_path / "other.ply", means, rgb, scale=0.03 * extent)
    out = tmp_path / "o.png"
    assert main(["render", str(ply), "-o", str(out), "--size", "40"]) == 0
    img = iio.imread(out)
    covered = (img < 240).any(-1)
    assert 0.1 < covered.mean() < 0.9, covered.mean()
    cols = np.nonzero(covered.any(0))[0]
    assert cols.min() >= 1 and cols.max() <= 38, "framed with a margin, not cropped"
    red_row, blue_row, nr, nb = _red_blue_rows(img)
    assert nr > 20 and nb > 20
    assert red_row < 17 < 23 < blue_row, (red_row, blue_row)
    # --up y flips it
    assert main(["render", str(ply), "-o", str(out), "--size", "40", "--up", "y"]) == 0
    red_row, blue_row, _, _ = _red_blue_rows(iio.imread(out))
    assert blue_row < 17 < 23 < red_row, (red_row, blue_row)


def test_up_z_and_explicit_distance(tmp_path):
    rng = np.random.default_rng(1)
    means, rgb = _two_tone_scene(rng)
    zup = means[:, [0, 2, 1]] * np.array([1, 1, -1], np.float32)  # -y (red) -> +z
    ply = _plain_3dgs_ply(tmp_path / "z.ply", zup, rgb)
    out = tmp_path / "z.png"
    assert main(["render", str(ply), "-o", str(out), "--size", "40", "--up", "z"]) == 0
    red_row, blue_row, _, _ = _red_blue_rows(iio.imread(out))
    assert red_row < 17 < 23 < blue_row
    # further away = smaller
    near = (iio.imread(out) < 240).any(-1).mean()
    assert main(["render", str(ply), "-o", str(out), "--size", "40", "--up", "z", "--distance", "40"]) == 0
    assert (iio.imread(out) < 240).any(-1).mean() < 0.5 * near


# ----------------------------------------------------------------------------- --camera: over the photo


def _fit_and_meta(sh_degree=0):
    from avatarcli.flame.artifact import FIT_VIEWMAT, FlameFit

    fit = FlameFit(
        shape=np.linspace(-0.5, 0.5, 10).astype(np.float32),
        expr=np.zeros(5, np.float32),
        global_pose=np.array([0.15, -0.35, 0.1], np.float32),
        neck_pose=np.zeros(3, np.float32),
        jaw_pose=np.zeros(3, np.float32),
        eyes_pose=np.zeros(6, np.float32),
        translation=np.array([0.012, 0.03, -0.7], np.float32),
        K=np.array([[95.0, 0, 27.3], [0, 96.0, 20.1], [0, 0, 1]], np.float32),
        viewmat=FIT_VIEWMAT,
        image_size=(40, 56),  # H, W (not square)
        landmark_error_px=np.zeros(68, np.float32),
        flame_model_sha256="c" * 64,
    )
    root = np.array([0.004, -0.03, -0.012])
    meta = HeadMeta.from_fit(fit, root, n_faces=100, sh_degree=sh_degree)
    return fit, meta, root


def _expected_pixel(fit, root, X):
    """Where the fit puts canonical point X: global rotation about the root joint (DESIGN.md),
    then FlameFit.project (the fit's own projection formula)."""
    from scipy.spatial.transform import Rotation

    R = Rotation.from_rotvec(np.asarray(fit.global_pose, np.float64)).as_matrix()
    Xp = (np.asarray(X, np.float64) - root) @ R.T + root
    return fit.project(Xp)


def _blob_centroids(img, expected, r=4):
    lum = img.astype(np.float64).mean(-1)
    out = []
    for x, y in expected:
        x0, y0 = int(round(x)), int(round(y))
        win = lum[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1]
        ys, xs = np.mgrid[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1]
        assert win.sum() > 0, "blob found"
        out.append(((xs * win).sum() / win.sum(), (ys * win).sum() / win.sum()))
    return np.array(out)


@pytest.mark.parametrize("size", [None, 112])
def test_camera_lays_the_head_over_the_photo(tmp_path, size):
    from avatarcli.flame.artifact import write_flame_fit

    fit, meta, root = _fit_and_meta()
    X = np.array([[0.0, 0.0, 0.08], [0.05, 0.06, 0.03], [-0.04, -0.07, 0.05]], np.float32)  # canonical points
    n = len(X)
    g = Gaussians(
        means=torch.tensor(X), quats=torch.tensor([[1.0, 0, 0, 0]] * n), scales=torch.full((n, 3), 0.0012),
        opacities=torch.full((n,), 0.9), sh=torch.full((n, 1, 3), (1.0 - 0.5) / SH_C0),
    )  # fmt: skip
    ply = _write(tmp_path / "head.ply", g, binding=torch.zeros(n, dtype=torch.long), meta=meta)
    write_flame_fit(tmp_path / "fit.npz", fit)
    want = _expected_pixel(fit, root, X)  # [n, 2] in the photo's pixels
    H, W = fit.image_size
    if size is not None:  # the same view, resized: pixel centres at integers scale as s (x + 0.5) - 0.5
        s = size / max(H, W)
        want = s * (want + 0.5) - 0.5
        H, W = round(H * s), round(W * s)
    assert ((want > 5) & (want < np.array([W, H]) - 5)).all(), "test points inside the image"
    for cam in (str(tmp_path / "fit.npz"), "photo"):
        out = tmp_path / "overlay.png"
        args = ["render", str(ply), "-o", str(out), "--camera", cam, "--background", "black"]
        assert main(args + (["--size", str(size)] if size else [])) == 0
        img = iio.imread(out)
        assert img.shape == (H, W, 3)
        got = _blob_centroids(img, want)
        np.testing.assert_allclose(got, want, atol=0.05)


def test_camera_fit_of_another_identity_needs_flame(tmp_path, capsys):
    from avatarcli.flame.artifact import write_flame_fit

    fit, meta, _ = _fit_and_meta()
    g = make_random_gaussians(20, 0)
    ply = _write(tmp_path / "head.ply", g, binding=torch.zeros(20, dtype=torch.long), meta=meta)
    write_flame_fit(tmp_path / "other.npz", dataclasses.replace(fit, shape=fit.shape + 0.1))
    out = tmp_path / "o.png"
    assert main(["render", str(ply), "-o", str(out), "--camera", str(tmp_path / "other.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--flame" in err and len(err.splitlines()) == 1 and not out.exists()
    plain = _write(tmp_path / "plain.ply", g)
    assert main(["render", str(plain), "-o", str(out), "--camera", "photo"]) == 2
    assert "no fit" in capsys.readouterr().err and not out.exists()


# ----------------------------------------------------------------------------- errors


def _bad_ply(tmp_path):
    p = tmp_path / "bad.ply"
    good = tmp_path / "good.ply"
    _write(good, make_random_gaussians(10, 0))
    p.write_bytes(good.read_bytes()[:-7])  # truncated
    good.unlink()
    return p


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["BAD", "-o", "OUT/x.png"], 2, "truncated"),
        (["NAN", "-o", "OUT/x.png"], 2, "non-finite"),
        (["MISSING", "-o", "OUT/x.mp4"], 2, "file not found"),
        (["SCENE", "-o", "OUT/x.avi"], 2, "unknown output type"),
        (["SCENE", "-o", "OUT/x.mp4", "--camera", "photo"], 2, "single view"),
        (["SCENE", "-o", "OUT/x.png", "--size", "3"], 2, "--size"),
        (["SCENE", "-o", "OUT/x.png", "--up", "w"], 2, "--up"),
        (["SCENE", "-o", "OUT/x.png", "--background", "purple"], 2, "--background"),
        (["SCENE", "-o", "OUT/x.gif", "--frames", "0"], 2, "--frames"),
        (["SCENE", "-o", "OUT/x.png", "--backend", "vulkan"], 2, "--backend"),
        (["SCENE", "-o", "OUT/x.png", "--sh-degree", "3"], 2, "--sh-degree"),
    ],
)
def test_bad_input_one_line_no_output(tmp_path, capsys, scene_ply, args, code, needle):
    bad = _bad_ply(tmp_path)
    nan = tmp_path / "nan.ply"
    data = bytearray(scene_ply.read_bytes())
    data[data.index(b"end_header\n") + len(b"end_header\n") :][:4]  # noqa: B018 - first float is x of Gaussian 0
    start = data.index(b"end_header\n") + len(b"end_header\n")
    data[start : start + 4] = np.float32(np.nan).tobytes()
    nan.write_bytes(bytes(data))
    sub = {"BAD": str(bad), "NAN": str(nan), "MISSING": str(tmp_path / "none.ply"), "SCENE": str(scene_ply)}
    out_dir = tmp_path / "out"
    argv = ["render"] + [sub.get(a, a.replace("OUT", str(out_dir))) for a in args]
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert not out_dir.exists() or not list(out_dir.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on CPU-only machines")
def test_gsplat_without_cuda_is_exit_3(scene_ply, tmp_path, capsys):
    out = tmp_path / "g.png"
    assert main(["render", str(scene_ply), "-o", str(out), "--backend", "gsplat"]) == 3
    err = capsys.readouterr().err
    assert "CUDA" in err and "backend 'torch'" in err and not out.exists()


def test_help_has_examples(capsys):
    assert main(["render", "--help"]) == 0
    assert "Examples:" in capsys.readouterr().out


def test_avatarcli_head_faces_the_default_camera(tmp_path):
    """Our heads are y up, facing +z: yaw 0 sees the face (red, +z), yaw 180 the back (blue)."""
    fit, meta, _ = _fit_and_meta()
    rng = np.random.default_rng(3)
    d = rng.normal(size=(1500, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    X = (d * np.array([0.08, 0.11, 0.1])).astype(np.float32)
    rgb = np.where(X[:, 2:3] > 0, [[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]]).astype(np.float32)
    n = len(X)
    g = Gaussians(
        means=torch.tensor(X), quats=torch.tensor([[1.0, 0, 0, 0]] * n), scales=torch.full((n, 3), 0.008),
        opacities=torch.full((n,), 0.95), sh=torch.tensor((rgb - 0.5) / SH_C0)[:, None],
    )  # fmt: skip
    ply = _write(tmp_path / "head.ply", g, binding=torch.zeros(n, dtype=torch.long), meta=meta)
    out = tmp_path / "f.png"
    for yaw, front in ((0, 0), (180, 2)):
        assert main(["render", str(ply), "-o", str(out), "--size", "32", "--yaw", str(yaw)]) == 0
        img = iio.imread(out).astype(int)
        c = img[12:20, 12:20].mean((0, 1))
        assert c[front] > 150 and c[2 - front] < 100, (yaw, c)


def test_several_yaws_in_one_call_equal_one_call_each(scene_ply, tmp_path, capsys):
    """--yaw 0,60,90,180 writes OUT_yaw<Y>.png, each the image a call with that one yaw writes
    (issue 13, item 8: views batched in one call: the PLY read and framed once)."""
    out = tmp_path / "v.png"
    base = ["render", str(scene_ply), "--size", "32", "--backend", "torch"]
    assert main(base + ["-o", str(out), "--yaw", "0,60,90,-22.5"]) == 0
    names = ["v_yaw0.png", "v_yaw60.png", "v_yaw90.png", "v_yaw-22.5.png"]
    assert all((tmp_path / n).is_file() for n in names) and not out.exists()
    for y, n in zip(("0", "60", "90", "-22.5"), names):
        one = tmp_path / f"one{y}.png"
        assert main(base + ["-o", str(one), "--yaw", y]) == 0
        np.testing.assert_array_equal(iio.imread(tmp_path / n), iio.imread(one))
    assert not np.array_equal(iio.imread(tmp_path / names[0]), iio.imread(tmp_path / names[1]))
    capsys.readouterr()
    # library settings (views, yaw) shown as the command's flag
    for bad, needle in ((["-o", str(tmp_path / "t.mp4"), "--yaw", "0,60"], "--yaw: several yaws write one PNG each"),
                        (["-o", str(out), "--yaw", "0,0"], "--yaw 0,0: a yaw is repeated"),
                        (["-o", str(out), "--yaw", "x"], "--yaw 'x': expected degrees"),
                        (["-o", str(out), "--fov", "200"], "--fov 200.0: expected 1..150 degrees")):  # fmt: skip
        assert main(base + bad) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err


def test_camera_errors_name_the_flag(tmp_path, capsys):
    """The render stage names its setting (camera); the CLI shows it as --camera."""
    from avatarcli.errors import InputError
    from avatarcli.stages.render import RenderConfig, plan_render

    fit, meta, _ = _fit_and_meta()
    g = make_random_gaussians(20, 0)
    ply = _write(tmp_path / "head.ply", g, binding=torch.zeros(20, dtype=torch.long), meta=meta)
    with pytest.raises(InputError) as e:
        plan_render(ply, tmp_path / "o.mp4", RenderConfig(camera="photo"))
    assert e.value.setting == "camera" and e.value.raw_message.startswith("camera renders")
    assert main(["render", str(ply), "-o", str(tmp_path / "o.mp4"), "--camera", "photo"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--camera renders the photo's single view" in err and len(err.splitlines()) == 1
    assert main(["render", str(ply), "-o", str(tmp_path / "o.png"), "--camera", str(tmp_path / "nosuch.npz")]) == 2
    assert "--camera: expected 'photo' or a flame.npz fit file" in capsys.readouterr().err
