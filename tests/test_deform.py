"""The FLAME mesh deformed to the head region (avatarcli.flame.deform): outline, smoothness,
semantic freedom, storage in head.ply, and re-posing the haired head."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation
from scipy.spatial.transform import Rotation

from avatarcli.animate.pose import HeadPoser
from avatarcli.errors import ArtifactError
from avatarcli.flame.deform import DeformConfig, face_hold, outside_region, pose_deformed
from avatarcli.flame.forward import flame_forward, shaped_joints
from avatarcli.gaussians.init import InitConfig, init_gaussians, init_with_details, sample_surface
from avatarcli.gaussians.ply import read_gaussian_ply, write_gaussian_ply
from avatarcli.render.api import render
from avatarcli.render.camera import Camera, intrinsics, photo_camera
from avatarcli.testing.synthetic_photo import make_synthetic_photo

SIZE = 96


def _hair_region(photo) -> np.ndarray:
    """The true head region grown by ~12 % of the image above the eyes: hair the FLAME mesh lacks."""
    m = photo.mask[..., 0].numpy() > 0.5
    grown = binary_dilation(m, iterations=SIZE // 8)
    rows = np.nonzero(m.any(1))[0]
    cut = int(rows.min() + 0.5 * (rows.max() - rows.min()))
    grown[cut:] = m[cut:]
    return grown.astype(np.float32)


@pytest.fixture(scope="module")
def haired(flame_model):
    photo = make_synthetic_photo(flame_model, size=SIZE, yaw_deg=0.0, pitch_deg=0.0)
    region = _hair_region(photo)
    cfg = InitConfig(n_gaussians=4000, deform=DeformConfig(size=SIZE), mouth_fraction=0.0)  # the FLAME mesh only
    ply, info = init_with_details(flame_model, photo.fit, photo.rgb, cfg, region=region)
    return photo, region, ply, info


def _alpha(ply, cam: Camera) -> torch.Tensor:
    with torch.no_grad():
        return render(ply.gaussians, cam, torch.ones(3), backend="torch").alpha[..., 0]


def test_deformed_head_covers_the_region_and_stays_inside(haired, flame_model):
    photo, region, ply, info = haired
    plain = init_gaussians(flame_model, photo.fit, photo.rgb, InitConfig(n_gaussians=4000))
    cam = photo_camera(photo.fit, photo.root_joint)
    inside = torch.from_numpy(region) > 0.5
    for head, lo, hi in ((plain, 0.0, 0.85), (ply, 0.95, 1.0)):
        a = _alpha(head, cam) > 0.5  # the torch rasterizer's alpha, not the deformation's own fill
        coverage = float((a & inside).sum() / inside.sum())
        assert lo <= coverage <= hi
    a = _alpha(ply, cam)
    assert float((a * ~inside).sum() / a.sum()) < 0.05  # spill
    assert ply.meta.offsets is not None and ply.meta.offsets.shape == (flame_model.n_vertices, 3)


def test_face_is_held_and_hair_grows_behind(haired, flame_model):
    photo, _, ply, info = haired
    d = torch.as_tensor(ply.meta.offsets).norm(dim=-1)
    hold = face_hold(flame_model, ply.meta.fit.canonical_params(flame_model), photo.vertices, photo.faces)
    assert float(d[hold > 0.99].max()) < 1e-3  # the landmark-fitted face moves < 1 mm
    v = photo.vertices
    c = 0.5 * (v.amin(0) + v.amax(0))
    back_top = (v[:, 2] < c[2] - 0.04) & (v[:, 1] > c[1] + 0.03)  # unseen from the front
    assert back_top.sum() > 50
    side_top = (v[:, 0].abs() > 0.06) & (v[:, 1] > c[1] + 0.02) & (v[:, 2].abs() < 0.02)
    # not a bald cap: the unseen back carries the side's hair volume (within a factor 2)
    assert float(d[back_top].mean()) > 0.5 * float(d[side_top].mean()) > 0.004
    # left/right: a frontal photo of a symmetric head gives mirrored offsets
    left, right = back_top & (v[:, 0] > 0.02), back_top & (v[:, 0] < -0.02)
    assert float(d[left].mean()) == pytest.approx(float(d[right].mean()), rel=0.15)


def test_deformed_surface_does_not_fold(haired):
    photo, _, ply, _ = haired
    v0, f = photo.vertices, photo.faces
    v1 = v0 + torch.as_tensor(ply.meta.offsets)

    def normals(v):
        t = v[f]
        return torch.linalg.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])

    n0, n1 = normals(v0), normals(v1)
    big = n0.norm(dim=-1) > 1e-10  # skip degenerate triangles at the pole
    cos = (n0 * n1).sum(-1)[big] / (n0.norm(dim=-1) * n1.norm(dim=-1))[big]
    assert float((cos > 0.0).float().mean()) > 0.995  # no flipped triangles (the synthetic pole's fan may twist)
    assert float((cos > 0.5).float().mean()) > 0.97
    e = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    stretch = (v1[e[:, 0]] - v1[e[:, 1]]).norm(dim=-1) / (v0[e[:, 0]] - v0[e[:, 1]]).norm(dim=-1).clamp_min(1e-9)
    assert 0.5 < float(stretch.quantile(0.005)) and float(stretch.quantile(0.995)) < 3.0


def test_no_gaussian_outside_the_region(haired):
    photo, region, ply, _ = haired
    cam = photo_camera(photo.fit, photo.root_joint)
    uv = cam.project(ply.gaussians.means)
    ix, iy = uv[:, 0].round().long().clamp(0, SIZE - 1), uv[:, 1].round().long().clamp(0, SIZE - 1)
    grown = binary_dilation(region > 0.5, iterations=1)
    assert grown[iy.numpy(), ix.numpy()].all()
    assert ply.gaussians.n == 4000  # oversampled to the asked count


def test_the_neck_ends_at_the_regions_lower_edge(flame_model):
    """Known truth: the FLAME-format model's own silhouette in a frontal photo, with everything below a
    'collar' row (40 % of the way from the chin to the neck's end) taken out of the region. Deformed to
    that region, the neck's vertices below the row move up onto it, and the surface carries (almost) no
    area below it: area-weighted samples of the whole mesh (what seeding draws from, for every view)
    land below the row as rarely as on the collar line itself, where the plain mesh has a whole neck
    there; the head above is unchanged, and posing at the canonical parameters gives the stored head."""
    photo = make_synthetic_photo(flame_model, size=SIZE, yaw_deg=0.0, pitch_deg=0.0)
    cam = photo_camera(photo.fit, photo.root_joint)
    m = photo.mask[..., 0].numpy() > 0.5
    rows = np.nonzero(m.any(1))[0]
    params = photo.fit.canonical_params(flame_model)
    hold = face_hold(flame_model, params, photo.vertices, photo.faces)
    chin = float(cam.project(photo.vertices[hold > 0.5])[:, 1].max())
    collar = int(round(chin + 0.4 * (rows.max() - chin)))
    region = m.copy()
    region[collar + 1 :] = False  # rows 0..collar are head
    runs = {}
    for cut in (True, False):
        cfg = InitConfig(n_gaussians=3000, deform=DeformConfig(size=SIZE, cut_neck=cut), mouth_fraction=0.0)
        ply, info = init_with_details(flame_model, photo.fit, photo.rgb, cfg, region=region.astype(np.float32))
        pts, _ = sample_surface(info.vertices, info.faces, 40_000, torch.Generator().manual_seed(0))
        runs[cut] = (ply, info, float((cam.project(pts)[:, 1] > collar + 1.0).float().mean()))
    (ply, info, below), (_, plain, below_plain) = runs[True], runs[False]
    d = info.deformation
    assert d is not None and d.cut is not None and int(d.cut.sum()) > 100
    assert below_plain > 0.02  # the plain deformation keeps the neck below the collar
    assert below < 0.1 * below_plain  # the cut one ends there
    rows_cut = cam.project(info.vertices[d.cut])[:, 1]
    assert float(rows_cut.max()) <= collar + 0.75  # onto the region's lowest row (pixel centres)
    keep = ~d.cut
    torch.testing.assert_close(info.vertices[keep], plain.vertices[keep], atol=1e-6, rtol=0)
    canon = ply.meta.fit.canonical_params(flame_model)
    base = flame_forward(flame_model, canon, with_landmarks=False).vertices
    off, hair = torch.as_tensor(ply.meta.offsets), torch.as_tensor(ply.meta.hair)
    v = pose_deformed(flame_model, canon, canon, photo.vertices, base, off, hair)[0]
    torch.testing.assert_close(v, info.vertices, atol=2e-6, rtol=0)


def test_outside_region_by_projection():
    cam = Camera(intrinsics(10.0, 20, 20), torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])), 20, 20)
    region = torch.zeros(20, 20)
    region[:, 10:] = 1  # right half of the image
    pts = torch.tensor([[0.5, 0.0, -1.0], [-0.5, 0.0, -1.0], [0.5, 0.0, 1.0]])  # right, left, behind
    assert outside_region(pts, cam, region, tol_px=0).tolist() == [False, True, True]


def test_ply_round_trip_with_offsets(haired, tmp_path):
    _, _, ply, _ = haired
    path = tmp_path / "head.ply"
    write_gaussian_ply(path, ply)
    assert b'"version":2' in path.read_bytes()[:400_000]
    back = read_gaussian_ply(path)
    assert np.array_equal(back.meta.offsets, ply.meta.offsets) and np.array_equal(back.meta.hair, ply.meta.hair)
    again = tmp_path / "again.ply"
    write_gaussian_ply(again, back)
    assert again.read_bytes() == path.read_bytes()
    plain = dataclasses.replace(ply, meta=dataclasses.replace(ply.meta, offsets=None, hair=None, version=1))
    write_gaussian_ply(path, plain)
    assert b'"version":1' in path.read_bytes()[:200_000] and read_gaussian_ply(path).meta.offsets is None


def test_bad_offsets_are_an_artifact_error(haired, tmp_path):
    _, _, ply, _ = haired
    bad = dataclasses.replace(ply, meta=dataclasses.replace(ply.meta, hair=ply.meta.hair[:-1]))
    path = tmp_path / "bad.ply"
    write_gaussian_ply(path, bad)
    with pytest.raises(ArtifactError, match="offsets hold"):
        read_gaussian_ply(path)


def _frames(meta, model, **pose):
    p = meta.fit.canonical_params(model)
    return dataclasses.replace(p, **{k: torch.tensor([v], dtype=torch.float32) for k, v in pose.items()})


def test_posing_at_the_canonical_parameters_is_the_stored_head(haired, flame_model):
    photo, _, ply, _ = haired
    poser = HeadPoser.from_ply(flame_model, ply)
    canon = ply.meta.fit.canonical_params(flame_model)
    base = flame_forward(flame_model, canon, with_landmarks=False).vertices
    off, hair = torch.as_tensor(ply.meta.offsets), torch.as_tensor(ply.meta.hair)
    v = pose_deformed(flame_model, canon, canon, photo.vertices, base, off, hair)[0]
    torch.testing.assert_close(v, photo.vertices + off, atol=2e-6, rtol=0)
    g = poser.gaussians(v)
    torch.testing.assert_close(g.means, ply.gaussians.means, atol=2e-6, rtol=0)


def test_hair_turns_with_the_head_and_ignores_the_jaw(haired, flame_model):
    photo, _, ply, _ = haired
    meta = ply.meta
    canon = meta.fit.canonical_params(flame_model)
    off, hair = torch.as_tensor(meta.offsets), torch.as_tensor(meta.hair)
    p = photo.vertices + off
    w = flame_model.lbs_weights
    rigid = (hair > 0.999) & (w[:, 0] < 1e-6)  # pure hair vertices, not on the neck ring
    assert rigid.sum() > 100

    def posed(**pose):
        fr = _frames(meta, flame_model, **pose)
        base = flame_forward(flame_model, fr, with_landmarks=False).vertices
        return pose_deformed(flame_model, canon, fr, photo.vertices, base, off, hair)[0]

    jaw = posed(jaw_pose=[0.35, 0.0, 0.0])
    torch.testing.assert_close(jaw[rigid], p[rigid], atol=1e-5, rtol=0)  # the jaw does not stretch hair
    moved = (w[:, 2] > 0.5) & (hair < 1e-3)
    assert float((jaw[moved] - p[moved]).norm(dim=-1).min()) > 1e-3  # while the chin does move
    aa = np.array([0.3, 0.4, -0.1])  # a nod with a turn, at the neck joint
    nod = posed(neck_pose=aa.tolist())
    J1 = shaped_joints(flame_model, canon.shape, canon.expr)[0, 1].double().numpy()
    expect = Rotation.from_rotvec(aa).apply(p[rigid].double().numpy() - J1) + J1  # rigid about the neck joint
    np.testing.assert_allclose(nod[rigid].double().numpy(), expect, atol=2e-5)


# ----------------------------------------------------------------------------- denoise: the head region's figures


def test_denoise_reports_head_region_figures_and_cuts_outside(haired, flame_model):
    from avatarcli.quality import coverage, region_psnr, spill
    from avatarcli.stages.denoise import DenoiseConfig, denoise_head

    photo, _, ply, _ = haired
    left = photo.mask[..., 0].numpy() > 0.5
    left[:, SIZE // 2 :] = False  # a region that holds only the image's left half of the head
    head, stats = denoise_head(ply, flame_model, photo.rgb, config=DenoiseConfig(steps=0, rounds=0, max_side=SIZE,
                               device="cpu"), mask=left.astype(np.float32))  # fmt: skip
    cam = photo_camera(photo.fit, photo.root_joint)
    assert (cam.project(head.gaussians.means)[:, 0] < SIZE // 2 + 0.5).all()  # nothing left on the right half
    with torch.no_grad():
        out = render(head.gaussians, cam, torch.ones(3), backend="torch")
    assert stats.coverage == pytest.approx(coverage(out.alpha, left), abs=1e-6)
    # the splats along the cut reach ~1 px across it (64 px image): uncut, half the head would spill
    assert stats.spill == pytest.approx(spill(out.alpha, left), abs=1e-6) and stats.spill < 0.2
    assert stats.psnr_region == pytest.approx(region_psnr(out.rgb, photo.image, left), abs=1e-3)


def test_a_diverged_fit_is_an_error(haired, flame_model):
    from avatarcli.errors import FitDivergedError
    from avatarcli.stages.denoise import DenoiseConfig, denoise_head

    photo, region, ply, _ = haired
    sh = ply.gaussians.sh.clone()
    sh[::7] = float("nan")
    bad = dataclasses.replace(ply, gaussians=dataclasses.replace(ply.gaussians, sh=sh), raw=None)
    with pytest.raises(FitDivergedError, match="diverged"):
        denoise_head(bad, flame_model, photo.rgb, config=DenoiseConfig(steps=0, rounds=0, max_side=SIZE,
                     device="cpu"), mask=region)  # fmt: skip


def test_a_perturbed_fit_is_pulled_onto_the_true_outline(flame_model):
    """The FLAME fit a few px off (shifted, other identity): the deformed mesh covers the true head."""
    photo = make_synthetic_photo(flame_model, size=SIZE)
    fit = photo.fit
    shift = 3.0 * float(-fit.translation[2]) / float(fit.K[0, 0])  # 3 px in metres at the head's depth
    off = dataclasses.replace(fit, translation=fit.translation + np.float32([shift, shift, 0]), shape=fit.shape * 0.5)
    region = photo.mask[..., 0].numpy() > 0.5
    cfg = InitConfig(n_gaussians=3000, deform=DeformConfig(size=SIZE))
    plain = init_gaussians(flame_model, off, photo.rgb, InitConfig(n_gaussians=3000))
    deformed = init_gaussians(flame_model, off, photo.rgb, cfg, region=region.astype(np.float32))
    cam = photo_camera(off, deformed.meta.root_joint)
    rows = np.nonzero(region.any(1))[0]
    above = region.copy()
    above[rows.max() - (rows.max() - rows.min()) // 8 :] = False  # the mesh's open neck end is not extended
    above = torch.from_numpy(above)
    cov = [float(((_alpha(h, cam) > 0.5) & above).sum() / above.sum()) for h in (plain, deformed)]
    assert cov[0] < 0.9 and cov[1] > 0.97


# ----------------------------------------------------------------------------- the CLI re-poses the haired head


def test_render_camera_and_animate_a_haired_head(flame_dir, tmp_path):
    from PIL import Image

    from avatarcli.cli import main
    from avatarcli.flame.loader import load_flame

    model = load_flame(flame_dir)
    photo = make_synthetic_photo(model, size=SIZE, yaw_deg=0.0, pitch_deg=0.0)
    region = _hair_region(photo)
    cfg = InitConfig(n_gaussians=3000, deform=DeformConfig(size=SIZE), mouth_fraction=0.0)  # the FLAME mesh only
    ply = init_gaussians(model, photo.fit, photo.rgb, cfg, region=region)
    head = tmp_path / "head.ply"
    write_gaussian_ply(head, ply)
    png = tmp_path / "photo_view.png"
    assert main(["render", str(head), "-o", str(png), "--camera", "photo", "--backend", "torch"]) == 0
    drawn = (np.asarray(Image.open(png).convert("RGB")) < 250).any(-1)  # not the white background
    assert drawn.shape == region.shape
    inside = region > 0.5
    assert (drawn & inside).sum() / inside.sum() > 0.95  # the photo's camera sees the haired outline
    jaw = np.zeros((3, 3), np.float32)
    jaw[:, 0] = [0.0, 0.2, 0.4]
    np.savez(tmp_path / "jaw.npz", jaw_pose=jaw, fps=np.float32(10))
    seq = tmp_path / "seq"
    argv = ["animate", str(head), "--flame", str(flame_dir), "--expr", str(tmp_path / "jaw.npz"), "--ply-seq", str(seq),
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    hair = torch.as_tensor(ply.meta.hair)[model.faces[ply.binding]].min(1).values > 0.999  # on pure-hair triangles
    assert hair.sum() > 100
    first = read_gaussian_ply(seq / "frame_00000.ply").gaussians.means
    last = read_gaussian_ply(seq / "frame_00002.ply").gaussians.means
    torch.testing.assert_close(last[hair], first[hair], atol=1e-5, rtol=0)  # hair ignores the jaw
    assert float((last - first).norm(dim=-1).max()) > 1e-3  # the chin does open


def test_unseen_hair_takes_the_seen_hair_colour():
    from avatarcli.gaussians.init import ColourInfo, hair_colours

    g = torch.Generator().manual_seed(0)
    pts = torch.nn.functional.normalize(torch.randn(2000, 3, generator=g), dim=-1)  # a unit sphere
    seen = pts[:, 2] > 0  # the front half is seen
    hair = (pts[:, 1] > 0).float()  # the upper half is hair
    rgb = torch.where(seen[:, None], torch.tensor([0.4, 0.2, 0.1]), torch.tensor([0.8, 0.6, 0.5]))  # seen: brown
    c = ColourInfo(
        rgb=rgb, visible=seen, mirrored=torch.zeros_like(seen), prior=~seen, skin=torch.tensor([0.8, 0.6, 0.5])
    )
    out = hair_colours(c, pts, hair, torch.ones_like(seen))
    back_hair = ~seen & (hair > 0.5)
    torch.testing.assert_close(out.rgb[back_hair], rgb[seen][0].expand(int(back_hair.sum()), 3))  # no bald cap
    assert torch.equal(out.rgb[~back_hair], rgb[~back_hair])  # the rest (face, unseen skin) unchanged
    assert torch.equal(out.hair, back_hair) and not (out.prior & back_hair).any()
