"""Fit FLAME to 68 2D landmarks (the result: avatarcli.flame.artifact.FlameFit, flame.npz).

Camera model (what `flame.npz` stores; avatarcli.flame.artifact)
----------------------------------------------------------------
A FLAME point X (metres, y up, +z out of the face, global rotation applied,
translation NOT yet applied) projects to pixels as

    x_cam = viewmat[:3, :3] @ (X + translation) + viewmat[:3, 3]     (OpenCV: x right, y down, z forward)
    u, v  = (K @ x_cam)[:2] / (K @ x_cam)[2]                          (pixel centres at integers)

The fit keeps `viewmat` FIXED at diag(1, -1, -1, 1) (R = diag(1, -1, -1), t = 0): the camera sits at
the FLAME origin looking down -z, so `translation` carries the head's position and depth (translation
z < 0 puts the head in front of the camera). K is square-pixel pinhole with the principal point at the
image centre ((W-1)/2, (H-1)/2); only its focal length is fitted.

Focal prior: log f ~ N(log(focal_prior * max(H, W)), focal_log_sigma^2) with focal_prior = 1.2
(between a phone's main camera, ~0.75, and a portrait lens, ~1.5 x the long side) and sigma = 0.3.
From one view of a face, focal length and distance are nearly interchangeable, so the prior decides
them; the landmarks decide the rest.

Optimisation
------------
All inputs of one call are fitted together as one batch: Levenberg-Marquardt on the robust
(Geman-McClure, iteratively reweighted) landmark residuals in units of `landmark_sigma` x face size,
weighted by the landmark scores, plus L2 priors on shape, expression, jaw, neck and log focal.
Stages: rigid (global pose, translation, focal; several yaw starts per input, the best kept), then
+shape and neck, then +expression and jaw; each stage solves for its active parameters only.
The model is a landmark-only FLAME: LBS of just the vertices of the 68 landmark triangles, with the
joint regressor pre-applied to the shape/expression bases. Its Jacobian is closed-form for
translation, focal, shape and expression (the landmarks are affine in the coefficients for a fixed
pose) and central differences (float64, ~1e-8 px) for the 9 rotation parameters; it is tested
against torch's forward-mode autodiff. Only the first `n_shape`/`n_expr` coefficients are fitted;
the rest stay zero.

Poor fits: `fit_quality` flags a fit whose mean landmark error exceeds 5 px or 2 % of the face size
(the diagonal of the landmarks' bounding box), whichever is larger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from avatarcli.errors import EnvironmentProblem
from avatarcli.flame.artifact import (  # noqa: F401 - FlameFit and its reader/writer, re-exported for old imports
    FIT_FORMAT,
    FIT_VERSION,
    FIT_VIEWMAT,
    N_LANDMARKS,
    FlameFit,
    fit_quality,
    read_flame_fit,
    write_flame_fit,
)
from avatarcli.flame.forward import landmark_faces
from avatarcli.geometry import axis_angle_to_matrix

# ----------------------------------------------------------------------------- landmark-only FLAME


class LandmarkRig:
    """FLAME restricted to the 68 landmarks, for fitting: LBS of only the 3 x 68 vertices of the
    current landmark triangles, with the first n_shape / n_expr coefficients (others zero).

    `gather(pose)` picks each item's triangles (the dynamic jaw-line contour follows the yaw, as in
    avatarcli.flame.forward.landmark_faces) and the rows of the bases they need; `__call__` is the
    differentiable part. Equals flame_forward(...).landmarks (tested)."""

    def __init__(
        self, model, n_shape: int, n_expr: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64
    ):
        if model.landmarks is None:
            raise EnvironmentProblem(
                "the FLAME model has no 68-point landmark embedding (needed by fit-flame)", path=model.path
            )
        self.model = model
        self.device, self.dtype = torch.device(device), dtype
        f = lambda a: torch.as_tensor(a).to(device=device, dtype=dtype)  # noqa: E731
        S, E = min(n_shape, model.n_shape), min(n_expr, model.n_expr)
        self.n_shape, self.n_expr = S, E
        self.n_joints = int(model.n_joints)
        self.parents = [int(p) for p in torch.as_tensor(model.parents).tolist()]
        Jreg = f(model.J_regressor)  # [J, V]
        self.v_t, self.sd, self.ed = (
            f(model.v_template),
            f(model.shapedirs[..., :S]),
            f(model.exprdirs[..., :E]),
        )  # [V,3] [V,3,S] [V,3,E]
        self.J_t = Jreg @ self.v_t  # [J, 3]
        self.J_sd = torch.einsum("jv,vcs->jcs", Jreg, self.sd)  # [J, 3, S]
        self.J_ed = torch.einsum("jv,vce->jce", Jreg, self.ed)  # [J, 3, E]
        P = model.posedirs.shape[0]
        self.posedirs = f(model.posedirs).reshape(P, -1, 3).permute(1, 2, 0).contiguous()  # [V, 3, P]
        self.weights = f(model.lbs_weights)  # [V, J]
        self.faces = torch.as_tensor(model.faces).long().to(device)  # [F, 3]

    def gather(self, pose: Tensor) -> tuple[Tensor, ...]:
        """pose [B,J,3] -> per-item rows (v_t [B,K,3], sd [B,K,3,S], ed [B,K,3,E], pd [B,K,3,P],
        w [B,K,J], bary [B,68,3]) with K = 3 x 68 (not differentiable: fixes the contour triangles)."""
        with torch.no_grad():
            fi, bary = landmark_faces(
                self.model, axis_angle_to_matrix(pose.detach()).to(self.model.device, torch.float32)
            )
        B = pose.shape[0]
        vidx = self.faces[fi.to(self.device)].reshape(B, -1)  # [B, K]
        return (
            self.v_t[vidx],
            self.sd[vidx],
            self.ed[vidx],
            self.posedirs[vidx],
            self.weights[vidx],
            bary.to(self.device, self.dtype),
        )

    def rest(self, rows: tuple[Tensor, ...], shape: Tensor, expr: Tensor) -> tuple[Tensor, Tensor]:
        """Rest-pose landmark-triangle vertices [B,K,3] and joints [B,J,3] of shape [B,S], expr [B,E]."""
        vt, sd, ed = rows[:3]
        v = vt + torch.einsum("bkcs,bs->bkc", sd, shape) + torch.einsum("bkce,be->bkc", ed, expr)  # [B,K,3]
        J = (
            self.J_t + torch.einsum("jcs,bs->bjc", self.J_sd, shape) + torch.einsum("jce,be->bjc", self.J_ed, expr)
        )  # [B,J,3]
        return v, J

    def posed(self, rows: tuple[Tensor, ...], v: Tensor, J: Tensor, pose: Tensor, translation: Tensor) -> Tensor:
        """Landmarks [B,N,68,3] of the rest vertices v [B,K,3] / joints J [B,J,3] (from `rest`) under N
        poses per item, pose [B,N,J,3] axis-angle (global, neck, jaw, eyes); translation [B,3]."""
        pd, w, bary = rows[3:]
        B, N = pose.shape[:2]
        R = axis_angle_to_matrix(pose)  # [B,N,J,3,3]
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        feat = (R[:, :, 1:] - eye).reshape(B, N, -1)  # [B,N,P]
        vp = v[:, None] + torch.einsum("bkcp,bnp->bnkc", pd, feat)  # [B,N,K,3]
        # forward kinematics: each joint's world map x -> Rw_j x + o_j
        Rw, tw = [R[:, :, 0]], [J[:, None, 0].expand(B, N, 3)]
        for j in range(1, self.n_joints):
            p = self.parents[j]
            Rw.append(Rw[p] @ R[:, :, j])
            tw.append((Rw[p] @ (J[:, j] - J[:, p])[:, None, :, None]).squeeze(-1) + tw[p])
        Rw_s = torch.stack(Rw, 2)  # [B,N,J,3,3]
        o = torch.stack(tw, 2) - (Rw_s @ J[:, None, :, :, None]).squeeze(-1)  # [B,N,J,3]
        Rb = torch.einsum("bkj,bnjcd->bnkcd", w, Rw_s)  # [B,N,K,3,3]
        ob = torch.einsum("bkj,bnjc->bnkc", w, o)  # [B,N,K,3]
        vv = (Rb @ vp.unsqueeze(-1)).squeeze(-1) + ob  # [B,N,K,3]
        lm = (vv.reshape(B, N, N_LANDMARKS, 3, 3) * bary[:, None, :, :, None]).sum(-2)  # [B,N,68,3]
        return lm + translation[:, None, None, :]

    def __call__(
        self, rows: tuple[Tensor, ...], shape: Tensor, expr: Tensor, pose: Tensor, translation: Tensor
    ) -> Tensor:
        """rows from gather(), shape [B,S], expr [B,E], pose [B,J,3] axis-angle (global, neck, jaw, eyes),
        translation [B,3] -> landmarks [B,68,3] in FLAME world space (translation applied)."""
        v, J = self.rest(rows, shape, expr)
        return self.posed(rows, v, J, pose[:, None], translation)[:, 0]

    def linear_jacobian(self, rows: tuple[Tensor, ...], pose: Tensor) -> Tensor:
        """d landmarks / d (shape, expr): [B,68,3,S+E]. For a fixed pose the landmarks are affine in
        the coefficients: the blend shapes move the rest vertices and, through the joint regressor,
        the joints, i.e. the skinning offsets o_j = t_j - Rw_j J_j of the kinematic chain.

        Landmark l = sum_i bary_li (Rb_li v_li + ob_li) over its triangle's corners i, so
        d l = sum_i (bary_li Rb_li) d v_li + sum_j (sum_i bary_li w_li,j) d o_j."""
        vt, sd, ed, pd, w, bary = rows
        B = pose.shape[0]
        R = axis_angle_to_matrix(pose)  # [B,J,3,3]
        dJ = torch.cat([self.J_sd, self.J_ed], -1)  # [J,3,L]
        L = dJ.shape[-1]
        Rw = [R[:, 0]]
        dt = [dJ[0].expand(B, -1, -1)]  # d t_j / d beta, [B,3,L]
        for j in range(1, self.n_joints):
            p = self.parents[j]
            Rw.append(Rw[p] @ R[:, j])
            dt.append(Rw[p] @ (dJ[j] - dJ[p]) + dt[p])
        Rw_s = torch.stack(Rw, 1)  # [B,J,3,3]
        do = torch.stack(dt, 1) - torch.einsum("bjcd,jdl->bjcl", Rw_s, dJ)  # [B,J,3,L]
        wl = w.view(B, N_LANDMARKS, 3, -1) * bary[..., None]  # [B,68,3,J] barycentric-weighted skinning weights
        Rbb = torch.einsum("blij,bjcd->blcid", wl, Rw_s).reshape(B * N_LANDMARKS, 3, 9)  # [B*68, 3, (corner, d)]
        dv = torch.cat([sd, ed], -1).view(B * N_LANDMARKS, 9, L)  # [B*68, (corner, d), L]
        out = torch.bmm(Rbb, dv).view(B, N_LANDMARKS, 3, L)
        return out + torch.einsum("bmj,bjcl->bmcl", wl.sum(2), do)  # [B,68,3,L]


# ----------------------------------------------------------------------------- fitting


@dataclass
class FitConfig:
    """Settings of fit_flame. Sigmas are the priors' standard deviations."""

    n_shape: int = 100  # fitted shape coefficients (rest zero)
    n_expr: int = 50  # fitted expression coefficients (rest zero)
    yaw_inits_deg: tuple[float, ...] = (-30.0, 0.0, 30.0)  # rigid-stage starts per input; best kept
    focal_prior: float = 1.2  # prior focal length, x the image's long side
    focal_log_sigma: float = 0.3  # prior std of log focal
    fixed_focal_px: float | None = None  # known focal length (pixels): not fitted
    landmark_sigma: float = 0.01  # landmark noise, x face size (landmarks' bbox diagonal)
    robust_scale: float = 3.0  # Geman-McClure scale, in landmark sigmas
    shape_sigma: float = 1.0
    expr_sigma: float = 1.0
    jaw_sigma: tuple[float, float, float] = (0.3, 0.05, 0.05)  # radians (x opens the mouth)
    neck_sigma: float = 0.2  # radians
    iters: tuple[int, int, int] = (12, 10, 15)  # LM iterations: rigid, +shape/neck, +expression/jaw
    poor_fit_px: float = 5.0  # warn when the mean error exceeds this ...
    poor_fit_frac: float = 0.02  # ... and this fraction of the face size


# parameter vector layout per item: [global 3 | translation 3 | log focal 1 | neck 3 | jaw 3 | shape S | expr E]
_G, _T, _F, _N, _J = slice(0, 3), slice(3, 6), slice(6, 7), slice(7, 10), slice(10, 13)


def _stack_landmarks(landmarks_list: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pts = np.stack([np.asarray(lm.landmarks, np.float64).reshape(N_LANDMARKS, 2) for lm in landmarks_list])  # [B,68,2]
    sc = np.stack([np.asarray(lm.scores, np.float64).reshape(N_LANDMARKS) for lm in landmarks_list])  # [B,68]
    hw = np.stack([np.asarray(lm.image_size, np.float64).reshape(2) for lm in landmarks_list])  # [B,2] (H, W)
    return pts, np.clip(sc, 0.0, 1.0), hw


def _spd_solve(A: Tensor, g: Tensor) -> Tensor:
    """A [B,n,n] symmetric positive definite (damped normal equations), g [B,n] -> A^-1 g [B,n]
    by Cholesky; items whose factorisation fails fall back to a general solve."""
    L, info = torch.linalg.cholesky_ex(A)
    x = torch.cholesky_solve(g[..., None], L).squeeze(-1)
    bad = info != 0
    if bool(bad.any()):
        x[bad] = torch.linalg.lstsq(A[bad], g[bad][..., None]).solution.squeeze(-1)
    return x


class _Problem:
    """The batched least-squares problem: residuals, priors, Jacobians, LM steps."""

    def __init__(self, rig: LandmarkRig, cfg: FitConfig, target: Tensor, scores: Tensor, hw: Tensor):
        self.rig, self.cfg = rig, cfg
        self.target, self.scores, self.hw = target, scores, hw  # [B,68,2], [B,68], [B,2]
        S, E = rig.n_shape, rig.n_expr
        self.P = 13 + S + E
        dt, dev = rig.dtype, rig.device
        diag = (target.amax(1) - target.amin(1)).norm(dim=-1)  # [B] face size, px
        self.sigma_px = (cfg.landmark_sigma * diag).clamp_min(1e-3)  # [B]
        self.cxy = torch.stack([(hw[:, 1] - 1) / 2, (hw[:, 0] - 1) / 2], -1)  # [B,2]
        f0 = (
            cfg.focal_prior * hw.amax(-1)
            if cfg.fixed_focal_px is None
            else torch.full_like(hw[:, 0], cfg.fixed_focal_px)
        )
        self.logf0 = torch.log(f0)  # [B]
        prec = torch.zeros(self.P, dtype=dt, device=dev)  # prior precision (1/sigma) per parameter
        prec[_F] = 1.0 / cfg.focal_log_sigma
        prec[_N] = 1.0 / cfg.neck_sigma
        prec[_J] = 1.0 / torch.tensor(cfg.jaw_sigma, dtype=dt, device=dev)
        prec[13 : 13 + S] = 1.0 / cfg.shape_sigma
        prec[13 + S :] = 1.0 / cfg.expr_sigma
        self.prec = prec  # [P]
        self.viewR = torch.tensor(FIT_VIEWMAT[:3, :3], dtype=dt, device=dev)

    def mean(self, idx: Tensor) -> Tensor:
        """Prior means [B, P] of items idx [B] (zero except log focal)."""
        m = torch.zeros(idx.shape[0], self.P, dtype=self.rig.dtype, device=self.rig.device)
        m[:, 6] = self.logf0[idx]
        return m

    def pose(self, p: Tensor) -> Tensor:
        """p [B,P] -> joint axis-angles [B,J,3] (global, neck, jaw; eyes zero)."""
        zeros = torch.zeros(p.shape[0], 3, dtype=p.dtype, device=p.device)
        return torch.stack([p[:, _G], p[:, _N], p[:, _J]] + [zeros] * (self.rig.n_joints - 3), 1)

    def project(self, p: Tensor, cxy: Tensor, rows: tuple[Tensor, ...] | None = None) -> Tensor:
        """p [B,P], cxy [B,2] -> landmark pixels [B,68,2] (rows: rig.gather(pose) of p when None)."""
        S = self.rig.n_shape
        pose = self.pose(p)
        rows = self.rig.gather(pose) if rows is None else rows
        X = self.rig(rows, p[:, 13 : 13 + S], p[:, 13 + S :], pose, p[:, _T])  # [B,68,3]
        xc = X @ self.viewR.T  # [B,68,3] (viewmat t = 0)
        f = torch.exp(p[:, 6]).reshape(-1, 1, 1)
        return f * xc[..., :2] / xc[..., 2:3] + cxy[:, None, :]

    def jacobian(self, p: Tensor, cxy: Tensor, linear: bool = True) -> tuple[Tensor, Tensor]:
        """(pixels [B,68,2], d pixels / d p [B,68,2,P]), per item, with the landmark triangles fixed.

        Translation, log focal, shape and expression columns in closed form (for a fixed pose the
        landmarks are affine in the coefficients, see LandmarkRig.linear_jacobian); the 9 rotation
        columns (global, neck, jaw) by central differences (h = 1e-5 rad, float64: error ~1e-8 px),
        all poses of one item evaluated in one broadcast pass. Chained through the pinhole.
        `linear` False leaves the shape / expression columns zero (stages that do not fit them)."""
        S = self.rig.n_shape
        B = p.shape[0]
        pose = self.pose(p)  # [B,J,3]
        rows = self.rig.gather(pose)
        h = 1e-5
        rot_cols = [0, 1, 2, 7, 8, 9, 10, 11, 12]  # global, neck, jaw in the parameter vector
        joint_of = [0, 0, 0, 1, 1, 1, 2, 2, 2]
        n = len(rot_cols)
        poses = pose[:, None].repeat(1, 1 + 2 * n, 1, 1)  # [B,1+2n,J,3]
        for i, j in enumerate(joint_of):
            poses[:, 1 + 2 * i, j, i % 3] += h
            poses[:, 2 + 2 * i, j, i % 3] -= h
        v, J = self.rig.rest(rows, p[:, 13 : 13 + S], p[:, 13 + S :])
        Xs = self.rig.posed(rows, v, J, poses, p[:, _T])  # [B,1+2n,68,3]
        X = Xs[:, 0]
        dX = torch.zeros(B, N_LANDMARKS, 3, self.P, dtype=p.dtype, device=p.device)
        drot = (Xs[:, 1::2] - Xs[:, 2::2]) / (2 * h)  # [B,n,68,3]
        dX[..., rot_cols] = drot.permute(0, 2, 3, 1)
        dX[..., 3:6] = torch.eye(3, dtype=p.dtype, device=p.device)
        if self.P > 13 and linear:
            dX[..., 13:] = self.rig.linear_jacobian(rows, pose)
        xc = X @ self.viewR.T  # [B,68,3]
        z = xc[..., 2:3]  # [B,68,1]
        f = torch.exp(p[:, 6]).reshape(-1, 1, 1)
        uv = f * xc[..., :2] / z + cxy[:, None, :]
        dxc = torch.einsum("cd,bkdl->bkcl", self.viewR, dX)  # [B,68,3,P]
        duv = (f / z)[..., None] * (dxc[..., :2, :] - (xc[..., :2] / z)[..., None] * dxc[..., 2:3, :])  # [B,68,2,P]
        duv[..., 6] = uv - cxy[:, None, :]  # d/d log f
        return uv, duv

    def landmark_cost(self, uv: Tensor, idx: Tensor, c: float) -> tuple[Tensor, Tensor]:
        """Robust cost per item [B] and IRLS weights [B,68] (including scores) at pixels uv [B,68,2]."""
        e2 = ((uv - self.target[idx]) ** 2).sum(-1) / self.sigma_px[idx, None] ** 2  # [B,68] squared, in sigmas
        c2 = c * c
        s = self.scores[idx]
        rho = s * c2 * e2 / (c2 + e2)
        w = s * (c2 / (c2 + e2)) ** 2
        return rho.sum(-1), w

    def cost(self, p: Tensor, idx: Tensor, c: float) -> Tensor:
        with torch.no_grad():
            lc, _ = self.landmark_cost(self.project(p, self.cxy[idx]), idx, c)
            pr = (((p - self.mean(idx)) * self.prec) ** 2).sum(-1)
        return lc + pr

    def solve(self, p: Tensor, idx: Tensor, active: Tensor, iters: int, c: float) -> Tensor:
        """Levenberg-Marquardt with IRLS weights on items idx [B], over the active parameters [P] bool
        (the normal equations are built for those columns only; the others stay as they are)."""
        B = p.shape[0]
        lam = torch.full((B,), 1e-3, dtype=p.dtype, device=p.device)
        mu = self.mean(idx)
        cols = torch.nonzero(active).squeeze(1)  # [A]
        linear = bool(active[13:].any())
        prec2 = self.prec[cols] ** 2  # [A]
        cost = self.cost(p, idx, c)
        for _ in range(iters):
            uv, Juv = self.jacobian(p, self.cxy[idx], linear=linear)  # [B,68,2], [B,68,2,P]
            _, w = self.landmark_cost(uv, idx, c)  # [B,68]
            sw = (w.sqrt() / self.sigma_px[idx, None])[..., None]  # [B,68,1]
            r = (sw * (uv - self.target[idx])).reshape(B, -1)  # [B,136]
            Jr = (sw[..., None] * Juv[..., cols]).reshape(B, -1, cols.shape[0])  # [B,136,A]
            H = Jr.transpose(1, 2) @ Jr + torch.diag_embed(prec2).expand(B, -1, -1)  # [B,A,A]
            g = (Jr.transpose(1, 2) @ r[..., None]).squeeze(-1) + prec2 * (p - mu)[:, cols]  # [B,A]
            Hd = torch.diagonal(H, dim1=1, dim2=2)
            A = H + torch.diag_embed(lam[:, None] * Hd + 1e-9)
            step = -_spd_solve(A, g)  # [B,A]
            p_new = p.clone()
            p_new[:, cols] += step
            cost_new = self.cost(p_new, idx, c)
            ok = torch.isfinite(cost_new) & (cost_new <= cost)
            p = torch.where(ok[:, None], p_new, p)
            cost = torch.where(ok, cost_new, cost)
            lam = torch.where(ok, lam * 0.3, lam * 10.0).clamp(1e-7, 1e7)
        return p

    def init(self, yaw: Tensor, idx: Tensor) -> Tensor:
        """Starting parameters [B,P]: yaw [B] radians, mean shape, focal at its prior, head placed on the landmarks."""
        B = yaw.shape[0]
        p = self.mean(idx)
        p[:, 1] = yaw
        zero_t = torch.zeros(B, 3, dtype=p.dtype, device=p.device)
        pose = torch.zeros(B, self.rig.n_joints, 3, dtype=p.dtype, device=p.device)
        pose[:, 0, 1] = yaw
        S = self.rig.n_shape
        X = self.rig(self.rig.gather(pose), p[:, 13 : 13 + S], p[:, 13 + S :], pose, zero_t)  # [B,68,3]
        c3 = X.mean(1)  # [B,3]
        s3 = (X[..., :2] - c3[:, None, :2]).norm(dim=-1).mean(-1)  # [B]
        tgt = self.target[idx]
        c2 = tgt.mean(1)  # [B,2]
        s2 = (tgt - c2[:, None]).norm(dim=-1).mean(-1).clamp_min(1e-3)
        f = torch.exp(p[:, 6])
        d = f * s3 / s2  # depth of the landmarks' centre
        xy = (c2 - self.cxy[idx]) * (d / f)[:, None]  # camera-space x, y (y down)
        p[:, 3] = xy[:, 0] - c3[:, 0]
        p[:, 4] = -xy[:, 1] - c3[:, 1]
        p[:, 5] = -d - c3[:, 2]
        return p


def fit_flame(
    model, landmarks_list: Sequence, config: FitConfig | None = None, device: torch.device | str = "cpu"
) -> list:
    """Fit FLAME to each Landmarks (one batched optimisation) -> list[FlameFit], in input order."""
    cfg = config or FitConfig()
    if len(landmarks_list) == 0:
        return []
    # (the torch thread count is left alone: changing it at run time can break later batched LU
    # solves in MKL builds; torch 2.13 CPU, "Parameter 6 was incorrect on entry to DLASWP")
    dev = torch.device(device)
    dtype = torch.float64
    rig = LandmarkRig(model, cfg.n_shape, cfg.n_expr, device=dev, dtype=dtype)
    pts, sc, hw = _stack_landmarks(landmarks_list)
    t = lambda a: torch.as_tensor(a, dtype=dtype, device=dev)  # noqa: E731
    prob = _Problem(rig, cfg, t(pts), t(sc), t(hw))
    B, P, S = pts.shape[0], prob.P, rig.n_shape

    # stage 1: rigid, from several yaw starts per input (batched together), plain L2 (large robust scale)
    yaws = torch.tensor([math.radians(y) for y in (cfg.yaw_inits_deg or (0.0,))], dtype=dtype, device=dev)
    n0 = yaws.shape[0]
    idx = torch.arange(B, device=dev).repeat_interleave(n0)  # [B*n0]
    p = prob.init(yaws.repeat(B), idx)
    active = torch.zeros(P, dtype=torch.bool, device=dev)
    active[:7] = True
    active[_F] = cfg.fixed_focal_px is None
    p = prob.solve(p, idx, active, cfg.iters[0], c=10.0 * cfg.robust_scale)
    best = prob.cost(p, idx, cfg.robust_scale).reshape(B, n0).argmin(-1)  # [B]
    p = p.reshape(B, n0, P)[torch.arange(B, device=dev), best]  # [B,P]
    idx = torch.arange(B, device=dev)

    # stage 2: + shape and neck; stage 3: + expression and jaw (robust)
    active[_N] = True
    active[13 : 13 + S] = True
    p = prob.solve(p, idx, active, cfg.iters[1], c=cfg.robust_scale)
    active[:] = True
    active[_F] = cfg.fixed_focal_px is None
    p = prob.solve(p, idx, active, cfg.iters[2], c=cfg.robust_scale)

    with torch.no_grad():
        uv = prob.project(p, prob.cxy)
        err = (uv - prob.target).norm(dim=-1).cpu().numpy()  # [B,68]
    p_np = p.cpu().numpy()  # [B, P]
    n_shape_full, n_expr_full = int(model.shapedirs.shape[-1]), int(model.exprdirs.shape[-1])
    out = []
    for b in range(B):
        H, W = int(hw[b, 0]), int(hw[b, 1])
        f = float(np.exp(p_np[b, 6]))
        shape = np.zeros(n_shape_full, np.float32)
        shape[:S] = p_np[b, 13 : 13 + S]
        expr = np.zeros(n_expr_full, np.float32)
        expr[: rig.n_expr] = p_np[b, 13 + S :]
        K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]], np.float32)
        out.append(
            FlameFit(
                shape=shape,
                expr=expr,
                global_pose=p_np[b, _G].astype(np.float32),
                neck_pose=p_np[b, _N].astype(np.float32),
                jaw_pose=p_np[b, _J].astype(np.float32),
                eyes_pose=np.zeros(6, np.float32),
                translation=p_np[b, _T].astype(np.float32),
                K=K,
                viewmat=FIT_VIEWMAT.copy(),
                image_size=(H, W),
                landmark_error_px=err[b].astype(np.float32),
                flame_model_sha256=str(getattr(model, "sha256", "")),
            )  # fmt: skip
        )
    return out
