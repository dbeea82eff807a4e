"""init-gaussians: surface seeding, photo colours with visibility, mirror/skin fallback, PLY, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from avatarcli.gaussians.init import InitConfig, init_gaussians, init_with_details, sample_surface
from avatarcli.gaussians.model import sh0_to_rgb
from avatarcli.gaussians.ply import read_gaussian_ply, write_gaussian_ply
from avatarcli.testing.synthetic_photo import make_synthetic_photo
from avatarcli.testing.synthetic_scene import procedural_texture

N = 4000


@pytest.fixture(scope="module")
def photo(flame_model):
    return make_synthetic_photo(flame_model, size=80, yaw_deg=25.0)


@pytest.fixture(scope="module")
def seeded(photo):
    return init_with_details(
        photo.model,
        photo.fit,
        photo.rgb,
        InitConfig(n_gaussians=N, skin_rgb=(0.1, 0.9, 0.2), mouth_fraction=0.04),
    )


def _nearest(rgb: np.ndarray, uv: torch.Tensor) -> torch.Tensor:
    """Independent lookup: the photo's nearest pixel at uv [N, 2] -> [N, 3] float."""
    H, W = rgb.shape[:2]
    ix = uv[:, 0].round().long().clamp(0, W - 1)
    iy = uv[:, 1].round().long().clamp(0, H - 1)
    return torch.from_numpy(rgb).float()[iy, ix] / 255.0


def test_count_binding_and_meta(seeded, photo):
    ply, info = seeded
    F = photo.faces.shape[0]
    assert ply.gaussians.n == N and ply.binding.shape == (N,)
    ns = info.points.shape[0]
    assert int(ply.binding.min()) >= 0 and int(ply.binding[:ns].max()) < F  # surface: FLAME triangles
    assert set(ply.binding[ns:].tolist()) == {F, F + 1}  # the mouth interior: the rigid anchors (skull, jaw)
    assert ply.meta.n_faces == F and ply.meta.n_anchors == 2
    assert ply.meta.sh_degree == 1 and ply.gaussians.sh.shape == (N, 4, 3)
    assert torch.all(ply.gaussians.sh[:, 1:] == 0)
    assert ply.meta.flame_model_sha256 == photo.fit.flame_model_sha256
    np.testing.assert_allclose(ply.meta.fit.global_pose, photo.fit.global_pose, atol=1e-6)
    # canonical head: the surface samples (the mouth interior follows them) lie on the canonical mesh
    assert 0.03 * N < N - ns < 0.05 * N  # the mouth's share (InitConfig.mouth_fraction)
    g = ply.gaussians.subset(torch.arange(ns))
    tri = photo.vertices[photo.faces[ply.binding[:ns]]]  # [ns, 3, 3]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = n / n.norm(dim=-1, keepdim=True)
    dist = ((g.means - tri[:, 0]) * n).sum(-1).abs()
    assert float(dist.max()) < 1e-5
    # flat Gaussians: the smallest axis is the thin one, ~10x smaller
    s = g.scales.sort(dim=-1).values
    assert torch.allclose(s[:, 0] * 10, s[:, 1], rtol=1e-3)
    assert torch.all((g.opacities > 0.85) & (g.opacities < 0.95))


def test_area_weighted_uniform_sampling():
    # two triangles with areas 1 : 3
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [3**0.5, 0, 1], [0, 3**0.5, 1]])
    f = torch.tensor([[0, 1, 2], [3, 4, 5]])
    n = 40_000
    pts, face = sample_surface(v, f, n, torch.Generator().manual_seed(3))
    frac = float((face == 1).float().mean())
    assert abs(frac - 0.75) < 5 * (0.75 * 0.25 / n) ** 0.5  # 5 sigma of the binomial
    # uniform inside the triangle: the mean is the centroid, and the fraction near a corner matches its area
    small = pts[face == 0]
    assert torch.allclose(small.mean(0), v[:3].mean(0), atol=0.01)
    near_origin = ((small[:, 0] + small[:, 1]) < 0.5).float().mean()  # a sub-triangle of 1/4 the area
    assert abs(float(near_origin) - 0.25) < 0.02
    # same seed -> same samples
    pts2, face2 = sample_surface(v, f, n, torch.Generator().manual_seed(3))
    assert torch.equal(pts, pts2) and torch.equal(face, face2)


def test_visible_points_take_the_photo_colour(seeded, photo):
    ply, info = seeded
    c = info.colour
    vis = c.visible
    assert 0.2 < float(vis.float().mean()) < 0.7
    cam = info.camera
    pts = info.points
    uv = cam.project(pts)
    got = sh0_to_rgb(ply.gaussians.sh[: pts.shape[0], 0])  # surface samples (the mouth follows)
    # against the photo (nearest pixel; bilinear differs a little)
    err_photo = (got[vis] - _nearest(photo.rgb, uv[vis])).abs().mean(-1)
    assert float(err_photo.median()) < 0.03 and float(err_photo.mean()) < 0.06
    # against the true texture at those points (the photo shows it, blurred)
    truth = procedural_texture(pts[vis], photo.vertices.mean(0))
    assert float((got[vis] - truth).abs().mean()) < 0.08


def test_visibility_is_a_depth_test(seeded, photo):
    """Independent check: the true render's depth. Seen points lie on the front surface;
    points that face the camera inside the image but are flagged hidden lie behind it."""
    ply, info = seeded
    c, cam, pts, normals = info.colour, info.camera, info.points, info.normals
    from avatarcli.gaussians.binding import world_gaussians
    from avatarcli.render.api import render

    with torch.no_grad():
        out = render(world_gaussians(photo.truth, photo.vertices, photo.faces), cam, None, backend="torch")
    uv = cam.project(pts)
    z = (pts @ cam.viewmat[:3, :3].T + cam.viewmat[:3, 3])[:, 2]
    H, W = photo.size
    ix, iy = uv[:, 0].round().long().clamp(0, W - 1), uv[:, 1].round().long().clamp(0, H - 1)
    d, a = out.depth[iy, ix, 0], out.alpha[iy, ix, 0]
    facing = (normals * (cam.position - pts)).sum(-1) > 0.3 * (cam.position - pts).norm(dim=-1)
    solid = a > 0.95
    seen = c.visible & solid
    # on the visible surface: within a few mm (a splatted depth map sits slightly in front of the
    # surface where it is slanted); a surface behind it would be centimetres away (the head is ~20 cm deep)
    assert float((z[seen] - d[seen]).abs().median()) < 0.008
    assert float((z[seen] - d[seen]).abs().max()) < 0.03
    hidden = ~c.visible & facing & solid
    assert int(hidden.sum()) > 5  # a 25-degree yaw hides part of the far cheek behind the nose/face
    assert float((z[hidden] - d[hidden]).min()) > 0.0
    # nothing facing away from the camera is taken from the photo
    away = (normals * (cam.position - pts)).sum(-1) < 0
    assert not bool((c.visible & away).any())


def test_hidden_points_take_the_mirror_colour_or_the_prior(seeded, photo):
    ply, info = seeded
    c, cam, pts = info.colour, info.camera, info.points
    got = sh0_to_rgb(ply.gaussians.sh[: pts.shape[0], 0])  # surface samples (the mouth follows)
    m = c.mirrored
    assert int(m.sum()) > 20
    mirror_uv = cam.project(pts[m] * torch.tensor([-1.0, 1.0, 1.0]))
    err = (got[m] - _nearest(photo.rgb, mirror_uv)).abs().mean(-1)
    assert float(err.median()) < 0.03
    own_uv = cam.project(pts[m])  # not the own projection's colour (the point is hidden)
    assert float((got[m] - _nearest(photo.rgb, own_uv)).abs().mean()) > 2 * float(err.mean())
    # the rest (back of the head): exactly the configured skin prior
    p = c.prior
    assert int(p.sum()) > 0.2 * N
    assert torch.allclose(got[p], torch.tensor([0.1, 0.9, 0.2]).expand(int(p.sum()), 3), atol=1e-5)
    assert not bool((c.visible & c.mirrored).any() or (c.visible & c.prior).any() or (c.mirrored & c.prior).any())


def test_default_skin_prior_is_the_median_seen_colour(photo):
    _, info = init_with_details(photo.model, photo.fit, photo.rgb, InitConfig(n_gaussians=1500, seed=1))
    c = info.colour
    expected = c.rgb[c.visible].median(dim=0).values
    assert torch.allclose(c.skin, expected) and torch.allclose(c.rgb[c.prior], expected.expand(int(c.prior.sum()), 3))


def test_ply_round_trip_and_determinism(seeded, photo, tmp_path):
    ply, _ = seeded
    path = tmp_path / "init.ply"
    write_gaussian_ply(path, ply)
    back = read_gaussian_ply(path)
    assert torch.equal(back.binding, ply.binding)
    for name in ("means", "quats", "scales", "opacities", "sh"):
        assert torch.allclose(getattr(back.gaussians, name), getattr(ply.gaussians, name), atol=1e-6), name
    assert back.meta.to_json() == ply.meta.to_json()
    again = init_gaussians(
        photo.model, photo.fit, photo.rgb, InitConfig(n_gaussians=N, skin_rgb=(0.1, 0.9, 0.2), mouth_fraction=0.04)
    )
    assert torch.equal(again.gaussians.means, ply.gaussians.means)
    other = init_gaussians(photo.model, photo.fit, photo.rgb, InitConfig(n_gaussians=N, seed=5))
    assert not torch.equal(other.gaussians.means, ply.gaussians.means)


def test_wrong_image_size_is_an_input_error(photo):
    from avatarcli.errors import InputError

    with pytest.raises(InputError, match="fitted|fit was made"):
        init_gaussians(photo.model, photo.fit, photo.rgb[:-2], InitConfig(n_gaussians=100))


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def cli_files(flame_dir, tmp_path_factory):
    """A synthetic photo of the FLAME file's model, its PNG and its flame.npz."""
    from avatarcli.flame.artifact import write_flame_fit
    from avatarcli.flame.loader import load_flame

    model = load_flame(flame_dir)
    p = make_synthetic_photo(model, size=64)
    d = tmp_path_factory.mktemp("init-cli")
    Image.fromarray(p.rgb).save(d / "face.png")
    write_flame_fit(d / "face.flame.npz", p.fit)
    return d, p


def test_cli_init_gaussians(cli_files, flame_dir, tmp_path, capsys):
    from avatarcli.cli import main

    d, p = cli_files
    out = tmp_path / "init.ply"
    rc = main(
        [
            "init-gaussians",
            str(d / "face.flame.npz"),
            "--image",
            str(d / "face.png"),
            "--flame",
            str(flame_dir),
            "-o",
            str(out),
            "-n",
            "1500",
            "--sh-degree",
            "2",
            "--seed",
            "4",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    ply = read_gaussian_ply(out)
    assert ply.gaussians.n == 1500 and ply.meta.sh_degree == 2 and ply.binding is not None
    assert ply.meta.image_size == p.size


def test_cli_hash_mismatch(cli_files, flame_dir, tmp_path, capsys):
    from dataclasses import replace

    from avatarcli.cli import main
    from avatarcli.flame.artifact import read_flame_fit, write_flame_fit

    d, _ = cli_files
    bad = tmp_path / "other.flame.npz"
    write_flame_fit(bad, replace(read_flame_fit(d / "face.flame.npz"), flame_model_sha256="0" * 64))
    out = tmp_path / "init.ply"
    args = [
        "init-gaussians",
        str(bad),
        "--image",
        str(d / "face.png"),
        "--flame",
        str(flame_dir),
        "-o",
        str(out),
        "-n",
        "500",
    ]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and "sha256" in err and "other.flame.npz" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(args + ["--force"]) == 0 and out.exists()


def test_cli_bad_inputs(cli_files, flame_dir, tmp_path, capsys):
    from avatarcli.cli import main

    d, p = cli_files
    out = tmp_path / "init.ply"
    base = ["init-gaussians", str(d / "face.flame.npz"), "--flame", str(flame_dir), "-o", str(out), "-n", "300"]
    # missing image
    rc = main(base + ["--image", str(tmp_path / "nope.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.png" in err and "not found" in err
    # an image of another size than the fit's
    Image.fromarray(p.rgb[:, :60]).save(tmp_path / "cropped.png")
    rc = main(base + ["--image", str(tmp_path / "cropped.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "cropped.png" in err and "64x64" in err
    # a fit file that is not one
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    rc = main(
        [
            "init-gaussians",
            str(tmp_path / "junk.npz"),
            "--image",
            str(d / "face.png"),
            "--flame",
            str(flame_dir),
            "-o",
            str(out),
        ]
    )
    assert rc == 2 and "junk.npz" in capsys.readouterr().err
    # no FLAME model -> environment problem, exit 3
    rc = main(
        [
            "init-gaussians",
            str(d / "face.flame.npz"),
            "--image",
            str(d / "face.png"),
            "--flame",
            str(tmp_path / "noflame"),
            "-o",
            str(out),
        ]
    )
    assert rc == 3
    assert not out.exists()
