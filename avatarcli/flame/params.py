"""FLAME parameters (batched) and the fit artifact (`flame.npz`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class FlameParams:
    """Batched FLAME parameters; B is the batch. Missing coefficients are zeros.

    Poses are axis-angle (radians). The forward adds `translation` after the
    global rotation (about the root joint), so world = LBS(...) + translation.
    """

    shape: Tensor  # [B, n_shape]
    expr: Tensor  # [B, n_expr]
    global_pose: Tensor  # [B, 3]
    neck_pose: Tensor  # [B, 3]
    jaw_pose: Tensor  # [B, 3]
    eyes_pose: Tensor  # [B, 6] left eye, right eye
    translation: Tensor  # [B, 3]

    @property
    def batch(self) -> int:
        return self.shape.shape[0]

    @staticmethod
    def zeros(batch: int, n_shape: int, n_expr: int, dtype=torch.float32, device="cpu") -> "FlameParams":
        z = lambda *s: torch.zeros(batch, *s, dtype=dtype, device=device)  # noqa: E731
        return FlameParams(z(n_shape), z(n_expr), z(3), z(3), z(3), z(6), z(3))

    def to(self, device=None, dtype=None) -> "FlameParams":
        return FlameParams(**{f.name: getattr(self, f.name).to(device=device, dtype=dtype) for f in fields(self)})

    def canonical(self) -> "FlameParams":
        """The same head with global pose and translation zero: the canonical (head) frame."""
        return dataclasses.replace(
            self, global_pose=torch.zeros_like(self.global_pose), translation=torch.zeros_like(self.translation)
        )

    def detach(self) -> "FlameParams":
        return FlameParams(**{f.name: getattr(self, f.name).detach().clone() for f in fields(self)})

    def __getitem__(self, i) -> "FlameParams":
        """Select batch entries (keeps the batch dimension for an int index)."""
        if isinstance(i, int):
            i = slice(i, i + 1)
        return FlameParams(**{f.name: getattr(self, f.name)[i] for f in fields(self)})
