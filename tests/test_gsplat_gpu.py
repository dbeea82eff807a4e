"""gsplat (CUDA) against the pure-torch rasterizer: the same image, the same gradients.

Marked `gpu`: skipped without CUDA (tests/conftest.py). Both backends run on the GPU in float32
on the same Gaussians and cameras. Stated tolerances (float32, different summation order,
tile-based vs per-pixel enumeration of the same fragments):
    rgb, alpha:  max |diff| <= 2e-2 and mean |diff| <= 1e-3 per image
    depth (ED):  relative difference <= 1e-3 where alpha > 0.5
    gradients:   cosine similarity >= 0.99 per parameter (means, opacities, colours, scales)
"""

from __future__ import annotations

import pytest
import torch

from avatarcli.gaussians.model import Gaussians
from avatarcli.render.api import render, render_views
from avatarcli.render.camera import orbit_camera
from tests.fixtures.scenes import make_head_scene, make_random_gaussians

pytestmark = pytest.mark.gpu

RGB_MAX, RGB_MEAN, DEPTH_REL, GRAD_COS = 2e-2, 1e-3, 1e-3, 0.99


def _cuda(g: Gaussians) -> Gaussians:
    return g.to("cuda")


def _compare(g: Gaussians, cam, bg=None):
    a = render(g, cam, bg, backend="gsplat")
    b = render(g, cam, bg, backend="torch")
    for name in ("rgb", "alpha"):
        d = (getattr(a, name) - getattr(b, name)).abs()
        assert d.max() <= RGB_MAX and d.mean() <= RGB_MEAN, (name, float(d.max()), float(d.mean()))
    m = (a.alpha[..., 0] > 0.5) & (b.alpha[..., 0] > 0.5)
    if m.any():
        rel = ((a.depth - b.depth).abs() / b.depth.abs().clamp_min(1e-6))[..., 0][m]
        assert rel.max() <= DEPTH_REL, float(rel.max())
    return a, b


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_scenes_agree(sh_degree, seed):
    g = _cuda(make_random_gaussians(3000, seed, sh_degree=sh_degree, extent=0.12, scale=(0.002, 0.02)))
    bg = torch.tensor([0.2, 0.5, 0.9], device="cuda")
    for yaw, (w, h) in [(0.0, (96, 96)), (40.0, (128, 80)), (-115.0, (64, 112))]:
        cam = orbit_camera(yaw, 15.0, distance=0.7, width=w, height=h).to("cuda")
        a, _ = _compare(g, cam, bg)
        assert (a.alpha > 0.5).float().mean() > 0.05, "the scene is in view"


def test_head_scene_and_batched_views_agree():
    g, _ = make_head_scene(20000, 0, size=256, sh_degree=1)
    g = _cuda(g)
    cams = [orbit_camera(y, 0.0, width=256, height=256).to("cuda") for y in (0.0, 30.0, 90.0)]
    batched = render_views(g, cams, backend="gsplat")
    for cam, a in zip(cams, batched):
        b = render(g, cam, backend="torch")
        d = (a.rgb - b.rgb).abs()
        assert d.max() <= RGB_MAX and d.mean() <= RGB_MEAN


def test_gradients_agree():
    g0 = _cuda(make_random_gaussians(1500, 3, sh_degree=1, extent=0.1, scale=(0.003, 0.015)))
    cam = orbit_camera(20.0, 10.0, distance=0.6, width=80, height=72).to("cuda")
    w = torch.rand(72, 80, 3, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    grads = {}
    for backend in ("gsplat", "torch"):
        leaves = {
            f: getattr(g0, f).clone().requires_grad_(True) for f in ("means", "quats", "scales", "opacities", "sh")
        }
        out = render(Gaussians(**leaves), cam, backend=backend)
        (out.rgb * w).sum().backward()
        grads[backend] = {f: t.grad.flatten() for f, t in leaves.items()}
    for f in ("means", "opacities", "sh", "scales"):
        a, b = grads["gsplat"][f], grads["torch"][f]
        cos = torch.nn.functional.cosine_similarity(a, b, dim=0)
        assert cos >= GRAD_COS, (f, float(cos))


def test_animated_head_frames_agree(flame_model):
    """Re-posed FLAME-bound Gaussians render the same through both backends."""
    import dataclasses

    import numpy as np

    from avatarcli.animate.expressions import clip_from_arrays
    from avatarcli.animate.pose import HeadPoser
    from avatarcli.animate.sequence import build_sequence
    from avatarcli.stages.animate import AnimateConfig, make_cameras
    from tests.test_animate import _head

    model = dataclasses.replace(flame_model, sha256="a" * 64)
    head = _head(model, n=5000)
    poser = HeadPoser.from_ply(model, head, device="cuda")
    jaw = np.zeros((3, 3), np.float32)
    jaw[:, 0] = [0.0, 0.2, 0.4]
    seq = build_sequence([clip_from_arrays("jaw.npz", {"jaw_pose": jaw, "fps": np.float32(10)})], model.n_expr)
    cam_for = make_cameras(AnimateConfig(size=128), poser, seq.n_frames)
    for i, g in enumerate(poser.posed(seq)):
        _compare(g, cam_for(i).to("cuda"))


def test_render_cli_gsplat_matches_torch(tmp_path):
    import imageio.v3 as iio
    import numpy as np

    from avatarcli.cli import main
    from avatarcli.gaussians.ply import GaussianPly, write_gaussian_ply

    ply = tmp_path / "s.ply"
    write_gaussian_ply(ply, GaussianPly(make_random_gaussians(4000, 5, sh_degree=2, scale=(0.003, 0.02))))
    for backend in ("gsplat", "torch"):
        argv = [
            "render",
            str(ply),
            "-o",
            str(tmp_path / f"{backend}.png"),
            "--size",
            "96",
            "--backend",
            backend,
            "--device",
            "cuda",
        ]
        assert main(argv) == 0
    a, b = (iio.imread(tmp_path / f"{k}.png").astype(np.int16) for k in ("gsplat", "torch"))
    assert np.abs(a - b).max() <= round(255 * RGB_MAX) and np.abs(a - b).mean() <= 255 * RGB_MEAN + 0.5
