"""The invert-gan stage and command on a synthetic FLAME photo with the tiny random generator:
the inversion frame puts the head's vertices on the same crop pixels through the GAN camera as
through the photo camera and the crop; the command writes the artifact, says what it lacks in
one line, and exits 3 without GAN weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from avatarcli.gan.camera import GanView, project_gan
from avatarcli.gan.convert import save_generator
from avatarcli.gan.generator import GanConfig, TriplaneGenerator
from avatarcli.gan.invert import InversionConfig, read_inversion_artifact
from avatarcli.stages.invert_gan import invert_photo
from avatarcli.testing.synthetic_photo import make_synthetic_photo

SIZE = 64
FAST = InversionConfig(w_steps=4, pti_steps=4, w_lr=0.05, pti_lr=3e-3, w_avg_samples=32)


@pytest.fixture(scope="module")
def photo(flame_model):
    return make_synthetic_photo(flame_model, size=SIZE)


def _tiny() -> TriplaneGenerator:
    torch.manual_seed(0)
    return TriplaneGenerator(GanConfig.tiny())


def test_the_inversion_frame_agrees_with_the_photo_camera(photo):
    inv = invert_photo(_tiny(), photo.rgb, photo.landmarks, photo.mask[..., 0].numpy(), photo.fit, photo.model, FAST)
    fr = inv.frame
    assert fr is not None and fr.crop_size == 16 and fr.image_size == (SIZE, SIZE)
    assert len(inv.w_losses) == 4 and len(inv.pti_losses) == 4 and inv.pti_losses[-1] < inv.w_losses[0]
    v = photo.vertices[::50]
    in_photo = photo.camera.project(v).double().numpy()  # the synthetic photo's own camera
    want = (in_photo @ fr.crop_affine[:, :2].T + fr.crop_affine[:, 2] + 0.5) / fr.crop_size
    got = project_gan(inv.camera, GanView(inv.camera, fr.scale, fr.pivot).to_gan(v)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    # the pivot is the centre of the head's bounding box, at the GAN origin
    torch.testing.assert_close(fr.pivot, 0.5 * (photo.vertices.amin(0) + photo.vertices.amax(0)))


@pytest.fixture(scope="module")
def cli_files(flame_dir, tmp_path_factory):
    from avatarcli.flame.artifact import write_flame_fit
    from avatarcli.flame.loader import load_flame
    from avatarcli.io.hashing import sha256_file
    from avatarcli.landmarks.artifact import Landmarks, write_landmarks

    model = load_flame(flame_dir)
    p = make_synthetic_photo(model, size=SIZE)
    d = tmp_path_factory.mktemp("invert-gan")
    Image.fromarray(p.rgb).save(d / "face.png")
    Image.fromarray((p.mask[..., 0].numpy() * 255).astype(np.uint8)).save(d / "region.png")
    write_flame_fit(d / "face.flame.npz", p.fit)
    lm = Landmarks(
        (SIZE, SIZE), p.landmarks, np.ones(68), np.array([0, 0, SIZE, SIZE]), sha256_file(d / "face.png"), "truth"
    )
    write_landmarks(d / "face.landmarks.npz", lm)
    save_generator(_tiny(), d / "tiny.safetensors")
    return d


def _args(d, flame_dir, out, *extra):
    return ["invert-gan", str(d / "face.png"), "--fit", str(d / "face.flame.npz"), "-l", str(d / "face.landmarks.npz"),
            "-o", str(out), "--flame", str(flame_dir), "--mask", str(d / "region.png"), "--device", "cpu",
            "--w-steps", "3", "--pti-steps", "2", *extra]  # fmt: skip


def test_cli_writes_the_inversion_and_warns_once_without_lpips(cli_files, flame_dir, tmp_path, capsys, monkeypatch):
    from avatarcli.cli import main

    out = tmp_path / "face.gan.safetensors"
    monkeypatch.setenv("AVATAR_WEIGHTS_LPIPS_VGG", str(tmp_path / "no-lpips.pth"))  # the LPIPS weights are not there
    rc = main(_args(cli_files, flame_dir, out, "--weights", str(cli_files / "tiny.safetensors")))
    err = capsys.readouterr().err
    assert rc == 0, err
    assert sum("L2 only" in line for line in err.splitlines()) == 1 and "Traceback" not in err
    inv = read_inversion_artifact(out)
    assert inv.frame is not None and inv.ws.shape == (1, inv.generator.num_ws, 16)
    assert inv.w_losses and inv.pti_losses


def test_cli_without_gan_weights_exits_3_naming_the_convert_command(cli_files, flame_dir, tmp_path, capsys):
    from avatarcli.cli import main

    out = tmp_path / "x.safetensors"
    rc = main(_args(cli_files, flame_dir, out, "--no-lpips"))
    err = capsys.readouterr().err
    assert rc == 3 and "avatar weights convert panohead" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    rc = main(_args(cli_files, flame_dir, out, "--weights", str(cli_files / "face.png")))
    assert rc == 2 and "not a readable safetensors" in capsys.readouterr().err and not out.exists()


def test_the_camera_offset_is_fixed_per_photo_and_carried_to_every_prior_view(photo, tmp_path):
    """A generator with PanoHead's t_mapping: the inversion renders from the photo's GAN camera
    moved by the learned offset (as PanoHead's projector does), the file keeps that offset, and
    the prior adds the same offset to every novel view's camera."""
    import dataclasses

    from avatarcli.gan.generator import offset_camera
    from avatarcli.gan.invert import write_inversion
    from avatarcli.gan.prior import GanPrior
    from avatarcli.stages.invert_gan import gan_target

    torch.manual_seed(1)
    G = TriplaneGenerator(dataclasses.replace(GanConfig.tiny(), camera_offset=True, use_background=True))
    with torch.no_grad():
        G.t_mapping.layers[-1].bias.fill_(0.05)  # a visible offset
    region = photo.mask[..., 0].numpy()
    inv = invert_photo(G, photo.rgb, photo.landmarks, region, photo.fit, photo.model, FAST)
    verts, _, root = photo.fit.canonical(photo.model)
    from avatarcli.render.camera import photo_camera

    view = gan_target(photo.rgb, photo.landmarks, region, photo_camera(photo.fit, root), verts, 16).view
    assert inv.camera_offset is not None and float(inv.camera_offset.abs().max()) > 1e-3
    torch.testing.assert_close(inv.camera, offset_camera(view.c, inv.camera_offset))
    write_inversion(tmp_path / "inv.safetensors", inv)
    back = read_inversion_artifact(tmp_path / "inv.safetensors")
    torch.testing.assert_close(back.camera_offset, inv.camera_offset)
    seen = []
    prior = GanPrior(back)
    real = prior.G.synthesis
    prior.G.synthesis = lambda ws, c, *a, **k: (seen.append(c.clone()), real(ws, c, *a, **k))[1]  # type: ignore[method-assign]
    prior.render([photo.orbit(90.0)])
    from avatarcli.gan.camera import camera_to_gan

    c_plain, _ = camera_to_gan(photo.orbit(90.0), prior.view, 16)
    torch.testing.assert_close(seen[0], offset_camera(c_plain, inv.camera_offset))
