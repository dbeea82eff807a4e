"""`avatar landmarks` and avatarcli.landmarks.detect / points.

The weights are face-alignment's REAL FAN / S3FD classes with random weights in the published
file formats (tests/fixtures/models.py), resolved through avatarcli.weights. A FAN forward pass
takes seconds on CI's CPUs, so only `test_cli_real_fan_end_to_end` runs the real network; the
others use `fast_fan` (weights still loaded for real, forward replaced by "redness" heatmaps:
every landmark lands on the reddest spot of the crop), which also makes the geometry testable:
a red dot at a known original-pixel position is where the landmarks must come out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatarcli.cli import main
from avatarcli.errors import EnvironmentProblem, InputError, MissingModelError, NoFaceError
from avatarcli.io.images import load_image
from avatarcli.landmarks.artifact import read_landmarks
from avatarcli.landmarks.detect import (
    crop_affine,
    crop_image,
    decode_heatmaps,
    detect_faces,
    detect_landmarks,
    heatmap_to_image,
    landmarks_from_points,
    load_landmark_detector,
)
from avatarcli.landmarks.points import read_points

ONE_BOX = (13.5, 13.5, 113.5, 113.5)  # the tiny "one" detector's face in a 128 px photo (pixel centres)


def photo(path: Path, h: int = 128, w: int = 128, dot=(70.0, 50.0), sigma: float = 3.0, seed: int = 0) -> Path:
    """Grey photo with mild noise and a red Gaussian dot centred at `dot` (x, y) original pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    g = np.exp(-((xx - dot[0]) ** 2 + (yy - dot[1]) ** 2) / (2 * sigma**2))
    rgb = 120 + rng.normal(0, 3, (h, w, 3))
    rgb[..., 0] += 135 * g
    rgb[..., 1] -= 120 * g
    rgb[..., 2] -= 120 * g
    Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8)).save(path)
    return path


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


# ------------------------------------------------------------------------------------------ geometry


def test_crop_is_the_exact_affine_map():
    """A linear ramp image: the crop's value at q must be the coordinate of the image point that
    crop_affine maps to q (pixel centres at integers), for zoom-in and for >2x shrink (pre-shrink)."""
    h, w = 300, 420
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = np.stack([xx, yy, np.zeros_like(xx)], -1)
    for center, side, tol in [
        ((200.0, 150.0), 180.0, 1e-3),
        ((201.3, 148.7), 100.0, 1e-3),
        ((210.0, 150.0), 600.0, 0.05),
    ]:
        crop = crop_image(ramp, np.array(center), side)
        a = np.vstack([crop_affine(np.array(center), side), [0, 0, 1]])
        ainv = np.linalg.inv(a)
        qs = np.stack(np.meshgrid(np.arange(0, 256, 15), np.arange(0, 256, 15)), -1).reshape(-1, 2).astype(np.float64)
        p = (ainv @ np.c_[qs, np.ones(len(qs))].T).T[:, :2]
        inside = (p[:, 0] > 2) & (p[:, 0] < w - 3) & (p[:, 1] > 2) & (p[:, 1] < h - 3)
        assert inside.sum() >= 20
        got = crop[qs[inside, 1].astype(int), qs[inside, 0].astype(int), :2]
        np.testing.assert_allclose(got, p[inside], atol=tol)
    # the crop centre is the requested centre; its side spans `side` image pixels
    m = crop_affine(np.array([10.0, 20.0]), 512.0)
    np.testing.assert_allclose(m @ [10.0, 20.0, 1.0], [127.5, 127.5])
    np.testing.assert_allclose(m[0, 0] * 512.0, 256.0)


def test_heatmap_cell_maps_back_through_the_crop():
    """Heatmap cell k covers crop pixels 4k..4k+3: its centre is crop 4k+1.5, i.e. the image point
    the crop affine sends there."""
    center, side = np.array([77.0, 91.0]), 333.0
    a = np.vstack([crop_affine(center, side), [0, 0, 1]])
    u = np.array([[0.0, 0.0], [31.25, 40.75], [63.0, 12.0]])
    p = heatmap_to_image(u, center, side)
    q = (a @ np.c_[p, np.ones(3)].T).T[:, :2]
    np.testing.assert_allclose(q, 4 * u + 1.5, atol=1e-9)


def test_decode_heatmaps_against_a_loop():
    rng = np.random.default_rng(1)
    hm = rng.normal(size=(68, 64, 64)).astype(np.float32)
    hm[3] = 0
    hm[3, 0, 5] = 1  # maximum on the border: no quarter shift
    pts, scores = decode_heatmaps(hm)
    for j in range(68):
        ky, kx = np.unravel_index(np.argmax(hm[j]), hm[j].shape)
        want = [float(kx), float(ky)]
        if 0 < kx < 63 and 0 < ky < 63:
            want[0] += 0.25 * np.sign(hm[j, ky, kx + 1] - hm[j, ky, kx - 1])
            want[1] += 0.25 * np.sign(hm[j, ky + 1, kx] - hm[j, ky - 1, kx])
        np.testing.assert_allclose(pts[j], want)
        assert scores[j] == hm[j].max()
    assert scores.dtype == np.float32 and tuple(pts[3]) == (5.0, 0.0)


# ------------------------------------------------------------------------------------------ library


def test_detect_with_the_tiny_detector(tmp_path, fa_weights, fast_fan):
    det = load_landmark_detector("cpu")
    assert det.name.startswith("face-alignment ") and "2DFAN4@11f355bf06" in det.name and "s3fd@619a316812" in det.name
    im = load_image(photo(tmp_path / "a.png", dot=(70.0, 50.0)))
    lm = detect_landmarks(im, det)
    assert lm.landmarks.shape == (68, 2) and lm.landmarks.dtype == np.float32
    assert lm.scores.shape == (68,) and lm.scores.dtype == np.float32
    assert lm.image_size == (128, 128) and lm.image_sha256 == im.sha256 and lm.detector == det.name
    np.testing.assert_allclose(lm.bbox, ONE_BOX, atol=1e-3)
    # crop side 200*200/195 px over 256 px -> heatmap cell 3.2 px: within half a cell of the dot
    np.testing.assert_allclose(lm.landmarks, np.tile([70.0, 50.0], (68, 1)), atol=1.6)
    assert len(fast_fan) == 1 and fast_fan[0] == (1, 3, 256, 256)


def test_flip_averages_the_mirrored_crop(tmp_path, fa_weights, fast_fan):
    """With flip the mirrored crop's heatmaps are mirrored back (and left/right points swapped):
    the dot must come out where it is, not at its mirror image (x=2*cx-70)."""
    im = load_image(photo(tmp_path / "a.png", dot=(40.0, 50.0)))
    det = load_landmark_detector("cpu", flip=True)
    lm = detect_landmarks(im, det, bbox=ONE_BOX)
    assert fast_fan == [(2, 3, 256, 256)]
    np.testing.assert_allclose(lm.landmarks, np.tile([40.0, 50.0], (68, 1)), atol=1.6)


@pytest.mark.parametrize("max_side", [None, 96])
def test_bbox_path_in_original_pixels(tmp_path, fa_weights, fast_fan, max_side):
    """Downscaled working copy (--max-side) + a bbox in original pixels: landmarks still in
    original pixels, agreeing with the full-size run."""
    p = photo(tmp_path / "big.png", h=288, w=384, dot=(250.0, 130.0), sigma=4.0)
    box = (180.0, 70.0, 330.0, 230.0)  # crop side 318 px -> heatmap cell ~5 px
    det = load_landmark_detector("cpu", need_detector=False)
    assert det.sfd is None
    full = detect_landmarks(load_image(p), det, bbox=box)
    im = load_image(p, max_side=max_side or 2048)
    lm = detect_landmarks(im, det, bbox=box)
    assert lm.image_size == (288, 384)
    np.testing.assert_allclose(lm.bbox, box)
    cell = 200 * (150 + 160) / 195 / 64
    np.testing.assert_allclose(lm.landmarks, np.tile([250.0, 130.0], (68, 1)), atol=cell * 0.6)
    np.testing.assert_allclose(lm.landmarks, full.landmarks, atol=cell * 1.01)
    if max_side:
        assert im.scale == pytest.approx(0.25)


def test_agrees_with_face_alignments_own_pipeline(tmp_path, fa_weights, fast_fan, monkeypatch):
    """Independent reference: face-alignment's FaceAlignment.get_landmarks_from_image (its crop,
    heatmap decoding and back-mapping; built without its downloading __init__) on the same
    network and boxes. Two stand-in networks:
      * "redness" (fast_fan): finds the red dot wherever the crop puts it, so both pipelines must
        land on the dot: checks each is self-consistent;
      * fixed heatmaps (a peak per landmark at a set heatmap position, whatever the input): the
        points are then where the CROP puts those positions, so this checks our crop centre,
        size and pixel conventions against face-alignment's, i.e. what FAN was trained with.
    face-alignment truncates points to whole pixels, hence the 1 px slack."""
    import face_alignment.utils as fau
    import torch
    from face_alignment import FaceAlignment, LandmarksType
    from face_alignment.models import FAN

    # numba would compile these for ~30 s on CI; their pure-Python originals give the same numbers
    monkeypatch.setattr(fau, "_get_preds_fromhm", fau._get_preds_fromhm.py_func)
    monkeypatch.setattr(fau, "transform_np", fau.transform_np.py_func)
    det = load_landmark_detector("cpu", need_detector=False)
    fa = object.__new__(FaceAlignment)
    fa.device, fa.dtype, fa.flip_input, fa.verbose, fa.max_batch_size = "cpu", torch.float32, False, False, 1
    fa.landmarks_type = LandmarksType.TWO_D
    fa.face_detector = type("RefScale", (), {"reference_scale": 195})()
    fa.face_alignment_net = det.fan
    rng = np.random.default_rng(0)
    peaks = rng.uniform(4, 59, (68, 2))  # heatmap (x, y) of each landmark's fixed peak
    yy, xx = np.mgrid[0:64, 0:64]
    fixed = np.exp(-((xx - peaks[:, :1, None]) ** 2 + (yy - peaks[:, 1:, None]) ** 2) / 4.0).astype(np.float32)
    redness = FAN.forward

    def fixed_forward(self, x):
        return [torch.from_numpy(fixed)[None].expand(x.shape[0], -1, -1, -1).contiguous()]

    for trial in range(3):
        dot = rng.uniform([90, 70], [200, 150])
        x0, y0 = dot - rng.uniform([40, 30], [90, 70])
        box = np.array([x0, y0, x0 + rng.uniform(100, 200), y0 + rng.uniform(110, 200)])
        cell = 200 * ((box[2] - box[0]) + (box[3] - box[1])) / 195 / 64
        im = load_image(photo(tmp_path / f"r{trial}.png", h=256, w=300, dot=tuple(dot), sigma=4.0))
        fa_box = [np.r_[box + 0.5, 1.0]]  # face-alignment boxes: pixel-corner coordinates
        monkeypatch.setattr(FAN, "forward", redness)
        ours = detect_landmarks(im, det, bbox=box).landmarks
        theirs = fa.get_landmarks_from_image(im.rgb, detected_faces=fa_box)[0]
        np.testing.assert_allclose(ours, np.tile(dot, (68, 1)), atol=0.5 * cell)
        np.testing.assert_allclose(ours, theirs, atol=0.5 * cell + 1.0)

        monkeypatch.setattr(FAN, "forward", fixed_forward)
        ours = detect_landmarks(im, det, bbox=box).landmarks.astype(np.float64)
        theirs = fa.get_landmarks_from_image(im.rgb, detected_faces=fa_box)[0].astype(np.float64)
        # theirs = the pixel-corner coordinate (ours + 0.5) truncated towards zero
        corner = ours + 0.5
        lo = np.where(theirs > 0, theirs, theirs - 1)
        hi = np.where(theirs >= 0, theirs + 1, theirs)
        assert ((corner >= lo - 1e-3) & (corner <= hi + 1e-3)).all(), f"trial {trial}: {np.c_[corner, theirs]}"


def test_several_faces_largest_and_face_index(tmp_path, fa_weights, fast_fan):
    fa_weights("many")
    det = load_landmark_detector("cpu")
    im = load_image(photo(tmp_path / "a.png"))
    faces = detect_faces(im, det)
    areas = (faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])
    assert len(faces) == 10 and (np.diff(areas) <= 1e-6).all()
    np.testing.assert_allclose(faces[0, :4], ONE_BOX, atol=1e-3)
    np.testing.assert_allclose(areas[1:], 64.0**2, rtol=1e-4)
    # (the default, largest face, is checked through the CLI in test_cli_several_faces)
    np.testing.assert_allclose(detect_landmarks(im, det, face_index=3).bbox, faces[3, :4], atol=1e-3)
    with pytest.raises(InputError, match=r"10 face\(s\) found, valid indices are 0\.\.9"):
        detect_landmarks(im, det, face_index=10)


def test_no_face(tmp_path, fa_weights, fast_fan):
    fa_weights("none")
    det = load_landmark_detector("cpu")
    p = photo(tmp_path / "a.png")
    with pytest.raises(NoFaceError, match="no face found") as e:
        detect_landmarks(load_image(p), det)
    assert str(p) in str(e.value)
    assert fast_fan == []  # no network pass without a face


def test_missing_weights_name_the_fetch_command(fa_weight_files, monkeypatch):
    from avatarcli.weights import env_var_for

    monkeypatch.delenv(env_var_for("fan-2d"), raising=False)
    monkeypatch.delenv(env_var_for("s3fd"), raising=False)
    with pytest.raises(MissingModelError, match="avatar weights fetch fan-2d"):
        load_landmark_detector("cpu")
    monkeypatch.setenv(env_var_for("fan-2d"), str(fa_weight_files["fan-2d"].parent))
    with pytest.raises(MissingModelError, match="avatar weights fetch s3fd"):
        load_landmark_detector("cpu")
    assert load_landmark_detector("cpu", need_detector=False).sfd is None  # the box path needs no detector


def test_corrupt_weights_are_an_environment_error(tmp_path, fa_weights, monkeypatch):
    from avatarcli.testing.tiny_face_alignment import SFD_FILE
    from avatarcli.weights import env_var_for

    bad = tmp_path / "s3fd" / SFD_FILE
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setenv(env_var_for("s3fd"), str(bad.parent))
    with pytest.raises(EnvironmentProblem, match="avatar weights verify s3fd") as e:
        load_landmark_detector("cpu")
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    # a loadable file holding the wrong network
    import torch

    torch.save({"conv1.weight": torch.zeros(3)}, bad)
    with pytest.raises(EnvironmentProblem, match="does not match the network") as e:
        load_landmark_detector("cpu")
    assert "\n" not in str(e.value) and str(bad) in str(e.value)


def test_landmarks_from_points(tmp_path):
    im = load_image(photo(tmp_path / "a.png", h=100, w=140))
    pts = np.random.default_rng(0).uniform([20, 10], [120, 90], (68, 2))
    lm = landmarks_from_points(im, pts)
    np.testing.assert_allclose(lm.landmarks, pts, atol=1e-4)
    np.testing.assert_allclose(lm.bbox, [*pts.min(0), *pts.max(0)], atol=1e-4)
    assert (lm.scores == 1).all() and lm.image_size == (100, 140) and lm.detector == "user-supplied"
    with pytest.raises(InputError, match="68"):
        landmarks_from_points(im, pts[:5])
    with pytest.raises(InputError, match="NaN"):
        landmarks_from_points(im, np.where(np.arange(68)[:, None] == 3, np.nan, pts))
    with pytest.raises(InputError, match="normalised"):
        landmarks_from_points(im, pts / 140.0)
    with pytest.raises(InputError, match="outside"):
        landmarks_from_points(im, pts + 1000)


def test_read_points_formats(tmp_path):
    pts = np.random.default_rng(2).uniform(10, 90, (68, 2))
    np.save(tmp_path / "a.npy", pts)
    np.save(tmp_path / "b.npy", np.c_[pts, np.ones(68)][None])  # [1, 68, 3] (face-alignment 3D output)
    np.savetxt(tmp_path / "c.txt", pts)
    (tmp_path / "d.csv").write_text("# x,y\n" + "\n".join(f"{x},{y}" for x, y in pts))
    body = "\n".join(f"{x + 1:.6f} {y + 1:.6f}" for x, y in pts)  # iBUG .pts: 1-based
    (tmp_path / "e.pts").write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    np.savez(tmp_path / "f.npz", lmk=pts)
    for name in ["a.npy", "b.npy", "c.txt", "d.csv", "e.pts", "f.npz"]:
        np.testing.assert_allclose(read_points(tmp_path / name), pts, atol=1e-5, err_msg=name)
    bad = {
        "g.npy": lambda p: np.save(p, pts[:60]),
        "h.txt": lambda p: p.write_text("x y\n1 2\n"),
        "i.pts": lambda p: p.write_text("version: 1\nn_points: 68\n{\n1 2\n}\n"),
        "j.npz": lambda p: np.savez(p, a=pts, b=pts),
        "k.json": lambda p: p.write_text("[]"),
        "l.npy": lambda p: p.write_bytes(b"garbage"),
    }
    for name, make in bad.items():
        make(tmp_path / name)
        with pytest.raises(InputError) as e:
            read_points(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------ CLI


@pytest.mark.slow  # one real FAN forward pass: several seconds on a 2-core CPU
def test_cli_real_fan_end_to_end(tmp_path, fa_weights, monkeypatch):
    """The one test with a real FAN forward pass: artifact fields, scores = heatmap maxima,
    points = the heatmap maxima mapped back to the photo (re-derived here)."""
    from face_alignment.models import FAN

    seen = []
    real_forward = FAN.forward

    def spy(self, x):
        out = real_forward(self, x)
        seen.append(out[-1].detach().numpy().copy())
        return out

    monkeypatch.setattr(FAN, "forward", spy)
    out = tmp_path / "out" / "a.npz"
    assert main(["landmarks", str(photo(tmp_path / "a.png")), "-o", str(out), "--device", "cpu"]) == 0
    lm = read_landmarks(out)
    assert len(seen) == 1 and seen[0].shape == (1, 68, 64, 64)
    hm = seen[0][0]
    assert np.isfinite(lm.landmarks).all() and lm.landmarks.dtype == np.float32
    np.testing.assert_allclose(lm.scores, hm.reshape(68, -1).max(1), rtol=1e-6)
    np.testing.assert_allclose(lm.bbox, ONE_BOX, atol=1e-3)
    x0, y0, x1, y1 = ONE_BOX
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 0.12 * (y1 - y0)
    side = 200 * ((x1 - x0) + (y1 - y0)) / 195
    for j in range(68):
        ky, kx = np.unravel_index(np.argmax(hm[j]), (64, 64))
        u = np.array([kx, ky], dtype=float)
        if 0 < kx < 63 and 0 < ky < 63:
            u += 0.25 * np.sign([hm[j, ky, kx + 1] - hm[j, ky, kx - 1], hm[j, ky + 1, kx] - hm[j, ky - 1, kx]])
        crop_px = 4 * u + 1.5
        want = (crop_px - 127.5) * side / 256 + [cx, cy]
        np.testing.assert_allclose(lm.landmarks[j], want, atol=1e-3)


def test_cli_bbox_needs_no_detector_and_max_side(tmp_path, fa_weights, fast_fan, monkeypatch):
    from avatarcli.weights import env_var_for

    monkeypatch.setenv(env_var_for("s3fd"), str(tmp_path / "nowhere"))  # detector unavailable
    p = photo(tmp_path / "big.png", h=288, w=384, dot=(250.0, 130.0), sigma=4.0)
    out = tmp_path / "lm.npz"
    assert main(["landmarks", str(p), "-o", str(out), "--bbox", "180,70,330,230", "--max-side", "96"]) == 0
    lm = read_landmarks(out)
    assert lm.image_size == (288, 384)
    np.testing.assert_allclose(lm.bbox, (180, 70, 330, 230))
    np.testing.assert_allclose(lm.landmarks, np.tile([250.0, 130.0], (68, 1)), atol=5.0)


def test_cli_no_face_is_exit_2_without_output(tmp_path, fa_weights, fast_fan, capsys):
    fa_weights("none")
    p = photo(tmp_path / "a.png")
    out = tmp_path / "a.npz"
    assert main(["landmarks", str(p), "-o", str(out)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "no face found" in lines[0] and str(p) in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == [p]


def test_cli_several_faces(tmp_path, fa_weights, fast_fan, capsys):
    fa_weights("many")
    p = photo(tmp_path / "a.png")
    assert main(["landmarks", str(p), "-o", str(tmp_path / "0.npz")]) == 0
    np.testing.assert_allclose(read_landmarks(tmp_path / "0.npz").bbox, ONE_BOX, atol=1e-3)
    assert main(["landmarks", str(p), "-o", str(tmp_path / "1.npz"), "--face-index", "1"]) == 0
    b = read_landmarks(tmp_path / "1.npz").bbox
    np.testing.assert_allclose((b[2] - b[0], b[3] - b[1]), (64, 64), rtol=1e-4)
    capsys.readouterr()
    assert main(["landmarks", str(p), "-o", str(tmp_path / "9.npz"), "--face-index", "12"]) == 2
    assert "--face-index 12: 10 face(s) found" in capsys.readouterr().err
    assert not (tmp_path / "9.npz").exists()


def test_cli_missing_weights_exit_3_after_checking_images(tmp_path, capsys):
    p = photo(tmp_path / "a.png")
    out = tmp_path / "a.npz"
    assert main(["landmarks", str(p), "-o", str(out), "--detector", "fan"]) == 3
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "avatar weights fetch fan-2d" in lines[0]
    assert not out.exists()
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a photo")
    assert main(["landmarks", str(bad), "-o", str(out)]) == 2  # the photo is checked before any model
    assert str(bad) in capsys.readouterr().err


def test_cli_batch_reports_bad_photos_and_finishes(tmp_path, fa_weights, fast_fan, capsys):
    good = [photo(tmp_path / f"g{i}.png", seed=i) for i in range(2)]
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    full = photo(tmp_path / "trunc_src.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:400])  # header fine, pixels truncated: fails at load
    outdir = tmp_path / "out"
    rc = main(["landmarks", str(good[0]), str(text), str(cut), str(good[1]), "-o", str(outdir)])
    assert rc == 1
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 2 and str(text) in lines[0] and str(cut) in lines[1]
    assert sorted(x.name for x in outdir.iterdir()) == ["g0.npz", "g1.npz"]
    assert "2 of 4 photo(s) failed" in err
    assert len(fast_fan) == 2


def test_cli_bring_your_own_points(tmp_path, capsys):
    """--landmarks: no model at all (no weights configured), iBUG .pts converted to our artifact."""
    p = photo(tmp_path / "a.png", h=100, w=140)
    pts = np.random.default_rng(0).uniform([20, 10], [120, 90], (68, 2))
    body = "\n".join(f"{x + 1:.4f} {y + 1:.4f}" for x, y in pts)
    pts_file = tmp_path / "a.pts"
    pts_file.write_text(f"version: 1\nn_points: 68\n{{\n{body}\n}}\n")
    out = tmp_path / "a.npz"
    assert main(["landmarks", str(p), "-o", str(out), "--landmarks", str(pts_file)]) == 0
    lm = read_landmarks(out)
    np.testing.assert_allclose(lm.landmarks, pts, atol=1e-3)
    assert lm.detector == "user-supplied" and lm.image_size == (100, 140)
    # several photos: a folder of NAME.<ext>
    q = photo(tmp_path / "b.png", h=100, w=140)
    folder = tmp_path / "mine"
    folder.mkdir()
    np.save(folder / "a.npy", pts)
    np.savetxt(folder / "b.txt", pts + 3)
    assert main(["landmarks", str(p), str(q), "-o", str(tmp_path / "outs"), "--landmarks", str(folder)]) == 0
    np.testing.assert_allclose(read_landmarks(tmp_path / "outs" / "b.npz").landmarks, pts + 3, atol=1e-3)
    capsys.readouterr()
    assert main(["landmarks", str(p), "-o", str(out), "--landmarks", str(tmp_path / "none.npy")]) == 2
    assert len(error_lines(capsys.readouterr().err)) == 1


@pytest.mark.parametrize(
    "args,words",
    [
        (["--bbox", "1,2,3"], "four numbers"),
        (["--bbox", "50,50,10,90"], "x1 > x0"),
        (["--bbox", "10,10,90,90", "--face-index", "1"], "cannot be combined"),
        (["--bbox", "500,500,600,600"], "outside"),
    ],
)
def test_cli_usage_errors(tmp_path, fa_weights, fast_fan, capsys, args, words):
    p = photo(tmp_path / "a.png")
    out = tmp_path / "a.npz"
    assert main(["landmarks", str(p), "-o", str(out), *args]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and words in lines[0]
    assert not out.exists() and fast_fan == []


def test_help_has_examples():
    from typer.testing import CliRunner

    from avatarcli.cli import app

    r = CliRunner().invoke(app, ["landmarks", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output and "--face-index" in r.output
