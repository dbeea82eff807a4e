"""GAN inversion on the tiny generator: a target the generator can make is recovered inside the
mask (W-space then PTI), pixels outside the mask do not matter, the artifact round-trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avatarcli.gan.generator import GanConfig, TriplaneGenerator
from avatarcli.gan.invert import InversionConfig, gan_camera, invert, masked_l2, read_inversion, write_inversion


def test_gan_camera_frontal_and_profile():
    c = gan_camera(0.0, 0.0)
    pose = c[0, :16].reshape(4, 4)
    np.testing.assert_allclose(pose[:3, 3], [0, 0, 2.7], atol=1e-6)  # in front of the face (+z)
    np.testing.assert_allclose(pose[:3, 2], [0, 0, -1], atol=1e-6)  # looking at the origin
    np.testing.assert_allclose(pose[:3, 1], [0, -1, 0], atol=1e-6)  # image down = world down
    np.testing.assert_allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3), atol=1e-6)
    assert torch.det(pose[:3, :3]) == pytest.approx(1.0, abs=1e-6)  # a rotation, not a reflection
    side = gan_camera(math.pi / 2, 0.0)[0, :16].reshape(4, 4)
    np.testing.assert_allclose(side[:3, 3], [2.7, 0, 0], atol=1e-6)
    up = gan_camera(0.0, 0.3)[0, :16].reshape(4, 4)
    assert up[1, 3] > 0 and torch.linalg.norm(up[:3, 3]) == pytest.approx(2.7, abs=1e-5)


def test_masked_l2_ignores_pixels_outside_the_mask():
    a, b = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    b[..., :2, :] = 2.0
    m = torch.zeros(1, 1, 4, 4)
    m[..., 2:, :] = 1
    assert float(masked_l2(a, b, m)) == 0.0
    m[..., 1, 0] = 1  # one pixel where the error is 2 in each of 3 channels: 3*4 / (9*3)
    assert float(masked_l2(a, b, m)) == pytest.approx(12 / 27)


def test_inversion_recovers_a_generated_head_inside_the_mask(tmp_path):
    torch.manual_seed(0)
    G = TriplaneGenerator(GanConfig.tiny())
    c = gan_camera(0.2, 0.1)
    with torch.no_grad():
        target = G(torch.randn(1, 16), c).image
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 2:14, 3:13] = 1
    noisy = target.clone()
    noisy[..., :2, :] = 5.0  # outside the mask: must not pull the fit
    before = G.state_dict()["decoder.fc0.weight"].clone()
    steps = []
    inv = invert(G, noisy, mask, c, InversionConfig(w_steps=40, pti_steps=40, w_lr=0.05, pti_lr=3e-3, w_avg_samples=64),
                 on_step=lambda s, i, loss: steps.append(s))  # fmt: skip
    assert steps.count("w") == 40 and steps.count("pti") == 40
    assert inv.w_losses[-1] < 0.5 * inv.w_losses[0]
    assert inv.pti_losses[-1] < 0.5 * inv.w_losses[-1]
    torch.testing.assert_close(G.state_dict()["decoder.fc0.weight"], before)  # the input G is untouched
    with torch.no_grad():
        got = inv.generator.synthesis(inv.ws, c).image
    assert float(masked_l2(got, target, mask)) == pytest.approx(inv.pti_losses[-1], rel=0.5, abs=1e-3)

    path = tmp_path / "gan.safetensors"
    write_inversion(path, inv)
    ws, cam, G2 = read_inversion(path)
    torch.testing.assert_close(ws, inv.ws)
    with torch.no_grad():
        torch.testing.assert_close(G2.synthesis(ws, cam).image, got)
