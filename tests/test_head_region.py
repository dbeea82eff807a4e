"""The weight-free head region (avatarcli.segment.head_region) on real portraits with hand-drawn outlines,
its sources' order, its files, and the offline astronaut run that uses it."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from avatarcli import quality
from avatarcli.cli import main
from avatarcli.flame.artifact import canonical_head
from avatarcli.flame.deform import mesh_coverage
from avatarcli.flame.fit import FitConfig, fit_flame
from avatarcli.io.images import load_image
from avatarcli.landmarks.artifact import Landmarks
from avatarcli.render.camera import photo_camera
from avatarcli.segment.head_region import (
    RegionConfig,
    _backdrop_edge,
    _edge_matte,
    _matte_hair,
    _seed_labels,
    choose_head_region,
    read_region,
    segment_head,
    write_region,
)
from avatarcli.testing.portraits import portrait
from avatarcli.testing.synthetic_flame import make_synthetic_flame

dlib = pytest.importorskip("dlib")

# IoU with the drawn outline measured with these settings (bench/bench_real.py prints the table);
# the floors sit ~0.03 below, so a regression fails and noise does not.
IOU_FLOOR = {"astronaut": 0.9, "grace_hopper": 0.87, "obama_turned": 0.91, "einstein": 0.87, "long_hair": 0.9}
# the share of the drawn outline the region misses (each missed pixel shows white in a render: ~1.5 % of a
# dark head caps the head-region PSNR near 25 dB); before the edge matte (_edge_matte) / with it: astronaut
# 0.0027 / 0.0025, grace_hopper 0.032 / 0.023, obama_turned 0.019 / 0.0155, einstein 0.061 / 0.054,
# long_hair 0.051 / 0.043; the ceilings sit between
MISSED_CEIL = {"astronaut": 0.004, "grace_hopper": 0.027, "obama_turned": 0.017, "einstein": 0.057, "long_hair": 0.047}


@pytest.fixture(scope="module")
def landmarks_of():
    from avatarcli.landmarks.choose import load_detector
    from avatarcli.landmarks.detect import detect_landmarks

    det = load_detector("dlib")
    return lambda name: detect_landmarks(load_image(portrait(name).image_path), det).landmarks


@pytest.mark.parametrize("name", list(IOU_FLOOR))
def test_segment_head_matches_the_drawn_outline(name, landmarks_of):
    p = portrait(name)
    m = segment_head(p.rgb(), landmarks_of(name))
    assert m.shape == p.outline().shape and m.dtype == np.float32
    assert quality.iou(m, p.outline()) >= IOU_FLOOR[name]
    assert quality.coverage(m, p.outline()) >= 0.85  # hair and neck taken in
    assert 1.0 - quality.coverage(m, p.outline()) <= MISSED_CEIL[name]
    np.testing.assert_array_equal(m, segment_head(p.rgb(), landmarks_of(name)))  # deterministic


def _halo_image(r_solid: float, r_fade: float, n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc over a dark backdrop whose alpha falls linearly from 1 at r_solid to 0 at r_fade
    (a halo of hair wisps): (rgb [n, n, 3] uint8, radius [n, n] px from the centre)."""
    yy, xx = np.mgrid[0:n, 0:n]
    r = np.hypot(xx - (n - 1) / 2, yy - (n - 1) / 2)
    a = np.clip((r_fade - r) / (r_fade - r_solid), 0, 1)[..., None]
    rgb = a * np.array([230.0, 220, 200]) + (1 - a) * np.array([30.0, 35, 40])
    return np.round(rgb).astype(np.uint8), r


def _flat_landmarks(n: int = 120) -> np.ndarray:
    """68 points whose jaw (0..16) lies on the bottom row, 100 px wide: nothing is below the jaw."""
    lm = np.full((68, 2), n / 2)
    lm[0:17, 0], lm[0:17, 1] = np.linspace(10, 110, 17), n - 1
    return lm


def test_hair_matte_takes_in_the_halo_up_to_half_alpha():
    """GrabCut's cut at the solid disc (r < 30); the halo's alpha is 0.5 at r = 40 (analytic): the matte
    grows the region to ~40 px, and leaves a hard-edged disc where it is."""
    cfg = RegionConfig()  # matte band: 3 px inside, 20 px outside a 100 px face
    rgb, r = _halo_image(30.0, 50.0)
    out = _matte_hair(rgb, r < 30, _flat_landmarks(), cfg)
    assert abs(np.sqrt(out.sum() / np.pi) - 40.0) < 1.5
    assert not out[r > 45].any() and out[r < 35].all()
    hard, r = _halo_image(30.0, 30.5)
    out = _matte_hair(hard, r < 30.25, _flat_landmarks(), cfg)
    assert abs(np.sqrt(out.sum() / np.pi) - 30.25) < 1.0


def _painted_head(lm: np.ndarray, long_hair: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A flat-colour portrait painted around real landmarks [68, 2] on 512 x 512, with known truth:
    a skin face (the jaw closed over the brows lifted by a third of the face height), dark hair over the
    crown, a skin neck under the chin and, from a neckline 0.2 face heights below the chin, clothing.
    `long_hair`: the hair also hangs in two curtains beside the face and the neck, 0.4 face heights
    below the chin, over a blue shirt; else the clothing is a skin-coloured sweater, wider than the
    neck, which only the neck's width tells from skin.
    -> (rgb [512, 512, 3] uint8, head [512, 512] bool (the truth), clothing [512, 512] bool)."""
    n = 512
    jaw, brows = lm[0:17], lm[17:27]
    fw, chin, brow_y = float(np.linalg.norm(jaw[16] - jaw[0])), float(jaw[8, 1]), float(brows[:, 1].mean())
    fh, cx = (chin - brow_y) * 1.5, float(jaw[:, 0].mean())
    yy, xx = np.mgrid[0:n, 0:n]
    hair = (((xx - cx) / (0.62 * fw)) ** 2 + ((yy - (brow_y - 0.1 * fh)) / (0.55 * fh)) ** 2 <= 1) & (yy < jaw[0, 1])
    if long_hair:
        hair |= (
            (np.abs(xx - cx) <= 0.72 * fw) & (np.abs(xx - cx) >= 0.3 * fw) & (yy >= brow_y) & (yy <= chin + 0.4 * fh)
        )
    face = np.zeros((n, n), np.uint8)
    cv2.fillPoly(face, [np.round(np.concatenate([jaw, brows[::-1] - [0, fh / 3]])).astype(np.int32)], 1)
    neckline = chin + 0.2 * fh
    neck = (np.abs(xx - jaw[8, 0]) <= 0.28 * fw) & (yy >= chin - 0.1 * fh) & (yy < neckline)
    clothing = (np.abs(xx - cx) <= 1.3 * fw) & (yy >= neckline) & ~hair
    img = np.zeros((n, n, 3), np.uint8)
    img[:] = (120, 150, 135)
    img[clothing] = (40, 60, 140) if long_hair else (208, 163, 133)
    img[hair] = (70, 45, 30)
    img[neck | (face > 0)] = (205, 160, 130)
    head = (hair | neck | (face > 0)) & ~clothing
    rng = np.random.default_rng(seed)  # a little sensor noise: GrabCut's colour models need a spread
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8), head, clothing


@pytest.mark.parametrize("long_hair", [True, False])
def test_painted_head_keeps_long_hair_and_stops_at_the_collar(long_hair, landmarks_of):
    """Known truth: long hair hanging below the jaw is head (the old 'only skin below the jaw' rule
    dropped it); clothing is not, even a sweater coloured like skin (only the neck's width tells)."""
    lm = landmarks_of("astronaut")
    rgb, head, clothing = _painted_head(lm, long_hair)
    m = segment_head(rgb, lm) > 0.5
    assert quality.iou(m, head) >= 0.9
    assert (m & clothing).sum() <= 0.03 * head.sum()
    under = head & (np.mgrid[0:512, 0:512][0] > lm[8, 1] + 10)  # the head under the chin: neck (+ hair)
    assert quality.coverage(m, under) >= 0.85


def test_grey_photo_neck_stops_at_a_white_collar(landmarks_of):
    """Known truth, grey levels only (a grayscale photo): white hair, a face lit from one side (its grey
    levels spread 90 levels), a neck at the face's mean level, and under the neckline a white collar as
    wide as the neck, 0.1 face heights deep, as white as the hair and within the face's spread (it reads as skin, and as head to
    GrabCut); then a dark jacket. Colour cannot stop the neck there; the collar's edge does (the neck
    ends at the first strong edge below the jaw)."""
    lm = landmarks_of("astronaut")
    rgb, head, clothing = _painted_head(lm, long_hair=False)
    fw, chin = float(np.linalg.norm(lm[16] - lm[0])), float(lm[8, 1])
    fh = 1.5 * (chin - float(lm[17:27, 1].mean()))
    yy, xx = np.mgrid[0:512, 0:512]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)
    skin = np.all(np.abs(rgb.astype(np.float64) - [205, 160, 130]) < 30, axis=-1) & head & (yy < chin)
    level = float(np.median(grey[skin]))
    grey[skin] += np.clip((xx[skin] - lm[8, 0]) / (0.5 * fw), -1, 1) * 45  # the face lit from its left
    collar = clothing & (np.abs(xx - lm[8, 0]) <= 0.28 * fw) & (yy < chin + 0.3 * fh)
    grey[clothing] = 40.0  # the jacket
    grey[collar] = level + 60.0
    grey[head & ~skin & (yy < chin)] = level + 60.0  # white hair
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    m = segment_head(np.repeat(grey[..., None], 3, -1), lm) > 0.5
    assert (m & collar).sum() <= 0.1 * collar.sum()
    neck = head & (yy > chin + 10)
    assert quality.coverage(m, neck) >= 0.8  # the neck above the collar stays


def test_backdrop_the_cut_took_in_goes_and_a_halo_stays():
    """A head-coloured disc (r < 30) on a blue backdrop, cut 3 px too wide and grown 3 px more: the
    backdrop ring the cut and the margin took in goes; a cut on the head's edge keeps its margin (the
    band's inner half is head); over a halo whose alpha falls from 1 to 0 across the band (wisps mixing
    with the backdrop) nothing goes."""
    cfg = RegionConfig()
    n = 120
    yy, xx = np.mgrid[0:n, 0:n]
    r = np.hypot(xx - (n - 1) / 2, yy - (n - 1) / 2)
    head, blue = np.array([200.0, 150, 120]), np.array([40.0, 80, 200])

    def drop(fade: float, cut: float) -> np.ndarray:
        a = np.clip((30 + fade - r) / (2 * fade), 0, 1)[..., None]  # alpha 0.5 at r = 30
        rgb = np.round(a * head + (1 - a) * blue).astype(np.uint8)
        return _backdrop_edge(rgb, r < cut, r < cut + 3, 3, cfg)

    wide = drop(0.5, 33.0)
    assert wide[(r >= 31) & (r < 36)].mean() > 0.9 and not wide[r < 29.5].any()
    assert drop(0.5, 30.0).sum() == 0  # the cut on the edge: the margin stays
    assert drop(12.0, 33.0).sum() == 0  # a halo


def test_edge_matte_takes_in_a_shadowed_rim_below_the_brows():
    """Known truth: a skin ellipse (100 x 130 px) on a pale blue backdrop, its lower-right rim in shadow
    (the neck behind the jaw), and a region 4 px short of the edge all round. Below the brow line the
    matte takes the missed rim back, shadow included, and no backdrop; above it the region is left as it
    is (the crown is matted by _matte_hair); the region's own pixels all stay."""
    n = 160
    yy, xx = np.mgrid[0:n, 0:n]
    ell = ((xx - 80) / 50.0) ** 2 + ((yy - 80) / 65.0) ** 2
    head = ell <= 1
    shade = head & (ell > 0.81) & (xx > 80) & (yy > 90)
    img = np.empty((n, n, 3))
    img[:] = (170, 180, 200)
    img[head] = (205, 160, 130)
    img[shade] = (110, 80, 62)
    img = np.clip(img + np.random.default_rng(0).normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    lm = np.zeros((68, 2))
    lm[0:17, 0], lm[0:17, 1], lm[17:27] = np.linspace(30, 130, 17), 130, (80, 60)  # face 100 px wide, brows at y 60
    region = ((xx - 80) / 46.0) ** 2 + ((yy - 80) / 61.0) ** 2 <= 1
    missed, below = head & ~region, yy > 60
    out = _edge_matte(img, region, lm, RegionConfig())
    assert (out & missed & below).sum() >= 0.95 * (missed & below).sum()
    assert (out & missed & shade).sum() >= 0.95 * (missed & shade).sum() > 100
    assert not (out & ~head).any()  # no backdrop
    assert not (out & missed & ~below).any() and (out >= region).all()


def test_sources_in_order_and_files(tmp_path, landmarks_of):
    p = portrait("astronaut")
    rgb, lm = p.rgb(), landmarks_of("astronaut")
    write_region(tmp_path / "user.png", p.outline())
    r = choose_head_region(rgb, lm, user_mask=tmp_path / "user.png")
    assert r.source == "user" and quality.iou(r.mask, p.outline()) == 1.0

    class Parsed:  # what encode's features carry: a face-parsing label image (0 = background)
        mask_image = np.zeros((64, 64), np.uint8)

    Parsed.mask_image[10:30, 20:40] = 3
    r = choose_head_region(rgb, lm, features=Parsed(), user_mask=tmp_path / "user.png")
    assert r.source == "face-parsing" and r.mask.shape == rgb.shape[:2]
    assert r.mask[100, 300] == 1 and r.mask[0, 0] == 0  # (10..30, 20..40) of 64 scaled to 512
    assert choose_head_region(rgb, lm).source == "grabcut"
    write_region(tmp_path / "empty.png", np.zeros((8, 8)))
    from avatarcli.errors import InputError

    with pytest.raises(InputError, match="empty"):
        read_region(tmp_path / "empty.png")
    (tmp_path / "bad.png").write_text("no image")
    with pytest.raises(InputError, match="cannot read"):
        read_region(tmp_path / "bad.png")


def test_cli_head_region_writes_region_and_overlay(tmp_path):
    img = str(portrait("astronaut").image_path)
    assert main(["landmarks", img, "-o", str(tmp_path / "a.npz"), "--detector", "dlib"]) == 0
    out, ov = tmp_path / "region.png", tmp_path / "check.png"
    assert main(["head-region", img, "-l", str(tmp_path / "a.npz"), "-o", str(out), "--overlay", str(ov)]) == 0
    assert quality.iou(read_region(out), portrait("astronaut").outline()) >= IOU_FLOOR["astronaut"]
    assert ov.is_file()
    # the same stage from Python (no CLI): the same region; its share and the overlay's dimming read back
    from avatarcli.stages.head_region import write_head_region

    out2, ov2 = tmp_path / "lib.png", tmp_path / "lib_check.png"
    share = write_head_region(img, tmp_path / "a.npz", out2, overlay=ov2)
    region = read_region(out2)
    np.testing.assert_array_equal(region, read_region(out))
    assert share == pytest.approx(float(np.mean(region > 0.5)), abs=1e-6) and 0.02 < share < 0.9
    photo = np.asarray(Image.open(img).convert("RGB"), dtype=np.float32)
    dimmed = np.asarray(Image.open(ov2).convert("RGB"), dtype=np.float32)
    outside = region <= 0.5
    assert np.abs(dimmed[outside] - np.floor(0.3 * photo[outside])).max() <= 1.0
    np.testing.assert_array_equal(dimmed[~outside], photo[~outside])


@pytest.mark.slow
def test_offline_astronaut_run_covers_the_drawn_outline(tmp_path, flame_dir, capsys):
    """landmarks (dlib) -> fit-flame -> head region -> init-gaussians -> a short denoise, no hub weights."""
    p = portrait("astronaut")
    work = tmp_path / "work"
    args = ["reconstruct", str(p.image_path), "-o", str(tmp_path / "head.ply"), "--flame", str(flame_dir),
            "--no-diffusion", "--detector", "auto", "--device", "cpu", "--steps", "4", "--n-gaussians", "1000",
            "--max-side", "256", "--workdir", str(work), "--json"]  # fmt: skip
    assert main(args) == 0
    (r,) = json.loads(capsys.readouterr().out)["images"]
    assert r["status"] == "done" and (tmp_path / "head.ply").is_file()
    region = read_region(work / "astronaut" / "head_region.png", p.outline().shape)  # kept in --workdir
    assert quality.coverage(region, p.outline()) >= 0.9
    from avatarcli.landmarks.artifact import read_landmarks

    assert read_landmarks(work / "astronaut" / "landmarks.npz").detector.startswith("dlib")


def test_flame_projection_prior_seeds_probable_head(landmarks_of):
    """The fitted FLAME mesh's projection (the FLAME-format fixture model fitted to dlib's points) marks
    'probably head' where nothing surer is known, never over the sure background (image border, below the collar), and the region with it still matches the drawn outline."""
    p = portrait("astronaut")
    rgb, lm = p.rgb(), landmarks_of("astronaut")
    H, W = rgb.shape[:2]
    model = make_synthetic_flame()
    marks = Landmarks((H, W), lm, np.ones(68, np.float32), np.array([0, 0, W, H], np.float32), "-", "dlib")
    fit = fit_flame(model, [marks], FitConfig(), "cpu")[0]
    verts, faces, j0 = canonical_head(model, fit)
    prior = mesh_coverage(photo_camera(fit, j0).project(verts), faces, H, W) > 0  # [H, W]
    assert prior.sum() > 0.3 * p.outline().sum()  # the fit lands on the face
    prior[:, :8] = True  # and a strip over the image border (sure background)
    cfg = RegionConfig(ellipse_scale=0.6)  # a small ellipse leaves part of the projection undecided
    plain, seeded = _seed_labels((H, W), lm, None, cfg), _seed_labels((H, W), lm, prior, cfg)
    free = prior & (plain == cv2.GC_PR_BGD)  # prior pixels nothing else had decided
    assert free.any() and (seeded[free] == cv2.GC_PR_FGD).all()
    sure = (plain == cv2.GC_BGD) | (plain == cv2.GC_FGD)
    np.testing.assert_array_equal(seeded[sure], plain[sure])
    assert (prior & (plain == cv2.GC_BGD)).any()  # ... which stays background
    m = segment_head(rgb, lm, prior=prior)
    assert quality.iou(m, p.outline()) >= IOU_FLOOR["astronaut"]
