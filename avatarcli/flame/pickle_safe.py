"""A restricted unpickler for FLAME files: a pickle never runs code here.

The mechanism is shared: `RestrictedUnpickler(file, path, allowed, what)` and
`loads_restricted(..., allowed=, post=)` take another allow-list, and `data_builders()` gives
the data-only part of this one (numpy, torch tensors, OrderedDict, sets) to extend; the GAN
checkpoint reader (avatarcli/gan/checkpoint.py) is built that way.

The real FLAME files are Python-2-era pickles (protocol 2, latin1 byte strings) holding
numpy arrays, `chumpy.ch.Ch` objects, a `scipy.sparse` J_regressor and, in DECA's
landmark_embedding.npy, torch tensors. `find_class` allows exactly the globals those need
and maps each to something that only builds data:

  numpy.core.multiarray / numpy._core.multiarray ._reconstruct  -> an ndarray (class must be ndarray)
  numpy.core.multiarray / numpy._core.multiarray .scalar        -> a numpy scalar
  numpy.core.numeric / numpy._core.numeric ._frombuffer          -> an ndarray (protocol 5 pickles)
  numpy.ndarray, numpy.dtype                                     -> themselves (data only)
  scipy.sparse.{csc,csr,coo,_csc,_csr,_coo,...} matrix/array     -> a stand-in; after loading,
                                                                    a scipy matrix built from its arrays
  chumpy.ch.Ch                                                   -> a stand-in; after loading, its 'x' array
  any other chumpy.<module>.<Class> (operation nodes)            -> an inert stand-in: its 'x' or None
  copy_reg._reconstructor / copyreg._reconstructor               -> only for the stand-ins above
  __builtin__.object / builtins.object                           -> only as _reconstructor's base
  __builtin__.set / frozenset (and builtins.)                    -> sets (chumpy state holds them)
  collections.OrderedDict                                        -> an OrderedDict
  _codecs.encode                                                 -> str -> bytes only (Python 3, protocol 2)
  torch._utils._rebuild_tensor_v2                                -> a numpy array (storage must be a torch storage)
  torch.storage._load_from_bytes                                 -> torch.load(weights_only=True) of the bytes
                                                                    (torch's own restricted unpickler)

Any other global raises UnsafePickleError naming the file and `module.name` before
anything is constructed. Persistent ids are refused (the base class does that).

`.npy` files that hold a pickled object (np.save of a dict) are read with `load_npy`:
the header is parsed by numpy.lib.format, the payload goes through the same unpickler.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse
import torch
from numpy.lib import format as npformat

from avatarcli.errors import ArtifactError, UnsafePickleError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]


# ------------------------------------------------------------------ stand-ins and builders


class ChumpyStandIn:
    """What a pickled chumpy.ch.Ch becomes: only its 'x' (the array) is kept."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("chumpy.ch.Ch state is not a dict")
        self.x = state.get("x")


class SparseStandIn:
    """What a pickled scipy.sparse matrix becomes until `resolve` builds it from its arrays."""

    kind = "csc"

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("scipy.sparse state is not a dict")
        self.state = state


def _sparse_class(kind: str) -> type:
    return type(f"SparseStandIn_{kind}", (SparseStandIn,), {"kind": kind})


_SPARSE = {k: _sparse_class(k) for k in ("csc", "csr", "coo")}


class ChumpyExpressionStandIn(ChumpyStandIn):
    """Any other chumpy class (an operation node such as chumpy.ch_ops.add): data only, no code.
    It resolves to its 'x' when it has one, else to None (a FLAME key that needs it then fails
    validation with a clear message)."""

    def __init__(self, *args, **kwargs):  # REDUCE-style pickles call the class: keep nothing
        pass


_STAND_INS = (ChumpyStandIn, ChumpyExpressionStandIn, *_SPARSE.values())


def _reconstruct(cls, shape, typecode):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"_reconstruct of {cls!r}: only numpy.ndarray is allowed")
    return _multiarray._reconstruct(np.ndarray, shape, typecode)


def _scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError("numpy scalar without a dtype")
    if dtype.hasobject:
        raise pickle.UnpicklingError("numpy object scalar refused")
    if isinstance(data, str):
        data = data.encode("latin1")
    return _multiarray.scalar(dtype, data)


def _frombuffer(buf, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("_frombuffer needs a plain numpy dtype")
    return np.frombuffer(bytes(buf), dtype=dtype).reshape(shape, order=order).copy()


def _reconstructor(cls, base, state):
    if cls not in _STAND_INS or base is not object or state is not None:
        raise pickle.UnpicklingError("copy_reg._reconstructor is allowed only for the chumpy / scipy stand-ins")
    return cls.__new__(cls)


def _codecs_encode(text, encoding="utf-8"):
    """How Python 3 writes `bytes` at protocols < 3: _codecs.encode(str, 'latin1')."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only to make bytes from a str")
    return text.encode(encoding)


def _load_from_bytes(b):
    if not isinstance(b, (bytes, bytearray)):
        raise pickle.UnpicklingError("torch storage payload is not bytes")
    return torch.load(io.BytesIO(bytes(b)), weights_only=True, map_location="cpu")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError("torch tensor without a torch storage")
    ok = lambda t: isinstance(t, (tuple, list)) and all(isinstance(i, int) for i in t)  # noqa: E731
    if not (isinstance(storage_offset, int) and ok(size) and ok(stride)):
        raise pickle.UnpicklingError("torch tensor with a bad size / stride")
    dtype = storage.dtype if isinstance(storage, torch.TypedStorage) else torch.uint8
    untyped = storage._untyped_storage if isinstance(storage, torch.TypedStorage) else storage
    t = torch.empty(0, dtype=dtype).set_(untyped, storage_offset, tuple(size), tuple(stride))
    return t.numpy().copy()


# module -> name -> what find_class returns
_ALLOWED: dict[str, dict[str, Any]] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[_mod] = {"_reconstruct": _reconstruct, "scalar": _scalar}
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[_mod] = {"_frombuffer": _frombuffer}
_ALLOWED["numpy"] = {"ndarray": np.ndarray, "dtype": np.dtype}
for _kind in ("csc", "csr", "coo"):
    for _mod in (f"scipy.sparse.{_kind}", f"scipy.sparse._{_kind}", "scipy.sparse"):
        _ALLOWED.setdefault(_mod, {})[f"{_kind}_matrix"] = _SPARSE[_kind]
        _ALLOWED[_mod][f"{_kind}_array"] = _SPARSE[_kind]
_ALLOWED["chumpy.ch"] = {"Ch": ChumpyStandIn}
_ALLOWED["chumpy"] = {"Ch": ChumpyStandIn}
_ALLOWED["copy_reg"] = {"_reconstructor": _reconstructor}
_ALLOWED["copyreg"] = {"_reconstructor": _reconstructor}
_ALLOWED["__builtin__"] = {"object": object, "set": set, "frozenset": frozenset}  # chumpy keeps sets in its state
_ALLOWED["builtins"] = {"object": object, "set": set, "frozenset": frozenset}
_ALLOWED["_codecs"] = {"encode": _codecs_encode}
_ALLOWED["collections"] = {"OrderedDict": collections.OrderedDict}
_ALLOWED["torch._utils"] = {"_rebuild_tensor_v2": _rebuild_tensor_v2}
_ALLOWED["torch.storage"] = {"_load_from_bytes": _load_from_bytes}


def allowed_globals() -> list[str]:
    """Every `module.name` the unpickler accepts (for docs and tests)."""
    return sorted(f"{m}.{n}" for m, names in _ALLOWED.items() for n in names)


def data_builders() -> dict[str, dict[str, Any]]:
    """The data-only builders other restricted loaders extend (numpy arrays and scalars, torch
    tensors via torch's own weights-only loader, OrderedDict, sets, bytes): a fresh copy."""
    keep = ("numpy", "_codecs", "collections", "torch._utils", "torch.storage")
    out = {m: dict(v) for m, v in _ALLOWED.items() if m in keep or m.startswith(("numpy.core", "numpy._core"))}
    for m in ("__builtin__", "builtins"):
        out[m] = {"set": set, "frozenset": frozenset}
    return out


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler (encoding latin1) whose find_class allows only the globals in `allowed`
    (default: the FLAME list, `allowed_globals()`); `what` names the file kind in the refusal."""

    def __init__(self, file, path: str | Path, allowed: dict[str, dict[str, Any]] | None = None, what: str = ""):
        super().__init__(file, encoding="latin1", fix_imports=False)
        self.path = path
        self.allowed = _ALLOWED if allowed is None else allowed
        self.what = what or "a FLAME file"

    def find_class(self, module: str, name: str):
        obj = self.allowed.get(module, {}).get(name)
        is_flame = self.allowed is _ALLOWED
        if obj is None and is_flame and (module == "chumpy" or module.startswith("chumpy.")) and name.isidentifier():
            obj = ChumpyExpressionStandIn  # some releases may pickle chumpy operation nodes: kept as inert data
        if obj is None:
            raise UnsafePickleError(
                f"refused to load: the pickle asks for the global {module}.{name}, which {self.what} "
                "never needs (nothing in it was run)",
                path=self.path,
            )
        return obj


# ------------------------------------------------------------------ resolving stand-ins


def _sparse_from_state(st: SparseStandIn):
    s = st.state
    shape = s.get("_shape", s.get("shape"))
    if not (isinstance(shape, tuple) and len(shape) == 2 and all(isinstance(i, int) and i >= 0 for i in shape)):
        raise ValueError("sparse matrix without a valid shape")
    data = np.asarray(s.get("data"))
    if data.dtype.kind not in "fiub":
        raise ValueError("sparse matrix data is not numeric")
    if st.kind == "coo":
        row = np.asarray(s.get("row"))
        col = np.asarray(s.get("col"))
        if "coords" in s:
            row, col = (np.asarray(c) for c in s["coords"])
        return scipy.sparse.coo_matrix((data, (row, col)), shape=shape)
    indices = np.asarray(s.get("indices"))
    indptr = np.asarray(s.get("indptr"))
    if indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
        raise ValueError("sparse matrix indices are not integers")
    cls = scipy.sparse.csc_matrix if st.kind == "csc" else scipy.sparse.csr_matrix
    m = cls((data, indices, indptr), shape=shape)
    m.check_format(full_check=True)
    return m


def resolve(obj, depth: int = 0):
    """Replace stand-ins in a loaded object: Ch -> its array, sparse -> a scipy matrix.
    Recurses through dicts, lists and tuples (and object arrays)."""
    if depth > 20:
        raise ValueError("nested too deeply")
    if isinstance(obj, ChumpyStandIn):
        x = getattr(obj, "x", None)
        if x is None and isinstance(obj, ChumpyExpressionStandIn):
            return None
        if x is None:
            raise ValueError("chumpy.ch.Ch without an 'x' array")
        return np.asarray(resolve(x, depth + 1))
    if isinstance(obj, SparseStandIn):
        return _sparse_from_state(obj)
    if isinstance(obj, dict):
        return (
            type(obj)((k, resolve(v, depth + 1)) for k, v in obj.items())
            if isinstance(obj, collections.OrderedDict)
            else {k: resolve(v, depth + 1) for k, v in obj.items()}
        )
    if isinstance(obj, list):
        return [resolve(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(resolve(v, depth + 1) for v in obj)
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        if obj.ndim == 0:
            return resolve(obj[()], depth + 1)
        out = np.empty(obj.shape, dtype=object)
        for i, v in enumerate(obj.ravel()):
            out.flat[i] = resolve(v, depth + 1)
        return out
    return obj


# ------------------------------------------------------------------ entry points


def loads_restricted(
    data: bytes,
    path: str | Path,
    allowed: dict[str, dict[str, Any]] | None = None,
    what: str = "",
    post: Callable[[Any], Any] | None = None,
    label: str = "FLAME",
) -> Any:
    """Unpickle `data` (the contents of `path`, named in errors) and resolve the stand-ins.

    `allowed` / `what` / `post` / `label` make another restricted loader (default: FLAME's list, then
    `resolve`). UnsafePickleError for a foreign global; ArtifactError for anything else that fails."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), path, allowed, what).load()
        return (post or resolve)(obj)
    except UnsafePickleError:
        raise
    except Exception as e:  # noqa: BLE001 - any malformed pickle is a bad file
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ArtifactError(f"not a readable {label} pickle ({type(e).__name__}: {msg})", path=path) from None


def load_pickle(path: str | Path) -> Any:
    """Restricted-unpickle a .pkl file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ArtifactError(f"cannot read ({e.strerror or type(e).__name__})", path=p) from None
    return loads_restricted(data, p)


def load_npy(path: str | Path, data: bytes | None = None) -> Any:
    """Read a .npy file without numpy's pickle: a plain array is returned as it is, an object
    array (np.save of a dict or list) is restricted-unpickled; a 0-d one gives the object itself."""
    p = Path(path)
    if data is None:
        try:
            data = p.read_bytes()
        except OSError as e:
            raise ArtifactError(f"cannot read ({e.strerror or type(e).__name__})", path=p) from None
    f = io.BytesIO(data)
    try:
        version = npformat.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(f)
        else:
            # (3, 0): numpy has no public reader for v3.0 headers, and its stubs omit the private one
            shape, fortran, dtype = npformat._read_array_header(f, version)  # type: ignore[attr-defined]
    except Exception as e:  # noqa: BLE001
        raise ArtifactError(
            f"not a .npy file ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})", path=p
        ) from None
    if not dtype.hasobject:
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise ArtifactError(f"unreadable .npy array ({type(e).__name__})", path=p) from None
    payload = data[f.tell() :]
    arr = loads_restricted(payload, p)
    if isinstance(arr, np.ndarray) and arr.dtype.hasobject:
        arr = arr.reshape(shape, order="F" if fortran else "C")
        return arr[()] if arr.ndim == 0 else arr
    if not isinstance(arr, np.ndarray) and shape == ():
        return arr  # resolve() already unwrapped a 0-d object array
    return arr
