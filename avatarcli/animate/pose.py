"""Re-posing a bound Gaussian head with FLAME, frame by frame.

The head's PLY holds canonical Gaussians (FLAME with the fit's shape, expression
and joint poses; global pose and translation zero) plus each Gaussian's
triangle (`binding`). Once: canonical mesh from the fit's parameters ->
bind_to_mesh gives each Gaussian's local parameters in its triangle frame.
Per frame: FLAME with the head's identity (shape) and the frame's expression,
joint poses, global rotation (about the root joint) and translation ->
vertices -> world_gaussians. The LBS is batched over frames.
A head whose meta carries canonical-mesh offsets (hair, the real outline) is bound to the
deformed mesh and posed with avatarcli.flame.deform.pose_deformed (hair rigid with the head,
not stretched by the jaw).
A head whose meta carries rigid anchors (the mouth interior, avatarcli.gaussians.anchors) has them
appended to the mesh, posed per frame by their joint's transform: rigid with the skull or the jaw.
The Gaussians on the anchors (the interior) fade with the frame's lip opening
(avatarcli.gaussians.mouth.interior_visibility, applied by its gate_opacities: the same gate as
still renders, the fit and the rounds use): invisible with the lips together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from avatarcli.animate.sequence import FrameSequence
from avatarcli.errors import InputError
from avatarcli.flame.artifact import mesh_offsets
from avatarcli.flame.deform import pose_deformed
from avatarcli.flame.forward import canonical_vertices, flame_forward, root_joint
from avatarcli.flame.model import FlameModel, check_model_hash
from avatarcli.flame.params import FlameParams
from avatarcli.gaussians.anchors import RigidAnchors
from avatarcli.gaussians.binding import bind_to_mesh, world_gaussians
from avatarcli.gaussians.model import BoundGaussians, Gaussians
from avatarcli.gaussians.mouth import gate_opacities, interior_visibility, lip_opening, rest_lip_opening
from avatarcli.gaussians.ply import GaussianPly
from avatarcli.progress import warn

DEFAULT_BATCH = 32


def sequence_params(seq: FrameSequence, shape: Tensor, device) -> FlameParams:
    """Per-frame FlameParams [T]: the head's identity `shape` [1, S] + the frames' motion."""
    T = seq.n_frames
    t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    return FlameParams(
        shape=shape.to(device).expand(T, -1),
        expr=t(seq.expr),
        global_pose=t(seq.global_pose),
        neck_pose=t(seq.neck_pose),
        jaw_pose=t(seq.jaw_pose),
        eyes_pose=t(seq.eyes_pose),
        translation=t(seq.translation),
    )


@dataclass
class HeadPoser:
    """A bound head ready to be re-posed: local Gaussian parameters + identity."""

    model: FlameModel  # on `device`
    bound: BoundGaussians  # [N] local parameters, on `device`
    shape: Tensor  # [1, S] identity
    canonical: Tensor  # [V, 3] canonical vertices (the head as stored)
    root: Tensor  # [3] root joint of the shaped template
    device: torch.device
    used_faces: Tensor  # [U, 3] FLAME triangles carrying Gaussians; bound.binding indexes into these
    canon_params: FlameParams  # the canonical parameters (batch 1; deformed heads and anchors are posed from them)
    plain: Tensor  # [V, 3] canonical FLAME vertices without offsets
    offsets: Tensor | None = None  # [V, 3] mesh offsets (deformed heads)
    hair: Tensor | None = None  # [V] hair weights (deformed heads)
    anchors: RigidAnchors | None = None  # the rigid anchors (heads with a mouth interior); their faces follow FLAME's
    interior: Tensor | None = None  # [N] bool: the Gaussians on the anchors (gated by the lip opening)
    rest_opening: float = 0.0  # lip opening of the neutral face (avatarcli.gaussians.mouth)

    @classmethod
    def from_ply(
        cls, model: FlameModel, ply: GaussianPly, path: str | Path | None = None, device="cpu", force: bool = False
    ) -> "HeadPoser":
        """Bind the PLY's canonical Gaussians to the canonical mesh of its fit."""
        if ply.binding is None:
            raise InputError("this PLY is not an avatarcli head: it has no binding", path=path)
        if ply.meta is None:
            raise InputError("this PLY is not an avatarcli head: it has no FLAME parameters (meta)", path=path)
        if not check_model_hash(ply.meta.flame_model_sha256, model, path, force):
            warn(f"{path}: FLAME model hash differs from the head's; animating anyway (`force`)", mentions=("force",))
        anchors = ply.meta.rigid_anchors() if hasattr(ply.meta, "rigid_anchors") else None
        F = model.faces.shape[0] + (anchors.n if anchors is not None else 0)
        binding = ply.binding.long()
        if binding.numel() and (int(binding.min()) < 0 or int(binding.max()) >= F):
            raise InputError(
                f"binding refers to triangle {int(binding.max())}, the FLAME model has {F} (wrong model?)", path=path
            )
        device = torch.device(device)
        model = model.to(device) if hasattr(model, "to") else model
        params = ply.meta.fit.canonical_params(model, device, torch.float32, path)
        offsets = hair = None
        with torch.no_grad():
            plain = canonical_vertices(model, params)[0]  # [V, 3]
            verts = plain
            meta_offsets = getattr(ply.meta, "offsets", None)
            if meta_offsets is not None:
                offsets = mesh_offsets(meta_offsets, plain, path)
                hair = torch.as_tensor(ply.meta.hair, dtype=plain.dtype, device=device)
                verts = plain + offsets
            faces = model.faces.to(device).long()
            if anchors is not None:
                verts, faces = anchors.extend(verts, faces)
            bound = bind_to_mesh(ply.gaussians.to(device), binding.to(device), verts, faces)
            stored = getattr(ply.meta, "root_joint", None)
            if stored is not None:
                root = torch.as_tensor(stored, dtype=torch.float32, device=device).reshape(3)
            else:
                root = root_joint(model, params.shape)[0]  # [3]
        # only the triangles that carry Gaussians are needed per frame: re-index the binding onto them
        interior, rest = None, 0.0
        if anchors is not None and getattr(model, "landmarks", None) is not None:
            interior = bound.binding >= model.faces.shape[0]  # [N]
            rest = rest_lip_opening(model, params.shape)
        used, local = torch.unique(bound.binding, return_inverse=True)  # [U], [N]
        bound = bound.replace(binding=local)
        return cls(model=model, bound=bound.detach(), shape=params.shape, canonical=verts, root=root, device=device,
                   used_faces=faces[used], canon_params=params, plain=plain, offsets=offsets,
                   hair=hair, anchors=anchors, interior=interior, rest_opening=rest)  # fmt: skip

    @property
    def faces(self) -> Tensor:
        """[U, 3] the triangles (FLAME's, then anchors') that carry Gaussians (bound.binding indexes these)."""
        return self.used_faces

    def vertices(self, seq: FrameSequence) -> Tensor:
        """Posed vertices of every frame of `seq`: [T, V (+ 3 per anchor), 3] (one batched LBS)."""
        params = sequence_params(seq, self.shape, self.device)
        with torch.no_grad():
            verts = flame_forward(self.model, params, with_landmarks=False).vertices
            if self.offsets is not None:
                if self.hair is None:
                    raise ValueError("a deformed head (mesh offsets) needs its hair weights")
                verts = pose_deformed(self.model, self.canon_params, params, self.plain, verts, self.offsets, self.hair)
            if self.anchors is None:
                return verts
            corners = self.anchors.posed(self.model, self.canon_params, params)  # [T, A, 3, 3]
            return self.anchors.extend(verts, self.model.faces, corners)[0]

    def gaussians(self, vertices: Tensor) -> Gaussians:
        """World Gaussians on the mesh `vertices` [V, 3] (or [B, V, 3]: every field gets a leading B)."""
        with torch.no_grad():
            g = world_gaussians(self.bound, vertices, self.faces)
            if self.interior is None or not bool(self.interior.any()):
                return g
            V = int(self.model.v_template.shape[0])  # the FLAME vertices come first, then the anchors
            vis = interior_visibility(lip_opening(self.model, vertices[..., :V, :]), self.rest_opening)  # [...]
            op = gate_opacities(g.opacities, self.interior, vis)
            return Gaussians(means=g.means, quats=g.quats, scales=g.scales, opacities=op, sh=g.sh)

    def posed(self, seq: FrameSequence, batch: int = DEFAULT_BATCH) -> Iterator[Gaussians]:
        """World Gaussians frame by frame; LBS and triangle frames run `batch` frames at a time."""
        for start in range(0, seq.n_frames, batch):
            V = self.vertices(seq.slice(start, min(start + batch, seq.n_frames)))  # [b, V, 3]
            G = self.gaussians(V)  # fields [b, N, ...]
            for j in range(V.shape[0]):
                yield Gaussians(
                    means=G.means[j], quats=G.quats[j], scales=G.scales[j], opacities=G.opacities[j], sh=G.sh[j]
                )
