"""The dlib landmark detector (`--detector dlib|auto`) against dlib's own API on real portraits."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from avatarcli.cli import main
from avatarcli.io.images import load_image
from avatarcli.landmarks.artifact import read_landmarks
from avatarcli.testing.portraits import portrait, portraits

dlib = pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def dlib_detector():
    from avatarcli.landmarks.choose import load_detector

    return load_detector("dlib")


def _dlib_api_points(path) -> np.ndarray:
    """dlib's documented use, independent of avatarcli: load, detect (upsample 1), predict the largest face."""
    import glob
    import os

    site = os.path.dirname(os.path.dirname(dlib.__file__)) if hasattr(dlib, "__file__") else sys.prefix
    files = glob.glob(os.path.join(site, "**", "shape_predictor_68_face_landmarks.dat"), recursive=True)
    predictor = dlib.shape_predictor(files[0])
    img = dlib.load_rgb_image(str(path))
    det = dlib.get_frontal_face_detector()
    rects = det(img, 1)
    if len(rects) == 0:  # a tilted face scores just below 0: ask dlib for weaker detections, upsampled twice
        rects = det.run(img, 2, -0.3)[0]
    rect = max(rects, key=lambda r: r.area())
    return np.array([[p.x, p.y] for p in predictor(img, rect).parts()], dtype=np.float64)


def test_predictor_is_found_without_importing_its_package():
    code = (
        "import sys; from avatarcli.weights import resolve_file; p = resolve_file('dlib-68'); "
        "assert p.name == 'shape_predictor_68_face_landmarks.dat' and p.stat().st_size > 90e6, p; "
        "assert 'face_recognition_models' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper", "obama_turned", "einstein"])
def test_dlib_matches_dlib_api_on_real_portraits(name, dlib_detector):
    from avatarcli.landmarks.detect import detect_landmarks

    p = portrait(name)
    ref = _dlib_api_points(p.image_path)
    lm = detect_landmarks(load_image(p.image_path), dlib_detector)
    err = np.linalg.norm(lm.landmarks - ref, axis=1)
    assert np.median(err) <= 2.0, (name, np.median(err))
    assert lm.landmarks.shape == (68, 2) and (lm.scores == 1).all()
    inside = p.outline()[np.round(lm.landmarks[:, 1]).astype(int), np.round(lm.landmarks[:, 0]).astype(int)]
    assert inside.mean() > 0.9, name  # the points lie on the head of the hand-drawn outline


def test_dlib_on_a_downscaled_working_image_maps_back_to_original_pixels(dlib_detector):
    from avatarcli.landmarks.detect import detect_landmarks

    p = portrait("astronaut")
    lm = detect_landmarks(load_image(p.image_path, max_side=256), dlib_detector)  # half resolution
    err = np.linalg.norm(lm.landmarks - _dlib_api_points(p.image_path), axis=1)
    assert np.median(err) <= 2.0, np.median(err)
    assert lm.image_size == (512, 512)


def test_cli_dlib_batch_face_index_and_bbox(tmp_path, capsys):
    imgs = [str(q.image_path) for q in portraits()[:2]]
    assert main(["landmarks", *imgs, "-o", str(tmp_path / "lm/"), "--detector", "dlib"]) == 0
    a = read_landmarks(tmp_path / "lm" / "astronaut.npz")
    assert a.detector.startswith("dlib") and (tmp_path / "lm" / "grace_hopper.npz").is_file()
    # the astronaut photo holds a second, smaller "face" (dlib finds one on the mission patch)
    assert main(["landmarks", imgs[0], "-o", str(tmp_path / "k1.npz"), "--detector", "dlib", "--face-index", "1"]) == 0
    k1 = read_landmarks(tmp_path / "k1.npz")
    assert (k1.bbox[2] - k1.bbox[0]) * (k1.bbox[3] - k1.bbox[1]) <= (a.bbox[2] - a.bbox[0]) * (a.bbox[3] - a.bbox[1])
    assert main(["landmarks", imgs[0], "-o", str(tmp_path / "k9.npz"), "--detector", "dlib", "--face-index", "9"]) == 2
    assert "valid indices are 0..1" in capsys.readouterr().err
    box = ",".join(f"{v:.1f}" for v in a.bbox)
    assert main(["landmarks", imgs[0], "-o", str(tmp_path / "b.npz"), "--detector", "dlib", "--bbox", box]) == 0
    np.testing.assert_allclose(read_landmarks(tmp_path / "b.npz").landmarks, a.landmarks, atol=1.0)


def test_auto_uses_dlib_without_fan_weights_and_names_every_route_without_either(tmp_path, monkeypatch, capsys):
    img = str(portrait("astronaut").image_path)
    # the test cache holds no FAN weights: auto falls back to dlib
    assert main(["landmarks", img, "-o", str(tmp_path / "a.npz")]) == 0
    assert read_landmarks(tmp_path / "a.npz").detector.startswith("dlib")
    assert main(["landmarks", img, "-o", str(tmp_path / "f.npz"), "--flip"]) == 2
    assert "--flip" in capsys.readouterr().err
    monkeypatch.setenv("AVATAR_WEIGHTS_DLIB_68", str(tmp_path / "nowhere"))
    assert main(["landmarks", img, "-o", str(tmp_path / "b.npz")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "avatar weights fetch fan-2d s3fd" in err
    assert "pip install 'avatarcli[dlib]'" in err and "--landmarks FILE" in err
    assert not (tmp_path / "b.npz").exists()
    assert main(["landmarks", img, "-o", str(tmp_path / "c.npz"), "--detector", "dlib"]) == 3
    assert "AVATAR_WEIGHTS_DLIB_68" in capsys.readouterr().err


def test_weights_list_shows_the_pip_model_with_its_licence(capsys):
    from avatarcli.weights import get_entry, status

    e = get_entry("dlib-68")
    assert e.kind == "pip" and "non-commercial" in e.licence and "iBUG 300-W" in e.licence
    st = status("dlib-68", check_hashes=True)
    assert st.ok and st.hashes_checked == 1 and st.source == "pip"
    assert main(["weights", "list"]) == 0
    assert "pip:face-recognition-models" in capsys.readouterr().out
