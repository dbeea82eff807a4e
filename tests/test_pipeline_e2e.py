"""End to end through the CLI, on the CPU, at a small size:
landmarks (bring-your-own points) -> fit-flame -> init-gaussians -> denoise --rounds 0 -> render."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from avatarcli.testing.synthetic_photo import make_synthetic_photo

SIZE = 72


def _run(args, capsys):
    from avatarcli.cli import main

    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert rc == 0, f"avatar {args[0]} exited {rc}: {err}"


def test_photo_to_rendered_head(flame_dir, tmp_path, capsys):
    from avatarcli.flame.artifact import read_flame_fit
    from avatarcli.flame.loader import load_flame
    from avatarcli.gaussians.losses import psnr
    from avatarcli.gaussians.ply import read_gaussian_ply

    photo = make_synthetic_photo(load_flame(flame_dir), size=SIZE, yaw_deg=10.0)
    img = tmp_path / "face.png"
    Image.fromarray(photo.rgb).save(img)
    np.save(tmp_path / "points.npy", photo.landmarks.astype(np.float32))  # the "detector": the true points

    _run(["landmarks", img, "--landmarks", tmp_path / "points.npy", "-o", tmp_path / "face.landmarks.npz"], capsys)
    _run(
        [
            "fit-flame",
            tmp_path / "face.landmarks.npz",
            "--flame",
            flame_dir,
            "-o",
            tmp_path / "face.flame.npz",
            "--device",
            "cpu",
        ],
        capsys,
    )
    fit = read_flame_fit(tmp_path / "face.flame.npz")
    assert fit.mean_error_px < 1.5  # the landmarks are the model's own: a near-exact fit
    _run(
        [
            "init-gaussians",
            tmp_path / "face.flame.npz",
            "--image",
            img,
            "--flame",
            flame_dir,
            "-o",
            tmp_path / "init.ply",
            "-n",
            "2500",
        ],
        capsys,
    )
    _run(["denoise", tmp_path / "init.ply", "--image", img, "--flame", flame_dir, "-o", tmp_path / "head.ply",
          "--rounds", "0", "--steps", "40", "--device", "cpu", "--size", SIZE], capsys)  # fmt: skip
    _run(
        [
            "render",
            tmp_path / "head.ply",
            "-o",
            tmp_path / "overlay.png",
            "--camera",
            "photo",
            "--backend",
            "torch",
            "--background",
            "white",
        ],
        capsys,
    )
    _run(
        [
            "render",
            tmp_path / "head.ply",
            "-o",
            tmp_path / "side.png",
            "--yaw",
            "40",
            "--size",
            "64",
            "--backend",
            "torch",
        ],
        capsys,
    )

    head = read_gaussian_ply(tmp_path / "head.ply")
    assert head.binding is not None and head.meta is not None and head.gaussians.n > 0
    overlay = np.asarray(Image.open(tmp_path / "overlay.png").convert("RGB"))
    assert overlay.shape == photo.rgb.shape
    # the render from the photo's camera lies over the photo. The silhouette comes from a
    # landmark-only FLAME fit, so it is close, not exact: check its overlap with the true head,
    # and the colours inside the head away from the rim (true alpha eroded by 2 px)
    from avatarcli.diffusion.rounds import dilate

    truth = photo.mask[..., 0] > 0.5
    drawn = torch.from_numpy((np.abs(overlay.astype(np.int16) - 255).max(-1) > 10).copy())
    iou = float((truth & drawn).sum()) / float((truth | drawn).sum())
    assert iou > 0.9, iou
    inner = 1.0 - dilate((~truth).float()[None, ..., None], 2)[0]  # [H, W, 1]
    got = torch.from_numpy(overlay.copy()).float() / 255.0
    value = float(psnr(got, photo.image, inner))
    assert value > 30.0, value
    side = np.asarray(Image.open(tmp_path / "side.png").convert("RGB"))
    assert side.shape == (64, 64, 3) and side.std() > 5  # not a blank image
