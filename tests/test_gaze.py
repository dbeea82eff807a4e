"""Gaze (issue 16): iris localisation in the image and eyes_pose fitted to it (avatarcli.track.gaze)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatarcli.flame.forward import flame_forward
from avatarcli.testing.synthetic_eyes import gaze_clip_params, render_gaze_frames
from avatarcli.testing.synthetic_flame import (
    EYE_RADIUS,
    make_synthetic_flame,
    project_fit_camera,
    random_flame_params,
)
from avatarcli.testing.synthetic_flame import pupil_vertices as fixture_pupils
from avatarcli.track import gaze as G
from avatarcli.track.pupils import eye_openness, locate_clip_pupils

SIZE = (192, 192)
FOCAL = 1.2 * 192


@pytest.fixture(scope="module")
def model():
    return make_synthetic_flame(dtype=torch.float64)


def _truth_theta(params) -> torch.Tensor:
    """eyes_pose [T, 6] -> theta [T, 2, 2] in the image's eye order (right eye first)."""
    e = params.eyes_pose.double()
    return torch.stack([e[:, 3:5], e[:, 0:2]], 1)


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return np.degrees(np.arccos(np.clip((a * b).sum(-1).numpy(), -1.0, 1.0)))


def test_eyeball_of_the_fixture(model):
    # the rule (most forward eye-skinned vertex) finds the fixture's declared pupils, 12 mm before the joints
    right, left = G.pupil_vertices(model)
    assert (left, right) == fixture_pupils()
    d = model.v_template[[right, left]] - model.J_template[[4, 3]]
    np.testing.assert_allclose(d.norm(dim=-1).numpy(), EYE_RADIUS, rtol=0.01)  # the back patch shifts x, y by < 0.4 mm
    assert float(d[:, 2].min()) > 0.99 * EYE_RADIUS  # straight ahead (+z) at eyes_pose 0


def test_iris_model_is_flame_forward(model):
    # iris_world / IRIS_DEPTH is FLAME's own posed pupil vertex (posedirs off: the model ignores them)
    m = model.to(dtype=torch.float64)
    m.posedirs = torch.zeros_like(m.posedirs)
    p = random_flame_params(4, 3, dtype=torch.float64)
    theta = torch.tensor(np.random.default_rng(0).uniform(-0.4, 0.4, (4, 2, 2)))
    p.eyes_pose = torch.from_numpy(G.eyes_pose_from_theta(theta.numpy()))
    rig = G.eye_rig(m, p)
    X = G.iris_world(rig, theta)
    posed = flame_forward(m, p, with_landmarks=False).vertices[:, list(G.pupil_vertices(m))]
    np.testing.assert_allclose((rig.centre + (X - rig.centre) / G.IRIS_DEPTH).numpy(), posed.numpy(), atol=1e-9)


def _observed(model, params, noise_px, seed=0):
    rig = G.eye_rig(model, params)
    uv = G.project(G.iris_world(rig, _truth_theta(params)), FOCAL, SIZE).numpy()
    return rig, uv + np.random.default_rng(seed).normal(0, noise_px, uv.shape)


def test_fit_recovers_gaze_and_bridges_blinks(model):
    T = 30
    p = gaze_clip_params(T, 1)
    rig, uv = _observed(model, p, 0.3)
    conf = np.ones((T, 2))
    conf[12:15] = 0.0  # a blink: 3 frames unseen
    fit = G.fit_gaze(rig, uv, conf, FOCAL, SIZE, 30.0)
    truth = G.gaze_directions(rig, _truth_theta(p))
    err = _angle_deg(G.gaze_directions(rig, torch.from_numpy(fit.theta)), truth)  # [T, 2]
    zero = _angle_deg(G.gaze_directions(rig, torch.zeros(T, 2, 2, dtype=torch.float64)), truth)
    assert err.mean() < 2.0 < zero.mean()
    assert err[12:15].max() < 4.0  # the blink follows its neighbours
    np.testing.assert_allclose(fit.eyes_pose[:, [2, 5]], 0.0)  # no roll
    none = G.fit_gaze(rig, uv, np.zeros((T, 2)), FOCAL, SIZE, 30.0)
    assert not none.eyes_pose.any()  # nothing seen: the rest gaze


def test_gaze_on_rendered_frames(model):
    # frames from the project's renderer with ray-traced eyeballs of known gaze; frame 4 is a blink
    T = 8
    p = gaze_clip_params(T, 0, amp_deg=18.0)
    frames, lmk = render_gaze_frames(model, p, SIZE, closed=(4,))
    pupils = locate_clip_pupils(iter(frames), lmk)
    assert eye_openness(lmk[4, 36:42]) < 0.05 < 0.2 < eye_openness(lmk[0, 36:42])
    assert (pupils.confidence[4] == 0).all() and (np.delete(pupils.confidence, 4, 0) > 0.5).all()
    rig = G.eye_rig(model, p)
    true_uv = G.project(G.iris_world(rig, _truth_theta(p)), FOCAL, SIZE).numpy()
    seen = np.delete(np.arange(T), 4)
    assert np.median(np.linalg.norm(pupils.xy[seen] - true_uv[seen], axis=-1)) < 1.5  # px, eyes ~35 px wide
    fit = G.fit_gaze(rig, pupils.xy, pupils.confidence, FOCAL, SIZE, 30.0)
    truth = G.gaze_directions(rig, _truth_theta(p))
    err = _angle_deg(G.gaze_directions(rig, torch.from_numpy(fit.theta)), truth)
    zero = _angle_deg(G.gaze_directions(rig, torch.zeros(T, 2, 2, dtype=torch.float64)), truth)
    assert err.mean() < 0.6 * zero.mean()


def test_fixture_pupil_projection_matches_renderer_landmarks(model):
    # the synthetic landmarks and the gaze model use one camera: the eye centre lies inside the lid contour
    p = gaze_clip_params(2, 0, amp_deg=0.0)
    rig = G.eye_rig(model, p)
    uv = G.project(G.iris_world(rig, torch.zeros(2, 2, 2, dtype=torch.float64)), FOCAL, SIZE).numpy()
    lm = project_fit_camera(flame_forward(model, p).landmarks, FOCAL, SIZE)
    for e, first in enumerate((36, 42)):
        lo, hi = lm[:, first : first + 6].min(1), lm[:, first : first + 6].max(1)
        assert ((uv[:, e] > lo) & (uv[:, e] < hi)).all()


def test_a_model_without_eyeballs_is_detected(model):
    assert G.has_eyeballs(model)
    m = model.to(dtype=torch.float64)
    w = m.lbs_weights.clone()
    w[:, 1] += w[:, 3] + w[:, 4]  # the eyes' vertices given to the neck: no eyeball left
    w[:, 3:] = 0
    m.lbs_weights = w
    assert not G.has_eyeballs(m)
    with pytest.raises(ValueError, match="eye joint"):
        G.pupil_vertices(m)
