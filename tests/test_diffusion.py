"""Diffusion side: crop alignment, the features artifact, the SD image-variations denoiser, the rounds.

Models are the tiny random ones of the real classes (tests/fixtures/diffusion.py) loaded
through the real resolver; the denoiser's sampling loop is checked against diffusers' own
StableDiffusionImageVariationPipeline.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avatarcli.diffusion.crop import (
    CANONICAL_ANCHORS,
    align_face,
    anchors_from_landmarks,
    apply_affine,
    fit_similarity,
    invert_affine,
    labels_to_image,
    warp_to_crop,
)
from avatarcli.diffusion.denoiser import Conditioning, Denoiser, SDImageVariationsDenoiser, view_noise
from avatarcli.diffusion.features import Features, read_features, write_features
from avatarcli.diffusion.rounds import RoundsConfig, head_center, novel_cameras, refine, seed_for
from avatarcli.errors import ArtifactError, InputError

# ----------------------------------------------------------------------------- crop / align


def _similarity(s: float, theta: float, tx: float, ty: float) -> np.ndarray:
    c, si = s * math.cos(theta), s * math.sin(theta)
    return np.array([[c, -si, tx], [si, c, ty]])


def test_fit_similarity_recovers_known_transform():
    rng = np.random.default_rng(0)
    A = _similarity(1.7, 0.4, 12.0, -30.0)
    src = rng.uniform(-50, 50, (10, 2))
    assert np.allclose(fit_similarity(src, apply_affine(A, src)), A, atol=1e-9)
    # with noise: equals the linear least-squares solution for (a, b, tx, ty), an independent solver
    dst = apply_affine(A, src) + rng.normal(0, 0.5, src.shape)
    x, y = src[:, 0], src[:, 1]
    M = np.zeros((20, 4))
    M[0::2] = np.stack([x, -y, np.ones(10), np.zeros(10)], 1)
    M[1::2] = np.stack([y, x, np.zeros(10), np.ones(10)], 1)
    a, b, tx, ty = np.linalg.lstsq(M, dst.reshape(-1), rcond=None)[0]
    assert np.allclose(fit_similarity(src, dst), [[a, -b, tx], [b, a, ty]], atol=1e-9)
    # inverse really inverts
    assert np.allclose(apply_affine(invert_affine(A), apply_affine(A, src)), src, atol=1e-9)
    with pytest.raises(ValueError, match="coincide"):
        fit_similarity(np.ones((3, 2)), rng.normal(size=(3, 2)))


def _landmarks_for(A_crop_to_image: np.ndarray, size: int) -> np.ndarray:
    """68 landmarks whose eye / mouth anchors sit exactly on the canonical crop positions mapped by A."""
    rng = np.random.default_rng(1)
    anchors = apply_affine(A_crop_to_image, CANONICAL_ANCHORS * size - 0.5)  # [3, 2] image px
    lm = np.zeros((68, 2))
    for (lo, hi), p in zip([(36, 42), (42, 48), (48, 68)], anchors):
        off = rng.normal(0, 2.0, (hi - lo, 2))
        lm[lo:hi] = p + off - off.mean(0)  # the group's mean is exactly the anchor
    return lm


def test_align_face_puts_anchors_on_canonical_positions():
    size = 64
    A_true = _similarity(2.5, -0.3, 40.0, 55.0)  # crop -> image
    lm = _landmarks_for(A_true, size)
    al = align_face(lm, size)
    assert np.allclose(al.affine, invert_affine(A_true), atol=1e-9)
    assert np.allclose(apply_affine(al.affine, anchors_from_landmarks(lm)), CANONICAL_ANCHORS * size - 0.5, atol=1e-9)
    corners = apply_affine(A_true, np.array([[-0.5, -0.5], [63.5, -0.5], [63.5, 63.5], [-0.5, 63.5]]))
    assert np.allclose(al.box, [corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()])


def test_warp_to_crop_matches_scipy_affine_transform():
    from scipy.ndimage import affine_transform

    rng = np.random.default_rng(2)
    H, W, size = 90, 70, 48
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.stack([(xx * 3) % 256, (yy * 5) % 256, rng.integers(0, 256, (H, W))], -1).astype(np.uint8)
    A_true = _similarity(1.3, 0.25, 15.0, 10.0)  # crop -> image, crop partly outside the image
    al = align_face(_landmarks_for(A_true, size), size)
    out = warp_to_crop(rgb, al)  # [S, S, 3]
    inv = al.inverse  # crop (x, y) -> image (x, y); scipy works in (row, col) = (y, x)
    matrix = np.array([[inv[1, 1], inv[1, 0]], [inv[0, 1], inv[0, 0]]])
    offset = np.array([inv[1, 2], inv[0, 2]])
    ref = np.stack(
        [
            affine_transform(rgb[..., c].astype(np.float64) / 255, matrix, offset, output_shape=(size, size), order=1)
            for c in range(3)
        ],
        -1,
    )
    # compare where the sample point is inside the image's pixel-centre hull (borders pad differently)
    ys, xs = np.mgrid[0:size, 0:size]
    src = apply_affine(inv, np.stack([xs, ys], -1).astype(np.float64))
    inside = (src[..., 0] >= 0) & (src[..., 0] <= W - 1) & (src[..., 1] >= 0) & (src[..., 1] <= H - 1)
    assert inside.sum() > 0.5 * size * size and (~inside).sum() > 0
    assert np.abs(out[inside] - ref[inside]).max() < 1e-5
    assert out.dtype == np.float32 and out.shape == (size, size, 3)
    far = (src[..., 0] < -1) | (src[..., 0] > W) | (src[..., 1] < -1) | (src[..., 1] > H)
    assert np.all(out[far] == 0)  # outside the image = 0


def test_labels_to_image_round_trip():
    size, H, W = 32, 100, 80
    A_true = _similarity(2.2, 0.5, 45.0, 20.0)  # crop -> image: the crop covers a rotated square
    al = align_face(_landmarks_for(A_true, size), size)
    labels = ((np.arange(size)[:, None] // 8) * 4 + np.arange(size)[None, :] // 8).astype(np.uint8) % 4  # 8x8 blocks
    img = labels_to_image(labels, al, (H, W))
    assert img.shape == (H, W) and img.dtype == np.uint8
    # manual reference: each image pixel takes the label of the nearest crop pixel (0 outside the crop)
    ys, xs = np.mgrid[0:H, 0:W]
    q = apply_affine(al.affine, np.stack([xs, ys], -1).astype(np.float64))  # [H, W, 2] crop coords
    inside = (q >= -0.5).all(-1) & (q <= size - 0.5).all(-1)
    frac = np.abs(q - np.floor(q) - 0.5)
    safe = inside & (frac > 1e-3).all(-1) & (q >= -0.49).all(-1) & (q <= size - 0.51).all(-1)
    r = np.clip(np.rint(q).astype(int), 0, size - 1)
    assert np.array_equal(img[safe], labels[r[..., 1], r[..., 0]][safe])
    assert np.all(img[~inside] == 0)
    # and back: sampling the image labels at the crop's pixel centres gives the labels again
    back_pts = apply_affine(al.inverse, np.stack(np.mgrid[0:size, 0:size][::-1], -1).astype(np.float64))
    bi = np.rint(back_pts).astype(int)
    ok = (bi[..., 0] >= 0) & (bi[..., 0] < W) & (bi[..., 1] >= 0) & (bi[..., 1] < H)
    interior = np.zeros((size, size), bool)
    interior[1:-1, 1:-1] = True
    edge = (np.arange(size) % 8 == 0) | (np.arange(size) % 8 == 7)
    interior &= ~edge[:, None] & ~edge[None, :]  # away from block borders (1 crop px > 1 image px here)
    got = img[np.clip(bi[..., 1], 0, H - 1), np.clip(bi[..., 0], 0, W - 1)]
    assert np.array_equal(got[ok & interior], labels[ok & interior])


# ----------------------------------------------------------------------------- features artifact


def _features(S=32, H=40, W=30, seed=0) -> Features:
    rng = np.random.default_rng(seed)
    return Features(
        latents=rng.normal(size=(4, S // 8, S // 8)).astype(np.float32),
        image_embeds=rng.normal(size=(1, 32)).astype(np.float32),
        mask_crop=rng.integers(0, 4, (S, S)).astype(np.uint8),
        mask_image=rng.integers(0, 4, (H, W)).astype(np.uint8),
        affine=_similarity(1.1, 0.1, 2.0, 3.0),
        crop_box=np.array([1.0, 2.0, 30.0, 33.0]),
        image_sha256="ab" * 32,
        models={
            "vae": {
                "name": "sd-image-variations",
                "repo": "lambdalabs/sd-image-variations-diffusers",
                "revision": "42bc0ee",
            }
        },
    )


def test_features_round_trip_bit_exact(tmp_path):
    f = _features()
    p = write_features(tmp_path / "f.safetensors", f)
    g = read_features(p)
    for k in ("latents", "image_embeds", "mask_crop", "mask_image", "affine", "crop_box"):
        a, b = getattr(f, k), getattr(g, k)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), k
    assert g.image_sha256 == f.image_sha256 and g.models == f.models
    assert g.crop_size == 32 and g.image_size == (40, 30)
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == "avatarcli.features" and meta["version"] == "1"
    assert "lambdalabs/sd-image-variations-diffusers" in meta["models"] and "42bc0ee" in meta["models"]


def _raw_write(path, arrays: dict, meta: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, str(path), metadata=meta)


def _good_raw(f: Features) -> tuple[dict, dict]:
    arrays = {k: getattr(f, k) for k in ("latents", "image_embeds", "mask_crop", "mask_image", "affine", "crop_box")}
    meta = {"format": "avatarcli.features", "version": "1", "image_sha256": f.image_sha256, "models": "{}"}
    return arrays, meta


@pytest.mark.parametrize(
    "case, match",
    [
        ("garbage", "not a readable safetensors"),
        ("truncated", "not a readable safetensors"),
        ("empty", "not a readable safetensors"),
        ("wrong_dtype", "'latents' has dtype float16"),
        ("newer_version", "unsupported features version '2'"),
        ("other_format", "not an avatarcli features file"),
        ("missing_tensor", "missing tensor 'mask_crop'"),
        ("nan", "'image_embeds' contains NaN"),
        ("bad_region", "mask_image has region ids up to 7"),
        ("bad_latent_shape", "latents have shape"),
        ("bad_models_json", "'models' is not valid JSON"),
        ("missing_file", "not found"),
    ],
)
def test_features_reader_rejects_bad_files(tmp_path, case, match):
    p = tmp_path / "f.safetensors"
    f = _features()
    arrays, meta = _good_raw(f)
    if case in ("garbage", "truncated", "empty"):
        write_features(p, f)
        data = p.read_bytes()
        p.write_bytes(
            {"garbage": b"\x00\x01not safetensors" * 10, "truncated": data[: len(data) // 2], "empty": b""}[case]
        )
    elif case != "missing_file":
        if case == "wrong_dtype":
            arrays["latents"] = arrays["latents"].astype(np.float16)
        elif case == "newer_version":
            meta["version"] = "2"
        elif case == "other_format":
            meta["format"] = "something.else"
        elif case == "missing_tensor":
            del arrays["mask_crop"]
        elif case == "nan":
            arrays["image_embeds"] = arrays["image_embeds"].copy()
            arrays["image_embeds"][0, 3] = np.nan
        elif case == "bad_region":
            arrays["mask_image"] = arrays["mask_image"].copy()
            arrays["mask_image"][0, 0] = 7
        elif case == "bad_latent_shape":
            arrays["latents"] = np.zeros((4, 3, 5), np.float32)
        elif case == "bad_models_json":
            meta["models"] = "{not json"
        _raw_write(p, arrays, meta)
    with pytest.raises(ArtifactError, match=match) as ei:
        read_features(p)
    msg = str(ei.value)
    assert str(p) in msg and "\n" not in msg  # one line naming the file


def test_features_writer_refuses_invalid(tmp_path):
    f = _features()
    f.mask_crop = np.zeros((16, 32), np.uint8)
    with pytest.raises(ArtifactError, match="square"):
        write_features(tmp_path / "x.safetensors", f)
    assert not list(tmp_path.iterdir())  # nothing written, not even a temp file


# ----------------------------------------------------------------------------- denoiser


@pytest.fixture(scope="module")
def sd_parts(tiny_model_dirs):
    """unet, vae, scheduler config and the CLIP encoder of the tiny repo, loaded by the real loaders."""
    from avatarcli.diffusion import models as M

    folder = tiny_model_dirs["sd-image-variations"]
    return {
        "unet": M.load_unet(folder, "cpu", torch.float32),
        "vae": M.load_vae(folder, "cpu", torch.float32),
        "sched": M.load_scheduler_config(folder),
        "clip": M.load_clip_encoder(folder, "cpu", torch.float32),
    }


def _den(parts, **kw) -> SDImageVariationsDenoiser:
    kw.setdefault("num_inference_steps", 5)
    kw.setdefault("guidance_scale", 3.0)
    return SDImageVariationsDenoiser(parts["unet"], parts["vae"], parts["sched"], **kw)


@pytest.fixture(scope="module")
def views():
    g = torch.Generator().manual_seed(3)
    return torch.rand(5, 32, 32, 3, generator=g)


@pytest.fixture(scope="module")
def cond(sd_parts, views):
    return Conditioning(image_embeds=sd_parts["clip"].embed(views[:1]))


def test_default_denoiser_loads_through_resolver(tiny_models):
    from avatarcli.diffusion.denoiser import load_default_denoiser

    den = load_default_denoiser("cpu", num_inference_steps=3)
    assert isinstance(den, Denoiser)
    assert den.resolution == 64  # unet.sample_size 8 x VAE factor 8: the "native" size
    assert den.size_multiple == 16 and den.dtype == torch.float32


def test_strength_zero_returns_input_untouched(sd_parts, views, cond):
    den = _den(sd_parts)
    out = den.denoise(views, [None] * 5, cond, 0.0, list(range(5)))
    assert torch.equal(out, views) and out.data_ptr() != views.data_ptr()
    assert den.timings.unet_calls == 0 and den.timings.vae_s == 0.0  # no model ran
    # a strength too small for one of the steps is the same as 0
    assert torch.equal(den.denoise(views, [None] * 5, cond, 0.05, list(range(5))), views)


def test_timesteps_fall_with_strength(sd_parts):
    den = _den(sd_parts, num_inference_steps=10)
    full = den.timesteps_for(1.0)
    assert len(full) == 10 and bool((full[1:] < full[:-1]).all())
    for s, n in [(0.7, 7), (0.2, 2), (0.0, 0)]:
        ts = den.timesteps_for(s)
        assert len(ts) == n and torch.equal(ts, full[10 - n :])


def test_strength_one_matches_diffusers_pipeline(sd_parts, views, cond):
    """The sampling loop (scaling, CFG against a zero embedding, DDIM steps, decode) equals
    diffusers' StableDiffusionImageVariationPipeline started from the same noised latents."""
    from diffusers import StableDiffusionImageVariationPipeline

    den = _den(sd_parts, guidance_scale=3.0)
    imgs, seeds = views[:2], [11, 12]
    out = den.denoise(imgs, [None, None], cond, 1.0, seeds)

    sched = den.make_scheduler()
    sched.set_timesteps(den.num_inference_steps)
    vae = sd_parts["vae"]
    with torch.no_grad():
        lat = vae.encode(imgs.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean * vae.config.scaling_factor
    noise = torch.stack([view_noise(s, lat.shape[1:]) for s in seeds])
    lat = sched.add_noise(lat, noise, sched.timesteps[:1].repeat(2))
    pipe = StableDiffusionImageVariationPipeline(
        vae=vae, image_encoder=sd_parts["clip"].model, unet=sd_parts["unet"], scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    pixel_values = sd_parts["clip"].prep(views[:1])  # the same photo the condition was embedded from
    ref = pipe(
        image=pixel_values, latents=lat, num_images_per_prompt=2, num_inference_steps=den.num_inference_steps,
        guidance_scale=3.0, height=32, width=32, output_type="pt",
    ).images  # fmt: skip
    assert torch.allclose(out, ref.permute(0, 2, 3, 1), atol=1e-5)


def test_seeds_determine_the_output(sd_parts, views, cond):
    den = _den(sd_parts)
    a = den.denoise(views[:2], [None] * 2, cond, 0.6, [1, 2])
    b = den.denoise(views[:2], [None] * 2, cond, 0.6, [1, 2])
    c = den.denoise(views[:2], [None] * 2, cond, 0.6, [1, 3])
    assert torch.equal(a, b)
    assert torch.equal(a[0], c[0]) or torch.allclose(a[0], c[0], atol=1e-6)  # view 0 has the same seed
    assert (a[1] - c[1]).abs().max() > 1e-2  # view 1 does not
    assert torch.equal(view_noise(7, (4, 2, 2)), view_noise(7, (4, 2, 2)))


def test_views_are_batched_and_chunks_agree(sd_parts, views, cond):
    seeds = [seed_for(0, 0, v) for v in range(5)]
    one = _den(sd_parts, max_batch=8)
    out_one = one.denoise(views, [None] * 5, cond, 0.6, seeds)
    chunked = _den(sd_parts, max_batch=2)
    out_ch = chunked.denoise(views, [None] * 5, cond, 0.6, seeds)
    assert torch.allclose(out_one, out_ch, atol=1e-5)
    steps = len(one.timesteps_for(0.6))
    assert one.timings.unet_calls == steps  # all five views in each UNet call
    assert chunked.timings.unet_calls == 3 * steps  # chunks of 2 + 2 + 1


def test_guidance_path(sd_parts, views, cond, monkeypatch):
    batches = []
    unet = sd_parts["unet"]
    orig = unet.forward
    monkeypatch.setattr(
        unet,
        "forward",
        lambda x, t, **kw: (batches.append((x.shape[0], kw["encoder_hidden_states"].clone())), orig(x, t, **kw))[1],
    )
    imgs, seeds = views[:3], [4, 5, 6]
    plain = _den(sd_parts, guidance_scale=1.0).denoise(imgs, [None] * 3, cond, 0.8, seeds)
    assert {b for b, _ in batches} == {3}
    batches.clear()
    near_one = _den(sd_parts, guidance_scale=1.0 + 1e-6).denoise(imgs, [None] * 3, cond, 0.8, seeds)
    b, hidden = batches[0]
    assert b == 6  # uncond + cond in one call
    assert torch.equal(hidden[:3], torch.zeros_like(hidden[:3]))  # uncond = zero embedding
    assert torch.allclose(hidden[3:, 0], cond.image_embeds.expand(3, -1))
    assert torch.allclose(near_one, plain, atol=1e-4)  # eps_u + 1 * (eps_c - eps_u) = eps_c
    strong = _den(sd_parts, guidance_scale=5.0).denoise(imgs, [None] * 3, cond, 0.8, seeds)
    assert (strong - plain).abs().max() > 1e-3


def test_output_shape_range_and_resizing(sd_parts, cond):
    den = _den(sd_parts, resolution=64)  # the model runs at 64 px; views come back at their size
    imgs = torch.rand(2, 40, 24, 3, generator=torch.Generator().manual_seed(0)).double()
    out = den.denoise(imgs, [None] * 2, cond, 0.5, [0, 1])
    assert out.shape == imgs.shape and out.dtype == torch.float64
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert den.timings.calls == 1 and den.timings.unet_calls == len(den.timesteps_for(0.5)) > 0
    with pytest.raises(InputError, match="seeds"):
        den.denoise(imgs, [None] * 2, cond, 0.5, [0])
    with pytest.raises(InputError, match="strength"):
        den.denoise(imgs, [None] * 2, cond, 1.5, [0, 1])
    with pytest.raises(InputError, match="dims"):
        den.denoise(imgs, [None] * 2, Conditioning(torch.zeros(1, 7)), 0.5, [0, 1])


# ----------------------------------------------------------------------------- rounds


def test_strength_schedule():
    assert RoundsConfig(rounds=4, strength_start=0.8, strength_end=0.2).strengths() == pytest.approx(
        [0.8, 0.6, 0.4, 0.2]
    )
    s = RoundsConfig().strengths()
    assert len(s) == RoundsConfig().rounds and all(a > b for a, b in zip(s, s[1:]))
    assert RoundsConfig(rounds=1, strength_start=0.5).strengths() == [0.5]
    assert RoundsConfig(rounds=0).strengths() == []
    for bad in (dict(strength_start=1.2), dict(rounds=-1), dict(yaws=()), dict(weight_max=-1.0)):
        with pytest.raises(ValueError):
            RoundsConfig(**bad).validate()
    seeds = {seed_for(s, r, v) for s in range(2) for r in range(4) for v in range(14)}
    assert len(seeds) == 2 * 4 * 14


def test_novel_cameras_look_at_head_centre():
    from avatarcli.render.camera import orbit_camera

    verts = torch.tensor([[-0.08, -0.1, -0.09], [0.08, 0.12, 0.1], [0.0, 0.0, 0.1]]) + torch.tensor([0.01, 0.02, -0.03])
    c = head_center(verts)
    assert torch.allclose(c, torch.tensor([0.01, 0.03, -0.025]), atol=1e-6)
    inp = orbit_camera(30.0, 5.0, distance=0.7, target=tuple(c.tolist()), fov_deg=18.0, width=96, height=64)
    cfg = RoundsConfig(yaws=(45.0, -90.0, 180.0), pitches=(0.0, 20.0), view_size=48)
    cams = novel_cameras(verts, inp, cfg)
    assert len(cams) == 6
    for i, cam in enumerate(cams):
        pitch, yaw = cfg.pitches[i // 3], cfg.yaws[i % 3]
        assert cam.width == cam.height == 48
        px = cam.project(c[None])[0]
        assert torch.allclose(px, torch.tensor([23.5, 23.5]), atol=1e-3)  # centre of the view
        d = cam.position - c
        assert abs(float(d.norm()) - 0.7) < 1e-4  # the input camera's distance
        assert math.degrees(math.asin(float(d[1]) / 0.7)) == pytest.approx(pitch, abs=1e-2)
        az = math.degrees(math.atan2(float(d[0]), float(d[2])))
        assert (az - (30.0 + yaw) + 180) % 360 - 180 == pytest.approx(0, abs=1e-2)  # yaw relative to the input
        fov = 2 * math.degrees(math.atan(0.5 * cam.height / float(cam.K[1, 1])))
        assert fov == pytest.approx(18.0, abs=1e-3)  # the input's vertical field of view


class _RecordingDenoiser:
    """Identity denoiser that records its calls (the rounds loop through the interface only)."""

    def __init__(self):
        self.calls = []

    def denoise(self, images, cameras, condition, strength, seeds):
        self.calls.append((images.shape, len(cameras), strength, list(seeds)))
        return images.clone()


@pytest.fixture(scope="module")
def small_scene():
    from avatarcli.testing.synthetic_scene import ellipsoid_mesh, make_scene, perturbed

    v, f = ellipsoid_mesh(6, 12)
    sc = make_scene(v, f, size=48)
    init = perturbed(sc.truth.subset(torch.arange(0, sc.truth.n, 4)), seed=1)  # one Gaussian per triangle
    return sc, init


def _fit_cfg(steps=25):
    from avatarcli.gaussians.fit import FitConfig

    return FitConfig(steps=steps, densify_every=0, sh_degree=0, backend="torch")


def test_refine_calls_denoiser_per_round(small_scene):
    from avatarcli.gaussians.fit import ViewTarget

    sc, init = small_scene
    rec = _RecordingDenoiser()
    assert isinstance(rec, Denoiser)
    cfg = RoundsConfig(rounds=3, strength_start=0.6, strength_end=0.2, yaws=(90.0, 180.0), pitches=(0.0,), seed=5)
    seen = []
    _, stats = refine(
        init, sc.vertices, sc.faces, ViewTarget(sc.camera, sc.image, sc.mask), rec, Conditioning(torch.zeros(1, 4)),
        cfg, _fit_cfg(3), on_progress=lambda r, n, info: seen.append((r, n, info.strength, info.weight)),
    )  # fmt: skip
    assert [c[2] for c in rec.calls] == pytest.approx([0.6, 0.4, 0.2])
    assert all(c[0] == (2, 48, 48, 3) and c[1] == 2 for c in rec.calls)
    assert rec.calls[0][3] == [seed_for(5, 0, 0), seed_for(5, 0, 1)] and rec.calls[1][3] != rec.calls[0][3]
    assert [s[:2] for s in seen] == [(0, 3), (1, 3), (2, 3)]
    ws = [s[3] for s in seen]
    assert ws == pytest.approx([0.5 * 0.4, 0.5 * 0.6, 0.5 * 0.8]) and ws == sorted(ws)  # weights grow as noise falls
    assert len(stats.rounds) == 3 and stats.n_views == 2


@pytest.mark.slow
def test_refine_keeps_input_view_and_is_deterministic(small_scene, tiny_models):
    """Issue 5: after the rounds (tiny real-class denoiser: its views are meaningless, so they
    pull against the photo) the input view's PSNR stays within 1 dB of fitting the input view
    alone for the same number of steps; the soft views did change the head; fixed seed -> same head."""
    from dataclasses import replace

    from avatarcli.diffusion.denoiser import load_default_denoiser
    from avatarcli.gaussians.fit import ViewTarget, fit_input_view

    sc, init = small_scene
    fcfg = _fit_cfg(20)
    base, st0 = fit_input_view(init, sc.vertices, sc.faces, sc.camera, sc.image, sc.mask, replace(fcfg, steps=40))
    den = load_default_denoiser("cpu", num_inference_steps=4, resolution=None)
    cond = Conditioning(torch.randn(1, 32, generator=torch.Generator().manual_seed(0)))
    cfg = RoundsConfig(
        rounds=2, strength_start=0.7, strength_end=0.3, yaws=(90.0, -90.0, 180.0), pitches=(0.0,), seed=1
    )
    target = ViewTarget(sc.camera, sc.image, sc.mask)
    a, sa = refine(base, sc.vertices, sc.faces, target, den, cond, cfg, fcfg)
    total = cfg.rounds * fcfg.steps + sa.final_input_steps
    assert sa.final_input_steps == 10 and den.timings.calls == 2
    only, so = fit_input_view(base, sc.vertices, sc.faces, sc.camera, sc.image, sc.mask, replace(fcfg, steps=total))
    assert so.psnr > st0.psnr + 3  # the comparison fit is still improving: not a trivial bound
    assert sa.psnr >= so.psnr - 1.0, (sa.psnr, so.psnr)
    assert sa.psnr_before_final_input < sa.psnr  # the soft views did pull on the input view
    assert not torch.allclose(a.sh, only.sh, atol=1e-3)  # and changed the head
    b, sb = refine(base, sc.vertices, sc.faces, target, den, cond, cfg, fcfg)
    assert torch.equal(a.sh, b.sh) and torch.equal(a.local_xyz, b.local_xyz) and sa.psnr == sb.psnr


def test_condition_from_features_or_image(tmp_path, tiny_models):
    from PIL import Image

    from avatarcli.diffusion import models as M
    from avatarcli.diffusion.denoiser import load_condition

    f = _features()
    p = write_features(tmp_path / "f.safetensors", f)
    c = load_condition(p)
    assert torch.equal(c.image_embeds, torch.from_numpy(f.image_embeds)) and c.image is None
    rgb = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    c = load_condition(tmp_path / "photo.png")
    assert c.image_embeds.shape == (1, 32) and c.image.shape == (40, 60, 3)
    clip = M.load_clip_encoder(M.resolve_model(M.SD_IMAGE_VARIATIONS), "cpu", torch.float32)
    square = torch.from_numpy(rgb[:, 10:50]).float()[None] / 255  # the centred square
    assert torch.allclose(c.image_embeds, clip.embed(square), atol=1e-5)
    # CLIP input resized like the model was trained: bicubic without anti-aliasing
    assert clip.prep.antialias is False
    x = torch.nn.functional.interpolate(square.permute(0, 3, 1, 2), size=(32, 32), mode="bicubic", align_corners=False)
    mean = torch.tensor(M.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(M.CLIP_STD).view(1, 3, 1, 1)
    assert torch.allclose(clip.prep(square), (x - mean) / std, atol=1e-6)
