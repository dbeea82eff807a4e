"""FLAME forward: blend shapes + linear blend skinning, batched, plain torch.

    shaped   = v_template + shapedirs·shape + exprdirs·expr      (fewer coefficients: the rest are 0)
    joints   = J_regressor @ shaped                               (precomputed per blend shape)
    posed    = shaped + posedirs·vec(R_j - I, j = 1..J-1)
    world    = Σ_j w_vj · A_j(posed) + translation,   A_j from the kinematic chain
Joints: 0 root (global_pose), 1 neck, 2 jaw, 3 left eye, 4 right eye.

Landmarks (68, iBUG order): 17 jaw-line points + 51 static points, each a
barycentric point of one triangle. With a dynamic table the 17 contour points
come from the yaw bin of R = R_global @ R_neck (see `contour_bins`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from avatarcli.flame.embedding import N_YAW_BINS
from avatarcli.flame.model import FlameModel
from avatarcli.flame.params import FlameParams
from avatarcli.geometry import axis_angle_to_matrix


@dataclass
class FlameOutput:
    vertices: Tensor  # [B, V, 3] world (global rotation about the root joint + translation applied)
    joints: Tensor  # [B, J, 3] posed joints, same space
    landmarks: Tensor | None  # [B, 68, 3] or None


def _like(t: Tensor, ref: Tensor) -> Tensor:
    if t.dtype != ref.dtype or t.device != ref.device:
        return t.to(device=ref.device, dtype=ref.dtype)
    return t


def _coeffs(c: Tensor, n: int, what: str) -> int:
    k = c.shape[-1]
    if k > n:
        raise ValueError(f"{k} {what} coefficients given, the model has {n}")
    return k


def pose_rotations(params: FlameParams) -> Tensor:
    """Per-joint rotations [B, 5, 3, 3]: global, neck, jaw, left eye, right eye."""
    aa = torch.stack(
        [params.global_pose, params.neck_pose, params.jaw_pose, params.eyes_pose[:, :3], params.eyes_pose[:, 3:]],
        dim=1,
    )  # [B, 5, 3]
    return axis_angle_to_matrix(aa)


def shaped_joints(model: FlameModel, shape: Tensor, expr: Tensor | None = None) -> Tensor:
    """Rest-pose joints of the shaped (+ expression) template: [B, J, 3]."""
    ks = _coeffs(shape, model.n_shape, "shape")
    J = _like(model.J_template, shape) + torch.einsum("jcs,bs->bjc", _like(model.J_shapedirs[..., :ks], shape), shape)
    if expr is not None and expr.shape[-1] > 0:
        ke = _coeffs(expr, model.n_expr, "expression")
        J = J + torch.einsum("jcs,bs->bjc", _like(model.J_exprdirs[..., :ke], shape), expr)
    return J


def root_joint(model: FlameModel, shape: Tensor, expr: Tensor | None = None) -> Tensor:
    """Root joint J0 of the shaped template [B, 3] (shape [B, S]; with `expr` it is exact,
    without it the expression's effect on the root is ignored; it is ~0 for FLAME)."""
    return shaped_joints(model, shape, expr)[:, 0]


def _chain(rot: Tensor, joints: Tensor, parents: list[int]) -> tuple[Tensor, Tensor]:
    """Kinematic chain. rot [B,J,3,3] local rotations, joints [B,J,3] rest joints ->
    posed joints [B,J,3], skinning transforms A [B,J,3,4] (A_j x = R_j x + t_j - R_j J_j)."""
    Rw: list[Tensor] = []
    tw: list[Tensor] = []
    for j, p in enumerate(parents):
        if p < 0:
            Rw.append(rot[:, j])
            tw.append(joints[:, j])
        else:
            Rw.append(Rw[p] @ rot[:, j])
            tw.append((Rw[p] @ (joints[:, j] - joints[:, p]).unsqueeze(-1)).squeeze(-1) + tw[p])
    R = torch.stack(Rw, dim=1)  # [B, J, 3, 3]
    t = torch.stack(tw, dim=1)  # [B, J, 3]
    offset = t - (R @ joints.unsqueeze(-1)).squeeze(-1)  # [B, J, 3]
    return t, torch.cat([R, offset.unsqueeze(-1)], dim=-1)


def _skin(points: Tensor, weights: Tensor, A: Tensor) -> Tensor:
    """points [B,K,3], weights [K,J] or [B,K,J], A [B,J,3,4] -> [B,K,3]."""
    B, J = A.shape[:2]
    Af = A.reshape(B, J, 12)
    if weights.dim() == 2:
        T = torch.matmul(weights, Af)  # [B, K, 12]
    else:
        T = torch.bmm(weights, Af)
    T = T.view(B, -1, 3, 4)
    return (T[..., :3] @ points.unsqueeze(-1)).squeeze(-1) + T[..., 3]


def _pose_feature(rot: Tensor) -> Tensor:
    """rot [B,J,3,3] -> (R_j - I) of the non-root joints, flattened [B, 9(J-1)]."""
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
    return (rot[:, 1:] - eye).flatten(1)


def yaw_degrees(R: Tensor) -> Tensor:
    """Yaw (rotation about y, degrees) of R [B,3,3]: atan2(-R20, sqrt(R00^2 + R10^2))."""
    return torch.rad2deg(torch.atan2(-R[:, 2, 0], torch.sqrt(R[:, 0, 0] ** 2 + R[:, 1, 0] ** 2)))


def contour_bins(R: Tensor) -> Tensor:
    """Dynamic-contour bin [B] (long, 0..78) for the head rotation R = R_global @ R_neck [B,3,3].

    The layout (DECA's): a = round(min(-yaw_deg, 39)) (torch.round: half to even);
    a in [0, 39] -> bin a; a in [-39, -1] -> bin 39 - a (40..78); a < -39 -> bin 78.
    So bins 0..39 hold yaw 0, -1, ..., -39 degrees and bins 40..78 yaw +1 ... +39.
    """
    a = torch.round(torch.clamp(-yaw_degrees(R), max=39.0)).long()
    neg = torch.where(a < -39, torch.full_like(a, N_YAW_BINS - 1), 39 - a)
    return torch.where(a < 0, neg, a)


def landmark_faces(model: FlameModel, rot: Tensor) -> tuple[Tensor, Tensor]:
    """Triangles [B,68] and barycentrics [B,68,3] of the landmarks for rotations rot [B,J,3,3]."""
    emb = model.landmarks
    if emb is None:
        raise ValueError("this FLAME model has no landmark embedding")
    B = rot.shape[0]
    dyn_faces, dyn_bary = emb.dynamic_faces, emb.dynamic_bary
    if dyn_faces is None:  # not emb.has_dynamic
        return emb.full_faces.expand(B, -1), _like(emb.full_bary, rot).expand(B, -1, -1)
    if dyn_bary is None:
        raise ValueError("this FLAME landmark embedding has dynamic contour faces but no barycentrics")
    bins = contour_bins(rot[:, 0] @ rot[:, 1]).to(dyn_faces.device)  # [B]
    faces = torch.cat([dyn_faces[bins], emb.static_faces.expand(B, -1)], dim=1)  # [B, 68]
    bary = torch.cat([_like(dyn_bary, rot)[bins], _like(emb.static_bary, rot).expand(B, -1, -1)], dim=1)
    return faces, bary


def barycentric_points(vertices: Tensor, faces: Tensor, face_idx: Tensor, bary: Tensor) -> Tensor:
    """vertices [B,V,3], faces [F,3], face_idx [B,L], bary [B,L,3] -> points [B,L,3]."""
    B, L = face_idx.shape
    vidx = faces.to(vertices.device)[face_idx.to(vertices.device)]  # [B, L, 3]
    pts = torch.gather(vertices, 1, vidx.reshape(B, L * 3, 1).expand(-1, -1, 3)).view(B, L, 3, 3)
    return (pts * bary.unsqueeze(-1)).sum(-2)


def flame_forward(model: FlameModel, params: FlameParams, with_landmarks: bool = True) -> FlameOutput:
    """Full FLAME forward: vertices [B,V,3], joints [B,J,3], landmarks [B,68,3] (None if
    `with_landmarks` is False or the model has no embedding). Computed in params' dtype/device."""
    ref = params.shape
    B = params.batch
    ks = _coeffs(params.shape, model.n_shape, "shape")
    ke = _coeffs(params.expr, model.n_expr, "expression")
    v = _like(model.v_template, ref).expand(B, -1, -1)
    v = v + torch.einsum("vcs,bs->bvc", _like(model.shapedirs[..., :ks], ref), params.shape)
    if ke:
        v = v + torch.einsum("vcs,bs->bvc", _like(model.exprdirs[..., :ke], ref), params.expr)  # [B, V, 3]
    joints = shaped_joints(model, params.shape, params.expr)  # [B, J, 3]
    rot = pose_rotations(params)  # [B, J, 3, 3]
    v = v + (_pose_feature(rot) @ _like(model.posedirs, ref)).view(B, -1, 3)
    posed_joints, A = _chain(rot, joints, model.parents_list)
    verts = _skin(v, _like(model.lbs_weights, ref), A)  # [B, V, 3]
    t = params.translation.unsqueeze(1)  # [B, 1, 3]
    verts = verts + t
    lmk = None
    if with_landmarks and model.landmarks is not None:
        fi, bary = landmark_faces(model, rot)
        lmk = barycentric_points(verts, model.faces, fi, bary)
    return FlameOutput(vertices=verts, joints=posed_joints + t, landmarks=lmk)


@dataclass
class _LandmarkSubset:
    """The vertices of every triangle any landmark can use (all yaw bins), pre-sliced."""

    verts: Tensor  # [U] long, model vertex ids
    remap: Tensor  # [V] long, model vertex id -> position in `verts` (-1 elsewhere)
    v_template: Tensor  # [U, 3]
    shapedirs: Tensor  # [U*3, S]
    exprdirs: Tensor  # [U*3, E]
    posedirs: Tensor  # [P, U*3]
    weights: Tensor  # [U, J]


def _landmark_subset(model: FlameModel) -> _LandmarkSubset:
    cached = model._lmk_subset
    if isinstance(cached, _LandmarkSubset):
        return cached
    emb = model.landmarks
    if emb is None:
        raise ValueError("this FLAME model has no landmark embedding")
    used = [emb.full_faces, emb.static_faces] + ([] if emb.dynamic_faces is None else [emb.dynamic_faces.reshape(-1)])
    verts = torch.unique(model.faces[torch.cat(used).to(model.faces.device)].reshape(-1))  # [U]
    U = verts.shape[0]
    remap = torch.full((model.n_vertices,), -1, dtype=torch.long, device=verts.device)
    remap[verts] = torch.arange(U, device=verts.device)
    P = model.posedirs.shape[0]
    sub = _LandmarkSubset(
        verts=verts,
        remap=remap,
        v_template=model.v_template[verts],
        shapedirs=model.shapedirs[verts].reshape(U * 3, -1),
        exprdirs=model.exprdirs[verts].reshape(U * 3, -1),
        posedirs=model.posedirs.view(P, -1, 3)[:, verts].reshape(P, U * 3),
        weights=model.lbs_weights[verts],
    )
    model._lmk_subset = sub
    return sub


def flame_landmarks(model: FlameModel, params: FlameParams) -> Tensor:
    """Landmarks only [B,68,3], equal to flame_forward(...).landmarks but skinning only
    the vertices of the landmark triangles (a few hundred; the fast path for fitting)."""
    if model.landmarks is None:
        raise ValueError("this FLAME model has no landmark embedding")
    ref = params.shape
    B = params.batch
    ks = _coeffs(params.shape, model.n_shape, "shape")
    ke = _coeffs(params.expr, model.n_expr, "expression")
    sub = _landmark_subset(model)
    U = sub.verts.shape[0]
    rot = pose_rotations(params)  # [B, J, 3, 3]
    v = _like(sub.v_template, ref).reshape(1, U * 3) + params.shape @ _like(sub.shapedirs[:, :ks], ref).T  # [B, U*3]
    if ke:
        v = v + params.expr @ _like(sub.exprdirs[:, :ke], ref).T
    v = v + _pose_feature(rot) @ _like(sub.posedirs, ref)
    joints = shaped_joints(model, params.shape, params.expr)  # [B, J, 3]
    _, A = _chain(rot, joints, model.parents_list)
    pts = _skin(v.view(B, U, 3), _like(sub.weights, ref), A)  # [B, U, 3]
    fi, bary = landmark_faces(model, rot)  # [B, L], [B, L, 3]
    local_faces = sub.remap[model.faces]  # [F, 3] (-1 for unused triangles, never indexed)
    lmk = barycentric_points(pts, local_faces, fi, bary)  # [B, L, 3]
    return lmk + params.translation.unsqueeze(1)


def canonical_vertices(model: FlameModel, params: FlameParams) -> Tensor:
    """Vertices [B,V,3] of the canonical head: the params with global_pose = 0 and translation = 0."""
    return flame_forward(model, params.canonical(), with_landmarks=False).vertices
