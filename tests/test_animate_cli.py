"""`avatar animate` through the CLI with a FLAME model on disk (the `flame_dir` fixture):
frame counts, expression files in sequence, cameras, the PLY sequence, bad input -> exit code,
one line, no partial output."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from avatarcli.cli import main

SIZE = 24


@pytest.fixture(scope="module")
def flame(flame_dir):
    from avatarcli.flame.loader import load_flame

    return load_flame(flame_dir)


def _fit(model):
    from avatarcli.flame.artifact import FIT_VIEWMAT, FlameFit

    rng = np.random.default_rng(2)
    return FlameFit(
        shape=(0.3 * rng.normal(size=20)).astype(np.float32),
        expr=(0.2 * rng.normal(size=10)).astype(np.float32),
        global_pose=np.array([0.05, 0.25, 0.0], np.float32),
        neck_pose=np.zeros(3, np.float32),
        jaw_pose=np.array([0.05, 0.0, 0.0], np.float32),
        eyes_pose=np.zeros(6, np.float32),
        translation=np.array([0.0, 0.01, -0.8], np.float32),
        K=np.array([[120.0, 0, 27.5], [0, 120.0, 19.5], [0, 0, 1]], np.float32),
        viewmat=FIT_VIEWMAT,
        image_size=(40, 56),
        landmark_error_px=np.zeros(68, np.float32),
        flame_model_sha256=model.sha256,
    )


def _write_head(path, model, fit, n=400, sha=None):
    """A head PLY as init-gaussians writes one: canonical Gaussians on the fit's mesh + binding + meta."""
    from avatarcli.flame.forward import canonical_vertices, root_joint
    from avatarcli.gaussians.binding import world_gaussians
    from avatarcli.gaussians.model import BoundGaussians
    from avatarcli.gaussians.ply import GaussianPly, HeadMeta, write_gaussian_ply

    g = torch.Generator().manual_seed(0)
    F = model.faces.shape[0]
    bound = BoundGaussians(
        binding=torch.randint(0, F, (n,), generator=g),
        local_xyz=0.2 * torch.randn(n, 3, generator=g),
        local_rot=torch.randn(n, 4, generator=g),
        local_log_scale=torch.full((n, 3), 0.5),
        opacity_logit=torch.full((n,), 2.0),
        sh=0.5 * torch.randn(n, 1, 3, generator=g),
    )
    params = fit.canonical_params(model)
    verts = canonical_vertices(model, params)[0]
    root = root_joint(model, params.shape)[0]
    meta = HeadMeta.from_fit(fit, root, n_faces=F, sh_degree=0)
    if sha is not None:
        meta = dataclasses.replace(meta, fit=dataclasses.replace(meta.fit, flame_model_sha256=sha))
    write_gaussian_ply(path, GaussianPly(world_gaussians(bound, verts, model.faces), binding=bound.binding, meta=meta))
    return path


@pytest.fixture(scope="module")
def files(flame, flame_dir, tmp_path_factory):
    """head.ply, fit.npz, expression files and folders (written once for the module)."""
    from avatarcli.flame.artifact import write_flame_fit

    root = tmp_path_factory.mktemp("animate-cli")
    fit = _fit(flame)
    f = {"flame": str(flame_dir), "head": _write_head(root / "head.ply", flame, fit)}
    write_flame_fit(root / "fit.npz", fit)
    f["fit"] = root / "fit.npz"
    jaw = np.zeros((4, 3), np.float32)
    jaw[:, 0] = np.linspace(0, 0.3, 4)
    np.savez(root / "jaw.npz", jaw_pose=jaw, fps=np.float32(10))
    np.savez(root / "nod.npz", global_pose=np.array([0.3, 0.0, 0.0], np.float32))  # a target: there and back
    (root / "clips").mkdir()
    np.savez(root / "clips" / "a.npz", jaw_pose=jaw[:3], fps=np.float32(10))
    np.savez(root / "clips" / "b.npz", expr=np.full((2, 5), 0.5, np.float32), fps=np.float32(10))
    for k in ("jaw", "nod"):
        f[k] = root / f"{k}.npz"
    f["clips"] = root / "clips"
    f["root"] = root
    return f


def _args(files, *extra):
    return ["animate", str(files["head"]), "--flame", files["flame"], "--size", str(SIZE), "--backend", "torch",
            "--device", "cpu", *map(str, extra)]  # fmt: skip


def _pngs(folder):
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- outputs


def test_png_frames_several_expr_in_sequence(files, tmp_path):
    out = tmp_path / "frames"
    # jaw: 4 frames at 10 fps; nod: a target over 0.5 s at 10 fps = 5 frames
    assert main(_args(files, "--expr", files["jaw"], "--expr", files["nod"], "--duration", "0.5", "-o", out)) == 0
    assert _pngs(out) == [f"frame_{i:05d}.png" for i in range(9)]
    imgs = [iio.imread(out / n) for n in _pngs(out)]
    assert all(i.shape == (SIZE, SIZE, 3) for i in imgs)
    assert (imgs[0] < 250).any(-1).mean() > 0.05, "the head is in view"
    np.testing.assert_array_equal(imgs[4], imgs[8])  # the nod starts and ends at neutral (= jaw at rest)


def test_folder_of_clips_and_video_frame_counts(files, tmp_path):
    for suffix in (".gif", ".mp4"):
        out = tmp_path / f"a{suffix}"
        assert main(_args(files, "--expr", files["clips"], "--camera", "orbit", "-o", out)) == 0
        frames = list(iio.imiter(out))
        assert len(frames) == 3 + 2 and frames[0].shape[:2] == (SIZE, SIZE), suffix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.mp4"], "no temp files"


@pytest.mark.parametrize("camera", ["photo", "FIT"])
def test_photo_camera_renders_at_the_photos_size(files, tmp_path, camera):
    out = tmp_path / "f"
    cam = str(files["fit"]) if camera == "FIT" else camera
    args = ["animate", str(files["head"]), "--flame", files["flame"], "--backend", "torch", "--device", "cpu"]
    assert main(args + ["--expr", str(files["jaw"]), "--camera", cam, "-o", str(out)]) == 0
    img = iio.imread(out / "frame_00000.png")
    assert img.shape == (40, 56, 3)
    assert (img < 250).any(-1).mean() > 0.05


def test_ply_sequence_round_trip(files, flame, tmp_path):
    from avatarcli.animate.expressions import load_expressions
    from avatarcli.animate.pose import HeadPoser
    from avatarcli.animate.sequence import build_sequence
    from avatarcli.gaussians.ply import read_gaussian_ply

    seq_dir = tmp_path / "plys"
    assert main(_args(files, "--expr", files["jaw"], "--ply-seq", seq_dir)) == 0
    names = sorted(p.name for p in seq_dir.iterdir())
    assert names == [f"frame_{i:05d}.ply" for i in range(4)]
    head = read_gaussian_ply(files["head"])
    posed = list(HeadPoser.from_ply(flame, head).posed(build_sequence(load_expressions([files["jaw"]]), flame.n_expr)))
    for name, g in zip(names, posed):
        back = read_gaussian_ply(seq_dir / name)
        assert back.binding is None and back.meta is None
        torch.testing.assert_close(back.gaussians.means, g.means, atol=1e-6, rtol=0)
        torch.testing.assert_close(back.gaussians.scales, g.scales, atol=1e-7, rtol=1e-5)
        torch.testing.assert_close(back.gaussians.sh, g.sh, atol=0, rtol=0)
    # the sequence moves (the jaw opens) and frame 0 is the neutral jaw
    assert (read_gaussian_ply(seq_dir / names[-1]).gaussians.means - posed[0].means).abs().max() > 1e-3


def test_frames_and_ply_seq_together_and_rerun_replaces(files, tmp_path):
    out, seq_dir = tmp_path / "f", tmp_path / "p"
    assert main(_args(files, "--expr", files["jaw"], "-o", out, "--ply-seq", seq_dir)) == 0
    assert len(_pngs(out)) == 4 and len(_pngs(seq_dir)) == 4
    # a shorter re-run into the same folders leaves exactly its own frames
    assert main(_args(files, "--expr", files["clips"] / "a.npz", "-o", out, "--ply-seq", seq_dir)) == 0
    assert len(_pngs(out)) == 3 and len(_pngs(seq_dir)) == 3


# ----------------------------------------------------------------------------- bad input


def _npz(root, name, **arrays):
    p = root / f"{name}.npz"
    np.savez(p, **{k: np.asarray(v) for k, v in arrays.items()})
    return p


@pytest.fixture
def bad(files, flame, tmp_path):
    from avatarcli.gaussians.ply import GaussianPly, read_gaussian_ply, write_gaussian_ply

    r = tmp_path
    head = read_gaussian_ply(files["head"])
    nan_jaw = np.zeros((3, 3), np.float32)
    nan_jaw[1, 0] = np.nan
    b = {
        "unknown": _npz(r, "unknown", jaw_pose=np.zeros((3, 3)), smile=np.zeros(3), happy=np.zeros(2)),
        "shape": _npz(r, "shape", jaw_pose=np.zeros((3, 2))),
        "nan": _npz(r, "nan", jaw_pose=nan_jaw),
        "frames": _npz(r, "frames", jaw_pose=np.zeros((3, 3)), expr=np.zeros((4, 5))),
        "many": _npz(r, "many", expr=np.zeros((2, flame.n_expr + 1))),
        "nobind": r / "nobind.ply",
        "other": _write_head(r / "other.ply", flame, _fit(flame), n=50, sha="b" * 64),
        "badfit": r / "badfit.npz",
    }
    write_gaussian_ply(b["nobind"], GaussianPly(head.gaussians))
    np.savez(b["badfit"], format=np.array("avatarcli.flame_fit"), version=np.int64(1), K=np.eye(3))
    return b


@pytest.mark.parametrize(
    "case, code, needles",
    [
        ("unknown", 2, ["unknown key(s) ['happy', 'smile']"]),
        ("shape", 2, ["jaw_pose", "[3, 2]", "expected [T, 3]"]),
        ("nan", 2, ["NaN"]),
        ("frames", 2, ["disagree on the number of frames"]),
        ("many", 2, ["expression coefficients"]),
        ("nobind", 2, ["no binding"]),
        ("other", 2, ["sha256 bbbbbbbbbbbb", "--force"]),
        ("badfit", 2, ["badfit.npz"]),
        ("noflame", 3, ["FLAME"]),
        ("busy", 2, ["holds other files"]),
        ("missing", 2, ["not found"]),
    ],
)
def test_bad_input_exit_code_one_line_no_output(files, bad, tmp_path, capsys, monkeypatch, case, code, needles):
    out = tmp_path / "out"
    head, expr, extra = files["head"], files["jaw"], []
    flame_args = ["--flame", files["flame"]]
    if case in ("unknown", "shape", "nan", "frames", "many"):
        expr = bad[case]
    elif case in ("nobind", "other"):
        head = bad[case]
    elif case == "badfit":
        extra = ["--camera", str(bad["badfit"])]
    elif case == "noflame":
        flame_args = []
        monkeypatch.delenv("AVATAR_FLAME", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no FLAME in a default location either
    elif case == "busy":
        out.mkdir()
        (out / "holiday.jpg").write_bytes(b"precious")
    elif case == "missing":
        expr = tmp_path / "none.npz"
    argv = ["animate", str(head), "--expr", str(expr), "-o", str(out), "--ply-seq", str(tmp_path / "seq"),
            "--size", "16", "--backend", "torch", "--device", "cpu", *flame_args, *extra]  # fmt: skip
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    if case == "busy":
        assert _pngs(out) == ["holiday.jpg"] and (out / "holiday.jpg").read_bytes() == b"precious"
    else:
        assert not out.exists()
    assert not (tmp_path / "seq").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp folders left"


def test_force_animates_with_another_model_hash(files, bad, tmp_path, capsys):
    out = tmp_path / "f"
    argv = ["animate", str(bad["other"]), "--expr", str(files["jaw"]), "-o", str(out), "--size", "16",
            "--backend", "torch", "--device", "cpu", "--flame", files["flame"], "--force"]  # fmt: skip
    assert main(argv) == 0
    assert len(_pngs(out)) == 4
    assert "hash differs" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_gsplat_without_cuda_is_exit_3_before_loading(files, tmp_path, capsys):
    out = tmp_path / "a.mp4"
    argv = ["animate", str(files["head"]), "--expr", str(files["jaw"]), "-o", str(out), "--backend", "gsplat"]
    assert main(argv) == 3  # no --flame given: fails on the backend first, not on the model
    assert "CUDA" in capsys.readouterr().err and not out.exists()


def test_subprocess_exit_code_and_help(files, bad, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "avatarcli", "animate", str(files["head"]), "--expr", str(bad["unknown"]), "-o", str(tmp_path / "x.gif")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and "smile" in r.stderr
    assert main(["animate", "--help"]) == 0


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--fps", "-1"], "--fps -1.0: must be a positive number"),
        (["--duration", "0"], "--duration 0.0: must be a positive number of seconds"),
        (["--camera", "nosuch"], "nosuch: --camera: expected front, orbit, photo or a flame.npz fit file"),
        (["--ply-seq", "seq.ply"], "seq.ply: --ply-seq takes a folder"),
    ],
)
def test_library_settings_show_as_flags(files, tmp_path, capsys, extra, needle):
    """The library names the setting (fps, duration, camera); the CLI shows the flag, in one line."""
    assert main(_args(files, "--expr", files["nod"], *extra, "-o", tmp_path / "out.mp4")) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out.mp4").exists()
