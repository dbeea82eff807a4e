"""A synthetic FLAME-format model (same keys and shapes as the real release) for tests.

The mesh is a deformed latitude/longitude sphere: a top pole + 62 rings x 81
= 5023 vertices; 81 fan + 61*81*2 quad triangles = 9963, plus 13 triangles
partially closing the neck opening = 9976. Winding is outward. Head-like in
metres: ~0.16 wide (x), ~0.24 tall (y up), ~0.2 deep (z, face towards +z),
with a nose, a chin, and a neck opening at the bottom.

Surface parameters: theta (degrees from the top pole, 0..150) and phi (degrees
of azimuth, 0 = front (+z), positive towards +x = the subject's left).
Landmarks are placed by (theta, phi) and embedded exactly in the grid's triangles.

`write_synthetic_flame` writes the files the way the real ones look: a protocol-2
pickle with `chumpy.ch.Ch` objects (state {'x': array}), a scipy csc J_regressor,
latin1 byte strings, and the landmark embedding in the DECA or FLAME_PyTorch layout.
"""

from __future__ import annotations

import functools
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from avatarcli.flame.embedding import embedding_from_mapping
from avatarcli.flame.forward import flame_forward
from avatarcli.flame.model import FlameModel, flame_from_arrays
from avatarcli.flame.params import FlameParams
from avatarcli.landmarks.artifact import Landmarks

N_RINGS = 62
N_COLS = 81
THETA_MAX = 150.0
N_VERTS = 1 + N_RINGS * N_COLS  # 5023
N_NECK_TRIS = 13
N_FACES = N_COLS + (N_RINGS - 1) * N_COLS * 2 + N_NECK_TRIS  # 9976
N_SHAPE = 300
N_EXPR = 100
ROOT_PARENT = 4294967295  # the uint32 "no parent" of the real kintree_table

# (theta, phi) of the 51 static iBUG landmarks (17..67), degrees
_STATIC_LMK = np.array(
    [
        # right eyebrow 17-21 (subject's right = -x), outer -> inner
        (64, -38),
        (61, -31),
        (60, -23),
        (60.5, -15),
        (62, -8),
        # left eyebrow 22-26, inner -> outer
        (62, 8),
        (60.5, 15),
        (60, 23),
        (61, 31),
        (64, 38),
        # nose bridge 27-30, top -> tip
        (72, 0),
        (78, 0),
        (84, 0),
        (90, 0),
        # nostrils 31-35
        (96, -8),
        (97, -4),
        (97.5, 0),
        (97, 4),
        (96, 8),
        # right eye 36-41: outer corner, top, top, inner corner, bottom, bottom
        (72, -32),
        (70, -26),
        (70, -17),
        (72, -11),
        (74, -17),
        (74, -26),
        # left eye 42-47: inner corner, top, top, outer corner, bottom, bottom
        (72, 11),
        (70, 17),
        (70, 26),
        (72, 32),
        (74, 26),
        (74, 17),
        # outer lip 48-59
        (108, -16),
        (105, -10),
        (104, -4),
        (104.5, 0),
        (104, 4),
        (105, 10),
        (108, 16),
        (111, 10),
        (112.5, 4),
        (113, 0),
        (112.5, -4),
        (111, -10),
        # inner lip 60-67
        (108, -13),
        (107, -5),
        (107, 0),
        (107, 5),
        (108, 13),
        (109, 5),
        (109, 0),
        (109, -5),
    ],
    dtype=np.float64,
)


def contour_params(yaw_bin_angle: float = 0.0) -> np.ndarray:
    """(theta, phi) [17, 2] of the jaw line for a head at yaw = -a degrees (a = `yaw_bin_angle`).

    Frontal: from the subject's right ear (phi -80) down to the chin (theta 130) and up
    to the left ear. With yaw the silhouette moves: phi shifts by a * |s| (s in [-1, 1]
    along the contour), i.e. the ends move most and the chin stays."""
    s = np.linspace(-1.0, 1.0, 17)
    theta = 130.0 - 48.0 * s**2
    phi = np.clip(80.0 * s + yaw_bin_angle * np.abs(s), -100.0, 100.0)
    return np.stack([theta, phi], -1)


def bin_angle(b: int) -> float:
    """The `a` (= -yaw, degrees) a dynamic-table bin stands for (inverse of forward.contour_bins)."""
    return float(b) if b <= 39 else float(39 - b)


# ----------------------------------------------------------------------------------- mesh


def _grid_angles() -> tuple[np.ndarray, np.ndarray]:
    """theta [62] of the rings, phi [81] of the columns (degrees)."""
    theta = THETA_MAX * (np.arange(N_RINGS) + 1) / N_RINGS
    phi = np.arange(N_COLS) * 360.0 / N_COLS
    phi = np.where(phi > 180.0, phi - 360.0, phi)
    return theta, phi


def _bump(theta, phi, t0, p0, sigma):
    d2 = (theta - t0) ** 2 + ((phi - p0 + 180.0) % 360.0 - 180.0) ** 2
    return np.exp(-0.5 * d2 / sigma**2)


def _surface(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Head surface point [..., 3] at (theta, phi) degrees."""
    th = np.deg2rad(np.minimum(theta, 135.0))
    ph = np.deg2rad(phi)
    rx, ry, rz = 0.08, 0.11, 0.1
    x = rx * np.sin(th) * np.sin(ph)
    y = ry * np.cos(th)
    z = rz * np.sin(th) * np.cos(ph)
    # below theta 135 the surface turns into a neck: narrower, going down
    t = np.clip((theta - 135.0) / (THETA_MAX - 135.0), 0.0, 1.0)
    neck_r = 0.05
    x = (1 - t) * x + t * neck_r * np.sin(ph)
    z = (1 - t) * z + t * neck_r * np.cos(ph)
    y = y - t * 0.05
    # facial relief along the outward normal-ish direction (radial in x/z)
    relief = (
        0.022 * _bump(theta, phi, 88.0, 0.0, 7.0)  # nose
        + 0.008 * _bump(theta, phi, 126.0, 0.0, 8.0)  # chin
        + 0.004 * _bump(theta, phi, 61.0, -20.0, 6.0)  # brows
        + 0.004 * _bump(theta, phi, 61.0, 20.0, 6.0)
        - 0.006 * _bump(theta, phi, 72.0, -21.0, 5.0)  # eye sockets
        - 0.006 * _bump(theta, phi, 72.0, 21.0, 5.0)
        + 0.003 * _bump(theta, phi, 108.0, 0.0, 6.0)  # lips
    )
    x = x + relief * np.sin(ph) * 0.3
    z = z + relief * np.cos(ph)
    return np.stack([x, y, z], -1)


def _vertex_angles() -> tuple[np.ndarray, np.ndarray]:
    """theta, phi [V] of every vertex (pole first, then ring-major)."""
    theta, phi = _grid_angles()
    T = np.concatenate([[0.0], np.repeat(theta, N_COLS)])
    P = np.concatenate([[0.0], np.tile(phi, N_RINGS)])
    return T, P


def vertex_id(ring: int, col) -> np.ndarray:
    return 1 + ring * N_COLS + np.mod(col, N_COLS)


def _quad_face(ring: int, col: int, upper: bool) -> int:
    """Index of the triangle (a,d,c) (`upper` False: the one holding the +theta corner d)
    or (a,c,b) of the quad between ring and ring+1 at col."""
    return N_COLS + (ring * N_COLS + col) * 2 + (1 if upper else 0)


def _faces() -> np.ndarray:
    f = [np.stack([np.zeros(N_COLS, int), vertex_id(0, np.arange(N_COLS)), vertex_id(0, np.arange(N_COLS) + 1)], -1)]
    j = np.arange(N_COLS)
    for i in range(N_RINGS - 1):
        a, b = vertex_id(i, j), vertex_id(i, j + 1)
        d, c = vertex_id(i + 1, j), vertex_id(i + 1, j + 1)
        f.append(np.stack([np.stack([a, d, c], -1), np.stack([a, c, b], -1)], 1).reshape(-1, 3))
    # partial cap of the neck opening: a fan at the back of the bottom ring, facing down
    last = N_RINGS - 1
    k = np.arange(N_NECK_TRIS)
    c0 = N_COLS // 2  # back of the head (phi ~ 180)
    f.append(
        np.stack(
            [vertex_id(last, np.full(N_NECK_TRIS, c0)), vertex_id(last, c0 + k + 2), vertex_id(last, c0 + k + 1)], -1
        )
    )
    return np.concatenate(f).astype(np.int64)


def embed_point(theta: float, phi: float) -> tuple[int, np.ndarray]:
    """Triangle index and barycentric coordinates [3] of surface parameter (theta, phi)."""
    theta_r, _ = _grid_angles()
    t = theta / THETA_MAX * N_RINGS - 1.0
    i = int(np.floor(t))
    if not 0 <= i < N_RINGS - 1:
        raise ValueError(f"theta {theta} outside the quad rings")
    v = t - i
    s = (phi % 360.0) / 360.0 * N_COLS
    j = int(np.floor(s)) % N_COLS
    u = s - np.floor(s)
    if u <= v:  # triangle (a, d, c)
        return _quad_face(i, j, False), np.array([1.0 - v, v - u, u])
    return _quad_face(i, j, True), np.array([1.0 - u, v, u - v])  # triangle (a, c, b)


# -------------------------------------------------------------------------- blend shapes


def _features(p: np.ndarray, degree: int) -> np.ndarray:
    """Monomials of the normalised position p [V,3] up to `degree`: [V, M]."""
    q = p / np.array([0.08, 0.11, 0.1])
    cols = []
    for a in range(degree + 1):
        for b in range(degree + 1 - a):
            for c in range(degree + 1 - a - b):
                cols.append(q[:, 0] ** a * q[:, 1] ** b * q[:, 2] ** c)
    return np.stack(cols, -1)


def _smooth_dirs(rng, feats: np.ndarray, n: int, amp: np.ndarray) -> np.ndarray:
    """n smooth random displacement fields [V, 3, n], field k of rms size amp[k]."""
    M = feats.shape[1]
    C = rng.standard_normal((M, 3, n))
    d = np.einsum("vm,mcn->vcn", feats, C)
    rms = np.sqrt((d**2).sum(1).mean(0))  # [n]
    return d * (amp / rms)


def _smoothstep(x, lo, hi):
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


EYE_RADIUS = 0.012  # metres, the synthetic eyeball (a real one is ~12 mm)


def eye_patch(T: np.ndarray, P: np.ndarray, side: float) -> np.ndarray:
    """The vertices [V] bool skinned to an eye joint (side +1: the subject's left, +x; -1: right): a
    small surface patch in the eye socket, the visible front of the eyeball (the "cornea")."""
    return _bump(T, P, 72.0, 21.0 * side, 3.0) > 0.5


def pupil_vertex(v: np.ndarray, T: np.ndarray, P: np.ndarray, side: float) -> int:
    """The eye patch's most forward (+z) vertex: the synthetic eye's pupil at eyes_pose 0."""
    ids = np.nonzero(eye_patch(T, P, side))[0]
    return int(ids[np.argmax(v[ids, 2])])


def pupil_vertices() -> tuple[int, int]:
    """The synthetic model's pupil vertices (subject's left eye = joint 3, right eye = joint 4)."""
    T, P = _vertex_angles()
    v = _surface(T, P)
    return pupil_vertex(v, T, P, 1.0), pupil_vertex(v, T, P, -1.0)


def _eye_row(v: np.ndarray, T: np.ndarray, P: np.ndarray, side: float) -> np.ndarray:
    """J_regressor row of an eye joint: the eyeball centre, EYE_RADIUS behind the pupil vertex (an affine
    mix of the pupil vertex and a patch at the back of the head, at about the same x and y), so that
    eyes_pose turns the patch about a real eyeball centre as in FLAME (whose eyeballs are meshes)."""
    k = pupil_vertex(v, T, P, side)
    back = _bump(T, P, 72.0, 180.0 - 21.0 * side, 3.5) > 0.3
    vb = v[back].mean(0)
    a = EYE_RADIUS / (v[k, 2] - vb[2])  # weight of the back patch
    row = np.zeros(v.shape[0])
    row[k] = 1.0 - a
    row[back] = a / back.sum()
    return row


def synthetic_arrays(seed: int = 0) -> dict:
    """The model arrays in the real file's layout (numpy): v_template, shapedirs [V,3,400],
    posedirs [V,3,36], J_regressor dense [5,V], kintree_table, weights, f, + the
    landmark embedding in DECA layout under 'embedding'. A fresh copy on every call
    (the arrays are computed once per seed and process)."""
    a = _synthetic_arrays_cached(seed)
    out = {k: v.copy() for k, v in a.items() if k != "embedding"}
    out["embedding"] = {k: v.copy() for k, v in a["embedding"].items()}
    return out


@functools.lru_cache(maxsize=2)
def _synthetic_arrays_cached(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    T, P = _vertex_angles()
    v = _surface(T, P)
    faces = _faces()
    feats = _features(v, 4)
    # identity: smooth, decaying, a few mm per unit coefficient
    shape_amp = 0.004 / (1.0 + np.arange(N_SHAPE) / 10.0)
    shapedirs = _smooth_dirs(rng, feats, N_SHAPE, shape_amp)
    # expression: mostly the lower face / mouth; zero on the neck (the root joint does not move)
    front = np.cos(np.deg2rad(np.clip(P, -90, 90))) ** 2
    lower = _smoothstep(T, 88.0, 100.0) * (1.0 - _smoothstep(T, 128.0, 138.0))
    mask = 0.05 * (1.0 - _smoothstep(T, 128.0, 138.0)) + 0.95 * lower * front  # [V]
    mouth = 1.0 + 2.0 * _bump(T, P, 108.0, 0.0, 10.0)
    expr_amp = 0.003 / (1.0 + np.arange(N_EXPR) / 10.0)
    exprdirs = _smooth_dirs(rng, feats, N_EXPR, expr_amp) * (mask * mouth)[:, None, None]
    posedirs = _smooth_dirs(rng, _features(v, 2), 36, np.full(36, 0.0005))

    # joints: rows of J_regressor average vertex patches
    def patch(sel):
        w = sel.astype(np.float64)
        return w / w.sum()

    last = T >= THETA_MAX - 1e-9
    neck = np.abs(T - T[vertex_id(55, 0)]) < 1e-9
    jaw = (_bump(T, P, 95.0, -85.0, 4.0) > 0.3) | (_bump(T, P, 95.0, 85.0, 4.0) > 0.3)
    J_regressor = np.stack([patch(last), patch(neck), patch(jaw), _eye_row(v, T, P, 1.0), _eye_row(v, T, P, -1.0)])
    J_regressor[0] = 0.6 * J_regressor[0] + 0.4 * J_regressor[1]  # root: neck base

    # skinning weights: root = neck ring, neck = upper head, jaw = lower front, eyes = patches
    w_root = _smoothstep(T, 136.0, 148.0)
    w_jaw = (
        _smoothstep(T, 104.0, 110.0)
        * (1.0 - _smoothstep(T, 132.0, 140.0))
        * _smoothstep(np.cos(np.deg2rad(P)), 0.0, 0.6)
    )
    w_leye = eye_patch(T, P, 1.0).astype(float)
    w_reye = eye_patch(T, P, -1.0).astype(float)
    w_jaw = w_jaw * (1 - w_root)
    w_neck = np.clip(1.0 - w_root - w_jaw - w_leye - w_reye, 0.0, None)
    weights = np.stack([w_root, w_neck, w_jaw, w_leye, w_reye], -1)
    weights = weights / weights.sum(-1, keepdims=True)

    kintree = np.array([[ROOT_PARENT, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)

    # landmark embedding (DECA layout)
    def emb(params):
        out = [embed_point(t, p) for t, p in params]
        return np.array([o[0] for o in out], np.int64), np.array([o[1] for o in out], np.float64)

    s_f, s_b = emb(_STATIC_LMK)
    dyn = [emb(contour_params(bin_angle(b))) for b in range(79)]
    d_f = np.stack([d[0] for d in dyn])
    d_b = np.stack([d[1] for d in dyn])
    full_f = np.concatenate([d_f[0], s_f])[None]
    full_b = np.concatenate([d_b[0], s_b])[None]
    embedding = {
        "static_lmk_faces_idx": s_f,
        "static_lmk_bary_coords": s_b,
        "dynamic_lmk_faces_idx": d_f,
        "dynamic_lmk_bary_coords": d_b,
        "full_lmk_faces_idx": full_f,
        "full_lmk_bary_coords": full_b,
    }
    return {
        "v_template": v,
        "shapedirs": np.concatenate([shapedirs, exprdirs], -1),
        "posedirs": posedirs,
        "J_regressor": J_regressor,
        "kintree_table": kintree,
        "weights": weights,
        "f": faces.astype(np.uint32),
        "embedding": embedding,
    }


def make_synthetic_flame(seed: int = 0, dtype=torch.float32) -> FlameModel:
    """The synthetic model in memory (what loading its written files gives, minus path/sha256)."""
    a = synthetic_arrays(seed)
    lm = embedding_from_mapping("<synthetic>", a.pop("embedding"))
    m = flame_from_arrays("<synthetic>", a, landmarks=lm, release="unknown")
    return m if dtype == torch.float32 else m.to(dtype=dtype)


# ----------------------------------------------------------------------- files on disk
#
# The real FLAME files are Python-2-era pickles. They are written here opcode by opcode
# (no chumpy, no old numpy or scipy needed) so that the loader meets exactly what users have:
#   - protocol 2, dict keys and strings as latin1 byte strings (SHORT_BINSTRING / BINSTRING)
#   - numpy arrays via GLOBAL `numpy.core.multiarray _reconstruct` + BUILD (1, shape, dtype,
#     fortran, raw bytes as a byte string), dtypes via GLOBAL `numpy dtype` + BUILD state
#   - `chumpy.ch Ch` objects: NEWOBJ + BUILD with state {'x': array} (shapedirs, J)
#   - J_regressor as `scipy.sparse.csc csc_matrix`: NEWOBJ + BUILD with the matrix's __dict__
#   - kintree_table [2, 5] int64 with the root's parent 4294967295 (uint32 -1)
# DECA's landmark_embedding.npy is np.save of a 0-d object array holding a dict, written by
# Python 3 (protocol 3): static_* and full_* as numpy arrays, dynamic_* as torch tensors
# (DECA calls .long() on them directly). FLAME_PyTorch's flame_static_embedding.pkl is a
# protocol-2 dict (lmk_face_idx uint32 [51], lmk_b_coords [51, 3]); flame_dynamic_embedding.npy
# holds a dict of lists (79 arrays [17] and 79 arrays [17, 3]).

LAYOUTS = ("deca", "flame_pytorch", "npz")
RELEASES = ("2020", "2023")
MODEL_NAMES = {"2020": "generic_model", "2023": "flame2023"}


class _Ch:
    """What a chumpy.ch.Ch is written as: NEWOBJ + state {'x': array}."""

    def __init__(self, x: np.ndarray):
        self.x = x


class _Csc:
    """A scipy csc_matrix as old scipy pickled it (its __dict__ as the state)."""

    def __init__(self, dense: np.ndarray):
        m = scipy.sparse.csc_matrix(dense)
        self.state = {
            "_shape": tuple(int(s) for s in m.shape),
            "maxprint": 50,
            "format": "csc",
            "indices": m.indices.astype(np.int32),
            "indptr": m.indptr.astype(np.int32),
            "data": m.data.astype(np.float64),
        }


class _PickleWriter:
    """Emit pickle opcodes for a small set of objects (no memo: every object written once)."""

    def __init__(self, protocol: int = 2, py2_strings: bool = True):
        self.out = io.BytesIO()
        self.py2 = py2_strings
        self.out.write(b"\x80" + bytes([protocol]))

    def finish(self) -> bytes:
        self.out.write(b".")
        return self.out.getvalue()

    def _w(self, b: bytes) -> None:
        self.out.write(b)

    def _global(self, module: str, name: str) -> None:
        self._w(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def _bytestr(self, b: bytes) -> None:
        """A Python 2 `str` (SHORT_BINSTRING / BINSTRING) or, for Python 3 files, `bytes`."""
        if len(b) < 256:
            self._w((b"U" if self.py2 else b"C") + bytes([len(b)]) + b)
        else:
            self._w((b"T" if self.py2 else b"B") + struct.pack("<I", len(b)) + b)

    def _tuple(self, items) -> None:
        items = list(items)
        if not items:
            self._w(b")")
            return
        if len(items) > 3:
            self._w(b"(")
        for x in items:
            self.obj(x)
        self._w({1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(items), b"t"))

    def obj(self, x) -> None:
        if x is None:
            self._w(b"N")
        elif isinstance(x, bool):
            self._w(b"\x88" if x else b"\x89")
        elif isinstance(x, (int, np.integer)):
            x = int(x)
            if 0 <= x < 256:
                self._w(b"K" + bytes([x]))
            elif 0 <= x < 65536:
                self._w(b"M" + struct.pack("<H", x))
            elif -(2**31) <= x < 2**31:
                self._w(b"J" + struct.pack("<i", x))
            else:
                n = (x.bit_length() + 8) // 8
                self._w(b"\x8a" + bytes([n]) + x.to_bytes(n, "little", signed=True))
        elif isinstance(x, float):
            self._w(b"G" + struct.pack(">d", x))
        elif isinstance(x, bytes):
            self._bytestr(x)
        elif isinstance(x, str):
            if self.py2:
                self._bytestr(x.encode("latin1"))
            else:
                b = x.encode("utf-8")
                self._w(b"X" + struct.pack("<I", len(b)) + b)
        elif isinstance(x, tuple):
            self._tuple(x)
        elif isinstance(x, list):
            self._w(b"]")
            if x:
                self._w(b"(")
                for v in x:
                    self.obj(v)
                self._w(b"e")
        elif isinstance(x, dict):
            self._w(b"}")
            if x:
                self._w(b"(")
                for k, v in x.items():
                    self.obj(k)
                    self.obj(v)
                self._w(b"u")
        elif isinstance(x, np.ndarray):
            self._array(x)
        elif isinstance(x, np.dtype):
            self._dtype(x)
        elif isinstance(x, _Ch):
            self._global("chumpy.ch", "Ch")
            self._w(b")\x81")  # EMPTY_TUPLE, NEWOBJ
            self.obj({"x": x.x})
            self._w(b"b")  # BUILD
        elif isinstance(x, _Csc):
            self._global("scipy.sparse.csc", "csc_matrix")
            self._w(b")\x81")
            self.obj(x.state)
            self._w(b"b")
        elif isinstance(x, torch.Tensor):
            body = pickle.dumps(x.detach().cpu().contiguous(), protocol=3)
            assert body[:2] == b"\x80\x03" and body[-1:] == b"."
            self._w(body[2:-1])  # its own memo indices; this writer uses no memo
        else:
            raise TypeError(f"cannot write {type(x).__name__}")

    def _dtype(self, dt: np.dtype) -> None:
        self._global("numpy", "dtype")
        code = "O8" if dt.kind == "O" else f"{dt.kind}{dt.itemsize}"
        self._tuple([code, 0, 1])
        self._w(b"R")
        order = "|" if dt.kind == "O" or dt.itemsize == 1 else "<"
        self._tuple([3, order, None, None, None, -1, -1, 63 if dt.kind == "O" else 0])
        self._w(b"b")

    def _array(self, a: np.ndarray) -> None:
        """GLOBAL _reconstruct, (ndarray, (0,), 'b') REDUCE, (1, shape, dtype, False, data) BUILD."""
        self._global("numpy.core.multiarray", "_reconstruct")
        self._global("numpy", "ndarray")
        self.obj((0,))
        self.obj(b"b")
        self._w(b"\x87R")  # TUPLE3, REDUCE
        if a.dtype.kind != "O":
            a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        self._w(b"(")
        self.obj(1)
        self.obj(tuple(int(s) for s in a.shape))
        self._dtype(a.dtype)
        self.obj(False)
        if a.dtype.kind == "O":
            self.obj(list(a.ravel()))
        else:
            self._bytestr(a.tobytes())
        self._w(b"tb")  # TUPLE, BUILD


def _npy_bytes(payload: bytes) -> bytes:
    """A .npy (v1.0) file of a 0-d object array whose pickle is `payload`."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (), }"
    pad = 64 - (10 + len(header) + 1) % 64
    header_bytes = (header + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header_bytes)) + header_bytes + payload


def _model_pickle(a: dict) -> bytes:
    """generic_model.pkl bytes in the real layout."""
    Jreg = a["J_regressor"]
    model = {
        "f": a["f"].astype(np.uint32),
        "J_regressor": _Csc(Jreg),
        "kintree_table": a["kintree_table"].astype(np.int64),
        "J": _Ch(Jreg @ a["v_template"]),
        "weights": a["weights"],
        "posedirs": a["posedirs"],
        "v_template": a["v_template"],
        "shapedirs": _Ch(a["shapedirs"]),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    w = _PickleWriter(protocol=2, py2_strings=True)
    w.obj(model)
    return w.finish()


def deca_embedding_bytes(emb: dict) -> bytes:
    """DECA landmark_embedding.npy bytes (dynamic tables as torch tensors, as in DECA's file)."""
    d = {
        "static_lmk_faces_idx": emb["static_lmk_faces_idx"].astype(np.int64),
        "static_lmk_bary_coords": emb["static_lmk_bary_coords"],
        "dynamic_lmk_faces_idx": torch.from_numpy(emb["dynamic_lmk_faces_idx"].astype(np.int64)),
        "dynamic_lmk_bary_coords": torch.from_numpy(emb["dynamic_lmk_bary_coords"].astype(np.float64)),
        "full_lmk_faces_idx": emb["full_lmk_faces_idx"].astype(np.int64),
        "full_lmk_bary_coords": emb["full_lmk_bary_coords"],
    }
    w = _PickleWriter(protocol=3, py2_strings=False)
    holder = np.empty((), dtype=object)
    holder[()] = d
    w.obj(holder)
    return _npy_bytes(w.finish())


def flame_pytorch_embedding_bytes(emb: dict) -> tuple[bytes, bytes]:
    """(flame_static_embedding.pkl, flame_dynamic_embedding.npy) bytes, FLAME_PyTorch layout."""
    w = _PickleWriter(protocol=2, py2_strings=True)
    w.obj(
        {"lmk_face_idx": emb["static_lmk_faces_idx"].astype(np.uint32), "lmk_b_coords": emb["static_lmk_bary_coords"]}
    )
    static = w.finish()
    dyn = {
        "lmk_face_idx": [r.astype(np.int64) for r in emb["dynamic_lmk_faces_idx"]],  # 79 x [17]
        "lmk_b_coords": [r for r in emb["dynamic_lmk_bary_coords"]],  # 79 x [17, 3]
    }
    w = _PickleWriter(protocol=2, py2_strings=True)
    holder = np.empty((), dtype=object)
    holder[()] = dyn
    w.obj(holder)
    return static, _npy_bytes(w.finish())


def write_synthetic_flame(folder: str | Path, layout: str = "deca", release: str = "2020", seed: int = 0) -> Path:
    """Write the synthetic model into `folder` the way a user has the real files; returns the
    model file's path.

    layout "deca": generic_model.pkl (or flame2023.pkl) + landmark_embedding.npy;
    "flame_pytorch": the same model + flame_static_embedding.pkl + flame_dynamic_embedding.npy;
    "npz": generic_model.npz (plain arrays, dense J_regressor) + landmark_embedding.npy.
    Loading it gives exactly `synthetic_arrays(seed)` (float64 in the file)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {LAYOUTS}")
    if release not in RELEASES:
        raise ValueError(f"release {release!r}: expected one of {RELEASES}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    a = synthetic_arrays(seed)
    emb = a.pop("embedding")
    name = MODEL_NAMES[release]
    if layout == "npz":
        model = folder / f"{name}.npz"
        np.savez(model, **{k: v for k, v in a.items()}, release=np.asarray(f"FLAME {release}"))
    else:
        model = folder / f"{name}.pkl"
        model.write_bytes(_model_pickle(a))
    if layout == "flame_pytorch":
        static, dyn = flame_pytorch_embedding_bytes(emb)
        (folder / "flame_static_embedding.pkl").write_bytes(static)
        (folder / "flame_dynamic_embedding.npy").write_bytes(dyn)
    else:
        (folder / "landmark_embedding.npy").write_bytes(deca_embedding_bytes(emb))
    return model


# ------------------------------------------------------------ synthetic fits (tests, benches)


def random_flame_params(
    batch: int,
    seed: int = 0,
    *,
    n_shape: int = 300,
    n_expr: int = 100,
    shape_scale: float = 1.0,
    expr_scale: float = 1.0,
    yaw_deg: tuple[float, float] = (-35.0, 35.0),
    distance: float = 0.5,
    dtype=torch.float64,
):
    """Plausible random FlameParams: shape / expression ~ N(0, scale^2) on the first 20 / 10
    coefficients (decaying after), yaw uniform in `yaw_deg`, small pitch / roll / neck,
    a slightly open jaw, the head `distance` metres in front of the fit camera (translation z < 0)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    u = lambda *s: torch.rand(*s, generator=g, dtype=dtype)  # noqa: E731
    decay = lambda n, k: 1.0 / (1.0 + torch.arange(n, dtype=dtype) / k)  # noqa: E731
    shape = r(batch, n_shape) * shape_scale * decay(n_shape, 20.0)
    expr = r(batch, n_expr) * expr_scale * decay(n_expr, 10.0)
    yaw = torch.deg2rad(yaw_deg[0] + (yaw_deg[1] - yaw_deg[0]) * u(batch))
    glob = torch.stack([r(batch) * 0.08, yaw, r(batch) * 0.05], -1)
    neck = r(batch, 3) * 0.03
    jaw = torch.stack([u(batch) * 0.15, r(batch) * 0.01, r(batch) * 0.01], -1)
    trans = torch.stack([r(batch) * 0.02, r(batch) * 0.02, -distance + r(batch) * 0.03], -1)
    return FlameParams(shape, expr, glob, neck, jaw, torch.zeros(batch, 6, dtype=dtype), trans)


def project_fit_camera(points, focal: float, image_size: tuple[int, int]) -> np.ndarray:
    """FLAME world points [..., 3] (translation applied) -> pixels [..., 2] through the fit's
    camera (viewmat diag(1, -1, -1, 1), principal point at the image centre)."""
    X = np.asarray(points.detach().cpu() if isinstance(points, torch.Tensor) else points, np.float64)
    H, W = image_size
    xc = X * np.array([1.0, -1.0, -1.0])
    return focal * xc[..., :2] / xc[..., 2:3] + np.array([(W - 1) / 2, (H - 1) / 2])


def synthetic_landmarks(
    model,
    params,
    *,
    image_size: tuple[int, int] = (512, 512),
    focal: float | None = None,
    noise_px: float = 0.0,
    seed: int = 0,
):
    """(list of Landmarks with `noise_px` Gaussian noise per coordinate, noise-free pixels [B,68,2])
    of `model` posed by `params`, seen by the fit camera (focal default 1.2 x the long side)."""
    f = 1.2 * max(image_size) if focal is None else focal
    with torch.no_grad():
        lm3 = flame_forward(model.to(dtype=params.shape.dtype), params).landmarks  # [B, 68, 3]
    clean = project_fit_camera(lm3, f, image_size)  # [B, 68, 2]
    rng = np.random.default_rng(seed)
    noisy = clean + rng.normal(0.0, noise_px, clean.shape) if noise_px > 0 else clean
    out = []
    for b in range(clean.shape[0]):
        pts = noisy[b]
        lo, hi = pts.min(0) - 10, pts.max(0) + 10
        out.append(
            Landmarks(
                image_size=image_size,
                landmarks=pts.astype(np.float32),
                scores=np.ones(68, np.float32),
                bbox=np.array([lo[0], lo[1], hi[0], hi[1]], np.float32),
                image_sha256="0" * 64,
                detector="synthetic",
            )
        )
    return out, clean
