"""The pure-torch rasterizer against closed forms, scipy and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from avatarcli.gaussians.model import SH_C0, Gaussians
from avatarcli.render.api import render, render_views
from avatarcli.render.camera import Camera, orbit_camera
from avatarcli.render.sh import eval_sh, sh_basis, sh_to_rgb
from avatarcli.render.torch_raster import RasterSettings, project, rasterize, render_torch
from tests.reference_raster import rasterize as reference

D = torch.float64


def _cam(W=32, H=24, f=40.0, viewmat=None) -> Camera:
    K = torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]], dtype=D)
    return Camera(K, torch.eye(4, dtype=D) if viewmat is None else viewmat.to(D), W, H)


def _gauss(means, quats, scales, opac, rgb) -> Gaussians:
    t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64))  # noqa: E731
    sh = ((t(rgb) - 0.5) / SH_C0)[:, None, :]
    return Gaussians(t(means), t(quats), t(scales), t(opac), sh)


def _expected_single(mean_w, quat_wxyz, scale, opac, cam: Camera):
    """Closed-form image of one Gaussian, derived here with numpy + scipy (independent of the renderer)."""
    V = cam.viewmat.numpy()
    K = cam.K.numpy()
    m = V[:3, :3] @ np.asarray(mean_w) + V[:3, 3]
    x, y, z = m
    w, qx, qy, qz = quat_wxyz
    R = Rotation.from_quat([qx, qy, qz, w]).as_matrix()  # scipy is xyzw
    S3 = R @ np.diag(np.square(scale)) @ R.T
    Sc = V[:3, :3] @ S3 @ V[:3, :3].T
    fx, fy = K[0, 0], K[1, 1]
    J = np.array([[fx / z, 0, -fx * x / z**2], [0, fy / z, -fy * y / z**2]])
    S2 = J @ Sc @ J.T + 0.3 * np.eye(2)
    mu = np.array([fx * x / z + K[0, 2], fy * y / z + K[1, 2]])
    cols, rows = np.meshgrid(np.arange(cam.width), np.arange(cam.height))
    d = np.stack([cols - mu[0], rows - mu[1]], -1)  # integer pixel centres
    q = np.einsum("...i,ij,...j->...", d, np.linalg.inv(S2), d)
    a = np.minimum(0.999, opac * np.exp(-0.5 * q))
    return np.where(a >= 1 / 255, a, 0.0), z


@pytest.mark.parametrize(
    "mean, quat, scale, opac, viewmat",
    [
        ([0.0, 0.0, 2.0], [1, 0, 0, 0], [0.05, 0.05, 0.05], 0.8, None),  # isotropic at the image centre
        ([0.13, -0.08, 2.5], [0.9, 0.3, -0.2, 0.25], [0.12, 0.03, 0.06], 0.6, None),  # anisotropic, off centre
        ([0.02, 0.01, -0.03], [0.7, -0.1, 0.5, 0.4], [0.04, 0.01, 0.02], 0.9, "orbit"),  # rotated camera
    ],
)
def test_single_gaussian_matches_closed_form(mean, quat, scale, opac, viewmat):
    if viewmat == "orbit":
        oc = orbit_camera(35.0, -20.0, distance=0.5, width=40, height=30, fov_deg=30)
        cam = Camera(oc.K.to(D), oc.viewmat.to(D), 40, 30)
    else:
        cam = _cam()
    q = np.asarray(quat) / np.linalg.norm(quat)
    rgb = [0.9, 0.4, 0.2]
    g = _gauss([mean], [quat], [scale], [opac], [rgb])
    out = render(g, cam, backend="torch")
    a, z = _expected_single(mean, q, scale, opac, cam)
    assert a.max() > 0.3 and (a == 0).any()  # the Gaussian is in view and has a border
    np.testing.assert_allclose(out.alpha[..., 0].numpy(), a, atol=1e-5)
    np.testing.assert_allclose(out.rgb.numpy(), a[..., None] * np.array(rgb), atol=1e-5)
    hit = a > 0
    np.testing.assert_allclose(out.depth[..., 0].numpy()[hit], z, rtol=1e-6)
    assert (out.depth[..., 0].numpy()[~hit] == 0).all()


def test_integer_pixel_centres():
    """A Gaussian projecting exactly onto pixel (x=5, y=7) peaks there, symmetrically."""
    cam = _cam(16, 16, f=20.0)
    x = (5 - cam.K[0, 2].item()) * 2.0 / 20.0
    y = (7 - cam.K[1, 2].item()) * 2.0 / 20.0
    g = _gauss([[x, y, 2.0]], [[1, 0, 0, 0]], [[0.08, 0.08, 0.08]], [0.9], [[1, 1, 1]])
    a = render(g, cam, backend="torch").alpha[..., 0]
    assert divmod(int(a.argmax()), 16) == (7, 5)
    assert torch.isclose(a[7, 4], a[7, 6], rtol=1e-4) and torch.isclose(a[6, 5], a[8, 5], rtol=1e-4)


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_front_gaussian_occludes_regardless_of_input_order(order):
    cam = _cam()
    means = [[0.0, 0.0, 1.5], [0.02, 0.0, 3.0]]
    scales = [[0.05] * 3, [0.1] * 3]
    opac = [0.9, 0.8]
    rgb = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    g = _gauss(*[[v[i] for i in order] for v in (means, [[1, 0, 0, 0]] * 2, scales, opac, rgb)])
    out = render(g, cam, backend="torch")
    a1, _ = _expected_single(means[0], [1, 0, 0, 0], scales[0], opac[0], cam)
    a2, _ = _expected_single(means[1], [1, 0, 0, 0], scales[1], opac[1], cam)
    exp_rgb = a1[..., None] * np.array(rgb[0]) + ((1 - a1) * a2)[..., None] * np.array(rgb[1])
    np.testing.assert_allclose(out.rgb.numpy(), exp_rgb, atol=1e-5)
    np.testing.assert_allclose(out.alpha[..., 0].numpy(), 1 - (1 - a1) * (1 - a2), atol=1e-5)
    centre = out.rgb[cam.height // 2, cam.width // 2]
    assert centre[0] > 0.7 and centre[2] < 0.2  # red in front


def test_background_blending():
    cam = _cam()
    bg = torch.tensor([0.2, 0.4, 0.6], dtype=D)
    g = _gauss([[0.0, 0.0, 2.0]], [[1, 0, 0, 0]], [[0.05] * 3], [0.7], [[1.0, 1.0, 0.0]])
    out = render(g, cam, background=bg, backend="torch")
    a, _ = _expected_single([0.0, 0.0, 2.0], [1, 0, 0, 0], [0.05] * 3, 0.7, cam)
    exp = a[..., None] * np.array([1.0, 1.0, 0.0]) + (1 - a[..., None]) * bg.numpy()
    np.testing.assert_allclose(out.rgb.numpy(), exp, atol=1e-6)
    assert torch.equal(out.rgb[0, 0], bg)


@pytest.mark.parametrize(
    "opacs, composited",
    [
        ([0.995, 0.99, 0.5], 1),  # T would fall to 5e-5 at the 2nd: it and everything behind are skipped
        ([0.995, 0.9, 0.5], 3),  # T stays above 1e-4: all three composited
    ],
)
def test_transmittance_cutoff(opacs, composited):
    cam = _cam(9, 9, f=10.0)
    cols = [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]
    # huge Gaussians centred on the centre pixel: alpha there is the opacity itself
    g = _gauss([[0, 0, 1.0], [0, 0, 2.0], [0, 0, 3.0]], [[1, 0, 0, 0]] * 3, [[5.0] * 3] * 3, opacs, cols)
    out = render(g, cam, backend="torch")
    T, exp = 1.0, np.zeros(3)
    for i in range(composited):
        exp += T * opacs[i] * np.array(cols[i])
        T *= 1 - opacs[i]
    np.testing.assert_allclose(out.rgb[4, 4].numpy(), exp, atol=1e-9)
    np.testing.assert_allclose(out.alpha[4, 4, 0].item(), 1 - T, atol=1e-9)


def test_near_plane_culls():
    cam = _cam()
    g = _gauss([[0, 0, 0.005], [0, 0, -1.0]], [[1, 0, 0, 0]] * 2, [[0.001] * 3] * 2, [0.9] * 2, [[1, 1, 1]] * 2)
    out = render(g, cam, backend="torch")
    assert out.alpha.abs().max() == 0


def test_sh_degree0_colour():
    sh0 = torch.tensor([[[0.7, -0.2, -3.0]]], dtype=D)  # [1, 1, 3]
    rgb = sh_to_rgb(sh0, torch.tensor([[0.3, 0.1, 1.0]], dtype=D))
    np.testing.assert_allclose(rgb.numpy()[0], np.maximum(sh0.numpy()[0, 0] * SH_C0 + 0.5, 0.0), atol=1e-12)
    assert rgb[0, 2] == 0  # clamp_min(., 0)
    cam = _cam(9, 9, f=10.0)
    g = Gaussians(
        torch.tensor([[0, 0, 1.0]], dtype=D),
        torch.tensor([[1.0, 0, 0, 0]], dtype=D),
        torch.full((1, 3), 5.0, dtype=D),
        torch.tensor([0.9], dtype=D),
        sh0,
    )
    np.testing.assert_allclose(render(g, cam, backend="torch").rgb[4, 4].numpy(), 0.9 * rgb[0].numpy(), atol=1e-9)


def _real_sh_scipy(deg: int, m: int, dirs: np.ndarray) -> np.ndarray:
    """gsplat's real SH from scipy's complex Y_l^m (which carries the Condon-Shortley phase)."""
    from scipy.special import sph_harm_y

    x, y, z = dirs.T
    theta = np.arccos(np.clip(z, -1, 1))
    phi = np.mod(np.arctan2(y, x), 2 * np.pi)
    Y = sph_harm_y(deg, abs(m), theta, phi)
    if m == 0:
        return Y.real
    return math.sqrt(2) * (Y.real if m > 0 else Y.imag)


def test_sh_degree3_against_scipy():
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(50, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    ours = sh_basis(3, torch.from_numpy(dirs)).numpy()  # [50, 16]
    ref = np.stack([_real_sh_scipy(deg, m, dirs) for deg in range(4) for m in range(-deg, deg + 1)], -1)
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    # colour: directions need not be unit; uses the first (deg+1)^2 coefficients
    sh = torch.from_numpy(rng.normal(size=(50, 16, 3)))
    col = eval_sh(sh, torch.from_numpy(dirs * 3.0), degree=2).numpy()
    np.testing.assert_allclose(col, np.einsum("nk,nkc->nc", ref[:, :9], sh.numpy()[:, :9]), atol=1e-10)


def test_view_direction_is_mean_minus_campos():
    """Degree-1 colour: Y_1,0 = c*z with z the world direction from the camera to the mean."""
    cam = orbit_camera(0.0, 0.0, distance=1.0, width=9, height=9)  # camera on +z, looking at -z
    cam = Camera(cam.K.to(D), cam.viewmat.to(D), 9, 9)
    sh = torch.zeros(1, 4, 3, dtype=D)
    sh[0, 2] = torch.tensor([1.0, -1.0, 0.0], dtype=D)  # coefficient of the z basis
    g = Gaussians(
        torch.zeros(1, 3, dtype=D),
        torch.tensor([[1.0, 0, 0, 0]], dtype=D),
        torch.full((1, 3), 3.0, dtype=D),
        torch.tensor([0.9], dtype=D),
        sh,
    )
    rgb = render(g, cam, backend="torch").rgb[4, 4]
    c1 = 0.4886025119029199  # dir = (0,0,-1): basis value -c1
    np.testing.assert_allclose(rgb.numpy(), 0.9 * np.maximum(np.array([-c1, c1, 0.0]) + 0.5, 0), atol=1e-9)


def test_chunking_gives_the_same_image(head_scene):
    g, cam = head_scene
    a = render_torch(g.means, g.quats, g.scales, g.opacities, g.sh, cam.viewmat, cam.K, cam.width, cam.height)
    small = RasterSettings(max_fragments=997)
    b = render_torch(
        g.means, g.quats, g.scales, g.opacities, g.sh, cam.viewmat, cam.K, cam.width, cam.height, settings=small
    )
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)
    assert a[1].max() > 0.9


def test_render_views_and_sh_degree(head_scene):
    g, cam = head_scene
    cams = [orbit_camera(y, 0.0, width=32, height=32) for y in (0.0, 90.0)]
    outs = render_views(g, cams, backend="torch")
    assert len(outs) == 2 and outs[0].rgb.shape == (32, 32, 3)
    assert not torch.allclose(outs[0].rgb, outs[1].rgb)
    d0 = render(g, cams[0], backend="torch", sh_degree=0).rgb
    g0 = Gaussians(g.means, g.quats, g.scales, g.opacities, g.sh[:, :1])
    torch.testing.assert_close(d0, render(g0, cams[0], backend="torch").rgb)
    with pytest.raises(ValueError):
        render(g0, cams[0], backend="torch", sh_degree=1)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    cam = _cam(12, 10, f=14.0)
    n = 4
    means = torch.tensor(np.c_[rng.uniform(-0.3, 0.3, (n, 2)), rng.uniform(1.5, 2.5, n)], dtype=D)
    quats = torch.tensor(rng.normal(size=(n, 4)), dtype=D)
    scales = torch.tensor(rng.uniform(0.08, 0.2, (n, 3)), dtype=D)
    opac = torch.tensor(rng.uniform(0.4, 0.9, n), dtype=D)
    sh = torch.tensor(rng.normal(size=(n, 4, 3)) * 0.3, dtype=D)
    wr = torch.tensor(rng.normal(size=(10, 12, 3)), dtype=D)
    wa = torch.tensor(rng.normal(size=(10, 12, 1)), dtype=D)
    bg = torch.tensor([0.3, 0.5, 0.7], dtype=D)

    def loss(m, q, s, o, c):
        out = render(Gaussians(m, q, s, o, c), cam, background=bg, backend="torch")
        return (out.rgb * wr).sum() + (out.alpha * wa).sum() + (out.depth * out.alpha).sum() * 0.1

    inputs = tuple(t.clone().requires_grad_(True) for t in (means, quats, scales, opac, sh))
    assert render(Gaussians(*[t.detach() for t in inputs]), cam, backend="torch").alpha.max() > 0.5
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def _layered_scene(dtype) -> tuple[Gaussians, Camera]:
    """Elongated, rotated, overlapping Gaussians in 4 depth layers (the T < 1e-4 cut-off and the 0.999
    clamp both happen), one of them seen edge-on, on a non-square image."""
    rng = np.random.default_rng(7)
    n = 60
    means = np.c_[rng.uniform(-0.35, 0.35, (n, 2)), 1.5 + 0.25 * (np.arange(n) % 4) + rng.uniform(0, 0.01, n)]
    quats = rng.normal(size=(n, 4))
    scales = rng.uniform(0.05, 0.25, (n, 3)) * np.where(np.arange(n)[:, None] == 5, [1.0, 0.02, 1.0], 1.0)
    opac = np.where(rng.uniform(size=n) < 0.5, 0.9997, rng.uniform(0.3, 0.95, n))  # ~half clamped at 0.999
    sh = rng.normal(size=(n, 4, 3)) * 0.4
    t = lambda x: torch.tensor(x, dtype=dtype)  # noqa: E731
    cam = _cam(45, 31, f=38.0).to(torch.device("cpu"), dtype)
    return Gaussians(t(means), t(quats), t(scales), t(opac), t(sh)), cam


def _render_and_grads(raster, g: Gaussians, cam: Camera, settings=RasterSettings()):
    """rgb, alpha, depth of the torch pipeline with `raster` as its compositing, and the gradients of a
    fixed random linear functional of them w.r.t. every Gaussian parameter."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (g.means, g.quats, g.scales, g.opacities, g.sh)]
    m, q, s, o, sh = leaves
    p = project(m, q, s, o, cam.viewmat, cam.K, cam.width, cam.height)
    campos = -cam.viewmat[:3, :3].T @ cam.viewmat[:3, 3]
    bg = torch.tensor([0.3, 0.5, 0.7], dtype=m.dtype)
    stats: dict = {}
    rgb, alpha, depth = raster(
        p, sh_to_rgb(sh[p.ids], m[p.ids] - campos, 1), cam.width, cam.height, bg, settings, stats
    )
    gen = torch.Generator().manual_seed(1)
    wr, wa, wd = (torch.rand(x.shape, generator=gen, dtype=m.dtype) for x in (rgb, alpha, depth))
    ((rgb * wr).sum() + (alpha * wa).sum() + 0.1 * (depth * alpha * wd).sum()).backward()
    return (rgb.detach(), alpha.detach(), depth.detach()), [t.grad for t in leaves], stats


@pytest.mark.parametrize("scene", ["layered64", "layered32", "head32"])
def test_matches_the_reference_rasterizer(scene, head_scene):
    """Row segments + hand-written backward vs the bounding-box / autograd implementation it replaced
    (tests/reference_raster.py): the same fragments, images and gradients."""
    if scene == "head32":
        g, cam = head_scene
    else:
        g, cam = _layered_scene(torch.float64 if scene == "layered64" else torch.float32)
    new, new_grads, new_stats = _render_and_grads(rasterize, g, cam)
    old, old_grads, old_stats = _render_and_grads(reference, g, cam)
    assert new[1].max() > 0.99 and new[1].min() < 0.01  # opaque and empty pixels both present
    assert 0 < new_stats["composited"] < 0.9 * new_stats["fragments"]  # the cut-off drops fragments
    if scene == "layered64":  # float64: the same fragments, the same numbers up to rounding
        assert new_stats == old_stats
        for x, y in zip(new, old):
            torch.testing.assert_close(x, y, atol=1e-10, rtol=0)  # float64 sums in another order
        for name, x, y in zip(("means", "quats", "scales", "opacities", "sh"), new_grads, old_grads):
            assert float((x - y).norm() / y.norm()) < 1e-9, name
        return
    # float32: sigma's rounding (another formula) may move a fragment across alpha = 1/255, which changes
    # its pixel by at most 1/255 of a colour; everywhere else the two agree to float32 rounding
    assert abs(new_stats["fragments"] - old_stats["fragments"]) <= 2
    for x, y in zip(new[:2], old[:2]):
        d = (x - y).abs().amax(-1)
        assert float(d.max()) <= 1 / 255 and int((d > 2e-6).sum()) <= 2
    for name, x, y in zip(("means", "quats", "scales", "opacities", "sh"), new_grads, old_grads):
        assert float((x - y).norm() / y.norm()) < 1e-3, name


def test_bands_give_the_same_image_and_gradients():
    """Bands of a few image rows (max_fragments tiny) vs one band: identical up to float64 rounding."""
    g, cam = _layered_scene(torch.float64)
    one, one_grads, _ = _render_and_grads(rasterize, g, cam)
    many, many_grads, _ = _render_and_grads(rasterize, g, cam, RasterSettings(max_fragments=50))
    for x, y in zip(one + tuple(one_grads), many + tuple(many_grads)):
        torch.testing.assert_close(x, y, atol=1e-10, rtol=1e-9)


def test_layered_gradients_match_finite_differences():
    """The hand-written backward through the 0.999 clamp, the T < 1e-4 cut-off and several bands, by gradcheck."""
    rng = np.random.default_rng(5)
    cam = _cam(15, 11, f=13.0)
    n = 5  # stacked front to back; the first is clamped at 0.999 near its centre, the cut-off follows soon after
    means = torch.tensor(np.c_[rng.uniform(-0.15, 0.15, (n, 2)), 1.0 + 0.3 * np.arange(n)], dtype=D)
    quats = torch.tensor(rng.normal(size=(n, 4)), dtype=D)
    scales = torch.tensor(rng.uniform(0.4, 0.8, (n, 3)), dtype=D)
    opac = torch.tensor([0.9995, 0.9995, 0.99, 0.9, 0.8], dtype=D)
    sh = torch.tensor(rng.normal(size=(n, 1, 3)) * 0.4, dtype=D)
    small = RasterSettings(max_fragments=60)
    stats: dict = {}
    render_torch(means, quats, scales, opac, sh, cam.viewmat, cam.K, 15, 11, None, 0, small, stats)
    assert stats["composited"] < stats["fragments"] - 30  # the cut-off drops fragments behind opaque pixels

    def loss(m, q, s, o, c):
        rgb, alpha, depth = render_torch(m, q, s, o, c, cam.viewmat, cam.K, 15, 11, None, 0, small)
        w = torch.linspace(-1, 1, rgb.numel(), dtype=D).reshape(rgb.shape)
        return (rgb * w).sum() + (alpha * w[..., :1]).sum() + 0.1 * (depth * alpha).sum()

    inputs = tuple(t.clone().requires_grad_(True) for t in (means, quats, scales, opac, sh))
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_colour_only_gradients_equal_the_full_ones():
    """With the geometry detached (visibility's probe), the backward skips its part; the colour gradient
    is the same as in a full backward."""
    g, cam = _layered_scene(torch.float64)
    _, full, _ = _render_and_grads(rasterize, g, cam)
    sh = g.sh.detach().clone().requires_grad_(True)
    out = render(Gaussians(g.means, g.quats, g.scales, g.opacities, sh), cam, torch.tensor([0.3, 0.5, 0.7], dtype=D))
    gen = torch.Generator().manual_seed(1)
    wr, wa, wd = (torch.rand(x.shape, generator=gen, dtype=D) for x in (out.rgb, out.alpha, out.depth))
    ((out.rgb * wr).sum() + (out.alpha * wa).sum() + 0.1 * (out.depth * out.alpha * wd).sum()).backward()
    torch.testing.assert_close(sh.grad, full[4], atol=1e-12, rtol=1e-10)
