"""Geometry ops against scipy's Rotation (an independent implementation)."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from avatarcli import geometry as g


@pytest.fixture
def rotations():
    rng = np.random.default_rng(0)
    R = Rotation.random(200, random_state=rng)
    # include the hard cases: identity, tiny angles, angles near pi
    extra = Rotation.from_rotvec(
        np.array([[0, 0, 0], [1e-9, 0, 0], [0, 1e-5, 2e-5], [np.pi - 1e-6, 0, 0], [0, 0, np.pi], [1, 1, 1]]) * 1.0
    )
    return Rotation.concatenate([R, extra])


def test_axis_angle_to_matrix_matches_scipy(rotations):
    aa = torch.tensor(rotations.as_rotvec(), dtype=torch.float64)
    np.testing.assert_allclose(g.axis_angle_to_matrix(aa).numpy(), rotations.as_matrix(), atol=1e-12)


def test_matrix_to_axis_angle_roundtrip(rotations):
    R = torch.tensor(rotations.as_matrix(), dtype=torch.float64)
    aa = g.matrix_to_axis_angle(R)
    np.testing.assert_allclose(g.axis_angle_to_matrix(aa).numpy(), rotations.as_matrix(), atol=1e-9)
    assert (aa.norm(dim=-1) <= np.pi + 1e-9).all()


def test_quaternions_match_scipy(rotations):
    q_xyzw = rotations.as_quat()
    q = torch.tensor(np.concatenate([q_xyzw[:, 3:], q_xyzw[:, :3]], 1), dtype=torch.float64)
    np.testing.assert_allclose(g.quaternion_to_matrix(q).numpy(), rotations.as_matrix(), atol=1e-12)
    back = g.matrix_to_quaternion(torch.tensor(rotations.as_matrix()))
    # same rotation up to sign; we return w >= 0
    sign = np.sign((back.numpy() * q.numpy()).sum(-1, keepdims=True))
    np.testing.assert_allclose(back.numpy(), q.numpy() * sign, atol=1e-9)


def test_quaternion_multiply_composes_like_matrices(rotations):
    a, b = rotations[:100], rotations[100:200]
    qa = torch.tensor(np.roll(a.as_quat(), 1, axis=1))
    qb = torch.tensor(np.roll(b.as_quat(), 1, axis=1))
    np.testing.assert_allclose(
        g.quaternion_to_matrix(g.quaternion_multiply(qa, qb)).numpy(), (a * b).as_matrix(), atol=1e-12
    )


def test_axis_angle_gradient_finite_at_zero():
    aa = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    g.axis_angle_to_matrix(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()
    # d/d(aa) of R at 0 is the skew generator: R ~ I + skew(aa); sum of skew entries is 0 per axis
    assert torch.allclose(aa.grad, torch.zeros(3, dtype=torch.float64))


def test_triangle_frames_are_orthonormal_and_follow_rotation():
    rng = np.random.default_rng(1)
    V = torch.tensor(rng.normal(size=(50, 3)))
    F = torch.tensor(rng.integers(0, 50, size=(40, 3)))
    F = F[(F[:, 0] != F[:, 1]) & (F[:, 1] != F[:, 2]) & (F[:, 0] != F[:, 2])]
    c, R, s = g.triangle_frames(V, F)
    eye = torch.eye(3, dtype=torch.float64).expand_as(R)
    np.testing.assert_allclose((R.transpose(-1, -2) @ R).numpy(), eye.numpy(), atol=1e-10)
    np.testing.assert_allclose(torch.linalg.det(R).numpy(), 1.0, atol=1e-10)
    # rigidly moving the mesh rotates the frames and moves the centroids the same way
    Q = torch.tensor(Rotation.random(random_state=3).as_matrix())
    t = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    c2, R2, s2 = g.triangle_frames(V @ Q.T + t, F)
    np.testing.assert_allclose(c2.numpy(), (c @ Q.T + t).numpy(), atol=1e-10)
    np.testing.assert_allclose(R2.numpy(), (Q @ R).numpy(), atol=1e-10)
    np.testing.assert_allclose(s2.numpy(), s.numpy(), atol=1e-10)


def test_look_at_front_camera_is_opencv():
    # camera on +z looking at the origin, y up in the world: world +x is image right, world +y is image up
    V = g.look_at_viewmat(torch.tensor([0.0, 0, 2]), torch.zeros(3), torch.tensor([0.0, 1, 0]))
    p = V @ torch.tensor([0.0, 0, 0, 1])
    assert torch.allclose(p[:3], torch.tensor([0.0, 0, 2]))
    x = V[:3, :3] @ torch.tensor([1.0, 0, 0])
    y = V[:3, :3] @ torch.tensor([0.0, 1, 0])
    assert torch.allclose(x, torch.tensor([1.0, 0, 0]))
    assert torch.allclose(y, torch.tensor([0.0, -1, 0]))
