"""FLAME loading: the real files' layouts, the restricted unpickler, locating, errors."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from avatarcli.cli import main
from avatarcli.errors import ArtifactError, EnvironmentProblem, UnsafePickleError
from avatarcli.flame.loader import load_flame
from avatarcli.flame.locate import locate_flame
from avatarcli.flame.pickle_safe import allowed_globals, load_npy, load_pickle, loads_restricted
from avatarcli.testing.synthetic_flame import synthetic_arrays

MODEL_KEYS = ["v_template", "shapedirs", "exprdirs", "posedirs", "J_regressor", "parents", "lbs_weights", "faces"]
EMB_KEYS = ["static_faces", "static_bary", "full_faces", "full_bary", "dynamic_faces", "dynamic_bary"]


def _model_file(folder: Path) -> Path:
    return next(p for p in folder.iterdir() if p.suffix in (".pkl", ".npz") and "embedding" not in p.name)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("layout", ["deca", "flame_pytorch", "npz"])
@pytest.mark.parametrize("release", ["2020", "2023"])
def test_every_layout_loads_and_equals_the_arrays(flame_files, flame_model, layout, release):
    folder = flame_files(layout, release)
    m = load_flame(folder)
    for k in MODEL_KEYS:
        assert torch.equal(getattr(m, k), getattr(flame_model, k)), k
    assert m.landmarks is not None and m.landmarks.has_dynamic
    for k in EMB_KEYS:
        assert torch.equal(getattr(m.landmarks, k), getattr(flame_model.landmarks, k)), k
    model_file = _model_file(folder)
    assert m.path == model_file
    assert m.sha256 == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert m.release == f"FLAME {release}"
    expected_emb = "flame_static_embedding.pkl" if layout == "flame_pytorch" else "landmark_embedding.npy"
    assert m.embedding_path == folder / expected_emb


def test_pickled_model_equals_synthetic_arrays_in_float64(flame_dir):
    """The restricted unpickler returns the file's arrays bit for bit (float64, sparse J_regressor)."""
    import scipy.sparse

    ref = synthetic_arrays()
    d = load_pickle(flame_dir / "generic_model.pkl")
    assert set(d) >= {"v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f", "J"}
    assert all(isinstance(k, str) for k in d)
    assert scipy.sparse.issparse(d["J_regressor"]) and d["J_regressor"].format == "csc"
    np.testing.assert_array_equal(d["J_regressor"].toarray(), ref["J_regressor"])
    for k in ["v_template", "shapedirs", "posedirs", "weights", "f", "kintree_table"]:
        assert isinstance(d[k], np.ndarray), k
        assert d[k].dtype == ref[k].dtype or k in ("f", "kintree_table"), k
        np.testing.assert_array_equal(d[k], ref[k], err_msg=k)
    assert d["kintree_table"][0, 0] == 4294967295
    assert d["f"].dtype == np.uint32
    np.testing.assert_allclose(d["J"], ref["J_regressor"] @ ref["v_template"], rtol=0, atol=1e-15)
    assert d["bs_style"] == "lbs"


def test_written_pickle_has_the_real_files_quirks(flame_dir):
    """Guards the fixture: if the writer stops producing the quirks, the loader tests mean less."""
    data = (flame_dir / "generic_model.pkl").read_bytes()
    ops = list(pickletools.genops(data))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 2
    globals_ = {arg for op, arg, _ in ops if op.name == "GLOBAL"}
    assert globals_ == {
        "numpy.core.multiarray _reconstruct",
        "numpy ndarray",
        "numpy dtype",
        "chumpy.ch Ch",
        "scipy.sparse.csc csc_matrix",
    }
    names = {op.name for op, _, _ in ops}
    assert "NEWOBJ" in names and "BINUNICODE" not in names and "SHORT_BINSTRING" in names
    # the DECA embedding holds torch tensors for the dynamic contour, like DECA's file
    ops = list(pickletools.genops((flame_dir / "landmark_embedding.npy").read_bytes()[128:]))
    assert {"torch._utils _rebuild_tensor_v2", "torch.storage _load_from_bytes"} <= {
        a for o, a, _ in ops if o.name == "GLOBAL"
    }


def test_flame_pytorch_embedding_files(flame_files, flame_model):
    folder = flame_files("flame_pytorch")
    st = load_pickle(folder / "flame_static_embedding.pkl")
    assert st["lmk_face_idx"].dtype == np.uint32 and st["lmk_face_idx"].shape == (51,)
    dyn = load_npy(folder / "flame_dynamic_embedding.npy")
    assert isinstance(dyn["lmk_face_idx"], list) and len(dyn["lmk_face_idx"]) == 79
    np.testing.assert_array_equal(np.stack(dyn["lmk_face_idx"]), flame_model.landmarks.dynamic_faces.numpy())


def test_plain_npy_array_and_modern_pickles():
    a = np.arange(12.0).reshape(3, 4)
    buf = io.BytesIO()
    np.save(buf, a)
    np.testing.assert_array_equal(load_npy("a.npy", buf.getvalue()), a)
    import scipy.sparse

    obj = {"m": scipy.sparse.csr_matrix(np.eye(3)), "x": np.float32(2.5), "a": np.ones((2, 2), np.float32)}
    for proto in range(0, pickle.HIGHEST_PROTOCOL + 1):
        d = loads_restricted(pickle.dumps(obj, protocol=proto), "m.pkl")
        np.testing.assert_array_equal(d["m"].toarray(), np.eye(3))
        assert d["x"] == np.float32(2.5) and d["a"].dtype == np.float32


# ------------------------------------------------------------------------- unsafe pickles


class _System:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _eval_pickle(marker: Path) -> bytes:
    # builtins.eval of an expression that would create the marker file
    expr = f"open({str(marker)!r}, 'w').write('x')"
    return b"\x80\x02cbuiltins\neval\nX" + len(expr).to_bytes(4, "little") + expr.encode() + b"\x85R."


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "nested_in_chumpy"])
def test_foreign_global_is_refused_and_not_executed(tmp_path, kind):
    marker = tmp_path / "executed"
    if kind == "os.system":
        data = pickle.dumps({"v_template": _System(marker)}, protocol=2)
        expect = "system"
    elif kind == "builtins.eval":
        data = _eval_pickle(marker)
        expect = "builtins.eval"
    else:  # a chumpy Ch whose state hides a call
        inner = pickle.dumps(_System(marker), protocol=2)[2:-1]
        data = b"\x80\x02}(U\tshapedirscchumpy.ch\nCh\n)\x81}U\x01x" + inner + b"sbu."
        expect = "system"
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError) as e:
        load_pickle(path)
    assert not marker.exists()
    msg = str(e.value)
    assert str(path) in msg and expect in msg and "\n" not in msg
    assert e.value.exit_code == 2


def test_foreign_global_in_embedding_npy_is_refused(tmp_path, flame_dir):
    folder = _copy(flame_dir, tmp_path / "flame")
    marker = tmp_path / "executed"
    payload = pickle.dumps(_System(marker), protocol=2)
    header = (flame_dir / "landmark_embedding.npy").read_bytes()[:128]  # the object-array header
    (folder / "landmark_embedding.npy").write_bytes(header + payload)
    with pytest.raises(UnsafePickleError, match="landmark_embedding.npy"):
        load_flame(folder)
    assert not marker.exists()


def test_unsafe_pickle_via_cli_one_line_exit_2(tmp_path, flame_dir, landmarks_file, capsys):
    folder = _copy(flame_dir, tmp_path / "flame")
    marker = tmp_path / "executed"
    (folder / "generic_model.pkl").write_bytes(_eval_pickle(marker))
    out = tmp_path / "out.npz"
    rc = main(["fit-flame", str(landmarks_file), "--flame", str(folder), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and not marker.exists() and not out.exists()
    assert "builtins.eval" in err and "generic_model.pkl" in err and "Traceback" not in err


def test_allowed_globals_are_data_only():
    allowed = allowed_globals()
    builtin_like = [
        g for g in allowed if g.split(".")[0] in ("builtins", "__builtin__", "os", "posix", "subprocess", "sys")
    ]
    assert sorted(builtin_like) == sorted(
        f"{m}.{n}" for m in ("__builtin__", "builtins") for n in ("object", "set", "frozenset")
    )
    assert "chumpy.ch.Ch" in allowed and "scipy.sparse.csc.csc_matrix" in allowed
    assert "numpy.core.multiarray._reconstruct" in allowed and "numpy._core.multiarray._reconstruct" in allowed


def test_reconstruct_refuses_other_classes():
    # numpy's _reconstruct with a class that is not ndarray (allowed global, bad argument)
    data = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncchumpy.ch\nCh\nK\x00\x85U\x01b\x87R."
    with pytest.raises(ArtifactError, match="only numpy.ndarray"):
        loads_restricted(data, "x.pkl")


# ------------------------------------------------------------------------------ bad files


@pytest.fixture(scope="module")
def landmarks_file(tmp_path_factory, flame_model):
    from avatarcli.landmarks.artifact import write_landmarks
    from avatarcli.testing.synthetic_flame import random_flame_params, synthetic_landmarks

    lms, _ = synthetic_landmarks(
        flame_model, random_flame_params(1, seed=3, n_shape=20, n_expr=10), image_size=(256, 256)
    )
    p = tmp_path_factory.mktemp("lm") / "face.landmarks.npz"
    write_landmarks(p, lms[0])
    return p


def _write_npz_model(folder: Path, **changes) -> Path:
    a = synthetic_arrays()
    a.pop("embedding")
    a.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "generic_model.npz", **a)
    return folder / "generic_model.npz"


@pytest.mark.parametrize(
    "change, expect",
    [
        ({"v_template": np.zeros((5023, 2))}, "'v_template': shape [5023, 2]"),
        ({"shapedirs": np.zeros((5023, 3))}, "'shapedirs'"),
        ({"weights": np.zeros((5023, 4))}, "'weights': shape [5023, 4], expected [5023, 5]"),
        ({"f": np.full((10, 3), 6000, np.int64)}, "'f': vertex index out of range"),
        ("nan", "'shapedirs': contains NaN"),
        ("missing", "key 'posedirs' is missing"),
    ],
)
def test_bad_model_files_one_line_exit_2(tmp_path, flame_dir, landmarks_file, capsys, change, expect):
    folder = tmp_path / "flame"
    if change == "nan":
        sd = synthetic_arrays()["shapedirs"]
        sd[10, 1, 3] = np.nan
        model = _write_npz_model(folder, shapedirs=sd)
    elif change == "missing":
        model = _write_npz_model(folder)
        z = dict(np.load(model))
        del z["posedirs"]
        np.savez(model, **z)
    else:
        model = _write_npz_model(folder, **change)
    shutil.copy(flame_dir / "landmark_embedding.npy", folder)
    out = tmp_path / "out.npz"
    rc = main(["fit-flame", str(landmarks_file), "--flame", str(folder), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists()
    assert expect in err and str(model) in err.replace("\n", "")
    assert err.startswith("error:") and "Traceback" not in err


def test_truncated_pickle_and_bad_embedding(tmp_path, flame_dir):
    folder = _copy(flame_dir, tmp_path / "flame")
    data = (folder / "generic_model.pkl").read_bytes()
    (folder / "generic_model.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="not a readable FLAME pickle"):
        load_flame(folder)
    folder2 = _copy(flame_dir, tmp_path / "flame2")
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 3)))
    (folder2 / "landmark_embedding.npy").write_bytes(buf.getvalue())
    with pytest.raises(ArtifactError, match="landmark_embedding.npy.*expected a dict"):
        load_flame(folder2)


def test_embedding_refers_to_missing_triangle(tmp_path, flame_dir):
    from avatarcli.testing.synthetic_flame import deca_embedding_bytes

    folder = _copy(flame_dir, tmp_path / "flame")
    emb = synthetic_arrays()["embedding"]
    emb["static_lmk_faces_idx"][5] = 20000
    (folder / "landmark_embedding.npy").write_bytes(deca_embedding_bytes(emb))
    with pytest.raises(ArtifactError, match="triangle 20000"):
        load_flame(folder)


# ------------------------------------------------------------------------- locating FLAME


def test_no_flame_exit_3(tmp_path, landmarks_file, capsys):
    with pytest.raises(EnvironmentProblem) as e:
        load_flame(None)
    assert e.value.exit_code == 3
    assert (
        "https://flame.is.tue.mpg.de" in str(e.value) and "AVATAR_FLAME" in str(e.value) and "`flame`" in str(e.value)
    )
    out = tmp_path / "o.npz"
    rc = main(["fit-flame", str(landmarks_file), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 3 and not out.exists() and "flame.is.tue.mpg.de" in err and "licensed" in err and "pass --flame" in err


@pytest.mark.parametrize("what", ["missing_path", "empty_folder"])
def test_missing_flame_path_exit_3(tmp_path, landmarks_file, capsys, what):
    target = tmp_path / "nowhere" if what == "missing_path" else tmp_path / "empty"
    if what == "empty_folder":
        target.mkdir()
        (target / "notes.txt").write_text("x")
    rc = main(["fit-flame", str(landmarks_file), "--flame", str(target), "-o", str(tmp_path / "o.npz")])
    err = capsys.readouterr().err
    assert rc == 3 and str(target) in err.replace("\n", "") and "flame.is.tue.mpg.de" in err


def test_avatar_flame_env(monkeypatch, flame_dir, flame_model):
    monkeypatch.setenv("AVATAR_FLAME", str(flame_dir))
    m = load_flame(None)
    assert m.path == flame_dir / "generic_model.pkl" and torch.equal(m.v_template, flame_model.v_template)
    monkeypatch.setenv("AVATAR_FLAME", str(flame_dir / "generic_model.pkl"))
    assert load_flame().embedding_path == flame_dir / "landmark_embedding.npy"
    monkeypatch.setenv("AVATAR_FLAME", str(flame_dir / "missing"))
    with pytest.raises(EnvironmentProblem, match=r"\$AVATAR_FLAME"):
        load_flame()


def test_folder_search_subfolders_and_preference(tmp_path, flame_dir, flame_files):
    root = tmp_path / "downloads"
    # FLAME 2020 and 2023 unpacked into their own folders, DECA's embedding one level up
    (root / "FLAME2020").mkdir(parents=True)
    (root / "FLAME2023").mkdir()
    shutil.copy(flame_dir / "generic_model.pkl", root / "FLAME2020")
    shutil.copy(flame_files("deca", "2023") / "flame2023.pkl", root / "FLAME2023")
    shutil.copy(flame_files("deca", "2023") / "flame2023.pkl", root / "FLAME2023" / "flame2023_no_jaw.pkl")
    shutil.copy(flame_dir / "landmark_embedding.npy", root)
    loc = locate_flame(root)
    assert loc.model == root / "FLAME2020" / "generic_model.pkl"
    assert loc.embedding == root / "landmark_embedding.npy" and loc.layout == "deca"
    assert len(loc.notes) == 1 and "flame2023.pkl" in loc.notes[0]
    # determinism: the same answer every time
    assert locate_flame(root) == loc
    # without the 2020 file the 2023 one is next; an embedding beside the model wins over the parent's
    shutil.rmtree(root / "FLAME2020")
    for f in ("flame_static_embedding.pkl", "flame_dynamic_embedding.npy"):
        shutil.copy(flame_files("flame_pytorch") / f, root / "FLAME2023")
    loc = locate_flame(root)
    assert loc.model.name == "flame2023.pkl" and loc.layout == "flame_pytorch"
    assert loc.embedding == root / "FLAME2023" / "flame_static_embedding.pkl"
    assert load_flame(root).release == "FLAME 2023"


def test_file_passed_directly_and_model_without_embedding(tmp_path, flame_dir, landmarks_file, capsys):
    loc = locate_flame(flame_dir / "generic_model.pkl")
    assert loc.embedding == flame_dir / "landmark_embedding.npy"
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(flame_dir / "generic_model.pkl", lone)
    m = load_flame(lone / "generic_model.pkl")
    assert m.landmarks is None and m.n_vertices == 5023
    out = tmp_path / "o.npz"
    rc = main(["fit-flame", str(landmarks_file), "--flame", str(lone), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 3 and not out.exists() and "landmark embedding" in err


def test_npz_export_with_other_name_is_found(tmp_path, flame_files):
    root = tmp_path / "FLAME2020"
    root.mkdir()
    shutil.copy(flame_files("npz") / "generic_model.npz", root / "flame_model.npz")
    loc = locate_flame(tmp_path)
    assert loc.model == root / "flame_model.npz" and loc.embedding is None
    assert load_flame(tmp_path).release == "FLAME 2020"  # from the npz's release entry


def test_flame_2023_open_and_other_pickle_names_are_found(tmp_path, flame_files):
    """FLAME 2023 Open ships as flame2023_Open.pkl; other tools rename the pickle freely."""
    src = flame_files("deca", "2023")
    model_file = next(p for p in src.iterdir() if p.name.startswith("flame2023"))
    open_dir = tmp_path / "FLAME2023Open"
    open_dir.mkdir()
    shutil.copy(model_file, open_dir / "flame2023_Open.pkl")
    shutil.copy(src / "landmark_embedding.npy", open_dir / "landmark_embedding.npy")
    m = load_flame(tmp_path)
    assert m.path.name == "flame2023_Open.pkl" and m.release == "FLAME 2023 Open"
    assert m.landmarks is not None

    other = tmp_path / "assets" / "flame"
    other.mkdir(parents=True)
    shutil.copy(model_file, other / "head_model.pkl")
    loc = locate_flame(tmp_path / "assets")
    assert loc.model.name == "head_model.pkl"
    # the well-known name wins over a pickle of another name in the same tree
    shutil.copy(model_file, other / "generic_model.pkl")
    assert locate_flame(tmp_path / "assets").model.name == "generic_model.pkl"


def test_chumpy_operation_nodes_load_as_inert_data(tmp_path, flame_dir):
    """A release may pickle a chumpy expression (e.g. J as chumpy.ch_ops.add): it is kept as
    inert data (nothing runs); the keys FLAME needs still load."""
    import sys
    import types

    marker = tmp_path / "ran"
    fake = types.ModuleType("chumpy.ch_ops")

    class add:  # noqa: N801 - the chumpy class name
        def __reduce__(self):
            return (type(self), (), {"a": np.ones(3), "b": np.zeros(3), "_dirty_vars": set()})

        def __setstate__(self, state):  # would run if our unpickler called real classes
            marker.write_text("x")

    add.__module__, add.__qualname__ = "chumpy.ch_ops", "add"
    fake.add = add
    parent = types.ModuleType("chumpy")
    parent.ch_ops = fake
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch_ops")}
    sys.modules.update({"chumpy": parent, "chumpy.ch_ops": fake})
    try:
        arrays = load_pickle(flame_dir / "generic_model.pkl")
        arrays["J"] = add()
        data = pickle.dumps(arrays, protocol=2)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    assert b"chumpy.ch_ops" in data
    out = tmp_path / "flame"
    out.mkdir()
    (out / "generic_model.pkl").write_bytes(data)
    shutil.copy(flame_dir / "landmark_embedding.npy", out / "landmark_embedding.npy")
    loaded = loads_restricted(data, "x.pkl")
    assert loaded["J"] is None and not marker.exists()
    m = load_flame(out)
    assert m.n_vertices == load_flame(flame_dir).n_vertices and not marker.exists()
