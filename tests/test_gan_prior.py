"""--prior gan end to end on the CPU: the tiny random generator inverted to a synthetic FLAME photo,
then the denoise rounds with GanPrior (no features needed). The input view stays the hard
constraint, the unseen side moves towards the GAN's render, the prior keeps the Denoiser contract,
and `avatar denoise --prior gan` runs. Random tiny weights do not make a head: this checks the
plumbing and the geometry, not the look."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from avatarcli.diffusion.rounds import RoundsConfig, novel_cameras
from avatarcli.gan.generator import GanConfig, TriplaneGenerator
from avatarcli.gan.invert import InversionConfig, write_inversion
from avatarcli.gan.prior import GanPrior
from avatarcli.gaussians.init import InitConfig, init_gaussians
from avatarcli.render.api import render
from avatarcli.stages.denoise import DenoiseConfig, denoise_head
from avatarcli.stages.invert_gan import invert_photo
from avatarcli.testing.synthetic_photo import make_synthetic_photo

SIZE = 48
FIT = DenoiseConfig(steps=40, rounds=0, max_side=SIZE, device="cpu", backend="torch")
ROUNDS = replace(FIT, rounds=2, round_steps=25, yaws=(180.0,), pitches=(0.0,), round_weight_max=1.0,
                 strength_start=0.5, strength_end=0.5)  # fmt: skip


@pytest.fixture(scope="module")
def scene(flame_model):
    photo = make_synthetic_photo(flame_model, size=SIZE)
    torch.manual_seed(0)
    G = TriplaneGenerator(replace(GanConfig.tiny(), density_shift=2.0))  # opaque enough to show a "head"
    cfg = InversionConfig(w_steps=3, pti_steps=3, w_avg_samples=16)
    inv = invert_photo(G, photo.rgb, photo.landmarks, photo.mask[..., 0].numpy(), photo.fit, photo.model, cfg)
    init = init_gaussians(photo.model, photo.fit, photo.rgb, InitConfig(n_gaussians=1500))
    return photo, inv, init


def test_the_prior_keeps_the_denoiser_contract(scene):
    photo, inv, _ = scene
    prior = GanPrior(inv)
    cams = [photo.orbit(120.0), photo.orbit(-60.0)]
    imgs = torch.rand(2, SIZE, SIZE, 3)
    assert torch.equal(prior.denoise(imgs, cams, None, 0.0, [1, 2]), imgs)  # strength 0: untouched
    a = prior.denoise(imgs, cams, None, 0.6, [1, 2])
    assert torch.equal(a, prior.denoise(imgs, cams, None, 0.6, [7, 8]))  # deterministic, seeds unused
    rgb, alpha = prior.render(cams)
    assert rgb.shape == (2, SIZE, SIZE, 3) and alpha.shape == (2, SIZE, SIZE, 1)
    assert 0.05 < float(alpha.mean()) < 1.0
    torch.testing.assert_close(a, alpha * rgb + (1 - alpha) * imgs)
    empty = alpha[..., 0] < 1e-6
    if empty.any():
        assert torch.equal(a[empty], imgs[empty])


def _side_error(head, cam, prior) -> float:
    """Mean |head - GAN| at `cam` where both the head and the GAN are opaque."""
    with torch.no_grad():
        out = render(head.gaussians, cam, torch.ones(3), backend="torch")
    g_rgb, g_alpha = prior.render([cam])
    m = ((out.alpha > 0.5) & (g_alpha[0] > 0.5)).float()
    return float(((out.rgb - g_rgb[0]).abs() * m).sum() / (3 * m.sum()))


def test_gan_rounds_pull_the_unseen_side_and_keep_the_photo(scene):
    photo, inv, init = scene
    prior = GanPrior(inv)
    mask = photo.mask[..., 0].numpy()
    base, s0 = denoise_head(init, photo.model, photo.rgb, config=FIT, mask=mask)
    head, s1 = denoise_head(init, photo.model, photo.rgb, config=ROUNDS, mask=mask, denoiser=prior)
    assert s1.rounds is not None and len(s1.rounds.rounds) == 2
    assert s1.psnr >= s0.psnr - 1.0, (s1.psnr, s0.psnr)  # the photo stays the hard constraint
    cam = novel_cameras(photo.vertices, photo.camera, RoundsConfig(yaws=(180.0,), pitches=(0.0,)))[0]
    before, after = _side_error(base, cam, prior), _side_error(head, cam, prior)
    assert after < 0.8 * before, (before, after)


def test_cli_denoise_with_the_gan_prior(scene, flame_dir, tmp_path, capsys):
    from avatarcli.cli import main
    from avatarcli.flame.loader import load_flame
    from avatarcli.gaussians.ply import read_gaussian_ply, write_gaussian_ply

    model = load_flame(flame_dir)
    photo = make_synthetic_photo(model, size=SIZE)
    _, inv, _ = scene
    Image.fromarray(photo.rgb).save(tmp_path / "face.png")
    write_gaussian_ply(tmp_path / "init.ply", init_gaussians(model, photo.fit, photo.rgb, InitConfig(n_gaussians=800)))
    write_inversion(tmp_path / "face.gan.safetensors", inv)
    args = ["denoise", str(tmp_path / "init.ply"), "-i", str(tmp_path / "face.png"), "--flame", str(flame_dir),
            "-o", str(tmp_path / "head.ply"), "--device", "cpu", "--size", str(SIZE), "--steps", "5",
            "--round-steps", "3", "--rounds", "1"]  # fmt: skip
    assert main([*args, "--prior", "gan"]) == 2  # no --gan
    assert "--gan INVERSION" in capsys.readouterr().err and not (tmp_path / "head.ply").exists()
    assert main([*args, "--prior", "nerf"]) == 2 and "expected one of" in capsys.readouterr().err
    rc = main([*args, "--prior", "gan", "--gan", str(tmp_path / "face.gan.safetensors")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert read_gaussian_ply(tmp_path / "head.ply").gaussians.n > 0
    assert np.isfinite(read_gaussian_ply(tmp_path / "head.ply").gaussians.means.numpy()).all()
