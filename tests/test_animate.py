"""avatar animate: re-posing a bound head, output frame counts, PLY sequence, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avatarcli.animate.expressions import clip_from_arrays
from avatarcli.animate.pose import HeadPoser
from avatarcli.animate.sequence import build_sequence
from avatarcli.errors import InputError
from avatarcli.geometry import axis_angle_to_matrix, quaternion_to_matrix
from avatarcli.stages.animate import AnimateConfig, BackgroundWriter, animate, frame_name, plan_outputs

N_GAUSSIANS = 300
JAW = 2  # FLAME joints: root, neck, jaw, left eye, right eye


@pytest.fixture(scope="module")
def model():
    from avatarcli.testing.synthetic_flame import make_synthetic_flame

    m = make_synthetic_flame()
    return dataclasses.replace(m, sha256="a" * 64) if not m.sha256 else m


def _fit(model, **over):
    from avatarcli.flame.artifact import FIT_VIEWMAT, FlameFit

    rng = np.random.default_rng(1)
    f = FlameFit(
        shape=(0.5 * rng.normal(size=model.n_shape)).astype(np.float32),
        expr=(0.3 * rng.normal(size=model.n_expr)).astype(np.float32),
        global_pose=np.array([0.05, 0.2, 0.0], np.float32),
        neck_pose=np.array([0.02, 0.0, 0.0], np.float32),
        jaw_pose=np.array([0.1, 0.0, 0.0], np.float32),
        eyes_pose=np.zeros(6, np.float32),
        translation=np.array([0.0, 0.0, -0.8], np.float32),
        K=np.array([[150.0, 0, 31.5], [0, 150.0, 31.5], [0, 0, 1]], np.float32),
        viewmat=FIT_VIEWMAT,
        image_size=(64, 64),
        landmark_error_px=np.zeros(68, np.float32),
        flame_model_sha256=model.sha256,
    )
    return dataclasses.replace(f, **over)


def _head(model, fit=None, n=N_GAUSSIANS, seed=0):
    """A canonical head as a PLY holds it: world Gaussians on the fit's canonical mesh + binding + meta."""
    from avatarcli.flame.forward import canonical_vertices
    from avatarcli.gaussians.binding import world_gaussians
    from avatarcli.gaussians.model import BoundGaussians

    fit = fit or _fit(model)
    g = torch.Generator().manual_seed(seed)
    F = model.faces.shape[0]
    bound = BoundGaussians(
        binding=torch.randint(0, F, (n,), generator=g),
        local_xyz=0.2 * torch.randn(n, 3, generator=g),
        local_rot=torch.randn(n, 4, generator=g),
        local_log_scale=torch.full((n, 3), -1.0) + 0.1 * torch.randn(n, 3, generator=g),
        opacity_logit=torch.randn(n, generator=g),
        sh=0.5 * torch.randn(n, 1, 3, generator=g),
    )
    verts = canonical_vertices(model, fit.params())[0]
    gaussians = world_gaussians(bound, verts, model.faces)
    meta = SimpleNamespace(fit=fit, flame_model_sha256=fit.flame_model_sha256)  # no stored root joint: from FLAME
    return SimpleNamespace(gaussians=gaussians, binding=bound.binding.clone(), meta=meta)


def _clip(tmp_path, name="c", **arrays):
    return clip_from_arrays(tmp_path / f"{name}.npz", {k: np.asarray(v, np.float32) for k, v in arrays.items()})


def _jaw_clip(tmp_path, T=5, angle=0.4):
    jaw = np.zeros((T, 3), np.float32)
    jaw[:, 0] = np.linspace(0, angle, T)
    return _clip(tmp_path, "jaw", jaw_pose=jaw, fps=10)


@pytest.fixture(scope="module")
def head(model):
    return _head(model)


def test_jaw_moves_jaw_gaussians_not_skull(model, head, tmp_path):
    """Opening the jaw carries the jaw's Gaussians down and leaves the skull's where they were,
    up to the jaw's pose-corrective blend shapes. Those are nonzero over the whole synthetic
    head (smooth random fields, as real FLAME's learned ones are nonzero almost everywhere), so
    the skull is checked against an independent prediction of exactly that displacement."""
    from scipy.spatial.transform import Rotation

    poser = HeadPoser.from_ply(model, head)
    angle = 0.4
    seq = build_sequence([_jaw_clip(tmp_path, angle=angle)], model.n_expr)
    frames = list(poser.posed(seq, batch=2))  # batches of 2 over 5 frames: exercises the split
    assert len(frames) == 5
    w = model.lbs_weights[model.faces]  # [F, 3 verts, J]
    jaw_tri = (w[..., JAW] > 0.9).all(-1)  # triangles riding on the jaw
    skull_tri = (w[..., JAW] == 0).all(-1)  # no jaw skinning weight at all
    on_jaw = jaw_tri[head.binding]
    on_skull = skull_tri[head.binding]
    assert on_jaw.sum() >= 3 and on_skull.sum() >= 10, (on_jaw.sum(), on_skull.sum())

    # oracle, from the model arrays (not the forward code): with every other joint at rest,
    # a vertex without jaw weight moves only by the jaw's pose correctives P_jaw . vec(R_jaw - I)
    R = Rotation.from_rotvec([angle, 0.0, 0.0]).as_matrix()  # [3, 3]
    feat = (R - np.eye(3)).reshape(9)
    P = model.posedirs.double().numpy().reshape(model.posedirs.shape[0], -1, 3)  # [36, V, 3]
    corrective = np.einsum("k,kvc->vc", feat, P[9 * (JAW - 1) : 9 * JAW])  # [V, 3]
    V = poser.vertices(seq)  # [5, V, 3]
    skull_v = torch.unique(model.faces[skull_tri])
    np.testing.assert_allclose((V[-1] - V[0])[skull_v].double().numpy(), corrective[skull_v.numpy()], atol=1e-6, rtol=0)
    # ... and the skull's Gaussians are those of that mesh, to float32 precision
    want = poser.gaussians(V[0] + torch.as_tensor(corrective, dtype=V.dtype))
    torch.testing.assert_close(frames[-1].means[on_skull], want.means[on_skull], atol=1e-6, rtol=0)
    torch.testing.assert_close(frames[-1].scales[on_skull], want.scales[on_skull], atol=1e-7, rtol=1e-5)

    moved = (frames[-1].means - frames[0].means).norm(dim=-1)  # [N]
    size = float((model.v_template.max(0).values - model.v_template.min(0).values).max())
    assert moved[on_jaw].min() > 1e-3 * size
    assert moved[on_skull].max() < 0.05 * moved[on_jaw].min(), "the skull moves by the small correctives only"
    # the jaw opens downwards (-y) at the front (+z) of the face
    assert (frames[-1].means - frames[0].means)[on_jaw, 1].mean() < 0


def test_fit_parameters_reproduce_the_stored_head(model, head, tmp_path):
    """A frame with the fit's own expression and joint poses gives back the PLY's Gaussians."""
    fit = head.meta.fit
    clip = _clip(
        tmp_path,
        expr=np.stack([fit.expr] * 2),
        jaw_pose=np.stack([fit.jaw_pose] * 2),
        neck_pose=np.stack([fit.neck_pose] * 2),
        eyes_pose=np.stack([fit.eyes_pose] * 2),
    )
    poser = HeadPoser.from_ply(model, head)
    g = next(poser.posed(build_sequence([clip], model.n_expr, fps=10)))
    torch.testing.assert_close(g.means, head.gaussians.means, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g.scales, head.gaussians.scales, atol=1e-6, rtol=1e-4)
    R1, R2 = quaternion_to_matrix(g.quats), quaternion_to_matrix(head.gaussians.quats)
    torch.testing.assert_close(R1, R2, atol=1e-4, rtol=0)


def test_global_pose_rotates_about_root_and_translation_adds(model, head, tmp_path):
    """Independent re-derivation: posed = R (x0 - J0) + J0 + t, rotations R * r0."""
    from avatarcli.flame.forward import root_joint

    aa = np.array([0.1, -0.5, 0.2], np.float32)
    t = np.array([0.01, -0.02, 0.03], np.float32)
    clip = _clip(tmp_path, global_pose=np.stack([np.zeros(3), aa]), translation=np.stack([np.zeros(3), t]))
    poser = HeadPoser.from_ply(model, head)
    g0, g1 = poser.posed(build_sequence([clip], model.n_expr, fps=10))
    R = axis_angle_to_matrix(torch.tensor(aa, dtype=torch.float64))
    J0 = root_joint(model, head.meta.fit.canonical_params(model).shape)[0].double()
    x0 = g0.means.double()
    want = (x0 - J0) @ R.T + J0 + torch.tensor(t, dtype=torch.float64)
    torch.testing.assert_close(g1.means.double(), want, atol=2e-6, rtol=0)
    # rotations come from triangle frames computed in float32: a frame's angular error is about
    # (float32 rounding of the vertices) / (the triangle's shortest edge), so slivers near FLAME's
    # pole get a proportionally larger tolerance (1e-5 for edges of 2 mm and longer).
    tri = poser.canonical[model.faces[head.binding]]  # [N, 3, 3]
    shortest = (tri - tri.roll(1, dims=1)).norm(dim=-1).min(-1).values.double()  # [N]
    tol = 1e-5 * torch.clamp(2e-3 / shortest, min=1.0)  # [N]
    err = (quaternion_to_matrix(g1.quats).double() - R @ quaternion_to_matrix(g0.quats).double()).abs().amax((1, 2))
    assert (err <= tol).all(), (err / tol).max()
    assert err.median() < 5e-6
    torch.testing.assert_close(g1.scales, g0.scales, atol=1e-6, rtol=1e-5)


def test_png_frames_exactly_one_per_frame(model, head, tmp_path):
    out = tmp_path / "frames"
    clip = _jaw_clip(tmp_path, T=4)
    res = animate(head, [clip], AnimateConfig(size=32, backend="torch", device="cpu"), out=out, model=model)
    files = sorted(out.iterdir())
    assert res.n_frames == 4 and [f.name for f in files] == [frame_name(i, 4, ".png") for i in range(4)]
    from PIL import Image

    imgs = [np.asarray(Image.open(f)) for f in files]
    assert imgs[0].shape == (32, 32, 3)
    assert (imgs[0] < 250).any(), "the head is in view"
    assert not list(tmp_path.glob(".frames*")), "no temp folder left"


def test_single_frame_target_renders_there_and_back(model, head, tmp_path):
    out = tmp_path / "t"
    clip = _clip(tmp_path, jaw_pose=[0.5, 0, 0])
    animate(
        head, [clip], AnimateConfig(size=24, backend="torch", device="cpu", fps=5, duration=1.0), out=out, model=model
    )
    from PIL import Image

    imgs = [np.asarray(Image.open(f)).astype(int) for f in sorted(out.iterdir())]
    assert len(imgs) == 5
    np.testing.assert_array_equal(imgs[0], imgs[-1])  # neutral at both ends
    assert np.abs(imgs[2] - imgs[0]).max() > 0  # the target differs


def test_mp4_and_gif_frame_count(model, head, tmp_path):
    import imageio.v3 as iio

    clip = _jaw_clip(tmp_path, T=6)
    for suffix in (".mp4", ".gif"):
        out = tmp_path / f"a{suffix}"
        animate(head, [clip], AnimateConfig(size=32, backend="torch", device="cpu"), out=out, model=model)
        frames = list(iio.imiter(out))
        assert len(frames) == 6 and frames[0].shape[:2] == (32, 32), suffix


def test_ply_sequence_round_trip(model, head, tmp_path):
    import avatarcli.gaussians.ply as ply

    clip = _jaw_clip(tmp_path, T=3)
    out = tmp_path / "plys"
    animate(head, [clip], AnimateConfig(device="cpu"), ply_seq=out, model=model)
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [frame_name(i, 3, ".ply") for i in range(3)]
    posed = list(HeadPoser.from_ply(model, head).posed(build_sequence([clip], model.n_expr)))
    for f, g in zip(files, posed):
        back = ply.read_gaussian_ply(f)
        assert back.binding is None
        torch.testing.assert_close(back.gaussians.means, g.means, atol=1e-6, rtol=0)
        torch.testing.assert_close(back.gaussians.scales, g.scales, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(back.gaussians.opacities, g.opacities, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            quaternion_to_matrix(back.gaussians.quats), quaternion_to_matrix(g.quats), atol=1e-5, rtol=0
        )


def test_head_without_binding_or_other_model_is_refused(model, head, tmp_path):
    out = tmp_path / "frames"
    clip = _jaw_clip(tmp_path, T=2)
    cfg = AnimateConfig(size=16, backend="torch", device="cpu")
    no_binding = SimpleNamespace(gaussians=head.gaussians, binding=None, meta=head.meta)
    with pytest.raises(InputError, match="not an avatarcli head: it has no binding"):
        animate(no_binding, [clip], cfg, out=out, model=model)
    other = SimpleNamespace(fit=head.meta.fit, flame_model_sha256="b" * 64)
    with pytest.raises(InputError, match=r"sha256 bbbbbbbbbbbb.*`force`") as e:
        animate(
            SimpleNamespace(gaussians=head.gaussians, binding=head.binding, meta=other),
            [clip],
            cfg,
            out=out,
            model=model,
        )
    assert e.value.exit_code == 2 and "\n" not in str(e.value)
    assert not out.exists()
    res = animate(
        SimpleNamespace(gaussians=head.gaussians, binding=head.binding, meta=other),
        [clip],
        dataclasses.replace(cfg, force=True),
        out=out,
        model=model,
    )
    assert res.n_frames == 2 and len(list(out.iterdir())) == 2


def test_too_many_expression_coefficients(model, head, tmp_path):
    clip = _clip(tmp_path, expr=np.zeros((2, model.n_expr + 1)))
    with pytest.raises(InputError, match=f"{model.n_expr + 1} expression coefficients"):
        animate(head, [clip], AnimateConfig(device="cpu"), out=tmp_path / "x", model=model)
    assert not (tmp_path / "x").exists()


def test_output_plans():
    assert plan_outputs("a.mp4", None).video == Path("a.mp4")
    assert plan_outputs("frames", "plys").frames_dir == Path("frames")
    # the one output-folder rule (batch.wants_folder): a trailing separator names a folder, dots or not
    assert plan_outputs("frames.v2/", None).frames_dir == Path("frames.v2")
    assert plan_outputs("frames.v2/", None).video is None
    with pytest.raises(InputError, match="unknown output type"):
        plan_outputs("a.avi", None)
    with pytest.raises(InputError, match="nothing to write"):
        plan_outputs(None, None)
    with pytest.raises(InputError, match="folder"):
        plan_outputs(None, "seq.ply")


def test_background_writer_propagates_errors_and_leaves_nothing(tmp_path):
    from avatarcli.io.atomic import atomic_dir

    def bad(items):
        for i, _ in enumerate(items):
            if i == 2:
                raise OSError("disk full")

    target = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        with atomic_dir(target):
            w = BackgroundWriter(bad, maxsize=1)
            try:
                for i in range(100):
                    w.put(i)
            finally:
                w.close(ok=False)
    assert not target.exists() and not list(tmp_path.iterdir())
    got = []
    w = BackgroundWriter(lambda items: got.extend(items), maxsize=2)
    for i in range(10):
        w.put(i)
    w.close()
    assert got == list(range(10))
