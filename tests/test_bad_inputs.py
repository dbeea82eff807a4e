"""Bad input, through the real commands: a corpus generated here, each case refused with the
documented exit code, ONE line naming the file, no traceback and no output left behind; in a
batch the other photos still finish. Inputs a user would expect to work are accepted."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from avatarcli.cli import main

# ----------------------------------------------------------------------------- the corpus


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(w: int = 20_000, h: int = 20_000) -> bytes:
    """A PNG header claiming w x h pixels (400 MP) and no pixel data: refused from the header."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def _noise(size=(64, 64), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


BAD_IMAGES = {
    "zero.jpg": lambda: b"",
    "text.jpg": lambda: b"this is a text file, renamed\n" * 20,
    "truncjpeg.jpg": lambda: _encoded(_noise(), "JPEG", quality=90)[:700],
    "truncpng.png": lambda: (lambda d: d[: len(d) // 2])(_encoded(_noise(), "PNG")),
    "tiny.png": lambda: _encoded(Image.new("RGB", (1, 1)), "PNG"),
    "bomb.png": bomb_png,
}
EXPECTED_WORDS = {
    "zero.jpg": "empty",
    "text.jpg": "not an image",
    "truncjpeg.jpg": "truncated",
    "truncpng.png": "truncated",
    "tiny.png": "minimum",
    "bomb.png": "megapixels",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad-images")
    for name, make in BAD_IMAGES.items():
        (d / name).write_bytes(make())
    return d


@pytest.fixture(scope="module")
def flame_file(tmp_path_factory) -> Path:
    from avatarcli.testing.synthetic_flame import write_synthetic_flame

    return write_synthetic_flame(tmp_path_factory.mktemp("flame"), layout="deca")


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict:
    """A synthetic photo of the synthetic FLAME head, its true landmarks, a valid head PLY."""
    from avatarcli.io.hashing import sha256_file
    from avatarcli.landmarks.artifact import Landmarks, write_landmarks
    from avatarcli.testing.synthetic_photo import make_synthetic_photo

    d = tmp_path_factory.mktemp("good")
    p = make_synthetic_photo(size=64)
    img = d / "good.png"
    Image.fromarray(p.rgb).save(img)
    lo, hi = p.landmarks.min(0), p.landmarks.max(0)
    lm = Landmarks(p.size, p.landmarks, np.ones(68), np.r_[lo, hi], sha256_file(img), "truth")
    (d / "lm").mkdir()
    write_landmarks(d / "lm" / "good.npz", lm)
    return {"dir": d, "image": img, "landmarks": d / "lm" / "good.npz", "lm": lm}


def _ply_bytes() -> bytes:
    import torch

    from avatarcli.gaussians.model import Gaussians
    from avatarcli.gaussians.ply import GaussianPly, ply_bytes

    g = torch.Generator().manual_seed(0)
    n = 50
    gs = Gaussians(
        torch.randn(n, 3, generator=g) * 0.05,
        torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        torch.full((n, 3), 0.01),
        torch.full((n,), 0.7),
        torch.rand(n, 1, 3, generator=g),
    )
    return ply_bytes(GaussianPly(gs))


def _check_refused(rc: int, want_rc: int, err: str, name: str, outputs: list[Path], word: str | None = None) -> None:
    assert rc == want_rc, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected ONE line, got:\n{err}"
    assert name in lines[0], lines[0]
    assert "Traceback" not in err
    if word:
        assert word in lines[0], lines[0]
    for o in outputs:
        assert not o.exists(), o
        if o.parent.exists():
            assert not [p for p in o.parent.iterdir() if p.name.startswith(f".{o.stem}") or p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- images


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_photo_single_reconstruct(name, corpus, tmp_path, capsys):
    out = tmp_path / "out" / "head.ply"
    # no FLAME, no weights: the photo is refused before any of that is looked at
    rc = main(["reconstruct", str(corpus / name), "-o", str(out), "--device", "cpu"])
    _check_refused(rc, 2, capsys.readouterr().err, name, [out], EXPECTED_WORDS[name])


def _no_fit_stats(ply):
    """What a denoise stand-in reports: the head as it came, no figures."""
    from avatarcli.stages.denoise import DenoiseStats

    z = 0.0
    return DenoiseStats(z, z, z, z, ply.gaussians.n, z, z, z, None, None, (0, 0), "given", z, z, z)


@pytest.mark.slow
def test_bad_photos_in_a_batch_the_good_one_finishes(corpus, good, flame_file, tmp_path, capsys, monkeypatch):
    import shutil

    import avatarcli.reconstruct.runner as den_mod  # where the runner looks denoise_head up

    # the photometric fit is not what this is about (test_reconstruct runs it): keep the init head
    monkeypatch.setattr(den_mod, "denoise_head", lambda ply, *a, **k: (ply, _no_fit_stats(ply)))

    d = tmp_path / "photos"
    shutil.copytree(corpus, d)
    shutil.copy(good["image"], d / "good.png")
    out = tmp_path / "heads"
    rc = main(["reconstruct", str(d), "-o", str(out), "--flame", str(flame_file), "--landmarks", str(good["landmarks"].parent),
               "--no-diffusion", "--device", "cpu", "--steps", "3", "--n-gaussians", "600", "--json"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 1, cap.err
    s = json.loads(cap.out)
    by = {r["name"]: r for r in s["images"]}
    assert by["good"]["status"] == "done"
    assert sorted(p.name for p in out.iterdir()) == ["good.ply"]
    for name in BAD_IMAGES:
        r = by[Path(name).stem]
        assert r["status"] == "failed" and name in r["error"] and r["error_stage"] == "validate"
        assert "\n" not in r["error"]
    assert "Traceback" not in cap.err


ACCEPTED = {
    "gray.png": lambda: _encoded(_noise().convert("L"), "PNG"),
    "cmyk.jpg": lambda: _encoded(_noise().convert("CMYK"), "JPEG"),
    "rgba.png": lambda: _encoded(_noise().convert("RGBA"), "PNG"),
    "deep16.png": lambda: _encoded(Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)), "PNG"),
    "palette.png": lambda: _encoded(_noise().convert("P"), "PNG"),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_photo_kinds_pass_validation(name, tmp_path):
    from avatarcli.io.images import load_image
    from avatarcli.reconstruct import plan_batch, validate_inputs

    p = tmp_path / name
    p.write_bytes(ACCEPTED[name]())
    jobs = plan_batch([p], tmp_path / "h.ply")
    assert validate_inputs(jobs) == {}
    img = load_image(p)
    assert img.rgb.dtype == np.uint8 and img.rgb.shape == (64, 64, 3)


def test_exif_rotated_photo_is_upright(tmp_path):
    from avatarcli.io.images import load_image
    from avatarcli.reconstruct import plan_batch, validate_inputs

    im = Image.new("RGB", (80, 40), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 40, 40))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: a viewer turns it 90 degrees clockwise
    p = tmp_path / "rot.jpg"
    im.save(p, "JPEG", exif=exif.tobytes(), quality=95)
    assert validate_inputs(plan_batch([p], tmp_path / "h.ply")) == {}
    img = load_image(p)
    assert img.rgb.shape == (80, 40, 3) and img.original_size == (80, 40)
    assert img.rgb[5, 20, 2] > 200  # the blue half is on top after rotating clockwise


def test_very_large_photo_is_downscaled(tmp_path):
    from avatarcli.io.images import load_image
    from avatarcli.reconstruct import plan_batch, validate_inputs

    p = tmp_path / "big.jpg"
    Image.new("RGB", (6000, 4000), (90, 120, 150)).save(p, "JPEG", quality=80)
    assert validate_inputs(plan_batch([p], tmp_path / "h.ply")) == {}
    img = load_image(p, max_side=512)
    assert max(img.size) == 512 and img.original_size == (4000, 6000)


# ----------------------------------------------------------------------------- artifacts


def _landmark_arrays(lm) -> dict:
    return lm.arrays()


def test_landmarks_npz_missing_keys_wrong_shapes_newer_version(good, flame_file, tmp_path, capsys):
    from avatarcli.io.npz import write_npz
    from avatarcli.landmarks.artifact import FORMAT, VERSION

    arrays = _landmark_arrays(good["lm"])
    cases = {
        "missing.npz": (VERSION, {k: v for k, v in arrays.items() if k != "scores"}, "scores"),
        "shape.npz": (VERSION, {**arrays, "landmarks": arrays["landmarks"][:60]}, "landmarks"),
        "nan.npz": (VERSION, {**arrays, "landmarks": np.full((68, 2), np.nan, np.float32)}, "NaN"),
        "newer.npz": (VERSION + 1, arrays, "newer"),
    }
    for name, (version, arr, word) in cases.items():
        write_npz(tmp_path / name, FORMAT, version, arr)
        out = tmp_path / "fits" / f"{name}.flame.npz"
        rc = main(["fit-flame", str(tmp_path / name), "-o", str(out), "--flame", str(flame_file), "--device", "cpu"])
        _check_refused(rc, 2, capsys.readouterr().err, name, [out], word)


def test_flame_fit_npz_bad_through_render_camera(good, tmp_path, capsys):
    """flame.npz with a missing key, passed where a fit is expected (init-gaussians)."""
    from avatarcli.flame.artifact import FIT_FORMAT, FIT_VERSION
    from avatarcli.io.npz import write_npz

    write_npz(tmp_path / "fit.npz", FIT_FORMAT, FIT_VERSION, {"shape": np.zeros(10, np.float32)})
    out = tmp_path / "init.ply"
    rc = main(["init-gaussians", str(tmp_path / "fit.npz"), "--image", str(good["image"]), "-o", str(out)])
    _check_refused(rc, 2, capsys.readouterr().err, "fit.npz", [out])


@pytest.mark.parametrize("case", ["truncated", "nan", "newer"])
def test_bad_ply_through_render(case, tmp_path, capsys):
    data = _ply_bytes()
    head_end = data.index(b"end_header\n") + len(b"end_header\n")
    if case == "truncated":
        data = data[: head_end + (len(data) - head_end) // 2]
        word = None
    elif case == "nan":
        data = data[:head_end] + struct.pack("<f", float("nan")) + data[head_end + 4 :]
        word = "non-finite"
    else:  # a head whose metadata is from a newer avatarcli
        from avatarcli.gaussians.ply import META_VERSION

        data = _head_ply_with_meta_version(META_VERSION + 1)
        word = "newer"
    p = tmp_path / f"{case}.ply"
    p.write_bytes(data)
    out = tmp_path / "view.png"
    rc = main(["render", str(p), "-o", str(out), "--size", "32", "--backend", "torch"])
    _check_refused(rc, 2, capsys.readouterr().err, p.name, [out], word)


def _head_ply_with_meta_version(version: int) -> bytes:
    import torch

    from avatarcli.gaussians.model import Gaussians
    from avatarcli.gaussians.ply import GaussianPly, HeadMeta, ply_bytes

    n = 20
    gs = Gaussians(torch.zeros(n, 3), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.full((n, 3), 0.01),
                   torch.full((n,), 0.5), torch.zeros(n, 1, 3))  # fmt: skip
    meta = HeadMeta.from_fit(
        SimpleNamespace(shape=np.zeros(10), expr=np.zeros(10), global_pose=np.zeros(3), neck_pose=np.zeros(3), jaw_pose=np.zeros(3),
        eyes_pose=np.zeros(6), translation=np.zeros(3), K=np.eye(3), viewmat=np.eye(4), image_size=(64, 64),
        flame_model_sha256="0" * 64),
        np.zeros(3), n_faces=100, sh_degree=0,
    )  # fmt: skip
    data = ply_bytes(GaussianPly(gs, torch.zeros(n, dtype=torch.long), meta))
    old = b'"version":1'
    assert data.count(old) == 1
    return data.replace(old, b'"version":%d' % version)


def test_expression_npz_missing_and_wrong_shapes(tmp_path, capsys):
    from avatarcli.animate.expressions import load_expression
    from avatarcli.errors import ArtifactError

    np.savez(tmp_path / "shape.npz", jaw_pose=np.zeros((10, 2), np.float32))
    np.savez(tmp_path / "nan.npz", jaw_pose=np.full((10, 3), np.nan, np.float32))
    np.savez(tmp_path / "empty.npz")
    for name in ("shape.npz", "nan.npz", "empty.npz"):
        with pytest.raises(ArtifactError, match=name):
            load_expression(tmp_path / name)


# ----------------------------------------------------------------------------- FLAME, folders, outputs


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_a_foreign_global_as_flame(good, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "generic_model.pkl"
    evil.write_bytes(pickle.dumps({"v_template": _Evil(marker)}, protocol=2))
    out = tmp_path / "fit.npz"
    rc = main(["fit-flame", str(good["landmarks"]), "-o", str(out), "--flame", str(evil), "--device", "cpu"])
    _check_refused(rc, 2, capsys.readouterr().err, "generic_model.pkl", [out])
    assert not marker.exists()  # nothing in the pickle ran


def test_pickle_with_a_foreign_global_in_reconstruct(good, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "generic_model.pkl"
    evil.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    out = tmp_path / "head.ply"
    rc = main(["reconstruct", str(good["image"]), "-o", str(out), "--flame", str(evil), "--landmarks",
               str(good["landmarks"]), "--no-diffusion", "--device", "cpu"])  # fmt: skip
    _check_refused(rc, 2, capsys.readouterr().err, "generic_model.pkl", [out])
    assert not marker.exists()


def test_a_folder_where_a_file_is_expected(good, flame_file, tmp_path, capsys):
    folder = tmp_path / "lm.npz"
    folder.mkdir()
    out = tmp_path / "fit.npz"
    rc = main(["fit-flame", str(folder), "-o", str(out), "--flame", str(flame_file)])
    _check_refused(rc, 2, capsys.readouterr().err, "lm.npz", [out], "folder")
    folder2 = tmp_path / "head.ply"
    folder2.mkdir()
    rc = main(["render", str(folder2), "-o", str(tmp_path / "v.png")])
    _check_refused(rc, 2, capsys.readouterr().err, "head.ply", [tmp_path / "v.png"])
    # a folder as the output of one photo is fine (out/NAME.ply); an output path that IS a folder
    # named like the head is refused when the photo's head would go over it
    (tmp_path / "heads" / "good.ply").mkdir(parents=True)
    rc = main(["reconstruct", str(good["image"]), "-o", str(tmp_path / "heads") + "/", "--device", "cpu"])
    _check_refused(rc, 2, capsys.readouterr().err, "good.ply", [], "folder")


def test_unwritable_output_folder(good, flame_file, tmp_path, capsys):
    """/proc refuses new files even to root (chmod does not stop root)."""
    out = Path("/proc/avatarcli-no/head.ply")
    rc = main(["reconstruct", str(good["image"]), "-o", str(out), "--flame", str(flame_file), "--landmarks",
               str(good["landmarks"]), "--no-diffusion", "--device", "cpu"])  # fmt: skip
    _check_refused(rc, 3, capsys.readouterr().err, "/proc/avatarcli-no", [])
    rc = main(["reconstruct", str(good["image"]), "-o", str(tmp_path / "h.ply"), "--workdir", "/proc/avatarcli-work",
               "--flame", str(flame_file), "--landmarks", str(good["landmarks"]), "--no-diffusion"])  # fmt: skip
    _check_refused(rc, 3, capsys.readouterr().err, "/proc/avatarcli-work", [tmp_path / "h.ply"])


def test_several_faces_face_index_out_of_range(flame_file, tmp_path, fa_weights, capsys):
    """Several faces: --face-index beyond them is one clear line (exit 2), nothing written."""
    fa_weights("many")
    img = tmp_path / "crowd.png"
    _noise((128, 128)).save(img)
    out = tmp_path / "head.ply"
    rc = main(["reconstruct", str(img), "-o", str(out), "--flame", str(flame_file), "--no-diffusion", "--device", "cpu",
               "--face-index", "999"])  # fmt: skip
    _check_refused(rc, 2, capsys.readouterr().err, "crowd.png", [out])
