"""Gaze: FLAME's eyes_pose per frame from the iris centres seen in the image (avatarcli.track.pupils).

The eyes of FLAME: joints 3 (subject's left) and 4 (right) sit at the eyeball centres; the vertices
skinned (weight > 0.5) to an eye joint are its eyeball (the real FLAME: two sphere meshes of 546
vertices, radius ~12 mm; the synthetic fixture: a 4-vertex "cornea" patch 12 mm in front of its joint).
The pupil vertex is the eyeball's most forward (+z) rest vertex, and eyes_pose turns it about the
joint. The iris seen in the image is the limbus circle's centre, IRIS_DEPTH of the way from the
eyeball centre to the pupil vertex (a real eye: iris ~10 mm in front of the ~13 mm-deep centre of
rotation; the fixture's iris cap: cos 30 deg = 0.87).

Model of frame t, eye e (head motion from the landmark fit, fixed here):
    X_te(theta) = c_te + H_t R(theta_te) o_te        (c: posed eye joint, H: world rotation of the
                                                     eye's parent joint, o: IRIS_DEPTH (pupil - joint))
    uv_te = project(X_te) through the fit camera;  theta_te = (pitch, yaw), roll unobservable = 0.
Energy (Gauss-Newton, frames coupled by the second differences as in avatarcli.track.fit):
    sum conf_te rho(|uv_te - iris_te| / sigma_px)^2     (Cauchy IRLS weights: a wrong blob is an outlier)
  + |theta / prior_sigma|^2 + |(theta_left - theta_right) / vergence_sigma|^2
  + sum |(theta_{t-1} - 2 theta_t + theta_{t+1}) / acc_sigma|^2  (Geman-McClure: saccades get through)
Frames with confidence 0 (blinks, lost faces) follow their neighbours (the second-difference prior
interpolates); a clip without any seen iris gets 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avatarcli.flame.forward import flame_forward, pose_rotations
from avatarcli.flame.params import FlameParams
from avatarcli.geometry import axis_angle_to_matrix
from avatarcli.track.fit import _block_tridiagonal_solve, _frame_bands, _second_diff

IRIS_DEPTH = 0.85
EYE_JOINTS = (4, 3)  # FLAME joints of the image's eye 0 (iBUG 36-41, subject's right) and eye 1 (left)


@dataclass
class GazeConfig:
    sigma_px: float = 0.7  # iris centre noise at confidence 1
    robust_px: float = 3.0  # Cauchy scale of the iris residual, in sigmas
    prior_sigma: float = 0.5  # rad, eye rotation about the rest gaze
    vergence_sigma: float = 0.08  # rad, left - right difference
    acc_sigma: float = 0.03  # rad per frame^2 at 30 fps
    temporal_robust: float = 3.0  # Geman-McClure scale, in sigmas
    iters: int = 8


@dataclass
class EyeRig:
    """The eyes of one tracked clip, eyes_pose 0: [T, 2 eyes] in the image's eye order (EYE_JOINTS)."""

    centre: Tensor  # [T, 2, 3] posed eye joints (world)
    parent: Tensor  # [T, 2, 3, 3] world rotation of each eye joint's parent
    offset: Tensor  # [T, 2, 3] rest iris offset from the joint (IRIS_DEPTH x to the pupil vertex)


def has_eyeballs(model) -> bool:
    """Are vertices skinned to both eye joints (FLAME's eyeballs)?"""
    return model.n_joints > max(EYE_JOINTS) and all(bool((model.lbs_weights[:, j] > 0.5).any()) for j in EYE_JOINTS)


def pupil_vertices(model) -> tuple[int, int]:
    """The pupil vertex of each eye (EYE_JOINTS order): the most forward rest vertex skinned to the joint."""
    ids = []
    for j in EYE_JOINTS:
        on = model.lbs_weights[:, j] > 0.5
        if not bool(on.any()):
            raise ValueError(f"the FLAME model has no vertex skinned to eye joint {j}")
        z = torch.where(on, model.v_template[:, 2], torch.full_like(model.v_template[:, 2], -math.inf))
        ids.append(int(torch.argmax(z)))
    return ids[0], ids[1]


def eye_rig(model, params: FlameParams) -> EyeRig:
    """The eyes of `params` [T] (its eyes_pose is ignored: taken as 0)."""
    p = FlameParams(params.shape, params.expr, params.global_pose, params.neck_pose, params.jaw_pose,
                    torch.zeros_like(params.eyes_pose), params.translation)  # fmt: skip
    m = model.to(dtype=p.shape.dtype)
    with torch.no_grad():
        out = flame_forward(m, p, with_landmarks=False)
    rot = pose_rotations(p)  # [T, J, 3, 3]
    world: list[Tensor] = []
    for j, parent in enumerate(m.parents_list):  # world rotations along the chain
        world.append(rot[:, j] if parent < 0 else world[parent] @ rot[:, j])
    joints, pv = list(EYE_JOINTS), list(pupil_vertices(m))
    centre = out.joints[:, joints]  # [T, 2, 3]
    parent = torch.stack([world[m.parents_list[j]] for j in joints], 1)  # [T, 2, 3, 3]
    pupil = out.vertices[:, pv]  # [T, 2, 3] posed with eyes 0
    offset = IRIS_DEPTH * torch.einsum("teji,tej->tei", parent, pupil - centre)  # back into the parent frame
    return EyeRig(centre, parent, offset)


def iris_world(rig: EyeRig, theta: Tensor) -> Tensor:
    """theta [T, 2, 2] (pitch, yaw per eye) -> iris centres [T, 2, 3] (world)."""
    aa = torch.cat([theta, torch.zeros_like(theta[..., :1])], -1)  # [T, 2, 3]
    R = axis_angle_to_matrix(aa)  # [T, 2, 3, 3]
    return rig.centre + torch.einsum("teij,tejk,tek->tei", rig.parent, R, rig.offset)


def project(X: Tensor, focal: float, image_size: tuple[int, int]) -> Tensor:
    """World points [..., 3] (fit camera: viewmat diag(1, -1, -1)) -> pixels [..., 2]."""
    H, W = image_size
    xc = X * X.new_tensor([1.0, -1.0, -1.0])
    return focal * xc[..., :2] / xc[..., 2:3] + X.new_tensor([(W - 1) / 2, (H - 1) / 2])


def eyes_pose_from_theta(theta: np.ndarray) -> np.ndarray:
    """theta [T, 2, 2] in EYE_JOINTS order -> FLAME eyes_pose [T, 6] (left eye, right eye axis-angle)."""
    out = np.zeros((theta.shape[0], 6))
    out[:, 0:2], out[:, 3:5] = theta[:, 1], theta[:, 0]
    return out


def gaze_directions(rig: EyeRig, theta: Tensor) -> Tensor:
    """Unit gaze directions [T, 2, 3] (world) of theta [T, 2, 2]."""
    d = iris_world(rig, theta) - rig.centre
    return d / d.norm(dim=-1, keepdim=True)


@dataclass
class GazeFit:
    eyes_pose: np.ndarray  # [T, 6] FLAME eyes_pose (left eye, right eye; pitch, yaw, roll 0)
    theta: np.ndarray  # [T, 2, 2] (pitch, yaw) in EYE_JOINTS order (image's eye 0, eye 1)
    confidence: np.ndarray  # [T, 2] the iris confidences used (0: the frame follows its neighbours)
    residual_px: np.ndarray  # [T, 2] |projected iris - seen iris|


class _GazeProblem:
    """The energy of the module doc on x [T, 4] = theta [T, 2, 2] flattened."""

    def __init__(self, rig, iris, conf, focal, image_size, fps, cfg: GazeConfig):
        self.rig, self.focal, self.size, self.cfg = rig, focal, image_size, cfg
        f64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
        self.iris, self.conf = f64(iris), f64(conf).clamp(0, 1)  # [T, 2, 2], [T, 2]
        self.prec_acc = 1.0 / (cfg.acc_sigma * (30.0 / fps) ** 2)
        V = torch.cat([torch.eye(2), -torch.eye(2)], 1).double()  # [2, 4] left - right
        self.P = torch.eye(4, dtype=torch.float64) / cfg.prior_sigma**2 + V.T @ V / cfg.vergence_sigma**2  # [4, 4]

    def uv(self, x: Tensor) -> Tensor:
        return project(iris_world(self.rig, x.view(-1, 2, 2)), self.focal, self.size)  # [T, 2, 2]

    def data_weights(self, x: Tensor) -> Tensor:
        """Confidence x Cauchy IRLS weight / sigma^2 per eye [T, 2]."""
        e2 = ((self.uv(x) - self.iris) ** 2).sum(-1) / self.cfg.sigma_px**2  # [T, 2]
        return self.conf / (1.0 + e2 / self.cfg.robust_px**2) / self.cfg.sigma_px**2

    def temporal_weights(self, x: Tensor) -> Tensor | None:
        if x.shape[0] < 3:
            return None
        e2 = (_second_diff(x) * self.prec_acc) ** 2  # [T-2, 4]
        c2 = self.cfg.temporal_robust**2
        return (c2 / (c2 + e2)) ** 2 * self.prec_acc**2

    def step(self, x: Tensor) -> Tensor:
        """One Gauss-Newton step (IRLS weights at x) -> the new x [T, 4]."""
        T = x.shape[0]
        r = (self.uv(x) - self.iris).reshape(T, 4)  # [T, 4] (eye, u/v)
        J = torch.zeros(T, 4, 4, dtype=x.dtype)  # d r / d x, block-diagonal per eye
        h = 1e-6
        for k in range(4):
            dx = torch.zeros_like(x)
            dx[:, k] = h
            J[:, :, k] = ((self.uv(x + dx) - self.uv(x - dx)).reshape(T, 4)) / (2 * h)
        w = self.data_weights(x).repeat_interleave(2, 1)  # [T, 4]
        JtW = J.transpose(1, 2) * w[:, None, :]
        H = JtW @ J + self.P
        g = (JtW @ r[..., None])[..., 0] + x @ self.P
        W = self.temporal_weights(x)
        if W is not None:
            wa = W * _second_diff(x)
            g[:-2] += wa
            g[1:-1] -= 2.0 * wa
            g[2:] += wa
        D, E1, E2 = _frame_bands(H, W, 1e-6)
        return x - _block_tridiagonal_solve(D, E1, E2, g[..., None])[..., 0]


def fit_gaze(
    rig: EyeRig,
    iris: np.ndarray,
    confidence: np.ndarray,
    focal: float,
    image_size: tuple[int, int],
    fps: float,
    config: GazeConfig | None = None,
) -> GazeFit:
    """Eye rotations of the clip: iris centres [T, 2, 2] (pixels, image's eye order) with confidence [T, 2],
    the head from the landmark fit (rig), its camera (focal px, image_size (H, W))."""
    cfg = config or GazeConfig()
    T = rig.centre.shape[0]
    prob = _GazeProblem(rig, iris, confidence, focal, image_size, fps, cfg)
    x = torch.zeros(T, 4, dtype=torch.float64)
    if bool((prob.conf > 0).any()):
        for _ in range(cfg.iters):
            x = prob.step(x)
    theta = x.view(T, 2, 2)
    with torch.no_grad():
        res = (prob.uv(x) - prob.iris).norm(dim=-1).numpy()  # [T, 2]
    th = theta.numpy()
    return GazeFit(eyes_pose_from_theta(th).astype(np.float32), th, prob.conf.numpy(), res)


def track_gaze(model, fit, pupils, fps: float, config: GazeConfig | None = None) -> GazeFit:
    """The gaze of a tracked clip: `fit` a TrackFit (head motion, identity, camera), `pupils` the clip's
    ClipPupils (avatarcli.track.pupils.locate_clip_pupils)."""
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    T = fit.n_frames
    params = FlameParams(t(fit.shape)[None].expand(T, -1), t(fit.expr), t(fit.global_pose), t(fit.neck_pose),
                         t(fit.jaw_pose), torch.zeros(T, 6, dtype=torch.float64), t(fit.translation))  # fmt: skip
    rig = eye_rig(model, params)
    return fit_gaze(rig, pupils.xy, pupils.confidence, fit.focal_px, fit.image_size, fps, config)
