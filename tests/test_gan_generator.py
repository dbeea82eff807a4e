"""The tri-plane generator: tiny model end to end, plane sampling against a hand-written
bilinear / trilinear interpolation, volume rendering against a constant-density slab."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from avatarcli.gan.generator import GanConfig, TriplaneGenerator
from avatarcli.gan.volume import camera_rays, composite, sample_pdf, sample_planes

FOCAL = 4.2647  # EG3D's normalised focal length


def _camera(n: int = 1, radius: float = 2.7) -> torch.Tensor:  # [n, 25] at (0, 0, -radius) looking +z
    c = torch.zeros(n, 25)
    pose = torch.eye(4)
    pose[2, 3] = -radius
    c[:, :16] = pose.flatten()
    c[:, 16:] = torch.tensor([[FOCAL, 0, 0.5], [0, FOCAL, 0.5], [0, 0, 1]]).flatten()
    return c


def test_tiny_generator_end_to_end_shapes_seed_and_gradients():
    cfg = GanConfig.tiny()
    torch.manual_seed(0)
    g = TriplaneGenerator(cfg)
    z = torch.randn(2, cfg.z_dim, requires_grad=True)
    out = g(z, _camera(2))
    assert out.image.shape == (2, 3, 16, 16) and out.image_raw.shape == (2, 3, 8, 8)
    assert out.features.shape == (2, cfg.decoder_features, 8, 8)
    assert out.depth.shape == out.opacity.shape == (2, 1, 8, 8)
    assert torch.isfinite(out.image).all()
    assert ((out.depth >= cfg.ray_start) & (out.depth <= cfg.ray_end)).all()
    assert ((out.opacity >= 0) & (out.opacity <= 1 + 1e-6)).all()
    out.image.square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # inversion can optimise through it
    torch.manual_seed(0)
    again = TriplaneGenerator(cfg)(z.detach(), _camera(2))
    torch.testing.assert_close(again.image, out.image.detach())


def test_panohead_config_sizes():
    cfg = GanConfig.panohead()
    g = TriplaneGenerator(cfg)
    assert g.num_ws == 14  # 2 * log2(256) - 2
    assert g.backbone.blocks[-1].torgb.weight.shape[0] == 3 * 3 * 32  # tri-grid: 3 planes x 3 slices x 32
    assert g.superres.blocks[-1].resolution == 512


def test_truncation_to_the_average_latent():
    g = TriplaneGenerator(GanConfig.tiny())
    g.mapping.w_avg.normal_()
    ws = g.mapping(torch.randn(3, 16), _camera(3), psi=0.0)
    torch.testing.assert_close(ws, g.mapping.w_avg.expand(3, g.num_ws, -1))


def _bilinear(img: np.ndarray, u: float, v: float) -> np.ndarray:
    """img [C, H, W]; u, v in [-1, 1] with align_corners=False; zero outside."""
    c, h, w = img.shape
    x, y = ((u + 1) * w - 1) / 2, ((v + 1) * h - 1) / 2
    x0, y0 = math.floor(x), math.floor(y)
    out = np.zeros(c)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def _slice_mix(vol: np.ndarray, u: float, v: float, s: float) -> np.ndarray:
    """vol [D, C, H, W]: bilinear in each slice, then linear across slices (align_corners=False)."""
    d = vol.shape[0]
    z = ((s + 1) * d - 1) / 2
    z0 = math.floor(z)
    out = np.zeros(vol.shape[1])
    for zz, wz in ((z0, 1 - (z - z0)), (z0 + 1, z - z0)):
        if 0 <= zz < d:
            out += wz * _bilinear(vol[zz], u, v)
    return out


# The reference renderers' plane matrices A_i (rows: the plane's axes; EG3D and PanoHead
# training/volumetric_rendering/renderer.py, generate_planes): a point x is looked up at
# x @ inv(A_i) = (u, v, slice). They differ in the third plane only.
REFERENCE_PLANES = {
    "panohead": [np.eye(3), [[1, 0, 0], [0, 0, 1], [0, 1, 0]], [[0, 1, 0], [0, 0, 1], [1, 0, 0]]],
    "eg3d": [np.eye(3), [[1, 0, 0], [0, 0, 1], [0, 1, 0]], [[0, 0, 1], [1, 0, 0], [0, 1, 0]]],
}


@pytest.mark.parametrize("layout,depth", [("panohead", 3), ("panohead", 1), ("eg3d", 1)])
def test_tri_grid_sampling_follows_the_reference_layout(layout, depth):
    """From the backbone's image [1, 3 * C * D, H, W] (channel-major within a plane: channel c of
    slice d at c * D + d, as the reference views it [3, C, D, H, W]) to features at points, against
    a hand-written interpolation at x @ inv(A_i)."""
    from avatarcli.gan.volume import planes_from_backbone

    rng = np.random.default_rng(5)
    C, H, W = 2, 5, 6
    img = rng.normal(size=(1, 3 * C * depth, H, W))
    pts = rng.uniform(-0.55, 0.55, size=(1, 7, 3))  # some outside the box (box_warp 1 -> +-0.5)
    planes = planes_from_backbone(torch.tensor(img), depth)
    got = sample_planes(planes, torch.tensor(pts), box_warp=1.0, layout=layout).numpy()  # [1, 3, 7, C]
    for i, A in enumerate(REFERENCE_PLANES[layout]):
        grid = img[0, i * C * depth : (i + 1) * C * depth].reshape(C, depth, H, W)  # [C, D, H, W]
        vol = grid.transpose(1, 0, 2, 3)  # [D, C, H, W]
        for m in range(7):
            u, v, s = (pts[0, m] * 2.0) @ np.linalg.inv(np.asarray(A, float))
            want = _slice_mix(vol, u, v, s) if depth > 1 else _bilinear(vol[0], u, v)
            np.testing.assert_allclose(got[0, i, m], want, atol=1e-10)


def test_composite_constant_density_is_beer_lambert():
    sigma, start, end = 3.0, 2.0, 2.8
    d = torch.linspace(start, end, 33, dtype=torch.float64).expand(1, 2, 33)
    dens = torch.full((1, 2, 33, 1), sigma, dtype=torch.float64)
    col = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64).expand(1, 2, 33, 3)
    out = composite(col, dens, d)
    opacity = 1 - math.exp(-sigma * (end - start))
    np.testing.assert_allclose(out.opacity.numpy(), opacity, rtol=1e-8)
    np.testing.assert_allclose(
        out.features.numpy(), np.broadcast_to([0.2 * opacity, 0.5 * opacity, 0.9 * opacity], (1, 2, 3)), rtol=1e-8
    )
    # expected depth of an exponential start-truncated at `end`: start + 1/s - L e^{-sL} / (1 - e^{-sL})
    L = end - start
    want = start + 1 / sigma - L * math.exp(-sigma * L) / (1 - math.exp(-sigma * L))
    # the quadrature puts each interval's mass at its midpoint: error ~ sigma * delta^2 / 12 = 1.6e-4
    np.testing.assert_allclose(out.depth.numpy(), want, atol=3e-4)


def test_render_a_slab_through_rays_and_importance_sampling():
    """A slab sigma = 4 for |z| < 0.25 seen head-on: the centre pixel's opacity is 1 - exp(-2),
    an off-axis pixel's path is 0.5 / cos(theta). The raw densities are averaged per interval and
    then activated (the reference ray marcher's order), so an interval straddling a face of the
    slab counts for almost nothing: enough samples keep that bias inside the tolerance."""
    cfg = dataclasses.replace(GanConfig.tiny(), depth_samples=48, importance_samples=128)
    g = TriplaneGenerator(cfg)

    raw_in = math.log(math.expm1(4.0)) - cfg.density_shift  # softplus(raw + shift) = 4 inside, ~0 outside

    def slab(planes, pts):  # [N, M, 3] -> raw density, features
        inside = pts[..., 2:].abs() < 0.25
        raw = torch.where(inside, raw_in, -1000.0).to(pts.dtype)
        return raw, torch.ones(*pts.shape[:2], cfg.decoder_features, dtype=pts.dtype)

    g.query = slab  # type: ignore[method-assign]
    c = _camera().double()
    feats, depth, opacity = g.render(torch.zeros(1), c, resolution=5)
    op = opacity[0, 0].numpy()
    assert op[2, 2] == pytest.approx(1 - math.exp(-4.0 * 0.5), abs=0.02)
    _, dirs = camera_rays(c[:, :16].reshape(1, 4, 4), c[:, 16:].reshape(1, 3, 3), 5)
    cos = dirs[0, 0, 2].item()  # pixel (0, 0)
    assert op[0, 0] == pytest.approx(1 - math.exp(-4.0 * 0.5 / cos), abs=0.02)
    # the surface lies in the slab: 2.45 .. 2.95 along z
    assert 2.45 < depth[0, 0, 2, 2].item() < 2.95
    np.testing.assert_allclose(feats[0, 0].numpy(), op, atol=1e-6)  # unit colour -> colour == opacity


def test_camera_rays_follow_the_pinhole_model():
    c = _camera()
    o, d = camera_rays(c[:, :16].reshape(1, 4, 4), c[:, 16:].reshape(1, 3, 3), 4)
    np.testing.assert_allclose(o[0, 0].numpy(), [0, 0, -2.7])
    u = v = 0.5 / 4  # pixel (0, 0) centre
    want = np.array([(u - 0.5) / FOCAL, (v - 0.5) / FOCAL, 1.0])
    np.testing.assert_allclose(d[0, 0].numpy(), want / np.linalg.norm(want), rtol=1e-6)


def test_sample_pdf_follows_the_weights():
    bins = torch.linspace(0, 1, 11).expand(1, 1, 11)
    w = torch.zeros(1, 1, 10)
    w[..., 6] = 1.0
    s = sample_pdf(bins, w, 32)
    assert ((s >= 0.6 - 1e-3) & (s <= 0.7 + 1e-3)).float().mean() > 0.99
    s = sample_pdf(bins, torch.ones(1, 1, 10), 9)
    np.testing.assert_allclose(s[0, 0].numpy(), np.linspace(0.1, 0.9, 9), atol=1e-3)


def test_box_limits_slab_intersection():
    from avatarcli.gan.volume import box_limits

    o = torch.tensor([[[0.0, 0.0, 2.7], [0.0, 0.0, 2.7], [0.0, 0.0, 2.7], [0.0, 0.0, 0.0]]])
    s = 1 / math.sqrt(2)
    d = torch.tensor([[[0.0, 0.0, -1.0], [0.0, s, -s], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    near, far = box_limits(o, d, 1.0)
    # straight in: faces z = 0.5 and z = -0.5; the 45-degree ray misses (y = 2.2 at z = 0.5)
    assert near[0, 0] == pytest.approx(2.2) and far[0, 0] == pytest.approx(3.2)
    # from inside the box (the last ray): near clamped at 0, far at x = 0.5
    assert near[0, 3] == pytest.approx(0.0) and far[0, 3] == pytest.approx(0.5)
    # the two misses get the hits' smallest near and largest far
    for i in (1, 2):
        assert near[0, i] == pytest.approx(0.0) and far[0, i] == pytest.approx(3.2)


def test_fixed_ray_bounds_move_with_the_camera_distance():
    """ray_start / ray_end are for cameras at camera_radius: a camera 0.7 nearer samples 0.7 nearer.
    An opaque volume (huge density) puts the depth in the first interval after the near bound."""
    from avatarcli.gan.camera import gan_camera

    torch.manual_seed(0)
    G = TriplaneGenerator(dataclasses.replace(GanConfig.tiny(), density_shift=60.0, importance_samples=0))
    planes = G.planes(G.map(torch.randn(1, 16), gan_camera(0.0, 0.0)))
    step = (G.cfg.ray_end - G.cfg.ray_start) / (G.cfg.depth_samples - 1)
    for radius in (2.7, 2.0):
        _, depth, _ = G.render(planes, gan_camera(0.3, 0.1, radius=radius))
        lo = G.cfg.ray_start + radius - 2.7
        np.testing.assert_allclose(depth.detach().numpy(), lo + step / 2, atol=1e-3)
