"""Binding math: triangle frame <-> world, checked against an independent numpy
re-derivation and against the rigid/scaling behaviour it must have."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from avatarcli.gaussians.binding import bind_to_mesh, world_gaussians
from avatarcli.gaussians.model import BoundGaussians
from avatarcli.geometry import quaternion_to_matrix


def uv_sphere(n_lat: int = 8, n_lon: int = 12, radius: float = 0.1, dtype=torch.float64):
    """Closed sphere, outward-facing (counter-clockwise seen from outside). -> vertices [V,3], faces [F,3]."""
    verts = [[0.0, radius, 0.0]]
    for i in range(1, n_lat):
        th = math.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * math.pi * j / n_lon
            verts.append(
                [radius * math.sin(th) * math.sin(ph), radius * math.cos(th), radius * math.sin(th) * math.cos(ph)]
            )
    verts.append([0.0, -radius, 0.0])
    faces = []
    ring = lambda i, j: 1 + (i - 1) * n_lon + (j % n_lon)  # noqa: E731
    for j in range(n_lon):
        faces.append([0, ring(1, j), ring(1, j + 1)])
    for i in range(1, n_lat - 1):
        for j in range(n_lon):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces += [[a, c, b], [b, c, d]]
    last = len(verts) - 1
    for j in range(n_lon):
        faces.append([last, ring(n_lat - 1, j + 1), ring(n_lat - 1, j)])
    return torch.tensor(verts, dtype=dtype), torch.tensor(faces, dtype=torch.long)


def random_bound(n: int, n_faces: int, seed: int = 0, sh_k: int = 4, dtype=torch.float64) -> BoundGaussians:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    rot = r(n, 4)
    return BoundGaussians(
        binding=torch.randint(0, n_faces, (n,), generator=g),
        local_xyz=r(n, 3) * 0.3,
        local_rot=rot / rot.norm(dim=-1, keepdim=True),
        local_log_scale=r(n, 3) * 0.5 - 1.0,
        opacity_logit=r(n),
        sh=r(n, sh_k, 3),
    )


@pytest.fixture
def mesh():
    v, f = uv_sphere()
    g = torch.Generator().manual_seed(1)
    return v + 0.01 * torch.randn(v.shape, generator=g, dtype=v.dtype), f


def _numpy_reference(bound: BoundGaussians, v: np.ndarray, f: np.ndarray):
    """Independent float64 re-derivation of DESIGN.md's binding formula (scipy for the rotations)."""
    tri = v[f[bound.binding.numpy()]]  # [N, 3, 3]
    v0, v1, v2 = tri[:, 0], tri[:, 1], tri[:, 2]
    c = tri.mean(1)
    e1 = (v1 - v0) / np.linalg.norm(v1 - v0, axis=1, keepdims=True)
    n = np.cross(v1 - v0, v2 - v0)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    e2 = np.cross(n, e1)
    R = np.stack([e1, e2, n], axis=2)
    k = (np.linalg.norm(v1 - v0, axis=1) + np.linalg.norm(v2 - v0, axis=1) + np.linalg.norm(v2 - v1, axis=1)) / 3
    lr = bound.local_rot.numpy()
    Rl = Rotation.from_quat(np.concatenate([lr[:, 1:], lr[:, :1]], 1)).as_matrix()
    means = c + k[:, None] * np.einsum("nij,nj->ni", R, bound.local_xyz.numpy())
    rots = R @ Rl
    scales = k[:, None] * np.exp(bound.local_log_scale.numpy())
    return means, rots, scales


def test_forward_matches_numpy_reference(mesh):
    v, f = mesh
    bound = random_bound(300, f.shape[0])
    w = world_gaussians(bound, v, f)
    means, rots, scales = _numpy_reference(bound, v.numpy(), f.numpy())
    np.testing.assert_allclose(w.means.numpy(), means, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(w.quats).numpy(), rots, atol=1e-12)
    np.testing.assert_allclose(w.scales.numpy(), scales, rtol=1e-12)
    np.testing.assert_allclose(w.opacities.numpy(), 1 / (1 + np.exp(-bound.opacity_logit.numpy())), rtol=1e-12)
    assert torch.equal(w.sh, bound.sh)
    np.testing.assert_allclose(w.quats.norm(dim=-1).numpy(), 1.0, atol=1e-12)


def test_round_trip_both_ways(mesh):
    v, f = mesh
    bound = random_bound(500, f.shape[0])
    w = world_gaussians(bound, v, f)
    back = bind_to_mesh(w, bound.binding, v, f)
    for name in ("local_xyz", "local_rot", "local_log_scale", "opacity_logit", "sh"):
        np.testing.assert_allclose(getattr(back, name).numpy(), getattr(bound, name).numpy(), atol=1e-6, err_msg=name)
    assert torch.equal(back.binding, bound.binding)
    w2 = world_gaussians(back, v, f)
    for name in ("means", "quats", "scales", "opacities"):
        np.testing.assert_allclose(getattr(w2, name).numpy(), getattr(w, name).numpy(), atol=1e-9, err_msg=name)


def test_rigid_motion_moves_gaussians_rigidly(mesh):
    v, f = mesh
    bound = random_bound(400, f.shape[0])
    Q = torch.tensor(Rotation.from_rotvec([0.3, -1.2, 2.0]).as_matrix())
    t = torch.tensor([0.05, -0.2, 0.7], dtype=torch.float64)
    w0 = world_gaussians(bound, v, f)
    w1 = world_gaussians(bound, v @ Q.T + t, f)
    np.testing.assert_allclose(w1.means.numpy(), (w0.means @ Q.T + t).numpy(), atol=1e-12)
    np.testing.assert_allclose(
        quaternion_to_matrix(w1.quats).numpy(), (Q @ quaternion_to_matrix(w0.quats)).numpy(), atol=1e-12
    )
    np.testing.assert_allclose(w1.scales.numpy(), w0.scales.numpy(), rtol=1e-12)


def test_uniform_scaling_scales_gaussians(mesh):
    v, f = mesh
    bound = random_bound(200, f.shape[0])
    w0 = world_gaussians(bound, v, f)
    w1 = world_gaussians(bound, 2.5 * v, f)
    np.testing.assert_allclose(w1.means.numpy(), 2.5 * w0.means.numpy(), atol=1e-12)
    np.testing.assert_allclose(w1.scales.numpy(), 2.5 * w0.scales.numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        quaternion_to_matrix(w1.quats).numpy(), quaternion_to_matrix(w0.quats).numpy(), atol=1e-12
    )


def test_moving_one_vertex_moves_only_its_triangles_gaussians(mesh):
    v, f = mesh
    bound = random_bound(600, f.shape[0])
    w0 = world_gaussians(bound, v, f)
    v2 = v.clone()
    vid = 20
    v2[vid] += torch.tensor([0.01, -0.02, 0.015], dtype=v.dtype)
    w1 = world_gaussians(bound, v2, f)
    touched = (f == vid).any(1)[bound.binding]  # [N]
    assert touched.any() and (~touched).any()
    moved = (w1.means - w0.means).norm(dim=-1) > 1e-9
    assert torch.equal(moved, touched)
    assert torch.equal(w1.quats[~touched], w0.quats[~touched])
    assert torch.equal(w1.scales[~touched], w0.scales[~touched])


def test_batched_vertices_match_single(mesh):
    v, f = mesh
    bound = random_bound(100, f.shape[0])
    vb = torch.stack([v, 1.3 * v + 0.1])  # [2, V, 3]
    wb = world_gaussians(bound, vb, f)
    assert wb.means.shape == (2, 100, 3) and wb.opacities.shape == (2, 100) and wb.sh.shape == (2, 100, 4, 3)
    for i in range(2):
        wi = world_gaussians(bound, vb[i], f)
        assert torch.allclose(wb.means[i], wi.means, atol=1e-14)
        assert torch.allclose(wb.quats[i], wi.quats, atol=1e-14)
        assert torch.allclose(wb.scales[i], wi.scales, atol=1e-14)


def test_gradients_match_finite_differences(mesh):
    v, f = mesh
    bound = random_bound(12, f.shape[0], seed=3)
    verts = v.clone().requires_grad_(True)
    local = bound.local_xyz.clone().requires_grad_(True)
    rot = bound.local_rot.clone().requires_grad_(True)

    def fn(verts, local, rot):
        w = world_gaussians(bound.replace(local_xyz=local, local_rot=rot), verts, f)
        return w.means, w.quats, w.scales

    assert torch.autograd.gradcheck(fn, (verts, local, rot), eps=1e-6, atol=1e-6)
