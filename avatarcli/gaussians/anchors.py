"""Rigid anchors: extra triangles, appended to the FLAME mesh, that move as ONE joint does.

Gaussians bound to a FLAME triangle follow its skin: blend shapes (expression) and skinning move
it. Parts that are rigid in a real head (teeth, the roof and floor of the mouth) must follow a
joint instead: the skull (joint 1, neck: global and neck rotation) or the jaw (joint 2). An anchor
is a small triangle with corners in the canonical head's space and the joint it follows; the head
mesh becomes [FLAME vertices; 3 corners per anchor] and [FLAME faces; anchor faces], so a binding
f >= F (FLAME's face count) means anchor f - F, and every triangle-frame tool
(avatarcli.gaussians.binding) works on the extended mesh unchanged.

Posing: with A_j the skinning transforms of FLAME's kinematic chain (4x4, forward.py's `_chain`),
an anchor corner x of joint j in the canonical head (parameters `canon`) is, in a frame,
    x' = A_j(frame) A_j(canon)^-1 x + translation(frame),
exactly rigid with the joint: no expression blend shape, pose corrective or skinning blend moves
it. The triangle frame (centroid, rotation, size) of a rigidly moved triangle moves rigidly, so
the Gaussians bound to it do too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avatarcli.flame.deform import skinning_transforms

HEAD_JOINT, JAW_JOINT = 1, 2


@dataclass
class RigidAnchors:
    corners: Tensor  # [A, 3, 3] canonical positions of each anchor's corners (float32)
    joints: Tensor  # [A] long, the FLAME joint each anchor follows

    @property
    def n(self) -> int:
        return int(self.joints.shape[0])

    def faces(self, n_vertices: int) -> Tensor:
        """The anchors' faces [A, 3] on a mesh whose FLAME part has `n_vertices` vertices."""
        return n_vertices + torch.arange(3 * self.n, dtype=torch.long).reshape(self.n, 3)

    def extend(self, vertices: Tensor, faces: Tensor, corners: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """FLAME vertices [V, 3] (or [B, V, 3]) and faces [F, 3] -> the head mesh with the anchors:
        [V + 3A, 3] (or [B, V + 3A, 3]), [F + A, 3]. corners: posed corners [B, A, 3, 3] (default:
        the canonical ones)."""
        c = self.corners if corners is None else corners
        c = c.to(vertices).reshape(*c.shape[:-3], 3 * self.n, 3)  # [(B,) 3A, 3]
        if vertices.dim() == 3 and c.dim() == 2:
            c = c.expand(vertices.shape[0], -1, -1)
        verts = torch.cat([vertices, c], dim=-2)
        return verts, torch.cat([faces.long(), self.faces(vertices.shape[-2]).to(faces.device)])

    def posed(self, model, canon, frames) -> Tensor:
        """Corners [B, A, 3, 3] in the frames (FlameParams, batch B) of a head made at `canon` (batch 1)."""
        A_c = joint_transforms(model, canon).double()  # [1, J, 4, 4]
        A_f = joint_transforms(model, frames).double()  # [B, J, 4, 4]
        rel = (A_f @ torch.linalg.inv(A_c))[:, self.joints.to(A_f.device)]  # [B, A, 4, 4]
        c = self.corners.to(rel)  # [A, 3, 3]
        out = torch.einsum("baij,akj->baki", rel[..., :3, :3], c) + rel[:, :, None, :3, 3]  # [B, A, 3, 3]
        out = out + frames.translation.to(rel)[:, None, None, :]
        return out.to(frames.translation.dtype)

    def to_arrays(self):
        """(corners float32 [A, 3, 3], joints list[int]) for the head's metadata."""
        return np.asarray(self.corners.detach().cpu(), dtype=np.float32), [int(j) for j in self.joints.tolist()]

    @classmethod
    def from_arrays(cls, corners, joints) -> "RigidAnchors":
        c = torch.as_tensor(np.asarray(corners, dtype=np.float32)).reshape(-1, 3, 3)
        j = torch.as_tensor(np.asarray(joints, dtype=np.int64)).reshape(-1)
        if c.shape[0] != j.shape[0]:
            raise ValueError(f"{c.shape[0]} anchor triangles but {j.shape[0]} joints")
        return cls(c, j)


def joint_transforms(model, params) -> Tensor:
    """Skinning transforms [B, J, 4, 4] of FlameParams `params` (translation not included)."""
    return skinning_transforms(model, params)
