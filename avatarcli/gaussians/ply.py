"""3D Gaussian Splatting PLY files: any standard 3DGS PLY in, our heads out.

Layout written (binary little-endian, one `vertex` element, all float32):
    x y z nx ny nz f_dc_0..2 f_rest_0..3*(K-1)-1 opacity scale_0..2 rot_0..3 [binding (int32)]
log scales, logit opacity, wxyz quaternions (unnormalised allowed on read),
f_rest channel-major (all R coefficients, then G, then B) like the original
3DGS code. `binding` is the FLAME triangle of each Gaussian (our heads only).

Head metadata (`HeadMeta`: the FLAME fit, camera, model hash) lives in header
`comment avatarcli-meta <chunk>` lines: compact JSON (floats written with
repr, so they round-trip exactly) split into chunks of META_CHUNK characters.
Viewers skip comments, so the file stays a plain 3DGS PLY for them.
Version 2 adds the canonical FLAME mesh's per-vertex `offsets` [V, 3] and `hair` weights [V]
(avatarcli.flame.deform), stored as base64 of little-endian float32; a head without them is
written as version 1, and version 1 heads read with both None.
Version 3 adds rigid anchors (avatarcli.gaussians.anchors: the mouth interior's triangles, rigid
with the skull or the jaw): `anchors`, base64 float32 corners [A, 3, 3] in the canonical head's
space, and `anchor_joints` [A], the FLAME joint of each. A binding f >= n_faces is anchor
f - n_faces. Heads without anchors are written as version 2 or 1 as before.
Version 4 adds the mouth's lip state (avatarcli.gaussians.mouth): `lip_opening`, the inner-lip gap
over the mouth width of the canonical head (the photo's expression and jaw), and `rest_lip_opening`,
the same of the neutral face; the interior (the Gaussians on anchors) is shown with opacity x
interior_visibility(lip_opening, rest_lip_opening) in still renders, the fit and the rounds. Heads
with anchors but no lip state are written as version 3 as before; version 3 heads read with both None.

Reading keeps the raw stored values (`GaussianPly.raw`); writing reuses them
while the activated Gaussians still match, so write(read(f)) is byte-identical.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from plyfile import PlyData
from torch import Tensor

from avatarcli.errors import ArtifactError, InputError
from avatarcli.flame.artifact import N_LANDMARKS, FlameFit, canonical_head
from avatarcli.flame.model import FlameModel
from avatarcli.gaussians.anchors import RigidAnchors
from avatarcli.gaussians.binding import bind_to_mesh, world_gaussians
from avatarcli.gaussians.model import Gaussians
from avatarcli.gaussians.web_formats import is_compressed_ply, read_compressed_ply, read_splat_bytes
from avatarcli.io.atomic import atomic_write

META_FORMAT = "avatarcli.head"
META_VERSION = 4
META_TAG = "avatarcli-meta"
META_CHUNK = 200
UP_TAG = "avatarcli-up"  # `comment avatarcli-up y`: the scene's up axis (exports of our heads carry it)
UP_HINTS = ("y", "-y", "z", "-z", "x", "-x")
_MAX_HEADER = 16 << 20

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_REQUIRED = [
    "x",
    "y",
    "z",
    "f_dc_0",
    "f_dc_1",
    "f_dc_2",
    "opacity",
    "scale_0",
    "scale_1",
    "scale_2",
    "rot_0",
    "rot_1",
    "rot_2",
    "rot_3",
]
_BLOBS = ("offsets", "hair")  # version 2: float32 arrays as base64 strings
_MOUTH = ("lip_opening", "rest_lip_opening")  # version 4: floats
_VECTORS = {
    "shape": None,
    "expr": None,
    "global_pose": 3,
    "neck_pose": 3,
    "jaw_pose": 3,
    "eyes_pose": 6,
    "translation": 3,
    "root_joint": 3,
}


_FIT_KEYS = ("shape", "expr", "global_pose", "neck_pose", "jaw_pose", "eyes_pose", "translation", "K", "viewmat",
             "image_size", "flame_model_sha256")  # the FlameFit fields a head stores, in header order  # fmt: skip
_META_KEYS = _FIT_KEYS + ("root_joint", "sh_degree", "n_faces")  # required in every header


@dataclass
class HeadMeta:
    """What `animate` and `render --camera photo` need, stored inside the PLY: the photo's FLAME fit
    (the head is stored canonical: the fit's global pose and translation are not applied to it)."""

    fit: FlameFit  # float64 arrays; landmark_error_px is not stored (NaN when read)
    root_joint: np.ndarray  # [3] root joint of the shaped template (rotation centre of global_pose)
    sh_degree: int
    n_faces: int  # FLAME face count; every binding is < n_faces
    offsets: np.ndarray | None = None  # [V, 3] float32 canonical-mesh offsets (version 2; None: plain FLAME)
    hair: np.ndarray | None = None  # [V] float32 hair weights of the offset vertices (version 2)
    anchors: np.ndarray | None = None  # [A, 3, 3] float32 rigid anchor corners, canonical (version 3)
    anchor_joints: tuple[int, ...] | None = None  # [A] the FLAME joint each anchor follows (version 3)
    lip_opening: float | None = None  # the canonical head's lip opening (version 4; None: not stored)
    rest_lip_opening: float | None = None  # the neutral face's (version 4)
    format: str = META_FORMAT
    version: int = 1  # as read; written as 4 with a lip state, 3 with anchors, else 2 with offsets, else 1

    @property
    def flame_model_sha256(self) -> str:
        return self.fit.flame_model_sha256

    @property
    def image_size(self) -> tuple[int, int]:
        return self.fit.image_size

    @property
    def deformed(self) -> bool:
        return self.offsets is not None

    @property
    def n_anchors(self) -> int:
        return 0 if self.anchors is None else int(self.anchors.shape[0])

    def rigid_anchors(self):
        """The head's RigidAnchors (avatarcli.gaussians.anchors), or None."""
        if self.anchors is None:
            return None
        return RigidAnchors.from_arrays(self.anchors, self.anchor_joints or ())

    def canonical(self, model: FlameModel) -> tuple[Tensor, Tensor, Tensor]:
        """The canonical head (with its mesh offsets and rigid anchors, if any): vertices [V (+ 3A), 3],
        faces [F (+ A), 3], root joint [3]. Bindings index these faces."""
        v, f, j0 = canonical_head(model, self.fit, self.offsets)
        anchors = self.rigid_anchors()
        if anchors is not None:
            v, f = anchors.extend(v, f)
        return v, f, j0

    def with_anchors(self, anchors) -> HeadMeta:
        """A copy carrying RigidAnchors (version 3); None removes them."""
        if anchors is None or anchors.n == 0:
            return replace(self, anchors=None, anchor_joints=None, lip_opening=None, rest_lip_opening=None)
        corners, joints = anchors.to_arrays()
        if not np.isfinite(corners).all():
            raise ValueError("anchor corners must be finite")
        return replace(self, anchors=corners, anchor_joints=tuple(joints), version=3)

    def with_mouth(self, lip_opening: float, rest_lip_opening: float) -> HeadMeta:
        """A copy carrying the mouth's lip state (version 4; needs the anchors of its interior)."""
        if self.anchors is None:
            raise ValueError("a lip state needs the mouth interior's anchors")
        vals = (float(lip_opening), float(rest_lip_opening))
        if not all(math.isfinite(v) and 0.0 <= v < 10.0 for v in vals):
            raise ValueError(f"lip openings {vals} must be finite, in 0..10 (x the mouth width)")
        return replace(self, lip_opening=vals[0], rest_lip_opening=vals[1], version=4)

    def with_deformation(self, offsets, hair) -> HeadMeta:
        """A copy carrying canonical-mesh offsets [V, 3] and hair weights [V] (version 2)."""
        a = lambda x: np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)  # noqa: E731
        off, h = a(offsets).reshape(-1, 3), a(hair).reshape(-1)
        if off.shape[0] != h.shape[0] or not (np.isfinite(off).all() and np.isfinite(h).all()):
            raise ValueError(f"offsets {off.shape} / hair {h.shape} must be finite [V, 3] / [V]")
        return replace(self, offsets=off, hair=np.clip(h, 0.0, 1.0), version=2)

    @classmethod
    def from_fit(cls, fit, root_joint, n_faces: int, sh_degree: int) -> HeadMeta:
        """From a FlameFit (numpy or torch fields) and the root joint [3] (or [1, 3])."""
        a = lambda x: np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)  # noqa: E731
        vec = lambda x: a(x).reshape(-1)  # noqa: E731
        err = getattr(fit, "landmark_error_px", None)
        stored = FlameFit(
            shape=vec(fit.shape), expr=vec(fit.expr), global_pose=vec(fit.global_pose), neck_pose=vec(fit.neck_pose),
            jaw_pose=vec(fit.jaw_pose), eyes_pose=vec(fit.eyes_pose), translation=vec(fit.translation),
            K=a(fit.K).reshape(3, 3), viewmat=a(fit.viewmat).reshape(4, 4),
            image_size=(int(fit.image_size[0]), int(fit.image_size[1])),
            landmark_error_px=vec(err) if err is not None else np.full(N_LANDMARKS, np.nan),
            flame_model_sha256=str(fit.flame_model_sha256),
        )  # fmt: skip
        return cls(fit=stored, root_joint=vec(root_joint), sh_degree=int(sh_degree), n_faces=int(n_faces))

    def to_json(self) -> str:
        d = {}
        values = {
            **{k: getattr(self.fit, k) for k in _FIT_KEYS},
            **{f.name: getattr(self, f.name) for f in fields(self)},
        }
        for name in _META_KEYS + _BLOBS + ("anchors", "anchor_joints") + _MOUTH + ("format", "version"):
            v = values[name]
            if name in _MOUTH:
                if v is None or self.anchors is None:
                    continue
                v = float(v)
            elif name == "anchor_joints":
                if v is None:
                    continue
                v = [int(x) for x in v]
            elif name in _BLOBS + ("anchors",):
                if v is None:
                    continue
                v = base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii")
            elif isinstance(v, np.ndarray):
                v = np.asarray(v, dtype=np.float64).tolist()
            elif isinstance(v, tuple):
                v = [int(x) for x in v]
            d[name] = v
        d["version"] = (
            4 if "lip_opening" in d else 3 if self.anchors is not None else 2 if self.offsets is not None else 1
        )
        return json.dumps(d, separators=(",", ":"), allow_nan=False, ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str, path: Path) -> "HeadMeta":
        def bad(msg: str):
            return ArtifactError(f"bad {META_TAG} header: {msg}", path=path)

        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise bad(f"not JSON ({e})") from None
        if not isinstance(d, dict):
            raise bad("not a JSON object")
        if d.get("format") != META_FORMAT:
            raise bad(f"format is {d.get('format')!r}, expected {META_FORMAT!r}")
        version = d.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise bad(f"version is {version!r}")
        if version > META_VERSION:
            raise ArtifactError(
                f"head metadata version {version} is newer than this avatarcli reads ({META_VERSION}); upgrade avatarcli",
                path=path,
            )
        missing = [n for n in (*_META_KEYS, "format", "version") if n not in d]
        if missing:
            raise bad(f"missing field(s) {missing}")
        kw: dict[str, Any] = {}  # HeadMeta's (and FlameFit's) keyword arguments, each checked below
        for name, n in {**_VECTORS, "K": (3, 3), "viewmat": (4, 4)}.items():
            try:
                arr = np.asarray(d[name], dtype=np.float64)
            except (TypeError, ValueError):
                raise bad(f"{name} is not an array of numbers") from None
            want = n if isinstance(n, tuple) else ((n,) if n is not None else None)
            if (want is not None and arr.shape != want) or (want is None and arr.ndim != 1):
                raise bad(f"{name} has shape {list(arr.shape)}, expected {list(want) if want else '[n]'}")
            if not np.isfinite(arr).all():
                raise bad(f"{name} is not finite")
            kw[name] = arr
        size = d["image_size"]
        if not (isinstance(size, list) and len(size) == 2 and all(type(s) is int and s > 0 for s in size)):
            raise bad(f"image_size is {size!r}, expected [H, W] positive integers")
        kw["image_size"] = (size[0], size[1])
        for name, lo, hi in (("sh_degree", 0, 3), ("n_faces", 1, 1 << 30)):
            v = d[name]
            if type(v) is not int or not lo <= v <= hi:
                raise bad(f"{name} is {v!r}")
            kw[name] = v
        if not isinstance(d["flame_model_sha256"], str):
            raise bad("flame_model_sha256 is not a string")
        kw["flame_model_sha256"] = d["flame_model_sha256"]
        fit = FlameFit(**{k: kw.pop(k) for k in _FIT_KEYS}, landmark_error_px=np.full(N_LANDMARKS, np.nan))
        kw.update(_read_offsets(d, bad) if version >= 2 else {})
        kw.update(_read_anchors(d, bad) if version >= 3 else {})
        kw.update(_read_mouth(d, bad, "anchors" in kw) if version >= 4 else {})
        return cls(fit=fit, **kw, format=META_FORMAT, version=version)


def _blob(d: dict, name: str, bad) -> np.ndarray:
    text = d.get(name)
    if not isinstance(text, str):
        raise bad(f"{name} is not a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise bad(f"{name} is not valid base64") from None
    if len(raw) % 4:
        raise bad(f"{name} holds {len(raw)} bytes, not float32 values")
    arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(arr).all():
        raise bad(f"{name} is not finite")
    return arr


def _read_offsets(d: dict, bad) -> dict:
    """Version 2's optional mesh offsets [V, 3] and hair weights [V] (both or neither)."""
    if "offsets" not in d and "hair" not in d:
        return {}
    offsets, hair = _blob(d, "offsets", bad), _blob(d, "hair", bad)
    if offsets.size != 3 * hair.size or hair.size == 0:
        raise bad(f"offsets hold {offsets.size} values and hair {hair.size}: expected [V, 3] and [V]")
    if ((hair < 0) | (hair > 1)).any():
        raise bad("hair weights outside 0..1")
    return {"offsets": offsets.reshape(-1, 3), "hair": hair}


def _read_anchors(d: dict, bad) -> dict:
    """Version 3's optional rigid anchors: corners [A, 3, 3] and their joints [A] (both or neither)."""
    if "anchors" not in d and "anchor_joints" not in d:
        return {}
    corners = _blob(d, "anchors", bad)
    joints = d.get("anchor_joints")
    if not (isinstance(joints, list) and all(type(j) is int and 0 <= j < 64 for j in joints)):
        raise bad(f"anchor_joints is {joints!r}, expected a list of joint indices")
    if corners.size != 9 * len(joints) or not joints:
        raise bad(f"anchors hold {corners.size} values for {len(joints)} joints: expected [A, 3, 3] and [A]")
    return {"anchors": corners.reshape(-1, 3, 3), "anchor_joints": tuple(joints)}


def _read_mouth(d: dict, bad, has_anchors: bool) -> dict:
    """Version 4's optional lip state: lip_opening and rest_lip_opening (both or neither, with anchors)."""
    if not any(k in d for k in _MOUTH):
        return {}
    if not has_anchors:
        raise bad("a lip state without the mouth interior's anchors")
    out = {}
    for k in _MOUTH:
        v = d.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0.0 <= v < 10.0):
            raise bad(f"{k} is {v!r}, expected a number in 0..10")
        out[k] = float(v)
    return out


@dataclass
class RawPly:
    """Stored (pre-activation) values as read, kept so that a re-write is bit-exact."""

    log_scales: np.ndarray  # [N, 3] float32
    opacity_logits: np.ndarray  # [N] float32
    quats: np.ndarray  # [N, 4] float32, as stored (maybe unnormalised)


@dataclass
class GaussianPly:
    gaussians: Gaussians  # world space (our heads: the canonical head, upright, facing +z)
    binding: torch.Tensor | None = None  # [N] long FLAME triangle per Gaussian
    meta: HeadMeta | None = None
    raw: RawPly | None = field(default=None, repr=False, compare=False)
    up: str | None = None  # up axis from the header's avatarcli-up comment (None: not recorded)

    @property
    def known_up(self) -> str | None:
        """The up axis this file is known to use: the recorded hint, else +y for our heads."""
        return self.up or ("y" if self.meta is not None else None)

    @classmethod
    def from_bound(cls, bound, vertices: torch.Tensor, faces: torch.Tensor, meta: HeadMeta | None) -> "GaussianPly":
        """BoundGaussians on the (canonical) mesh `vertices` [V, 3] -> a writable head."""
        g = world_gaussians(bound, vertices, faces).detach()
        if meta is not None:  # faces: FLAME's + the meta's anchors
            meta = replace(meta, sh_degree=bound.sh_degree, n_faces=int(faces.shape[0]) - meta.n_anchors)
        return cls(gaussians=g, binding=bound.binding.detach().clone(), meta=meta)

    def to_bound(self, vertices: torch.Tensor, faces: torch.Tensor):
        """-> BoundGaussians on the mesh `vertices` [V, 3] (needs a binding)."""
        if self.binding is None:
            raise InputError("this PLY has no FLAME binding: it is not an avatarcli head")
        g = self.gaussians.to(vertices.device)
        g = Gaussians(g.means.to(vertices.dtype), g.quats.to(vertices.dtype), g.scales.to(vertices.dtype),
                      g.opacities.to(vertices.dtype), g.sh.to(vertices.dtype))  # fmt: skip
        return bind_to_mesh(g, self.binding.to(vertices.device), vertices, faces)


# ----------------------------------------------------------------------------- activation (float64, then float32)


def _activate(log_scales: np.ndarray, logits: np.ndarray, quats: np.ndarray):
    scales = np.exp(log_scales.astype(np.float64)).astype(np.float32)
    opac = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    q = quats.astype(np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    zero = norm[:, 0] == 0
    q = np.where(zero[:, None], np.array([1.0, 0, 0, 0]), q / np.where(norm == 0, 1.0, norm))
    return scales, opac, q.astype(np.float32)


def _deactivate(scales: np.ndarray, opac: np.ndarray):
    s = np.log(np.maximum(scales.astype(np.float64), 1e-30)).astype(np.float32)
    p = np.clip(opac.astype(np.float64), 1e-7, 1 - 1e-7)
    return s, np.log(p / (1 - p)).astype(np.float32)


# ----------------------------------------------------------------------------- writing


def _np32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


def _matching_raw(raw: RawPly | None, n: int, scales: np.ndarray, opac: np.ndarray, quats: np.ndarray) -> RawPly | None:
    """`raw` if it holds n Gaussians that activate to exactly these values (a re-write is then bit-exact), else None."""
    if raw is None or raw.log_scales.shape != (n, 3) or raw.opacity_logits.shape != (n,) or raw.quats.shape != (n, 4):
        return None
    s_act, o_act, q_act = _activate(raw.log_scales, raw.opacity_logits, raw.quats)
    same = np.array_equal(s_act, scales) and np.array_equal(o_act, opac) and np.array_equal(q_act, quats)
    return raw if same else None


def ply_bytes(ply: GaussianPly, path: str | Path = "<memory>") -> bytes:
    """The file content of `ply` (see the module docstring for the layout)."""
    g = ply.gaussians
    n, k = g.means.shape[0], g.sh.shape[1]
    if g.means.ndim != 2 or g.sh.ndim != 3 or g.sh.shape[2] != 3 or k not in (1, 4, 9, 16):
        raise ValueError(f"cannot write Gaussians with means {tuple(g.means.shape)} and sh {tuple(g.sh.shape)}")
    means, quats, scales, opac, sh = _np32(g.means), _np32(g.quats), _np32(g.scales), _np32(g.opacities), _np32(g.sh)
    raw = _matching_raw(ply.raw, n, scales, opac, quats)
    if raw is not None:
        log_scales, logits, quats = raw.log_scales, raw.opacity_logits, raw.quats
    else:
        log_scales, logits = _deactivate(scales, opac)
    cols = [means, np.zeros((n, 3), np.float32), sh[:, 0, :], sh[:, 1:, :].transpose(0, 2, 1).reshape(n, -1),
            logits[:, None], log_scales, quats]  # fmt: skip
    block = np.concatenate(cols, axis=1).astype("<f4")  # [N, P]
    if not np.isfinite(block).all():
        raise ArtifactError("refusing to write non-finite Gaussian parameters", path=path)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (k - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    dtype = [(nm, "<f4") for nm in names]
    if ply.binding is not None:
        dtype.append(("binding", "<i4"))
    rec = np.empty(n, dtype=dtype)
    for i, nm in enumerate(names):
        rec[nm] = block[:, i]
    head = ["ply", "format binary_little_endian 1.0"]
    if ply.up is not None:
        head.append(f"comment {UP_TAG} {ply.up}")
    if ply.meta is not None:
        meta = replace(ply.meta, sh_degree=int(round(math.sqrt(k))) - 1)
        text = meta.to_json()
        head += [f"comment {META_TAG} {text[i : i + META_CHUNK]}" for i in range(0, len(text), META_CHUNK)]
    head.append(f"element vertex {n}")
    head += [f"property float {nm}" for nm in names]
    if ply.binding is not None:
        b = ply.binding.detach().cpu().numpy()
        if b.shape != (n,):
            raise ValueError(f"binding has shape {b.shape}, expected ({n},)")
        rec["binding"] = b.astype("<i4")
        head.append("property int binding")
    head.append("end_header")
    return ("\n".join(head) + "\n").encode("ascii") + rec.tobytes()


def write_gaussian_ply(path: str | Path, ply: GaussianPly) -> None:
    """Write atomically (a temp file renamed onto `path`)."""
    data = ply_bytes(ply, path)
    with atomic_write(path, "wb") as f:
        f.write(data)


# ----------------------------------------------------------------------------- reading


@dataclass
class _Element:
    name: str
    count: int
    props: list[tuple[str, str | None, str]]  # (name, list count type or None, value type)


def _parse_header(data: bytes, path: Path):
    """-> (format, comments, elements, data offset). Raises ArtifactError."""
    if not (data.startswith(b"ply\n") or data.startswith(b"ply\r\n")):
        raise ArtifactError("not a PLY file (no 'ply' magic)", path=path)
    m = re.search(rb"(?:^|\n)end_header[ \t]*\r?\n", data[:_MAX_HEADER])
    if m is None:
        raise ArtifactError("truncated or not a PLY file (no end_header)", path=path)
    try:
        text = data[: m.start()].decode("ascii")
    except UnicodeDecodeError:
        raise ArtifactError("PLY header is not ASCII", path=path) from None
    fmt, comments, elements = None, [], []
    for i, line in enumerate(text.splitlines()[1:], start=2):
        words = line.split()
        if not words:
            continue
        kw = words[0]
        try:
            if kw == "format":
                if len(words) != 3 or words[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                    raise ValueError
                fmt = words[1]
            elif kw in ("comment", "obj_info"):
                if kw == "comment":
                    comments.append(line.strip()[len("comment") :].strip())
            elif kw == "element":
                if len(words) != 3:
                    raise ValueError
                count = int(words[2])
                if count < 0 or count > len(data):
                    raise ValueError
                elements.append(_Element(words[1], count, []))
            elif kw == "property":
                if not elements:
                    raise ValueError
                if words[1] == "list":
                    if len(words) != 5 or words[2] not in _PLY_TYPES or words[3] not in _PLY_TYPES:
                        raise ValueError
                    elements[-1].props.append((words[4], _PLY_TYPES[words[2]], _PLY_TYPES[words[3]]))
                else:
                    if len(words) != 3 or words[1] not in _PLY_TYPES:
                        raise ValueError
                    elements[-1].props.append((words[2], None, _PLY_TYPES[words[1]]))
            else:
                raise ValueError
        except (ValueError, IndexError):
            raise ArtifactError(f"bad PLY header line {i}: {line[:80]!r}", path=path) from None
    if fmt is None:
        raise ArtifactError("PLY header has no format line", path=path)
    return fmt, comments, elements, m.end()


def _vertex_table(data: bytes, fmt: str, elements: list[_Element], offset: int, path: Path) -> np.ndarray:
    """The `vertex` element as a structured array (binary: zero-copy view; ascii: via plyfile)."""
    names = [e.name for e in elements]
    if "vertex" not in names:
        raise ArtifactError("PLY has no 'vertex' element", path=path)
    vi = names.index("vertex")
    vert = elements[vi]
    if any(p[1] is not None for p in vert.props):
        raise ArtifactError("the vertex element has list properties: not a 3DGS PLY", path=path)
    pnames = [p[0] for p in vert.props]
    if len(set(pnames)) != len(pnames):
        raise ArtifactError("the vertex element repeats a property name", path=path)
    if fmt != "ascii" and all(p[1] is None for e in elements[:vi] for p in e.props):
        bo = "<" if fmt == "binary_little_endian" else ">"
        for e in elements[:vi]:
            offset += e.count * sum(np.dtype(p[2]).itemsize for p in e.props)
        dtype = np.dtype([(p[0], bo + p[2]) for p in vert.props])
        need = offset + vert.count * dtype.itemsize
        if len(data) < need:
            raise ArtifactError(f"truncated PLY: {len(data)} bytes, the header needs {need}", path=path)
        return np.frombuffer(data, dtype=dtype, count=vert.count, offset=offset)
    try:
        return PlyData.read(io.BytesIO(data))["vertex"].data
    except Exception as e:  # noqa: BLE001 - plyfile raises many types on bad input; report one line
        msg = " ".join(str(e).split())[:200]
        raise ArtifactError(f"unreadable PLY data ({type(e).__name__}: {msg})", path=path) from None


def _check_vertex_table(table: np.ndarray, path: Path) -> int:
    """The f_rest count of a 3DGS vertex table (ArtifactError when it is not one)."""
    props = set(table.dtype.names or ())
    missing = [p for p in _REQUIRED if p not in props]
    if missing:
        raise ArtifactError(f"not a 3D Gaussian Splatting PLY: vertex lacks {', '.join(missing)}", path=path)
    n_rest = sum(1 for p in props if re.fullmatch(r"f_rest_\d+", p))
    if n_rest not in (0, 9, 24, 45) or any(f"f_rest_{i}" not in props for i in range(n_rest)):
        raise ArtifactError(f"{n_rest} f_rest_* properties: expected 0, 9, 24 or 45 numbered from 0", path=path)
    if table.shape[0] == 0:
        raise ArtifactError("the PLY holds no Gaussians", path=path)
    for p in _REQUIRED + [f"f_rest_{i}" for i in range(n_rest)]:
        if table.dtype[p].kind not in "fiu":
            raise ArtifactError(f"property {p} is not numeric", path=path)
    return n_rest


def _stored_columns(table: np.ndarray, n_rest: int, path: Path) -> dict[str, np.ndarray]:
    """The stored (not activated) float32 columns, checked finite: means [N, 3], dc [N, 3],
    rest [N, n_rest], logits [N], log_scales [N, 3], quats [N, 4]."""
    n = table.shape[0]
    col = lambda names: np.stack([np.asarray(table[p], dtype=np.float32) for p in names], axis=1)  # noqa: E731
    with np.errstate(over="ignore", invalid="ignore"):
        cols = {
            "means": col(["x", "y", "z"]),
            "dc": col(["f_dc_0", "f_dc_1", "f_dc_2"]),
            "rest": col([f"f_rest_{i}" for i in range(n_rest)]) if n_rest else np.zeros((n, 0), np.float32),
            "logits": col(["opacity"])[:, 0],
            "log_scales": col(["scale_0", "scale_1", "scale_2"]),
            "quats": col(["rot_0", "rot_1", "rot_2", "rot_3"]),
        }
    names = {
        "means": "x/y/z",
        "dc": "f_dc",
        "rest": "f_rest",
        "logits": "opacity",
        "log_scales": "scale",
        "quats": "rot",
    }
    for key, arr in cols.items():
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).any(-1).sum()) if arr.ndim > 1 else int((~np.isfinite(arr)).sum())
            raise ArtifactError(f"{names[key]} has non-finite values (NaN or inf) in {bad} Gaussian(s)", path=path)
    return cols


def _read_meta(comments: list[str], k: int, path: Path) -> HeadMeta | None:
    """The head metadata of the header comments (None: not one of our heads), checked against the
    file's SH coefficient count k."""
    chunks = [c[len(META_TAG) + 1 :] for c in comments if c.startswith(META_TAG + " ")]
    if not chunks:
        return None
    meta = HeadMeta.from_json("".join(chunks), path)
    degree = {1: 0, 4: 1, 9: 2, 16: 3}[k]
    if meta.sh_degree != degree:
        raise ArtifactError(f"metadata says SH degree {meta.sh_degree}, the file holds degree {degree}", path=path)
    return meta


def _read_binding(table: np.ndarray, meta: HeadMeta | None, path: Path) -> Tensor | None:
    """The binding column [N] int64 (None when absent), checked against the head's face count (FLAME's +
    the rigid anchors')."""
    if "binding" not in (table.dtype.names or ()):
        return None
    b = table["binding"]
    if b.dtype.kind not in "iu":
        raise ArtifactError("binding is not an integer property", path=path)
    b = b.astype(np.int64)
    hi = meta.n_faces + meta.n_anchors if meta is not None else None
    bad = (b < 0) | (b >= hi) if hi is not None else (b < 0)
    if bad.any():
        raise ArtifactError(
            f"binding out of range for {int(bad.sum())} Gaussian(s) (the head has {hi} faces)"
            if hi
            else "negative binding values",
            path=path,
        )
    return torch.from_numpy(b)


def read_gaussian_ply(path: str | Path) -> GaussianPly:
    """Any standard 3DGS PLY -> GaussianPly (binding/meta when it is one of our heads).

    Also reads what `avatar export` writes: SuperSplat's .compressed.ply (found by its `chunk`
    element) and antimatter15's .splat (by the name), see avatarcli.gaussians.web_formats.

    SH degree comes from the f_rest count (0, 9, 24, 45 -> degree 0..3)."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror})", path=path) from None
    if path.suffix.lower() == ".splat":
        return GaussianPly(read_splat_bytes(data, path))
    fmt, comments, elements, offset = _parse_header(data, path)
    up = _up_hint(comments, path)
    if is_compressed_ply(elements):
        return GaussianPly(read_compressed_ply(data, fmt, elements, offset, path), up=up)
    table = _vertex_table(data, fmt, elements, offset, path)
    n_rest = _check_vertex_table(table, path)
    c = _stored_columns(table, n_rest, path)
    n, k = table.shape[0], n_rest // 3 + 1
    sh = np.concatenate([c["dc"][:, None, :], c["rest"].reshape(n, 3, k - 1).transpose(0, 2, 1)], axis=1)  # [N, K, 3]
    with np.errstate(over="ignore"):
        scales, opac, q = _activate(c["log_scales"], c["logits"], c["quats"])
    if not np.isfinite(scales).all():
        raise ArtifactError("scale_* values too large (exp overflows)", path=path)
    meta = _read_meta(comments, k, path)
    binding = _read_binding(table, meta, path)
    gaussians = Gaussians(
        means=torch.from_numpy(c["means"].copy()),
        quats=torch.from_numpy(q),
        scales=torch.from_numpy(scales),
        opacities=torch.from_numpy(opac),
        sh=torch.from_numpy(np.ascontiguousarray(sh)),
    )
    return GaussianPly(gaussians, binding, meta, raw=RawPly(c["log_scales"], c["logits"], c["quats"]), up=up)


def _up_hint(comments: list[str], path: Path) -> str | None:
    hints = [c.split()[1:] for c in comments if c.split()[:1] == [UP_TAG]]
    if not hints:
        return None
    if len(hints[-1]) != 1 or hints[-1][0] not in UP_HINTS:
        raise ArtifactError(f"bad '{UP_TAG}' header comment: expected one of {', '.join(UP_HINTS)}", path=path)
    return hints[-1][0]
