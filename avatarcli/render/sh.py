"""Real spherical harmonics, degrees 0-3, in the 3DGS / gsplat convention.

Basis index k = l*l + l + m (m = -l..l). The signs are those of the 3D
Gaussian Splatting reference code and gsplat: the real basis built from the
complex Y_l^m *with* the Condon-Shortley phase, i.e. for m > 0
sqrt(2) Re Y_l^m and for m < 0 sqrt(2) Im Y_l^|m| (so Y_1 = -c*y, c*z, -c*x).
Colour = clamp_min(sum_k sh[k] * Y_k(d) + 0.5, 0), d = normalize(mean - campos).
"""

from __future__ import annotations

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814  # Y_0^0; rgb = SH_C0 * f_dc + 0.5 (3DGS convention)
_C1 = 0.4886025119029199  # sqrt(3 / 4pi)
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_coeffs(degree: int) -> int:
    """Coefficients per colour channel of an SH expansion of `degree`: (degree+1)^2."""
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Basis values at unit directions. dirs [..., 3] -> [..., (degree+1)^2]."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree {degree} not supported (0-3)")
    out = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            _C2[0] * xy,
            _C2[1] * yz,
            _C2[2] * (2.0 * zz - xx - yy),
            _C2[3] * xz,
            _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _C3[0] * y * (3.0 * xx - yy),
            _C3[1] * xy * z,
            _C3[2] * y * (4.0 * zz - xx - yy),
            _C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            _C3[4] * x * (4.0 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(sh: Tensor, dirs: Tensor, degree: int | None = None) -> Tensor:
    """SH colour (before the +0.5 offset). sh [..., K, 3], dirs [..., 3] (any length) -> [..., 3].

    Uses the first (degree+1)^2 coefficients; degree None = all of them."""
    K = sh.shape[-2]
    if degree is None:
        degree = int(round(K**0.5)) - 1
    n = sh_coeffs(degree)
    if n > K:
        raise ValueError(f"SH degree {degree} needs {n} coefficients, the Gaussians have {K}")
    if degree == 0:
        return SH_C0 * sh[..., 0, :]
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(degree, d)  # [..., n]
    return (basis[..., :, None] * sh[..., :n, :]).sum(-2)


def sh_to_rgb(sh: Tensor, dirs: Tensor, degree: int | None = None) -> Tensor:
    """Renderable colour: clamp_min(eval_sh + 0.5, 0), as gsplat. [..., K, 3], [..., 3] -> [..., 3]."""
    return torch.clamp_min(eval_sh(sh, dirs, degree) + 0.5, 0.0)
