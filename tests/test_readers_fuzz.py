"""Property tests of every artifact reader: any bytes in -> a valid object or the one clear error
(AvatarError, one line naming the file), never another exception.

Three kinds of input per reader: arbitrary bytes; a valid file with bytes flipped, cut or
inserted; and (for the npz readers) well-formed archives with arbitrary arrays under the real
key names, which reach the field checks behind the container."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from avatarcli.errors import AvatarError

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


# ----------------------------------------------------------------------------- valid seeds


def _landmarks_bytes(tmp: Path) -> bytes:
    from avatarcli.landmarks.artifact import Landmarks, write_landmarks

    rng = np.random.default_rng(0)
    lm = Landmarks((64, 48), rng.uniform(5, 40, (68, 2)), np.ones(68), np.array([2, 2, 44, 60.0]), "ab" * 32, "fuzz")
    write_landmarks(tmp / "seed_lm.npz", lm)
    return (tmp / "seed_lm.npz").read_bytes()


def _fit_bytes(tmp: Path) -> bytes:
    from avatarcli.flame.artifact import FIT_VIEWMAT, FlameFit, write_flame_fit

    fit = FlameFit(
        shape=np.zeros(10), expr=np.zeros(5), global_pose=np.zeros(3), neck_pose=np.zeros(3), jaw_pose=np.zeros(3),
        eyes_pose=np.zeros(6), translation=np.array([0, 0, -1.0]), K=np.array([[80.0, 0, 32], [0, 80, 32], [0, 0, 1]]),
        viewmat=FIT_VIEWMAT, image_size=(64, 64), landmark_error_px=np.zeros(68), flame_model_sha256="cd" * 32,
    )  # fmt: skip
    write_flame_fit(tmp / "seed_fit.npz", fit)
    return (tmp / "seed_fit.npz").read_bytes()


def _features_bytes(tmp: Path) -> bytes:
    from avatarcli.diffusion.features import Features, features_to_bytes

    f = Features(
        latents=np.zeros((4, 2, 2), np.float32), image_embeds=np.zeros((1, 8), np.float32),
        mask_crop=np.zeros((16, 16), np.uint8), mask_image=np.ones((20, 24), np.uint8),
        affine=np.array([[1.0, 0, 0], [0, 1, 0]]), crop_box=np.array([0, 0, 16, 16.0]), image_sha256="ef" * 32,
        models={"vae": {"name": "x"}},
    )  # fmt: skip
    return features_to_bytes(f)


def _ply_bytes(tmp: Path) -> bytes:
    import torch

    from avatarcli.gaussians.model import Gaussians
    from avatarcli.gaussians.ply import GaussianPly, HeadMeta, ply_bytes

    n = 6
    g = torch.Generator().manual_seed(0)
    gs = Gaussians(torch.randn(n, 3, generator=g), torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
                   torch.full((n, 3), 0.01), torch.full((n,), 0.5), torch.rand(n, 4, 3, generator=g))  # fmt: skip
    meta = HeadMeta.from_fit(
        SimpleNamespace(shape=np.zeros(3), expr=np.zeros(2), global_pose=np.zeros(3), neck_pose=np.zeros(3), jaw_pose=np.zeros(3),
        eyes_pose=np.zeros(6), translation=np.zeros(3), K=np.eye(3), viewmat=np.eye(4), image_size=(8, 8),
        flame_model_sha256="0" * 64),
        np.zeros(3), n_faces=10, sh_degree=1,
    )  # fmt: skip
    return ply_bytes(GaussianPly(gs, torch.arange(n) % 10, meta))


def _expression_bytes(tmp: Path) -> bytes:
    b = io.BytesIO()
    np.savez(b, expr=np.zeros((5, 10), np.float32), jaw_pose=np.zeros((5, 3), np.float32), fps=np.float32(25))
    return b.getvalue()


def _read_landmarks(p):
    from avatarcli.landmarks.artifact import read_landmarks

    return read_landmarks(p)


def _read_fit(p):
    from avatarcli.flame.artifact import read_flame_fit

    return read_flame_fit(p)


def _read_features(p):
    from avatarcli.diffusion.features import read_features

    return read_features(p)


def _read_ply(p):
    from avatarcli.gaussians.ply import read_gaussian_ply

    return read_gaussian_ply(p)


def _read_expression(p):
    from avatarcli.animate.expressions import load_expression

    return load_expression(p)


READERS = {
    "landmarks": (_read_landmarks, _landmarks_bytes, ".npz"),
    "flame_fit": (_read_fit, _fit_bytes, ".npz"),
    "features": (_read_features, _features_bytes, ".safetensors"),
    "ply": (_read_ply, _ply_bytes, ".ply"),
    "expression": (_read_expression, _expression_bytes, ".npz"),
}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("fuzz-seeds")
    return {k: make(tmp) for k, (_, make, _) in READERS.items()}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _check(kind: str, data: bytes, scratch: Path):
    """The property: a value, or an AvatarError whose message is one line naming the file."""
    read, _, suffix = READERS[kind]
    p = scratch / f"input-{kind}{suffix}"
    p.write_bytes(data)
    try:
        return read(p)
    except AvatarError as e:
        msg = str(e)
        assert "\n" not in msg.strip(), msg
        assert p.name in msg, msg
        return None


def test_valid_seeds_read_back(seeds, scratch):
    for kind, data in seeds.items():
        assert _check(kind, data, scratch) is not None, kind


# ----------------------------------------------------------------------------- arbitrary bytes


@pytest.mark.parametrize("kind", sorted(READERS))
@SETTINGS
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes(kind, data, scratch):
    _check(kind, data, scratch)


# ----------------------------------------------------------------------------- mutated valid files


@st.composite
def mutations(draw, n_max: int = 8):
    """A list of (op, position fraction, byte value) edits."""
    ops = st.tuples(st.sampled_from(["flip", "set", "cut", "insert", "delete"]), st.floats(0, 1), st.integers(0, 255))
    return draw(st.lists(ops, min_size=1, max_size=n_max))


def _mutate(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for op, frac, val in edits:
        if not b:
            break
        i = min(int(frac * len(b)), len(b) - 1)
        if op == "flip":
            b[i] ^= 1 << (val % 8)
        elif op == "set":
            b[i] = val
        elif op == "cut":
            del b[i:]
        elif op == "insert":
            b[i:i] = bytes([val]) * (1 + val % 7)
        else:
            del b[i : i + 1 + val % 16]
    return bytes(b)


@pytest.mark.parametrize("kind", sorted(READERS))
@SETTINGS
@given(edits=mutations())
def test_mutated_valid_files(kind, edits, seeds, scratch):
    _check(kind, _mutate(seeds[kind], edits), scratch)


# ----------------------------------------------------------------------------- well-formed npz, arbitrary arrays


LANDMARK_KEYS = ["image_size", "landmarks", "scores", "bbox", "image_sha256", "detector", "format", "version"]
FIT_KEYS = ["shape", "expr", "global_pose", "neck_pose", "jaw_pose", "eyes_pose", "translation", "K", "viewmat",
            "image_size", "landmark_error_px", "flame_model_sha256", "format", "version"]  # fmt: skip
EXPR_KEYS = ["expr", "expression", "jaw_pose", "neck_pose", "eyes_pose", "eye_pose", "global_pose", "rotation", "translation",
             "fps", "shape", "timestep_id", "format", "version", "something_else"]  # fmt: skip

_dtypes = st.sampled_from(["f4", "f8", "i4", "i8", "u1", "b1", "U8", "S4", "c8"]).map(np.dtype)
_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=70)


@st.composite
def arrays_for(draw, keys: list[str], header: tuple[str, int] | None):
    chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=len(keys)))
    out = {}
    for k in chosen:
        dt = draw(_dtypes)
        shape = draw(_shapes)
        if dt.kind in "USc" and int(np.prod(shape)) > 16:
            shape = ()
        out[k] = draw(hnp.arrays(dt, shape))
    if header is not None and draw(st.booleans()):  # usually keep a plausible header, to get past it
        out["format"] = np.asarray(header[0])
        out["version"] = np.asarray(draw(st.sampled_from([header[1], header[1], 0, header[1] + 1, -3])))
    return out


def _npz(arrays: dict) -> bytes:
    b = io.BytesIO()
    np.savez(b, **arrays)
    return b.getvalue()


# Found by these tests (and fixed): an EMPTY `format` / `version` array used to raise
# IndexError instead of ArtifactError in io/npz.py and animate/expressions.py.


@pytest.mark.parametrize("kind", ["landmarks", "flame_fit", "expression"])
@pytest.mark.parametrize("key", ["format", "version"])
def test_empty_header_arrays_are_a_clear_error(kind, key, scratch):
    fmt = {
        "landmarks": "avatarcli.landmarks",
        "flame_fit": "avatarcli.flame_fit",
        "expression": "avatarcli.expression",
    }[kind]
    arrays = {"format": np.asarray(fmt), "version": np.asarray(1), "jaw_pose": np.zeros((2, 3), np.float32)}
    arrays[key] = np.zeros(0, np.float32)
    _check(kind, _npz(arrays), scratch)  # a value or an AvatarError, not an IndexError


@SETTINGS
@given(arrays=arrays_for(LANDMARK_KEYS, ("avatarcli.landmarks", 1)))
def test_landmarks_arbitrary_arrays(arrays, scratch):
    _check("landmarks", _npz(arrays), scratch)


@SETTINGS
@given(arrays=arrays_for(FIT_KEYS, ("avatarcli.flame_fit", 1)))
def test_flame_fit_arbitrary_arrays(arrays, scratch):
    _check("flame_fit", _npz(arrays), scratch)


@SETTINGS
@given(arrays=arrays_for(EXPR_KEYS, None))
def test_expression_arbitrary_arrays(arrays, scratch):
    _check("expression", _npz(arrays), scratch)


def test_a_pickled_object_array_is_refused_not_loaded(scratch):
    b = io.BytesIO()
    np.savez(b, landmarks=np.array([object()], dtype=object))
    for kind in ("landmarks", "flame_fit", "expression"):
        assert _check(kind, b.getvalue(), scratch) is None
