"""FLAME forward against independent oracles: smplx.lbs (vertices, joints), a numpy barycentric
reference (landmarks), smplx's dynamic-contour lookup (the contour's triangles per head rotation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from avatarcli.flame.forward import contour_bins, flame_forward, flame_landmarks
from avatarcli.flame.params import FlameParams
from avatarcli.testing.synthetic_flame import random_flame_params

smplx_lbs = pytest.importorskip("smplx.lbs")


@pytest.fixture(scope="module")
def model64(flame_model):
    return flame_model.to(dtype=torch.float64)


def _random_params(B: int, seed: int, n_shape: int = 300, n_expr: int = 100) -> FlameParams:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, k=1.0: torch.randn(*s, generator=g, dtype=torch.float64) * k  # noqa: E731
    return FlameParams(
        shape=r(B, n_shape, k=1.5),
        expr=r(B, n_expr, k=1.5),
        global_pose=r(B, 3, k=0.4),
        neck_pose=r(B, 3, k=0.2),
        jaw_pose=r(B, 3, k=0.15),
        eyes_pose=r(B, 6, k=0.2),
        translation=r(B, 3, k=0.3),
    )


def _smplx(model, p: FlameParams):
    S, E = p.shape.shape[1], p.expr.shape[1]
    betas = torch.cat([p.shape, p.expr], 1)
    dirs = torch.cat([model.shapedirs[..., :S], model.exprdirs[..., :E]], -1)
    pose = torch.cat([p.global_pose, p.neck_pose, p.jaw_pose, p.eyes_pose], 1)  # [B, 15]
    v, J = smplx_lbs.lbs(
        betas, pose, model.v_template, dirs, model.posedirs, model.J_regressor, model.parents, model.lbs_weights
    )
    t = p.translation[:, None]
    return v + t, J + t


@pytest.mark.parametrize("n_shape, n_expr", [(300, 100), (50, 20), (0, 0)])
def test_vertices_and_joints_match_smplx(model64, n_shape, n_expr):
    p = _random_params(3, seed=n_shape + n_expr, n_shape=n_shape, n_expr=n_expr)
    out = flame_forward(model64, p)
    v_ref, J_ref = _smplx(model64, p)
    # smplx's Rodrigues adds 1e-8 to the axis before the norm: ~1e-9 m here
    assert (out.vertices - v_ref).abs().max() < 1e-6
    assert (out.joints - J_ref).abs().max() < 1e-6
    # and the test is not vacuous: poses move the head by centimetres
    assert (v_ref - model64.v_template - p.translation[:, None]).abs().max() > 0.01


def test_pose_matters_and_rotation_about_root(model64):
    """A pure global rotation rotates the shaped head about the root joint (scipy's Rotation)."""
    p = _random_params(1, seed=7)
    p0 = FlameParams(
        p.shape,
        p.expr,
        torch.zeros_like(p.global_pose),
        p.neck_pose,
        p.jaw_pose,
        p.eyes_pose,
        torch.zeros_like(p.translation),
    )
    v0 = flame_forward(model64, p0, with_landmarks=False).vertices[0].numpy()
    J0 = flame_forward(model64, p0, with_landmarks=False).joints[0, 0].numpy()
    v1 = flame_forward(model64, p, with_landmarks=False).vertices[0].numpy()
    R = Rotation.from_rotvec(p.global_pose[0].numpy()).as_matrix()
    expect = (v0 - J0) @ R.T + J0 + p.translation[0].numpy()
    np.testing.assert_allclose(v1, expect, rtol=0, atol=1e-9)


def _smplx_contour(model, p: FlameParams) -> tuple[np.ndarray, np.ndarray]:
    """smplx's own dynamic-contour lookup (lbs.find_dynamic_lmk_idx_and_bcoords, neck chain: neck then
    global) on the model's tables -> faces [B, 17], barycentrics [B, 17, 3]."""
    emb = model.landmarks
    pose = torch.cat([p.global_pose, p.neck_pose], 1)  # [B, 2 * 3]: joints 0 (global) and 1 (neck)
    faces, bary = smplx_lbs.find_dynamic_lmk_idx_and_bcoords(
        torch.zeros(pose.shape[0], 1, 3, dtype=pose.dtype), pose, emb.dynamic_faces,
        emb.dynamic_bary.to(pose.dtype), torch.tensor([1, 0]),
    )  # fmt: skip
    return faces.numpy(), bary.numpy()


def _numpy_landmarks(model, verts: np.ndarray, p: FlameParams, b: int) -> np.ndarray:
    emb = model.landmarks
    dyn_faces, dyn_bary = _smplx_contour(model, p)
    faces = np.concatenate([dyn_faces[b], emb.static_faces.numpy()])
    bary = np.concatenate([dyn_bary[b], emb.static_bary.numpy()])
    tri = verts[model.faces.numpy()[faces]]  # [68, 3, 3]
    return np.einsum("lk,lkc->lc", bary, tri)


def test_landmarks_match_numpy_barycentric_reference(model64):
    p = _random_params(6, seed=11)
    out = flame_forward(model64, p)
    v = out.vertices.numpy()
    for b in range(6):
        np.testing.assert_allclose(out.landmarks[b].numpy(), _numpy_landmarks(model64, v[b], p, b), rtol=0, atol=1e-12)
    # the landmark-only fast path gives the same points; it adds the translation after the
    # barycentric sum, and the embedding's barycentrics (float32 in the model) sum to 1 only to
    # ~3e-8, so the two differ by up to |t| x 3e-8
    assert (flame_landmarks(model64, p) - out.landmarks).abs().max() < 1e-7


def test_dynamic_contour_follows_the_yaw(model64):
    yaws = np.arange(-50.0, 50.5, 2.5)
    B = len(yaws)
    p = FlameParams.zeros(B, 10, 5, dtype=torch.float64)
    p.global_pose[:, 1] = torch.deg2rad(torch.tensor(yaws))
    p.global_pose[:, 0] = 0.1  # some pitch: the bin must come from the yaw only
    R = torch.stack([torch.as_tensor(Rotation.from_rotvec(g).as_matrix()) for g in p.global_pose.numpy()])
    bins = contour_bins(R).numpy()
    # the same contour triangles as smplx's own lookup on the same tables
    np.testing.assert_array_equal(model64.landmarks.dynamic_faces[bins].numpy(), _smplx_contour(model64, p)[0])
    assert bins[yaws == 0][0] == 0 and bins[0] == 39 and bins[-1] == 78  # clamped at +-39 degrees
    assert len(set(bins.tolist())) >= 30
    out = flame_forward(model64, p)
    ref = np.stack([_numpy_landmarks(model64, out.vertices[b].numpy(), p, b) for b in range(B)])
    np.testing.assert_allclose(out.landmarks.numpy(), ref, rtol=0, atol=1e-12)
    # the neck's rotation counts too (R = R_global @ R_neck)
    q = FlameParams.zeros(2, 10, 5, dtype=torch.float64)
    q.neck_pose[:, 1] = torch.deg2rad(torch.tensor([20.0, -20.0]))
    fi_contour = flame_forward(model64, q).landmarks[:, :17]
    assert not torch.allclose(fi_contour[0], fi_contour[1])


def test_contour_stays_on_the_silhouette(model64):
    """Meaning check on the synthetic head: the jaw-line's end points (0 and 16) stay near the
    mesh's outline (in x, seen from +z) when the head turns; the frontal (static) contour does not."""
    from avatarcli.flame.forward import barycentric_points

    yaws = np.array([-30.0, -15.0, 0.0, 15.0, 30.0])
    B = len(yaws)
    p = FlameParams.zeros(B, 0, 0, dtype=torch.float64)
    p.global_pose[:, 1] = torch.deg2rad(torch.tensor(yaws))
    out = flame_forward(model64, p)
    emb = model64.landmarks
    frontal = barycentric_points(
        out.vertices, model64.faces, emb.full_faces.expand(B, -1), emb.full_bary.expand(B, -1, -1)
    )

    def gap(b, lm, idx):
        v = out.vertices[b].numpy()
        band = v[np.abs(v[:, 1] - lm[idx, 1]) < 0.004]
        side = band[:, 0].max() if idx == 16 else band[:, 0].min()
        return abs(lm[idx, 0] - side)

    dyn = np.array([[gap(b, out.landmarks[b].numpy(), i) for i in (0, 16)] for b in range(B)])
    fr = np.array([[gap(b, frontal[b].numpy(), i) for i in (0, 16)] for b in range(B)])
    assert dyn.max() < 0.010, dyn
    assert fr[0, 1] > 0.02 and fr[-1, 0] > 0.02, fr  # the far side at |yaw| = 30 without the table


def test_batch_consistency(model64):
    p = _random_params(5, seed=3, n_shape=80, n_expr=30)
    out = flame_forward(model64, p)
    for b in range(5):
        one = flame_forward(model64, p[b])
        assert (one.vertices[0] - out.vertices[b]).abs().max() < 1e-12
        assert (one.landmarks[0] - out.landmarks[b]).abs().max() < 1e-12


def test_float32_close_to_float64(flame_model, model64):
    p = random_flame_params(2, seed=5)
    v64 = flame_forward(model64, p).vertices
    v32 = flame_forward(flame_model, p.to(dtype=torch.float32)).vertices
    assert v32.dtype == torch.float32 and (v32.double() - v64).abs().max() < 1e-5


def test_too_many_coefficients_is_an_error(model64):
    p = _random_params(1, seed=0, n_shape=301, n_expr=10)
    with pytest.raises(ValueError, match="301 shape coefficients"):
        flame_forward(model64, p)


def test_canonical_params_zero_only_global_pose_and_translation():
    torch.manual_seed(0)
    p = FlameParams(*(torch.randn(2, n) for n in (4, 3, 3, 3, 3, 6, 3)))
    c = p.canonical()
    assert torch.equal(c.global_pose, torch.zeros(2, 3)) and torch.equal(c.translation, torch.zeros(2, 3))
    for name in ("shape", "expr", "neck_pose", "jaw_pose", "eyes_pose"):
        assert torch.equal(getattr(c, name), getattr(p, name)), name
    assert p.global_pose.abs().sum() > 0  # the input is left as it was
