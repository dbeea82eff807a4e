"""Expression files: keys, shapes, tracker layouts, padding, errors; and the frame sequence."""

from __future__ import annotations

import numpy as np
import pytest

from avatarcli.animate.expressions import load_expression, load_expressions, pad_expr
from avatarcli.animate.sequence import build_sequence, smoothstep, there_and_back_weights
from avatarcli.errors import ArtifactError, InputError


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_gaussianavatars_layout_is_read_as_is(tmp_path):
    T, V = 4, 10
    rng = np.random.default_rng(0)
    p = _save(
        tmp_path / "flame_param.npz",
        shape=rng.normal(size=300).astype(np.float32),
        expr=rng.normal(size=(T, 100)).astype(np.float32),
        rotation=rng.normal(size=(T, 3)).astype(np.float32),
        neck_pose=rng.normal(size=(T, 3)).astype(np.float32),
        jaw_pose=rng.normal(size=(T, 3)).astype(np.float32),
        eyes_pose=rng.normal(size=(T, 6)).astype(np.float32),
        translation=rng.normal(size=(T, 3)).astype(np.float32),
        static_offset=np.zeros((1, V, 3), np.float32),
        dynamic_offset=np.zeros((T, V, 3), np.float32),
        timestep_id=np.array([f"{i:05d}" for i in range(T)]),
    )
    c = load_expression(p)
    assert c.n_frames == T and not c.is_target
    assert c.global_pose.shape == (T, 3)
    with np.load(p) as z:
        np.testing.assert_array_equal(c.global_pose, z["rotation"])
        np.testing.assert_array_equal(c.expr, z["expr"])
        np.testing.assert_array_equal(c.eyes_pose, z["eyes_pose"])
    assert set(c.ignored) == {"shape", "static_offset", "dynamic_offset", "timestep_id"}


def test_minimal_file_and_missing_keys_are_zero(tmp_path):
    c = load_expression(_save(tmp_path / "j.npz", jaw_pose=np.ones((5, 3), np.float32), fps=np.float32(25)))
    assert c.n_frames == 5 and c.fps == 25.0
    assert c.expr.shape == (5, 0)
    assert not c.neck_pose.any() and not c.translation.any() and c.eyes_pose.shape == (5, 6)


def test_single_frame_1d_keys(tmp_path):
    c = load_expression(_save(tmp_path / "t.npz", expr=np.ones(10), jaw_pose=np.array([0.2, 0, 0])))
    assert c.is_target and c.expr.shape == (1, 10) and c.jaw_pose.dtype == np.float32


def test_vhap_per_frame_folder_is_one_clip(tmp_path):
    d = tmp_path / "flame_param"
    d.mkdir()
    for i in range(3):
        _save(
            d / f"{i:05d}.npz",
            expr=np.full((1, 50), i, np.float32),
            jaw_pose=np.full((1, 3), i, np.float32),
            rotation=np.zeros((1, 3), np.float32),
            shape=np.zeros(300, np.float32),
        )
    (clip,) = load_expressions([d])
    assert clip.n_frames == 3
    np.testing.assert_array_equal(clip.jaw_pose[:, 0], [0, 1, 2])


def test_folder_of_named_files_plays_in_name_order(tmp_path):
    d = tmp_path / "clips"
    d.mkdir()
    _save(d / "b.npz", jaw_pose=np.zeros((2, 3)))
    _save(d / "a.npz", jaw_pose=np.zeros((3, 3)))
    clips = load_expressions([d, d / "b.npz"])
    assert [c.name for c in clips] == ["a", "b", "b"]
    assert [c.n_frames for c in clips] == [3, 2, 2]


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"jaw_pose": np.zeros((2, 3)), "smile": np.zeros(2), "zzz": np.zeros(1)}, "unknown key(s) ['smile', 'zzz']"),
        ({"jaw_pose": np.zeros((2, 4))}, "'jaw_pose': shape [2, 4]"),
        ({"eyes_pose": np.zeros((2, 3))}, "'eyes_pose': shape [2, 3]"),
        ({"expr": np.zeros((2, 3, 1))}, "'expr': shape [2, 3, 1]"),
        ({"jaw_pose": np.zeros((2, 3)), "expr": np.zeros((3, 10))}, "disagree on the number of frames"),
        ({"jaw_pose": np.array([[0, np.nan, 0]])}, "'jaw_pose': contains NaN"),
        ({"expr": np.array([[np.inf]])}, "'expr': contains NaN"),
        ({"rotation": np.zeros((2, 3)), "global_pose": np.zeros((2, 3))}, "both give global_pose"),
        ({"shape": np.zeros(300)}, "no FLAME parameters"),
        ({"jaw_pose": np.zeros((2, 3)), "fps": np.float32(-1)}, "'fps'"),
        ({"jaw_pose": np.zeros((0, 3))}, "no frames"),
    ],
)
def test_bad_files_give_one_line_naming_file_and_key(tmp_path, arrays, needle):
    p = _save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ArtifactError) as e:
        load_expression(p)
    msg = str(e.value)
    assert needle in msg and str(p) in msg and "\n" not in msg


def test_pickled_file_is_refused(tmp_path):
    p = tmp_path / "pickle.npz"
    np.savez(p, jaw_pose=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ArtifactError, match="pickle"):
        load_expression(p)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_expressions([tmp_path / "nope.npz"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .npz"):
        load_expressions([tmp_path / "empty"])


def test_expr_zero_padding_and_too_many():
    e = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = pad_expr(e, 5)
    assert out.shape == (2, 5)
    np.testing.assert_array_equal(out[:, :3], e)
    assert not out[:, 3:].any()
    with pytest.raises(ArtifactError, match="3 expression coefficients, but the FLAME model has only 2"):
        pad_expr(e, 2, "x.npz")


def test_single_frame_target_goes_neutral_target_neutral(tmp_path):
    target = np.array([0.3, -0.1, 0.05], np.float32)
    c = load_expression(_save(tmp_path / "t.npz", jaw_pose=target, expr=np.ones(4, np.float32)))
    seq = build_sequence([c], n_expr=6, fps=10, duration=2.1)
    n = 21
    assert seq.n_frames == n and seq.fps == 10
    # independent re-derivation of the eased weights: smoothstep of a triangle 0 -> 1 -> 0
    s = np.arange(n) / (n - 1)
    tri = np.where(s <= 0.5, 2 * s, 2 - 2 * s)
    w = 3 * tri**2 - 2 * tri**3
    np.testing.assert_allclose(seq.jaw_pose, w[:, None] * target, atol=1e-6)
    np.testing.assert_allclose(seq.expr[:, :4], np.repeat(w[:, None], 4, 1), atol=1e-6)
    assert not seq.expr[:, 4:].any()  # zero-padded to the model's 6
    assert np.allclose(seq.jaw_pose[[0, -1]], 0) and np.allclose(seq.jaw_pose[n // 2], target)
    # eased: the first step is much smaller than the middle step (zero slope at the ends)
    d = np.abs(np.diff(w))
    assert d[0] < 0.25 * d[n // 4]  # linear would give equal steps
    assert np.all(np.diff(w[: n // 2 + 1]) >= 0) and np.all(np.diff(w[n // 2 :]) <= 0)


def test_weights_helpers():
    assert smoothstep(np.array([0.0, 0.5, 1.0, 2.0])).tolist() == [0.0, 0.5, 1.0, 1.0]
    w = there_and_back_weights(4)
    assert w[0] == 0 and w[-1] == 0 and w.max() < 1
    with pytest.raises(InputError):
        there_and_back_weights(2)


def test_sequence_concatenates_and_resamples(tmp_path):
    a = load_expression(
        _save(tmp_path / "a.npz", jaw_pose=np.linspace(0, 1, 11)[:, None] * [1, 0, 0], fps=np.float32(10))
    )
    b = load_expression(_save(tmp_path / "b.npz", neck_pose=np.array([0.1, 0, 0])))
    seq = build_sequence([a, b], n_expr=0, fps=20, duration=1.0)
    # a: 1 s at 10 fps -> 21 frames at 20 fps, linear in time; b: a 1 s target = 20 frames
    assert seq.n_frames == 21 + 20
    np.testing.assert_allclose(seq.jaw_pose[:21, 0], np.linspace(0, 1, 21), atol=1e-6)
    assert seq.clip.tolist() == [0] * 21 + [1] * 20
    assert not seq.neck_pose[:21].any() and not seq.jaw_pose[21:].any()
    # default fps: the first file's
    assert build_sequence([a], n_expr=0).fps == 10.0
    assert build_sequence([b], n_expr=0).fps == 30.0


def test_example_files_are_pose_only_and_valid():
    from pathlib import Path

    d = Path(__file__).resolve().parents[1] / "examples" / "expressions"
    files = sorted(d.glob("*.npz"))
    assert {p.stem for p in files} >= {"jaw_open", "nod", "head_turn", "look_around"}
    for p in files:
        c = load_expression(p)
        assert c.expr.shape[1] == 0, f"{p.name} must not invent expression coefficients"
        assert c.fps == 30.0 and c.n_frames > 10
    jaw = load_expression(d / "jaw_open.npz")
    assert jaw.present == ("jaw_pose",) and jaw.jaw_pose[:, 0].max() > 0.2


@pytest.mark.parametrize("name", ["smile.txt", "smile.npy", "smile"])
def test_expr_that_is_not_an_npz_lists_the_accepted_formats(tmp_path, name):
    """animate --expr on a text (or .npy, or suffix-less) file: one line naming what is accepted."""
    from avatarcli.animate.expressions import load_expressions
    from avatarcli.errors import InputError

    p = tmp_path / name
    p.write_text("0.1 0.2 0.3\n")
    with pytest.raises(InputError, match=r"not an expression file: expected an \.npz .*flame_param\.npz") as e:
        load_expressions([p])
    assert "pickled" not in str(e.value) and name in str(e.value)
