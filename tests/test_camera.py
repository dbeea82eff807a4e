"""The one Camera helper set (avatarcli.render.camera): scaled_camera and photo_camera."""

import numpy as np
import torch

from avatarcli.flame.artifact import FIT_VIEWMAT, FlameFit
from avatarcli.geometry import axis_angle_to_matrix
from avatarcli.render.camera import Camera, intrinsics, photo_camera, scaled_camera


def _cam(w=64, h=48) -> Camera:
    V = torch.eye(4)
    V[2, 3] = 2.0
    return Camera(intrinsics(50.0, w, h), V, w, h)


def test_scaled_camera_keeps_pixel_centres_and_can_refuse_upscaling():
    cam = _cam()
    X = torch.tensor([[0.1, -0.05, 0.3], [-0.2, 0.1, 0.0]])
    for side, (W, H) in ((32, (32, 24)), (128, (128, 96))):
        s = scaled_camera(cam, side)
        assert (s.width, s.height) == (W, H)
        # a pixel's area maps onto the same area: x' = (x + 0.5) * W' / W - 0.5
        expect = (cam.project(X) + 0.5) * torch.tensor([W / cam.width, H / cam.height]) - 0.5
        torch.testing.assert_close(s.project(X), expect, rtol=0, atol=1e-4)
    assert scaled_camera(cam, None) is cam and scaled_camera(cam, 0) is cam
    assert scaled_camera(cam, 128, upscale=False) is cam and scaled_camera(cam, 64, upscale=False) is cam
    assert scaled_camera(cam, 32, upscale=False).width == 32


def test_photo_camera_sees_the_canonical_head_as_the_photo():
    rng = np.random.default_rng(0)
    fit = FlameFit(
        shape=np.zeros(3), expr=np.zeros(2), global_pose=np.array([0.1, -0.3, 0.05]), neck_pose=np.zeros(3),
        jaw_pose=np.zeros(3), eyes_pose=np.zeros(6), translation=np.array([0.01, -0.02, -0.6]),
        K=intrinsics(300.0, 64, 48).numpy(), viewmat=FIT_VIEWMAT, image_size=(48, 64),
        landmark_error_px=np.zeros(68), flame_model_sha256="x",
    )  # fmt: skip
    J0 = np.array([0.0, -0.02, -0.01])
    Xc = rng.normal(scale=0.08, size=(10, 3))  # canonical points
    # the photo's head: rotated about the root joint; FlameFit.project adds the translation
    R = axis_angle_to_matrix(torch.tensor(fit.global_pose)).numpy()
    X_photo = (Xc - J0) @ R.T + J0
    cam = photo_camera(fit, J0)
    assert (cam.width, cam.height) == (64, 48)
    np.testing.assert_allclose(
        cam.project(torch.tensor(Xc, dtype=torch.float32)).numpy(), fit.project(X_photo), atol=1e-3
    )
