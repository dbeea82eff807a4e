"""One batched FLAME fit over a whole clip: identity shared, motion per frame, a temporal prior.

Unknowns: per frame t the vector x_t = (global pose 3, translation 3, neck 3, jaw 3, expression E)
and, shared by all frames, z = (log focal, shape S): the clip is one person seen by one camera.
(Gaze cannot be seen by the 68 iBUG landmarks: eyes_pose is fitted afterwards from the image, see
avatarcli.track.gaze; the eyes move no landmark, so the two fits are independent.)

Energy (the same landmark model, robust weights and priors as `avatarcli.flame.fit`, whose
`LandmarkRig` / `_Problem` compute the residuals and Jacobians):

    sum_t  rho_GM(landmark residuals of frame t; scores as weights)      (scores 0: a lost frame)
  + sum_t  |prior(x_t)|^2  +  |prior(z)|^2                               (shape / focal counted once)
  + sum_t  sum_g  n_g rho_GM( mean_{k in g} ((x_{t-1} - 2 x_t + x_{t+1})_k / s_k)^2 )  (temporal)

The temporal term penalises acceleration (second differences), group by group (rotation, translation,
neck, jaw, expression). It is symmetric in time (no lag: a smoother, not a causal filter) and robust:
a Geman-McClure kernel lets a real fast motion, whose acceleration is many sigmas, through almost
unpenalised while the landmark noise (a few sigmas at most) is smoothed. Sigmas are per frame^2 at
30 fps and scale with (30 / fps)^2 (the same physical acceleration at any frame rate).

Solver: Levenberg-Marquardt on the joint problem. Its normal matrix has a banded block (each frame
coupled to the two before and after it; paired frames make it block-tridiagonal, solved by a block
Cholesky sweep in O(T dim^3)) and a dense shared part, eliminated with a Schur complement. Start: shape and focal from `fit_flame` on a few key frames,
then every frame's head pose from a PnP solve of the 51 inner-face landmarks (OpenCV), expression 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from avatarcli.errors import NoFaceError
from avatarcli.flame.fit import FIT_VIEWMAT, N_LANDMARKS, FitConfig, LandmarkRig, _Problem, fit_flame
from avatarcli.landmarks.artifact import Landmarks

GROUPS = ("global_pose", "translation", "neck_pose", "jaw_pose", "expr")  # order of x_t's blocks
STATIC = slice(17, N_LANDMARKS)  # the 51 inner-face landmarks (no jaw-line contour)


@dataclass
class TrackConfig:
    """Settings of track_flame. Acceleration sigmas are per frame^2 at 30 fps (see the module doc)."""

    n_shape: int = 100
    n_expr: int = 50
    fixed_focal_px: float | None = None
    smooth: float = 1.0  # multiplies the temporal prior's precision; 0 = independent frames
    acc_sigma: tuple[float, float, float, float, float] = (0.01, 0.002, 0.01, 0.008, 0.08)  # GROUPS order
    temporal_robust: float = 3.0  # Geman-McClure scale of the temporal term, in sigmas
    key_frames: int = 0  # frames fitted alone (fit_flame) to start shape and focal; 0: mean face, prior focal
    iters: int = 6  # joint LM iterations
    gaze: bool = True  # fit eyes_pose from the iris seen in the frames (avatarcli.track.gaze)

    def fit_config(self) -> FitConfig:
        return FitConfig(n_shape=self.n_shape, n_expr=self.n_expr, fixed_focal_px=self.fixed_focal_px)


@dataclass
class TrackFit:
    """The tracked clip: per-frame FLAME motion, shared identity and camera."""

    shape: np.ndarray  # [S] identity of the tracked face
    expr: np.ndarray  # [T, E]
    global_pose: np.ndarray  # [T, 3]
    neck_pose: np.ndarray  # [T, 3]
    jaw_pose: np.ndarray  # [T, 3]
    eyes_pose: np.ndarray  # [T, 6] (zeros from track_flame; avatarcli.track.gaze fits them)
    translation: np.ndarray  # [T, 3] in the fit camera's world (FIT_VIEWMAT), metres
    focal_px: float
    image_size: tuple[int, int]  # (H, W)
    landmark_error_px: np.ndarray  # [T, 68]
    iterations: int
    gaze_confidence: np.ndarray | None = None  # [T] best iris confidence of the frame (None: gaze not fitted)

    @property
    def n_frames(self) -> int:
        return self.jaw_pose.shape[0]


class _Layout:
    """Columns of _Problem's per-item vector [glob 3 | trans 3 | logf | neck 3 | jaw 3 | shape S | expr E]
    split into the per-frame block x (Q columns) and the shared block z."""

    def __init__(self, S: int, E: int, fit_focal: bool):
        self.S, self.E = S, E
        self.x = torch.tensor([0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12] + list(range(13 + S, 13 + S + E)))  # [Q]
        self.z = torch.tensor(([6] if fit_focal else []) + list(range(13, 13 + S)), dtype=torch.long)  # [Z]
        self.Q, self.Z = int(self.x.numel()), int(self.z.numel())
        sizes = (3, 3, 3, 3, E)
        self.group = torch.repeat_interleave(torch.arange(5), torch.tensor(sizes))  # [Q] group of each column

    def full(self, x: Tensor, z: Tensor, base: Tensor) -> Tensor:
        """x [T,Q], z [Z], base [T,P] (non-fitted columns) -> p [T,P]."""
        p = base.clone()
        p[:, self.x] = x
        p[:, self.z] = z
        return p


def _second_diff(x: Tensor) -> Tensor:
    """x [T, Q] -> x_{t} - 2 x_{t+1} + x_{t+2}, [T-2, Q]."""
    return x[:-2] - 2.0 * x[1:-1] + x[2:]


class _Temporal:
    """The robust acceleration prior on x [T, Q]."""

    def __init__(self, lay: _Layout, cfg: TrackConfig, fps: float):
        s = torch.tensor(cfg.acc_sigma, dtype=torch.float64)[lay.group] * (30.0 / fps) ** 2  # [Q]
        self.prec = math.sqrt(max(cfg.smooth, 0.0)) / s  # [Q]
        self.c2 = cfg.temporal_robust**2
        self.group, self.counts = lay.group, torch.bincount(lay.group).to(torch.float64)
        self.on = cfg.smooth > 0

    def _m(self, x: Tensor) -> Tensor:
        e2 = (_second_diff(x) * self.prec) ** 2  # [T-2, Q]
        m = torch.zeros(e2.shape[0], 5, dtype=e2.dtype).index_add_(1, self.group, e2) / self.counts  # [T-2, 5]
        return m

    def cost(self, x: Tensor) -> Tensor:
        if not self.on or x.shape[0] < 3:
            return x.new_zeros(())
        m = self._m(x)
        return (self.counts * self.c2 * m / (self.c2 + m)).sum()

    def weights(self, x: Tensor) -> Tensor:
        """IRLS weights times precision^2 per second difference and column, [T-2, Q]."""
        w = (self.c2 / (self.c2 + self._m(x))) ** 2  # [T-2, 5]
        return w[:, self.group] * self.prec**2


def _frame_bands(H: Tensor, W: Tensor | None, lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """The per-frame block structure of blockdiag(H) + L^T diag(W) L (L = second differences over
    frames), its diagonal damped by (1 + lam): diagonal blocks D [T,Q,Q] and the (diagonal) couplings
    of frame t to t+1, E1 [T-1,Q], and to t+2, E2 [T-2,Q]. H [T,Q,Q], W [T-2,Q] or None."""
    T, Q, _ = H.shape
    D = H.clone()
    E1 = H.new_zeros(max(T - 1, 0), Q)
    E2 = H.new_zeros(max(T - 2, 0), Q)
    if W is not None and T >= 3:
        d = torch.zeros(T, Q, dtype=H.dtype)
        d[:-2] += W
        d[1:-1] += 4.0 * W
        d[2:] += W
        D = D + torch.diag_embed(d)
        E1[:-1] += -2.0 * W  # (r, r+1)
        E1[1:] += -2.0 * W  # (r+1, r+2)
        E2 += W  # (r, r+2)
    diag = torch.diagonal(D, dim1=1, dim2=2)
    D = D + torch.diag_embed(lam * diag + 1e-9)
    return D, E1, E2


def _block_tridiagonal_solve(D: Tensor, E1: Tensor, E2: Tensor, rhs: Tensor) -> Tensor:
    """Solve the symmetric positive definite frame-banded system (see _frame_bands) for rhs [T,Q,R].

    Frames are paired, which makes the matrix block-tridiagonal with 2Q x 2Q blocks; then a block
    Cholesky forward / backward sweep over the T/2 pairs (O(T Q^3), exact up to rounding)."""
    T, Q, R = rhs.shape
    if T % 2:  # a padding frame: identity, uncoupled
        D = torch.cat([D, torch.eye(Q, dtype=D.dtype)[None]])
        E1 = torch.cat([E1, E1.new_zeros(1, Q)])
        E2 = torch.cat([E2, E2.new_zeros(1, Q)])
        rhs = torch.cat([rhs, rhs.new_zeros(1, Q, R)])
    N = D.shape[0] // 2
    dg = torch.diag_embed
    S = torch.zeros(N, 2 * Q, 2 * Q, dtype=D.dtype)  # pair blocks
    S[:, :Q, :Q], S[:, Q:, Q:] = D[0::2], D[1::2]
    S[:, :Q, Q:] = dg(E1[0::2])
    S[:, Q:, :Q] = dg(E1[0::2])
    Off = torch.zeros(max(N - 1, 0), 2 * Q, 2 * Q, dtype=D.dtype)  # block (pair i, pair i+1)
    if N > 1:
        Off[:, :Q, :Q] = dg(E2[0:-1:2][: N - 1])
        Off[:, Q:, :Q] = dg(E1[1::2][: N - 1])
        Off[:, Q:, Q:] = dg(E2[1::2][: N - 1])
    b = rhs.reshape(N, 2 * Q, R)
    Ls: list[Tensor] = []
    Cs: list[Tensor] = []
    y: list[Tensor] = []
    for i in range(N):  # forward: L_i L_i^T = S_i - C_{i-1} C_{i-1}^T, C_{i-1} = Off_{i-1}^T L_{i-1}^-T
        A, r = S[i], b[i]
        if i > 0:
            A = A - Cs[-1] @ Cs[-1].T
            r = r - Cs[-1] @ y[-1]
        L = torch.linalg.cholesky(A)
        Ls.append(L)
        y.append(torch.linalg.solve_triangular(L, r, upper=False))
        if i < N - 1:
            Cs.append(torch.linalg.solve_triangular(L, Off[i], upper=False).T)
    x = [y[0]] * N
    for i in range(N - 1, -1, -1):  # backward: L_i^T x_i = y_i - C_i^T x_{i+1}
        r = y[i] if i == N - 1 else y[i] - Cs[i].T @ x[i + 1]
        x[i] = torch.linalg.solve_triangular(Ls[i].T, r, upper=True)
    return torch.stack(x).reshape(2 * N, Q, R)[:T]


def _lm_step(blocks: dict[str, Tensor], W: Tensor | None, lam: float) -> tuple[Tensor, Tensor]:
    """Solve the damped normal equations for (dx [T,Q], dz [Z]) by Schur complement on z."""
    Hxx, Cxz, Hzz, gx, gz = (blocks[k] for k in ("Hxx", "Cxz", "Hzz", "gx", "gz"))
    T, Q, Z = Cxz.shape
    D, E1, E2 = _frame_bands(Hxx, W, lam)
    sol = _block_tridiagonal_solve(D, E1, E2, torch.cat([gx[..., None], Cxz], -1)).reshape(T * Q, 1 + Z)
    Mi_g, Mi_C = sol[:, 0], sol[:, 1:]  # M^-1 gx [n], M^-1 C [n, Z]
    C = Cxz.reshape(T * Q, Z)
    if Z:
        Hd = Hzz + torch.diag(lam * torch.diagonal(Hzz) + 1e-9)
        dz = torch.linalg.solve(Hd - C.T @ Mi_C, -gz + C.T @ Mi_g)  # [Z]
    else:
        dz = gz.new_zeros(0)
    dx = -(Mi_g + Mi_C @ dz)  # [n]
    return dx.reshape(T, Q), dz


class _Clip:
    """The clip's joint least-squares problem on top of flame.fit's per-frame _Problem."""

    def __init__(self, prob: _Problem, lay: _Layout, temporal: _Temporal, base: Tensor, c: float):
        self.prob, self.lay, self.temporal, self.base, self.c = prob, lay, temporal, base, c
        T = base.shape[0]
        self.idx = torch.arange(T)
        mu = prob.mean(self.idx)  # [T, P]
        self.mu_x, self.mu_z = mu[:, lay.x], mu[0, lay.z]
        self.px2, self.pz2 = prob.prec[lay.x] ** 2, prob.prec[lay.z] ** 2  # [Q], [Z]

    def cost(self, x: Tensor, z: Tensor) -> Tensor:
        p = self.lay.full(x, z, self.base)
        with torch.no_grad():
            lc, _ = self.prob.landmark_cost(self.prob.project(p, self.prob.cxy), self.idx, self.c)
        prior = (self.px2 * (x - self.mu_x) ** 2).sum() + (self.pz2 * (z - self.mu_z) ** 2).sum()
        return lc.sum() + prior + self.temporal.cost(x)

    def normal(self, x: Tensor, z: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        """Gauss-Newton blocks at (x, z): Hxx [T,Q,Q], Cxz [T,Q,Z], Hzz [Z,Z], gx [T,Q], gz [Z];
        and the temporal IRLS weights [T-2, Q] (None without a temporal term)."""
        prob, lay = self.prob, self.lay
        T = x.shape[0]
        p = lay.full(x, z, self.base)
        uv, Juv = prob.jacobian(p, prob.cxy)  # [T,68,2], [T,68,2,P]
        _, w = prob.landmark_cost(uv, self.idx, self.c)  # [T,68]
        sw = (w.sqrt() / prob.sigma_px[:, None])[..., None]  # [T,68,1]
        r = (sw * (uv - prob.target)).reshape(T, -1, 1)  # [T,136,1]
        Jr = (sw[..., None] * Juv).reshape(T, 2 * N_LANDMARKS, -1)  # [T,136,P]
        Jx, Jz = Jr[..., lay.x], Jr[..., lay.z]
        JxT = Jx.transpose(1, 2)
        gx = (JxT @ r).squeeze(-1) + self.px2 * (x - self.mu_x)
        W = None
        if self.temporal.on and T >= 3:
            W = self.temporal.weights(x)  # [T-2, Q]
            wa = W * _second_diff(x)
            gx = gx.clone()
            gx[:-2] += wa
            gx[1:-1] -= 2.0 * wa
            gx[2:] += wa
        blocks = {
            "Hxx": JxT @ Jx + torch.diag(self.px2),
            "Cxz": JxT @ Jz,
            "Hzz": torch.einsum("tki,tkj->ij", Jz, Jz) + torch.diag(self.pz2),
            "gx": gx,
            "gz": torch.einsum("tki,tk->i", Jz, r[..., 0]) + self.pz2 * (z - self.mu_z),
        }
        return blocks, W

    def solve(self, x: Tensor, z: Tensor, iters: int, on_iter=None) -> tuple[Tensor, Tensor]:
        lam = 1e-3
        cost = self.cost(x, z)
        for _ in range(iters):
            blocks, W = self.normal(x, z)
            for _try in range(4):  # raise the damping until the step lowers the cost
                dx, dz = _lm_step(blocks, W, lam)
                x_new, z_new = x + dx, z + dz
                cost_new = self.cost(x_new, z_new)
                if bool(torch.isfinite(cost_new)) and cost_new <= cost:
                    x, z, cost, lam = x_new, z_new, cost_new, max(lam * 0.3, 1e-7)
                    break
                lam = min(lam * 10.0, 1e7)
            if on_iter is not None:
                on_iter()
        return x, z


def _key_frames(scores: np.ndarray, k: int) -> list[int]:
    """Up to k frames spread over the clip among those with landmarks (mean score > 0)."""
    good = np.nonzero(scores.mean(1) > 0)[0]
    if good.size == 0:
        raise NoFaceError("no frame of the clip has landmarks")
    pick = np.unique(np.round(np.linspace(0, good.size - 1, min(k, good.size))).astype(int))
    return [int(good[i]) for i in pick]


def _identity_start(model, pts, scores, image_size, cfg: TrackConfig) -> tuple[np.ndarray, float]:
    """Shape [S_model] (mean over key frames) and focal (median) from fit_flame on the key frames."""
    keys = _key_frames(scores, cfg.key_frames)
    marks = []
    for t in keys:
        lo, hi = pts[t].min(0), pts[t].max(0)
        marks.append(Landmarks(image_size, pts[t], scores[t], np.r_[lo, hi], "", "track"))
    fits = fit_flame(model, marks, cfg.fit_config())
    shape = np.mean([f.shape for f in fits], 0)
    focal = float(np.median([f.K[0, 0] for f in fits]))
    return shape, focal


def _pnp_poses(rig: LandmarkRig, shape: Tensor, pts: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head pose per frame from the 51 inner-face landmarks (OpenCV PnP) for the neutral face of
    `shape` [S]: global pose [T, 3] axis-angle and translation [T, 3], in the fit's conventions
    (X_world = R_g (X - J0) + J0 + t, x_cam = FIT_VIEWMAT X_world)."""
    dt = rig.dtype
    pose0 = torch.zeros(1, rig.n_joints, 3, dtype=dt)
    rows = rig.gather(pose0)
    X = rig(rows, shape[None], torch.zeros(1, rig.n_expr, dtype=dt), pose0, torch.zeros(1, 3, dtype=dt))
    _, J = rig.rest(rows, shape[None], torch.zeros(1, rig.n_expr, dtype=dt))
    obj = X[0, STATIC].numpy().astype(np.float64)  # [51, 3]
    J0 = J[0, 0].numpy()
    Rv = FIT_VIEWMAT[:3, :3].astype(np.float64)
    T = pts.shape[0]
    g, tr = np.zeros((T, 3)), np.zeros((T, 3))
    rvec: np.ndarray = cv2.Rodrigues(Rv)[0]
    tvec: np.ndarray = np.array([[0.0], [0.0], [-0.5]]) @ np.ones((1, 1))
    tvec = Rv @ np.array([0.0, 0.0, -0.5])[:, None]
    for t in range(T):
        img = np.ascontiguousarray(pts[t, STATIC], np.float64)
        ok, r_t, t_t = cv2.solvePnP(obj, img, K, None, rvec.copy(), tvec.copy(), True, cv2.SOLVEPNP_ITERATIVE)
        if ok and np.isfinite(r_t).all() and float(t_t[2, 0]) > 0:
            rvec, tvec = r_t, t_t  # the next frame starts here
        Rg = Rv @ cv2.Rodrigues(rvec)[0]
        g[t] = cv2.Rodrigues(Rg)[0][:, 0]
        tr[t] = Rv @ tvec[:, 0] - J0 + Rg @ J0
    return g, tr


def track_flame(
    model,
    landmarks: np.ndarray,
    scores: np.ndarray,
    image_size: tuple[int, int],
    fps: float,
    config: TrackConfig | None = None,
    on_iter=None,
) -> TrackFit:
    """Fit FLAME to a clip's landmarks [T, 68, 2] (pixels) with per-point scores [T, 68] (0 = lost
    frame, filled by the temporal prior) -> TrackFit. `on_iter()` is called after each LM iteration."""
    cfg = config or TrackConfig()
    pts = np.asarray(landmarks, np.float64).reshape(-1, N_LANDMARKS, 2)
    sc = np.clip(np.asarray(scores, np.float64).reshape(-1, N_LANDMARKS), 0.0, 1.0)
    T = pts.shape[0]
    H, W = (int(s) for s in image_size)
    fcfg = cfg.fit_config()
    rig = LandmarkRig(model, cfg.n_shape, cfg.n_expr, dtype=torch.float64)
    S, E = rig.n_shape, rig.n_expr
    f64 = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    prob = _Problem(rig, fcfg, f64(pts), f64(sc), f64(np.tile([H, W], (T, 1))))
    if cfg.key_frames > 0:
        shape_full, focal = _identity_start(model, pts, sc, (H, W), cfg)
        shape0 = f64(shape_full[:S])
    else:  # mean face, focal at its prior: the joint fit finds both
        shape0, focal = torch.zeros(S, dtype=torch.float64), float(torch.exp(prob.logf0[0]))
    if cfg.fixed_focal_px is not None:
        focal = float(cfg.fixed_focal_px)
    K = np.array([[focal, 0, (W - 1) / 2], [0, focal, (H - 1) / 2], [0, 0, 1.0]])
    g, tr = _pnp_poses(rig, shape0, pts, K)
    lay = _Layout(S, E, cfg.fixed_focal_px is None)
    base = prob.mean(torch.arange(T))  # [T, P]; log focal column holds the prior mean
    base[:, 6] = math.log(focal)
    base[:, 0:3], base[:, 3:6] = f64(g), f64(tr)
    base[:, 13 : 13 + S] = shape0
    clip = _Clip(prob, lay, _Temporal(lay, cfg, fps), base, fcfg.robust_scale)
    x, z = clip.solve(base[:, lay.x].clone(), base[0, lay.z].clone(), cfg.iters, on_iter)
    p = lay.full(x, z, base)
    with torch.no_grad():
        err = (prob.project(p, prob.cxy) - prob.target).norm(dim=-1).numpy()  # [T, 68]
    p_np = p.numpy()  # [T, P]
    return TrackFit(
        shape=p_np[0, 13 : 13 + S].astype(np.float32),
        expr=p_np[:, 13 + S :].astype(np.float32),
        global_pose=p_np[:, 0:3].astype(np.float32),
        neck_pose=p_np[:, 7:10].astype(np.float32),
        jaw_pose=p_np[:, 10:13].astype(np.float32),
        eyes_pose=np.zeros((T, 6), np.float32),
        translation=p_np[:, 3:6].astype(np.float32),
        focal_px=float(np.exp(p_np[0, 6])),
        image_size=(H, W),
        landmark_error_px=err.astype(np.float32),
        iterations=cfg.iters,
    )
