"""The mouth gate (avatarcli.gaussians.mouth: gate_opacities / head_gate) in still renders, the fit
and the diffusion rounds: a head whose photo has closed lips renders, fits and refines exactly as
the same head without its interior (no teeth through the lip slit); a head whose photo has the jaw
open shows a dark mouth in its still render; head.ply carries the lip state (version 4) and heads
written before it (version 3) still read and render (the interior as stored, or gated when FLAME is
given). Synthetic FLAME with a lip slit (avatarcli.testing.synthetic_mouth), torch rasterizer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from avatarcli.diffusion.rounds import render_novel_views
from avatarcli.gaussians.fit import FitConfig, ViewTarget, fit_gaussians
from avatarcli.gaussians.init import InitConfig, init_gaussians, init_with_details
from avatarcli.gaussians.mouth import MouthConfig, gate_opacities, head_gate, interior_visibility
from avatarcli.gaussians.ply import GaussianPly, read_gaussian_ply, write_gaussian_ply
from avatarcli.render.camera import orbit_camera, photo_camera
from avatarcli.stages.render import RenderConfig, iter_frames, plan_render
from avatarcli.testing.synthetic_mouth import make_synthetic_flame_with_mouth
from avatarcli.testing.synthetic_photo import make_synthetic_photo

SIZE = 96
N = 12000
TEETH = torch.tensor(MouthConfig().teeth_rgb)


def _heads(model, jaw: float):
    """(photo, the head with its interior, the same surface samples without one)."""
    photo = make_synthetic_photo(model, size=SIZE, yaw_deg=0.0, pitch_deg=0.0, jaw_open=jaw, expr_scale=0.0)
    ply, info = init_with_details(model, photo.fit, photo.rgb, InitConfig(n_gaussians=N))
    ns = int(info.points.shape[0])
    plain = init_gaussians(model, photo.fit, photo.rgb, InitConfig(n_gaussians=ns, mouth_fraction=0.0))
    assert torch.equal(plain.gaussians.means, ply.gaussians.means[:ns])  # same surface samples
    return photo, ply, plain


@pytest.fixture(scope="module")
def model():
    return make_synthetic_flame_with_mouth()


@pytest.fixture(scope="module")
def closed(model):
    return _heads(model, 0.0)


def _still(ply_or_path, tmp_path, flame=None) -> np.ndarray:
    """The render stage's photo-camera view (float [H, W, 3] in 0..1)."""
    plan = plan_render(ply_or_path, tmp_path / "v.png", RenderConfig(camera="photo", backend="torch"), flame=flame)
    return next(iter_frames(plan)).astype(np.float64) / 255.0


def _old(ply: GaussianPly) -> GaussianPly:
    """The head as avatarcli wrote it before version 4: anchors, no lip state."""
    assert ply.meta is not None
    return dataclasses.replace(ply, meta=dataclasses.replace(ply.meta, lip_opening=None, rest_lip_opening=None))


def _mouth_box(ply: GaussianPly, model) -> tuple[slice, slice]:
    """Pixel box around the lips (landmarks 48-67 of the canonical head through the photo camera)."""
    from avatarcli.flame.forward import flame_forward

    meta = ply.meta
    lm = flame_forward(model, meta.fit.canonical_params(model)).landmarks[0, 48:]  # [20, 3]
    uv = photo_camera(meta.fit, meta.root_joint).project(lm).numpy()
    (x0, y0), (x1, y1) = np.floor(uv.min(0)).astype(int) - 2, np.ceil(uv.max(0)).astype(int) + 2
    return slice(y0, y1), slice(x0, x1)


def _interior(ply: GaussianPly) -> GaussianPly:
    """The head's mouth interior alone (the Gaussians bound to its anchors), its metadata kept."""
    assert ply.meta is not None and ply.binding is not None
    idx = torch.nonzero(ply.binding >= ply.meta.n_faces).reshape(-1)
    return dataclasses.replace(ply, gaussians=ply.gaussians.subset(idx), binding=ply.binding[idx])


def test_closed_mouth_still_render_shows_no_teeth(model, closed, tmp_path, monkeypatch):
    """A closed-mouth head (version 4) renders exactly as the same head without its interior; the same
    head as written before version 4 draws its teeth (what the gate removes). The synthetic lip slit is
    closed and the stratified surface opaque, so they are checked on the interior alone: before the
    stratified samples (63770c2) they also shone through sampling holes at the lips."""
    monkeypatch.delenv("AVATAR_FLAME", raising=False)
    photo, ply, plain = closed
    write_gaussian_ply(tmp_path / "head.ply", ply)
    back = read_gaussian_ply(tmp_path / "head.ply")
    assert back.meta.version == 4 and head_gate(back.meta).visibility == 0.0
    ref, gated = _still(plain, tmp_path), _still(tmp_path / "head.ply", tmp_path)
    assert np.abs(gated - ref).max() <= 1 / 255  # an 8-bit level at most (float sums in another order)
    assert np.abs(_still(_old(ply), tmp_path) - ref).max() < 0.02  # v3, drawn as stored: the lips hide it
    inside = _still(_old(_interior(ply)), tmp_path)  # v3: no lip state, no FLAME given -> drawn (warned)
    hidden = _still(_interior(ply), tmp_path)  # v4: gated
    box = _mouth_box(ply, model)
    white = np.ones(3)
    dist = lambda im: np.linalg.norm(im[box] - TEETH.numpy(), axis=-1)  # noqa: E731
    # teeth-coloured: closer to the teeth's colour than the white background is, by 0.02
    assert int((dist(inside) < np.linalg.norm(white - TEETH.numpy()) - 0.02).sum()) > 3
    assert np.abs(hidden - 1.0).max() <= 1 / 255  # the gate leaves nothing of it
    # with FLAME, the old head gets the same gate, derived from its fit
    assert head_gate(_old(ply).meta, model) == head_gate(ply.meta)
    monkeypatch.setattr("avatarcli.stages.render.load_flame", lambda path: model)
    assert np.abs(_still(_old(ply), tmp_path, flame="flame.pkl") - gated).max() == 0.0


def test_open_jaw_photo_keeps_its_interior(model, tmp_path, monkeypatch):
    """A head made from a photo with the jaw open (lips apart in the canonical head) is drawn with its
    interior fully shown: the gate is 1 and the still render is the ungated one. (The synthetic lip
    slit's triangles stretch over the opening of a canonical open jaw, so the dark inside is checked
    on animated frames: test_mouth.test_open_mouth_is_dark_inside, bench/bench_mouth.py.)"""
    monkeypatch.delenv("AVATAR_FLAME", raising=False)
    photo, ply, plain = _heads(model, 0.3)
    assert head_gate(ply.meta).visibility == 1.0
    img, old = _still(ply, tmp_path), _still(_old(ply), tmp_path)
    assert np.array_equal(img, old)
    assert np.abs(_still(_interior(ply), tmp_path) - 1.0).max() > 0.05  # the interior is drawn


def _bound_scene(ply: GaussianPly, model):
    verts, faces, _ = ply.meta.canonical(model)
    return ply.to_bound(verts, faces), verts, faces


def test_fit_and_rounds_leave_a_closed_mouths_interior_out(model, closed):
    """fit_gaussians with the head's gate fits the surface exactly as a fit of the head without the
    interior, and leaves the interior's parameters untouched (no gradient passes the gate); without
    the gate the interior changes the fit. The rounds' novel views equal the plain head's."""
    photo, ply, plain = closed
    (b, v, f), (bp, vp, fp) = _bound_scene(ply, model), _bound_scene(plain, model)
    ns = bp.n
    cam = photo_camera(ply.meta.fit, ply.meta.root_joint)
    image = torch.from_numpy(photo.rgb.astype(np.float32) / 255.0)
    target = ViewTarget(cam, image, torch.ones(SIZE, SIZE, 1), 1.0)
    cfg = FitConfig(steps=6, densify_every=0, backend="torch")
    gate = head_gate(ply.meta)
    fitted, _ = fit_gaussians(b, v, f, [target], dataclasses.replace(cfg, mouth=gate))
    ref, _ = fit_gaussians(bp, vp, fp, [target], cfg)
    loose, _ = fit_gaussians(b, v, f, [target], cfg)
    for name in ("local_xyz", "local_log_scale", "opacity_logit", "sh"):
        a, r, raw = getattr(fitted, name), getattr(ref, name), getattr(b, name)
        torch.testing.assert_close(a[:ns], r, atol=2e-5, rtol=0)
        assert torch.equal(a[ns:], raw[ns:])  # the interior untouched
    assert float((loose.sh[:ns] - ref.sh).abs().max()) > 1e-3  # ungated, the interior did take part

    cams = [
        orbit_camera(y, 0, distance=0.3, target=(0, -0.035, 0.06), fov_deg=20, width=48, height=48) for y in (0, 45)
    ]
    rgb, alpha = render_novel_views(b, v, f, cams, dataclasses.replace(cfg, mouth=gate))
    rgb_p, alpha_p = render_novel_views(bp, vp, fp, cams, cfg)
    torch.testing.assert_close(rgb, rgb_p, atol=1e-5, rtol=0)
    torch.testing.assert_close(alpha, alpha_p, atol=1e-5, rtol=0)


def test_gate_opacities_against_a_loop():
    """gate_opacities on [T, N] opacities with one visibility per frame, against a plain loop."""
    g = torch.Generator().manual_seed(0)
    op = torch.rand(3, 7, generator=g)
    interior = torch.tensor([0, 0, 1, 0, 1, 1, 0], dtype=torch.bool)
    vis = interior_visibility(torch.tensor([0.0, 0.03, 0.2]), 0.0)
    out = gate_opacities(op, interior, vis)
    for t in range(3):
        for i in range(7):
            want = op[t, i] * vis[t] if interior[i] else op[t, i]
            assert float(out[t, i]) == pytest.approx(float(want), abs=1e-7)
    assert float(vis[0]) == 0.0 and float(vis[2]) == 1.0 and 0 < float(vis[1]) < 1


def test_export_hides_a_closed_mouths_interior(closed, tmp_path):
    """`avatar export` gates as render draws: a closed mouth's interior exported with opacity ~0 (a
    .compressed.ply drops it), every other Gaussian's stored logit bit for bit."""
    from avatarcli.gaussians.export import export_file

    photo, ply, plain = closed
    write_gaussian_ply(tmp_path / "head.ply", ply)
    head = read_gaussian_ply(tmp_path / "head.ply")
    ns = plain.gaussians.n
    export_file(head, tmp_path / "out.ply")
    back = read_gaussian_ply(tmp_path / "out.ply")
    assert back.gaussians.n == head.gaussians.n
    assert float(back.gaussians.opacities[ns:].max()) < 1e-6
    assert np.array_equal(back.raw.opacity_logits[:ns], head.raw.opacity_logits[:ns])
    export_file(head, tmp_path / "out.compressed.ply")
    assert read_gaussian_ply(tmp_path / "out.compressed.ply").gaussians.n <= ns
