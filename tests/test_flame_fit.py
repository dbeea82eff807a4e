"""FLAME landmark fit: accuracy on synthetic landmarks, batching, Jacobian, the fit-flame command."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from avatarcli.cli import main
from avatarcli.flame import fit as F
from avatarcli.flame.forward import flame_forward
from avatarcli.landmarks.artifact import write_landmarks
from avatarcli.testing.synthetic_flame import random_flame_params, synthetic_landmarks

ISSUE_KEYS = {
    "shape", "expr", "global_pose", "neck_pose", "jaw_pose", "eyes_pose", "translation",
    "K", "viewmat", "image_size", "landmark_error_px", "flame_model_sha256",
}  # fmt: skip


@pytest.fixture(scope="module")
def model64(flame_model):
    return flame_model.to(dtype=torch.float64)


@pytest.fixture(scope="module")
def scene(flame_model):
    """Three faces (yaw -30, 5, 28 degrees), 1 px landmark noise, and their noise-free landmarks."""
    p = random_flame_params(3, seed=21, n_shape=100, n_expr=50)
    p.global_pose[:, 1] = torch.deg2rad(torch.tensor([-30.0, 5.0, 28.0], dtype=torch.float64))
    lms, clean = synthetic_landmarks(flame_model, p, image_size=(480, 512), noise_px=1.0, seed=4)
    return p, lms, clean


@pytest.fixture(scope="module")
def batched_fits(flame_model, scene):
    return F.fit_flame(flame_model, scene[1], F.FitConfig())


def _reprojected(model64, fit: F.FlameFit) -> np.ndarray:
    """The fit's landmarks through the documented camera: K @ (viewmat[:3,:3] @ (X + t) + viewmat[:3,3])."""
    X = flame_forward(model64, fit.params(dtype=torch.float64)).landmarks[0].numpy() - fit.translation.astype(
        np.float64
    )
    xc = (X + fit.translation) @ fit.viewmat[:3, :3].T.astype(np.float64) + fit.viewmat[:3, 3]
    uvw = xc @ fit.K.astype(np.float64).T
    return uvw[:, :2] / uvw[:, 2:]


def test_fit_recovers_landmarks_within_2px(model64, scene, batched_fits):
    p, lms, clean = scene
    for b, fit in enumerate(batched_fits):
        uv = _reprojected(model64, fit)
        err_clean = np.linalg.norm(uv - clean[b], axis=-1)
        assert np.median(err_clean) < 2.0, (b, np.median(err_clean))
        assert err_clean.max() < 6.0
        # the stored per-landmark error is the distance to the (noisy) targets
        np.testing.assert_allclose(fit.landmark_error_px, np.linalg.norm(uv - lms[b].landmarks, axis=-1), atol=2e-3)
        # the head is turned the right way (yaw within 8 degrees)
        assert abs(np.degrees(fit.global_pose[1]) - np.degrees(float(p.global_pose[b, 1]))) < 8.0
        assert (
            fit.image_size == (480, 512) and fit.K[0, 2] == pytest.approx(255.5) and fit.K[1, 2] == pytest.approx(239.5)
        )


def test_mean_template_is_worse_than_the_fit(model64, scene, batched_fits):
    """The test can fail: the same camera and pose with the mean shape/expression reproject worse."""
    p, lms, clean = scene
    for b, fit in enumerate(batched_fits):
        f0 = F.FlameFit(**{**fit.__dict__, "shape": np.zeros_like(fit.shape), "expr": np.zeros_like(fit.expr)})
        e_fit = np.median(np.linalg.norm(_reprojected(model64, fit) - clean[b], axis=-1))
        e_mean = np.median(np.linalg.norm(_reprojected(model64, f0) - clean[b], axis=-1))
        assert e_mean > 1.5 * e_fit, (e_mean, e_fit)


def test_batched_fit_equals_per_item_fits(flame_model, scene, batched_fits):
    lms = scene[1]
    for b in (0, 2):
        one = F.fit_flame(flame_model, [lms[b]], F.FitConfig())[0]
        for k in ("shape", "expr", "global_pose", "neck_pose", "jaw_pose", "translation", "K"):
            np.testing.assert_allclose(getattr(one, k), getattr(batched_fits[b], k), rtol=1e-4, atol=1e-4, err_msg=k)
        np.testing.assert_allclose(one.landmark_error_px, batched_fits[b].landmark_error_px, atol=1e-3)


def test_jacobian_matches_autodiff(flame_model, scene):
    """The closed-form / finite-difference Jacobian used by the solver equals torch's forward-mode one."""
    lms = scene[1]
    rig = F.LandmarkRig(flame_model, 20, 10)
    pts, sc, hw = F._stack_landmarks(lms)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    prob = F._Problem(rig, F.FitConfig(), t(pts), t(sc), t(hw))
    g = torch.Generator().manual_seed(0)
    q = prob.mean(torch.arange(3))
    q[:, :13] += torch.randn(3, 13, generator=g, dtype=torch.float64) * 0.2
    q[:, 5] -= 0.5
    q[:, 13:] = torch.randn(3, 30, generator=g, dtype=torch.float64)
    uv, J = prob.jacobian(q, prob.cxy)
    rows = rig.gather(prob.pose(q))
    single = lambda a, c, *r: prob.project(a[None], c[None], tuple(x[None] for x in r))[0]  # noqa: E731
    J_ref = torch.func.vmap(torch.func.jacfwd(single))(q, prob.cxy, *rows)
    assert (uv - prob.project(q, prob.cxy, rows)).abs().max() < 1e-9
    assert (J - J_ref).abs().max() < 1e-6 * J_ref.abs().max()


def test_landmark_rig_equals_forward(flame_model, model64):
    p = random_flame_params(4, seed=8, n_shape=30, n_expr=12)
    rig = F.LandmarkRig(flame_model, 30, 12)
    pose = torch.stack([p.global_pose, p.neck_pose, p.jaw_pose, p.eyes_pose[:, :3], p.eyes_pose[:, 3:]], 1)
    lm = rig(rig.gather(pose), p.shape, p.expr, pose, p.translation)
    ref = flame_forward(model64, p).landmarks
    assert (lm - ref).abs().max() < 1e-7


# ------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory, flame_model):
    d = tmp_path_factory.mktemp("lms")
    p = random_flame_params(2, seed=31, n_shape=60, n_expr=30)
    lms, _ = synthetic_landmarks(flame_model, p, image_size=(256, 256), noise_px=0.5, seed=1)
    paths = []
    for i, lm in enumerate(lms):
        paths.append(d / f"face{i}.npz")
        write_landmarks(paths[-1], lm)
    return paths


def test_fit_flame_cli_end_to_end(tmp_path, flame_dir, lm_files, capsys):
    out = tmp_path / "face.flame.npz"
    rc = main(["fit-flame", str(lm_files[0]), "--flame", str(flame_dir), "-o", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "mean landmark error" in err
    with np.load(out, allow_pickle=False) as z:
        assert set(z.files) == ISSUE_KEYS | {"format", "version"}
        assert str(z["format"]) == "avatarcli.flame_fit" and int(z["version"]) == 1
        assert z["shape"].shape == (300,) and z["expr"].shape == (100,) and z["eyes_pose"].shape == (6,)
        assert z["landmark_error_px"].shape == (68,)
    fit = F.read_flame_fit(out)
    assert fit.flame_model_sha256 == hashlib.sha256((flame_dir / "generic_model.pkl").read_bytes()).hexdigest()
    assert fit.mean_error_px < 2.0
    assert list(tmp_path.iterdir()) == [out]  # no temp files left


def test_fit_flame_cli_several_inputs_to_folder(tmp_path, flame_dir, lm_files):
    out = tmp_path / "fits"
    rc = main(
        [
            "fit-flame",
            *map(str, lm_files),
            "--flame",
            str(flame_dir),
            "-o",
            str(out),
            "--n-shape",
            "50",
            "--n-expr",
            "20",
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["face0.npz", "face1.npz"]
    fits = [F.read_flame_fit(p) for p in sorted(out.iterdir())]
    assert all(np.all(f.shape[50:] == 0) and np.all(f.expr[20:] == 0) for f in fits)


@pytest.mark.parametrize("bad", ["garbage", "nan", "wrong_format"])
def test_bad_landmark_file_exit_2_no_output(tmp_path, flame_dir, lm_files, capsys, bad):
    path = tmp_path / "bad.npz"
    if bad == "garbage":
        path.write_bytes(b"not an npz at all")
    else:
        with np.load(lm_files[0]) as z:
            a = dict(z)
        if bad == "nan":
            a["landmarks"] = a["landmarks"].copy()
            a["landmarks"][5, 0] = np.nan
        else:
            a["format"] = np.asarray("avatarcli.flame_fit")
        np.savez(path, **a)
    out = tmp_path / "out"
    # the good file comes first: nothing may be written for it either
    rc = main(["fit-flame", str(lm_files[0]), str(path), "--flame", str(flame_dir), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists()
    assert err.startswith("error:") and "bad.npz" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1 or "bad.npz" in err.splitlines()[0]
