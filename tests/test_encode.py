"""`avatar encode` and the encode stage, with the tiny real-class models through the real resolver."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from avatarcli.cli import main
from avatarcli.diffusion.crop import CANONICAL_ANCHORS, align_face, anchors_from_landmarks, apply_affine, warp_to_crop
from avatarcli.diffusion.encode import (
    REGION_FACE,
    REGION_HAIR,
    REGION_NECK,
    encode_face,
    load_encode_models,
    region_lut,
    vae_encode,
)
from avatarcli.diffusion.features import read_features
from avatarcli.io.hashing import sha256_file
from avatarcli.landmarks.artifact import Landmarks, write_landmarks

SIZE = 64


def _face_points(left_eye, right_eye, rng) -> np.ndarray:
    """68 points whose eye/mouth group means form a triangle similar to the canonical anchors
    (so the crop alignment is exact), with zero-mean jitter inside each group."""
    le, re = np.asarray(left_eye, float), np.asarray(right_eye, float)
    s = np.linalg.norm(re - le) / 0.25  # canonical eye distance is 0.25 of the crop
    d = (re - le) / np.linalg.norm(re - le)
    mouth = (le + re) / 2 + 0.24 * s * np.array([-d[1], d[0]])  # 0.24 crop below the eye line
    lm = np.zeros((68, 2))
    for (lo, hi), p in zip([(36, 42), (42, 48), (48, 68)], [le, re, mouth]):
        off = rng.normal(0, 1.0, (hi - lo, 2))
        lm[lo:hi] = p + off - off.mean(0)
    return lm


def _photo_and_landmarks(folder, name="face", H=120, W=100, seed=0, sha=None):
    """A random photo and landmarks on it (eyes at y=50, mouth at y=80) with the photo's sha256."""
    rng = np.random.default_rng(seed)
    img = folder / f"{name}.png"
    Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).save(img)
    sx, sy = W / 100, H / 120
    lm = _face_points([35 * sx, 50 * sy], [65 * sx, 50 * sy], rng)
    lmp = folder / f"{name}.npz"
    write_landmarks(
        lmp, Landmarks((H, W), lm, np.ones(68), [20 * sx, 30 * sy, 80 * sx, 100 * sy], sha or sha256_file(img), "test")
    )
    return img, lmp, lm


@pytest.fixture(scope="module")
def encode_models(tiny_model_dirs):
    import os

    from avatarcli.weights import env_var_for

    old = {n: os.environ.get(env_var_for(n)) for n in tiny_model_dirs}
    for n, p in tiny_model_dirs.items():
        os.environ[env_var_for(n)] = str(p)
    try:
        yield load_encode_models("cpu")
    finally:
        for n, v in old.items():
            if v is None:
                os.environ.pop(env_var_for(n), None)
            else:
                os.environ[env_var_for(n)] = v


def test_region_lut():
    from avatarcli.testing.tiny_diffusion import CELEBAMASK_LABELS

    lut = region_lut({i: n for i, n in enumerate(CELEBAMASK_LABELS)}, 19)
    named = {n: int(lut[i]) for i, n in enumerate(CELEBAMASK_LABELS)}
    assert named["skin"] == named["nose"] == named["u_lip"] == named["l_ear"] == REGION_FACE
    assert named["hair"] == named["hat"] == REGION_HAIR and named["neck"] == named["neck_l"] == REGION_NECK
    assert named["background"] == named["cloth"] == 0
    # generic LABEL_i names fall back to the CelebAMask-HQ order; unknown names are background
    assert np.array_equal(region_lut({i: f"LABEL_{i}" for i in range(19)}, 19), lut)
    assert region_lut({0: "sky", 1: "hair.png"}, 2).tolist() == [0, REGION_HAIR]


def test_encode_face_matches_its_parts(encode_models):
    rng = np.random.default_rng(3)
    rgb = (rng.random((90, 80, 3)) * 255).astype(np.uint8)
    lm = _face_points([30, 40], [52, 43], rng)
    feats, al = encode_face(rgb, lm, encode_models, size=SIZE, image_sha256="ab" * 32)
    crop = torch.from_numpy(warp_to_crop(rgb, align_face(lm, SIZE)))[None]
    assert np.array_equal(feats.latents, vae_encode(encode_models.vae, crop)[0].numpy())
    assert np.array_equal(feats.image_embeds, encode_models.clip.embed(crop).numpy())
    assert feats.latents.shape == (4, SIZE // 8, SIZE // 8) and feats.image_embeds.shape == (1, 32)
    assert feats.mask_crop.shape == (SIZE, SIZE) and feats.mask_image.shape == (90, 80)
    labels = encode_models.parser.labels(crop)[0].numpy()
    lut = region_lut(encode_models.parser.id2label, 19)
    assert np.array_equal(feats.mask_crop, lut[labels])
    assert np.allclose(apply_affine(al.affine, anchors_from_landmarks(lm)), CANONICAL_ANCHORS * SIZE - 0.5)


def test_encode_cli_end_to_end(tmp_path, tiny_models, capsys):
    img, lmp, lm = _photo_and_landmarks(tmp_path)
    out = tmp_path / "out" / "face.safetensors"
    rc = main(["encode", str(img), "--landmarks", str(lmp), "-o", str(out), "--device", "cpu", "--size", str(SIZE)])
    assert rc == 0, capsys.readouterr().err
    f = read_features(out)
    assert f.image_sha256 == sha256_file(img)
    assert f.crop_size == SIZE and f.latents.shape == (4, 8, 8) and f.image_size == (120, 100)
    from avatarcli.weights import get_entry

    sd, fp = get_entry("sd-image-variations"), get_entry("face-parsing")
    assert f.models["vae"]["repo"] == sd.repo and f.models["vae"]["revision"] == sd.revision
    assert f.models["image_encoder"]["revision"] == sd.revision
    assert f.models["face_parser"]["repo"] == fp.repo and f.models["face_parser"]["revision"] == fp.revision
    assert np.allclose(apply_affine(f.affine, anchors_from_landmarks(lm)), CANONICAL_ANCHORS * SIZE - 0.5, atol=1e-4)
    assert [p.name for p in out.parent.iterdir()] == ["face.safetensors"]  # no temp files left


def test_encode_downscaled_photo_uses_working_pixels(tmp_path, tiny_models, monkeypatch):
    """Landmarks are in original pixels; the photo is downscaled when loaded: the crop must still sit on the face."""
    import avatarcli.stages.encode as stage
    from avatarcli.landmarks.artifact import read_landmarks
    from avatarcli.stages.encode import EncodeJob, encode_job

    img, lmp, lm = _photo_and_landmarks(tmp_path, H=240, W=200)
    real = stage.load_image
    monkeypatch.setattr(stage, "load_image", lambda p, **kw: real(p, max_side=120))
    loaded = real(img, max_side=120)
    assert loaded.scale == 0.5
    f = encode_job(
        EncodeJob(img, lmp, tmp_path / "x.safetensors", read_landmarks(lmp), sha256_file(img)),
        load_encode_models("cpu"),
        SIZE,
        False,
    )
    assert f.image_size == (120, 100)  # the working image
    working = loaded.to_working(lm)
    assert np.allclose(
        apply_affine(f.affine, anchors_from_landmarks(working)), CANONICAL_ANCHORS * SIZE - 0.5, atol=1e-4
    )


def test_encode_several_photos(tmp_path, tiny_models, capsys):
    lmdir = tmp_path / "lm"
    lmdir.mkdir()
    imgs = []
    for i, name in enumerate(["a", "b"]):
        img, lmp, _ = _photo_and_landmarks(tmp_path, name, seed=i)
        shutil.move(lmp, lmdir / lmp.name)
        imgs.append(str(img))
    out = tmp_path / "feats"
    rc = main(["encode", *imgs, "--landmarks", str(lmdir), "-o", str(out), "--device", "cpu", "--size", str(SIZE)])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a.safetensors", "b.safetensors"]
    fa, fb = read_features(out / "a.safetensors"), read_features(out / "b.safetensors")
    assert not np.array_equal(fa.latents, fb.latents)
    # a landmarks FILE with several photos: exit 2 before any model
    rc = main(["encode", *imgs, "--landmarks", str(lmdir / "a.npz"), "-o", str(tmp_path / "x"), "--size", str(SIZE)])
    assert rc == 2 and "folder" in capsys.readouterr().err and not (tmp_path / "x").exists()
    # a folder without one photo's NAME.npz: that photo fails (the batch policy), the other is encoded, exit 1
    (lmdir / "b.npz").unlink()
    rc = main(["encode", *imgs, "--landmarks", str(lmdir), "-o", str(tmp_path / "y"), "--size", str(SIZE)])
    err = capsys.readouterr().err
    assert rc == 1 and "b.npz" in err
    assert sorted(p.name for p in (tmp_path / "y").iterdir()) == ["a.safetensors"]


def test_encode_refuses_landmarks_of_another_photo(tmp_path, tiny_models, capsys):
    img, lmp, _ = _photo_and_landmarks(tmp_path, sha="cd" * 32)
    out = tmp_path / "f.safetensors"
    rc = main(["encode", str(img), "--landmarks", str(lmp), "-o", str(out), "--device", "cpu", "--size", str(SIZE)])
    err = capsys.readouterr().err
    assert rc == 2 and "another photo" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    rc = main(
        ["encode", str(img), "--landmarks", str(lmp), "-o", str(out), "--device", "cpu", "--size", str(SIZE), "--force"]
    )
    assert rc == 0 and out.exists() and "warning" in capsys.readouterr().err


def test_encode_landmarks_for_another_size(tmp_path, tiny_models, capsys):
    img, _, lm = _photo_and_landmarks(tmp_path)
    lmp = tmp_path / "big.npz"  # right sha, but for a photo twice the size
    write_landmarks(lmp, Landmarks((240, 200), lm * 2, np.ones(68), [40, 60, 160, 200], sha256_file(img), "test"))
    out = tmp_path / "f.safetensors"
    args = ["encode", str(img), "--landmarks", str(lmp), "-o", str(out), "--device", "cpu", "--size", str(SIZE)]
    assert main(args) == 2 and "200x240" in capsys.readouterr().err and not out.exists()
    assert main(args + ["--force"]) == 0
    f = read_features(out)
    pts = (lm * 2 + 0.5) * 0.5 - 0.5  # rescaled to the photo
    assert np.allclose(apply_affine(f.affine, anchors_from_landmarks(pts)), CANONICAL_ANCHORS * SIZE - 0.5, atol=1e-4)


@pytest.mark.parametrize("missing", ["face-parsing", "sd-image-variations"])
def test_encode_missing_model_exit_3_no_output(tmp_path, tiny_models, monkeypatch, capsys, missing):
    from avatarcli.diffusion import models as M
    from avatarcli.weights import env_var_for

    img, lmp, _ = _photo_and_landmarks(tmp_path)
    monkeypatch.delenv(env_var_for(missing))
    loaded = []
    for fn in ("load_vae", "load_clip_encoder", "load_face_parser"):
        monkeypatch.setattr(M, fn, lambda *a, fn=fn, **k: loaded.append(fn))
    out = tmp_path / "f.safetensors"
    rc = main(["encode", str(img), "--landmarks", str(lmp), "-o", str(out), "--device", "cpu", "--size", str(SIZE)])
    err = capsys.readouterr().err
    assert rc == 3
    assert f"avatar weights fetch {missing}" in err and f"'{missing}'" in err and len(err.strip().splitlines()) == 1
    assert loaded == []  # both models are resolved before either is loaded
    assert list(tmp_path.glob("*.safetensors")) == [] and not list(tmp_path.glob(".*tmp"))


def test_encode_corrupt_model_is_one_line_exit_3(tmp_path, tiny_model_dirs, monkeypatch, capsys):
    from avatarcli.weights import env_var_for

    bad = tmp_path / "sd"
    shutil.copytree(tiny_model_dirs["sd-image-variations"], bad)
    w = bad / "vae" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    monkeypatch.setenv(env_var_for("sd-image-variations"), str(bad))
    monkeypatch.setenv(env_var_for("face-parsing"), str(tiny_model_dirs["face-parsing"]))
    img, lmp, _ = _photo_and_landmarks(tmp_path)
    out = tmp_path / "f.safetensors"
    rc = main(["encode", str(img), "--landmarks", str(lmp), "-o", str(out), "--device", "cpu", "--size", str(SIZE)])
    err = capsys.readouterr().err
    assert rc == 3 and "cannot load model 'sd-image-variations'" in err and "avatar weights verify" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_encode_bad_arguments(tmp_path, tiny_models, capsys):
    img, lmp, _ = _photo_and_landmarks(tmp_path)
    out = tmp_path / "f.safetensors"
    base = ["encode", str(img), "--landmarks", str(lmp), "-o", str(out), "--device", "cpu"]
    assert main(base + ["--size", "60"]) == 2 and "--size 60" in capsys.readouterr().err
    assert main(["encode", str(tmp_path / "nope.png"), "--landmarks", str(lmp), "-o", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    lmp.write_bytes(b"junk")
    assert main(base + ["--size", str(SIZE)]) == 2
    assert str(lmp) in capsys.readouterr().err
    # degenerate landmarks (all points equal) -> exit 2 naming the file, before the models load
    write_landmarks(
        lmp, Landmarks((120, 100), np.full((68, 2), 50.0), np.ones(68), [20, 30, 80, 100], sha256_file(img), "t")
    )
    assert main(base + ["--size", str(SIZE)]) == 2
    err = capsys.readouterr().err
    assert "cannot align" in err and str(lmp) in err
    assert not out.exists()


def test_encode_help_has_examples(capsys):
    assert main(["encode", "--help"]) == 0
    assert "Examples:" in capsys.readouterr().out


def test_features_metadata_is_json(tmp_path, tiny_models):
    from safetensors import safe_open

    img, lmp, _ = _photo_and_landmarks(tmp_path)
    out = tmp_path / "f.safetensors"
    assert (
        main(["encode", str(img), "--landmarks", str(lmp), "-o", str(out), "--device", "cpu", "--size", str(SIZE)]) == 0
    )
    with safe_open(str(out), framework="pt") as fh:
        meta = fh.metadata()
    models = json.loads(meta["models"])
    assert set(models) == {"vae", "image_encoder", "face_parser"}
    assert all(m["source"] == "override" for m in models.values())
    assert json.loads(meta["region_names"]) == ["background", "face", "hair", "neck"]


@pytest.mark.parametrize("suffix", [".txt", ".npy", ".pts"])
def test_encode_takes_bare_points_files(tmp_path, tiny_models, capsys, suffix):
    """--landmarks of encode reads what `avatar landmarks --landmarks` reads (issue 13, item 2):
    the same crop as from the landmarks.npz of the same points, for a file and a folder."""
    img, lmp, lm = _photo_and_landmarks(tmp_path)
    pts = tmp_path / "pts" / f"face{suffix}"
    pts.parent.mkdir()
    if suffix == ".txt":
        np.savetxt(pts, lm)
    elif suffix == ".npy":
        np.save(pts, lm)
    else:
        pts.write_text("version: 1\nn_points: 68\n{\n" + "\n".join(f"{x + 1} {y + 1}" for x, y in lm) + "\n}\n")
    base = ["encode", str(img), "-o"]
    opts = ["--device", "cpu", "--size", str(SIZE)]
    assert main(base + [str(tmp_path / "a.safetensors"), "-l", str(lmp), *opts]) == 0
    for given in (pts, pts.parent):
        out = tmp_path / f"b{given.name}.safetensors"
        assert main(base + [str(out), "-l", str(given), *opts]) == 0, capsys.readouterr().err
        np.testing.assert_allclose(
            read_features(out).affine, read_features(tmp_path / "a.safetensors").affine, atol=1e-4
        )
