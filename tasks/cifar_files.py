"""The CIFAR-10 python files, read without trusting them: checked digests and a restricted unpickler.

The CIFAR-10 python batches are pickles, and ``pickle.load`` on a file a user points at runs whatever code the file
names (a crafted ``batches.meta`` is arbitrary code execution). So nothing here hands a file to ``pickle.load``
(nor to torchvision's ``CIFAR10``, which does). Every file is, in this order:

1. a regular file (not a FIFO, device or directory) of at most :data:`MAX_FILE_BYTES`, read into memory once
   through torchrig's reading layer (``torchrig.results.reading``);
2. checked against known digests: the MD5 sums of the real CIFAR-10 (the ones torchvision's ``CIFAR10`` lists), or
   the sha256 sums the synthetic stand-in records in its ``batches.meta`` (tasks/make_data.py). A folder that is
   neither is refused. The stand-in's sums show its batches are the ones written with that meta, not who wrote it,
   which is why step 3 applies to every file, the real ones too;
3. unpickled by :class:`RestrictedUnpickler`, which admits only what the format holds -- dict, list, str, bytes,
   int, float, bool, None and uint8 numpy arrays (numpy's ``_reconstruct``/``ndarray``/``dtype``, wrapped so
   that an array must come with its bytes: no object arrays, no allocation a file does not pay for) -- and names
   nothing else: any other global (``os.system``, ``builtins.exec``, ``subprocess.Popen``, ...) is refused
   before it is looked up;
4. checked for the shape of a batch (``data`` uint8 N x 3072, ``labels`` N ints in 0..9) or of the meta.

Every failure is a :class:`~torchrig.errors.UsageError` (exit 2) naming the file and what to do.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torchrig.errors import UsageError
from torchrig.results.reading import InputFileError, read_bytes

__all__ = [
    "BASE_FOLDER",
    "CIFAR10_MD5",
    "MAX_FILE_BYTES",
    "META_FILE",
    "TEST_FILE",
    "TRAIN_FILES",
    "Batch",
    "RestrictedUnpickler",
    "read_file",
    "read_meta_file",
    "restricted_loads",
    "verify_folder",
]

BASE_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
ALL_FILES = (*TRAIN_FILES, TEST_FILE, META_FILE)
# torchvision.datasets.CIFAR10.train_list / test_list / meta (tests/tasks check them against the installed one).
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
# A real batch is 30.7 MB (10,000 images); the stand-in refuses batches over 80,000 images (246 MB + names).
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_IMAGES_PER_FILE = 80_000
PIXELS = 3 * 32 * 32
CLASSES = 10
_REMEDY = ("remove the folder and run again (the task downloads CIFAR-10 or writes the stand-in), or write the "
           "stand-in with python -m tasks.make_data --force")


# --------------------------------------------------------------------------------------- the unpickler


class _NDArray:
    """What ``numpy.ndarray`` resolves to: an array only from its own bytes, of a plain numeric dtype."""

    def __new__(cls, shape: Any, dtype: Any = "uint8", buffer: Any = None, *rest: Any) -> Any:
        d = _dtype(dtype)
        buffer = _as_bytes(buffer)
        if buffer is None or rest:
            raise pickle.UnpicklingError("numpy.ndarray without its data bytes")
        dims = _shape(shape)
        if int(np.prod(dims, dtype=np.int64)) * d.itemsize != len(buffer):
            raise pickle.UnpicklingError(f"numpy.ndarray of shape {dims}: {len(buffer)} bytes do not fill it")
        return np.frombuffer(buffer, dtype=d).reshape(dims).copy()


def _as_bytes(data: Any) -> bytes | None:
    """An array's data: bytes, or the latin1 ``str`` a Python 2 pickle's ``str`` loads as (the real files)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        try:
            return data.encode("latin1")
        except UnicodeEncodeError:
            return None
    return None


def _codecs_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """Python 3's protocol-2 pickles write bytes as ``_codecs.encode(str, "latin1")``: that call only."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode other than of a str to latin1")
    return text.encode("latin1")


def _shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > 8 or not all(type(n) is int and n >= 0 for n in shape):
        raise pickle.UnpicklingError("numpy array shape is not a short tuple of non-negative ints")
    return shape


def _dtype(spec: Any, *_flags: Any) -> np.dtype[Any]:
    if isinstance(spec, _DTypeRef):
        return spec.dtype
    if not isinstance(spec, (str, np.dtype)) or (isinstance(spec, str) and len(spec) > 16):
        raise pickle.UnpicklingError("numpy dtype is not a short type code")
    d = np.dtype(spec)
    if d.kind not in "biuf" or d.hasobject or d.fields is not None or d.subdtype is not None:
        raise pickle.UnpicklingError(f"numpy dtype {d.str!r} is not a plain number type")
    return d


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    """numpy's pickled-array protocol: an empty array, filled by BUILD (``ndarray.__setstate__``) from its bytes."""
    if subtype is not _NDArray:
        raise pickle.UnpicklingError("numpy _reconstruct of something other than numpy.ndarray")
    _shape(shape)
    if not isinstance(dtype, (str, bytes)) or len(dtype) > 4:  # a placeholder type code (b"b"): BUILD sets the dtype
        raise pickle.UnpicklingError("numpy _reconstruct with an unexpected type code")
    return _CheckedArray(np.dtype(np.uint8))


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> Any:
    """numpy's protocol-5 array pickle: ``_frombuffer(bytes, dtype, shape, order)``."""
    d, dims, data = _dtype(dtype), _shape(shape), _as_bytes(bytes(buf) if isinstance(buf, bytearray) else buf)
    if data is None or order not in ("C", "F") or int(np.prod(dims, dtype=np.int64)) * d.itemsize != len(data):
        raise pickle.UnpicklingError(f"numpy array of shape {dims}: its data does not fill it")
    return np.frombuffer(data, dtype=d).reshape(dims, order=order).copy()


class _CheckedArray:
    """Stands in for the array between ``_reconstruct`` and BUILD; BUILD's state must carry the bytes."""

    def __init__(self, dtype: np.dtype[Any]) -> None:
        self.dtype = dtype
        self.array: Any = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("numpy array state is not (version, shape, dtype, fortran, data)")
        _version, shape, dtype, fortran, data = state
        d = _dtype(dtype)
        dims = _shape(shape)
        data = _as_bytes(data)
        if data is None or int(np.prod(dims, dtype=np.int64)) * d.itemsize != len(data):
            raise pickle.UnpicklingError(f"numpy array of shape {dims}: its data does not fill it")
        flat = np.frombuffer(data, dtype=d)
        self.array = (flat.reshape(dims[::-1]).T if fortran else flat.reshape(dims)).copy()


class _DType:
    """What ``numpy.dtype`` resolves to: a plain number dtype; its BUILD state may set only the byte order."""

    def __new__(cls, spec: Any, *flags: Any) -> Any:
        return _DTypeRef(_dtype(spec))


class _DTypeRef:
    def __init__(self, dtype: np.dtype[Any]) -> None:
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2:
            raise pickle.UnpicklingError("numpy dtype state is not a tuple (version, byte order, ...)")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDArray,
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1.x (and the Python 2 era real files)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2.x
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # pickle protocol 5, numpy 1.x
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,  # pickle protocol 5, numpy 2.x
    ("_codecs", "encode"): _codecs_encode,
    # Python 2 pickles name their builtins "__builtin__"; only the container types, never a function.
    ("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "bytes"): bytes,
    ("__builtin__", "dict"): dict, ("__builtin__", "list"): list, ("__builtin__", "bytes"): bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Admits only the globals of the CIFAR-10 format (see the module docstring); any other is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (not part of the CIFAR-10 format)") \
                from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent id (not part of the CIFAR-10 format)")


def _unwrap(obj: Any, seen: dict[int, Any], depth: int = 0) -> Any:
    """Replace the array stand-ins by their arrays; refuse anything that is not plain data.

    ``seen`` caches each container by id: a pickle can reference one list from a million places (memo GET), and
    walking each reference anew would be quadratic; a container that contains itself ends at the depth limit."""
    if depth > 16:
        raise pickle.UnpicklingError("nested deeper than the CIFAR-10 format (16)")
    if isinstance(obj, _CheckedArray):
        if obj.array is None:
            raise pickle.UnpicklingError("numpy array without its state")
        return obj.array
    if isinstance(obj, np.ndarray) or obj is None or type(obj) in (str, bytes, int, float, bool):
        return obj
    if id(obj) in seen:
        return seen[id(obj)]
    out: Any
    if type(obj) is list:
        out = [_unwrap(v, seen, depth + 1) for v in obj]
    elif type(obj) is tuple:
        out = tuple(_unwrap(v, seen, depth + 1) for v in obj)
    elif type(obj) is dict:
        out = {_unwrap(k, seen, depth + 1): _unwrap(v, seen, depth + 1) for k, v in obj.items()}
    else:
        raise pickle.UnpicklingError(f"a {type(obj).__name__} where the format has plain data")
    seen[id(obj)] = out
    return out


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` (latin1 strings, as torchvision reads CIFAR-10) admitting only the format's types.

    The opcode stream is walked first (``pickletools.genops``, which reads each length-prefixed argument and fails
    on one longer than the data): the unpickler allocates a string's declared length before reading it, and a
    flipped length byte must not become a 4 GB allocation. Raises ``pickle.UnpicklingError``, ``ValueError`` or
    whatever else a malformed stream raises (callers catch ``Exception``)."""
    for _ in pickletools.genops(data):
        pass
    obj = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    return _unwrap(obj, {})


# ------------------------------------------------------------------------------------------ the files


def read_file(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES (torchrig's reading layer: FIFOs, devices, links
    that go nowhere and oversized files are named as such, never opened or read whole); UsageError otherwise."""
    try:
        return read_bytes(path, kind="data", cap=MAX_FILE_BYTES)
    except InputFileError as e:
        raise UsageError(f"{e} (a CIFAR-10 file may be at most {MAX_FILE_BYTES // 2**20} MiB): {_REMEDY}") \
            from None


def _load(path: Path, data: bytes) -> Any:
    try:
        return restricted_loads(data)
    except Exception as e:  # noqa: BLE001 - a malformed pickle raises a dozen types; each is bad input
        raise UsageError(f"{path} is not a CIFAR-10 python file ({type(e).__name__}: {str(e)[:200]}); "
                         f"{_REMEDY}") from None


def read_meta_file(path: Path) -> dict[str, Any]:
    """``batches.meta`` through the restricted unpickler, checked to hold ten label names."""
    meta = _load(path, read_file(path))
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if not (isinstance(names, list) and len(names) == CLASSES and all(isinstance(n, str) for n in names)):
        raise UsageError(f"{path} is not a CIFAR-10 batches.meta (no list of {CLASSES} label_names); {_REMEDY}")
    return meta  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Batch:
    images: np.ndarray  # uint8, N x 32 x 32 x 3 (HWC, like torchvision's CIFAR10.data)
    labels: list[int]


def _batch(path: Path, data: bytes) -> Batch:
    d = _load(path, data)
    arr = d.get("data") if isinstance(d, dict) else None
    labels = d.get("labels") if isinstance(d, dict) else None
    if not (isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape[1] == PIXELS):
        raise UsageError(f"{path} is not a CIFAR-10 batch (no uint8 'data' of N x {PIXELS}); {_REMEDY}")
    if not (isinstance(labels, list) and len(labels) == len(arr)
            and all(type(v) is int and 0 <= v < CLASSES for v in labels)):
        raise UsageError(f"{path} is not a CIFAR-10 batch ('labels' is not {len(arr)} ints in 0..9); {_REMEDY}")
    return Batch(arr.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels)


def _synthetic_sums(meta: dict[str, Any]) -> dict[str, str] | None:
    info = meta.get("torchrig_synthetic")
    sums = info.get("sha256") if isinstance(info, dict) else None
    if isinstance(sums, dict) and all(isinstance(sums.get(f), str) for f in (*TRAIN_FILES, TEST_FILE)):
        return {f: sums[f] for f in (*TRAIN_FILES, TEST_FILE)}
    return None


@dataclass(frozen=True, kw_only=True)
class Verified:
    """A checked CIFAR-10 folder: the batches, the meta, and which data set it is."""

    train: list[Batch]
    test: Batch
    meta: dict[str, Any]
    synthetic: dict[str, Any] | None  # the stand-in's generator info; None for the real CIFAR-10
    sha256: str  # over data_batch_1..5, test_batch, batches.meta in that order


def verify_folder(folder: Path, log: Callable[[str], None] | None = None) -> Verified:
    """Read, digest-check and restricted-load the seven files of ``folder`` (see the module docstring)."""
    raw = {name: read_file(folder / name) for name in ALL_FILES}
    md5 = {name: hashlib.md5(b, usedforsecurity=False).hexdigest() for name, b in raw.items()}
    sha = {name: hashlib.sha256(b).hexdigest() for name, b in raw.items()}
    total = hashlib.sha256()
    for name in ALL_FILES:
        total.update(raw[name])
    meta = read_meta_file(folder / META_FILE)
    real = all(md5[n] == CIFAR10_MD5[n] for n in ALL_FILES)
    synthetic: dict[str, Any] | None = None
    if not real:
        info = meta.get("torchrig_synthetic")
        sums = _synthetic_sums(meta)
        if not isinstance(info, dict):
            bad = next(n for n in ALL_FILES if md5[n] != CIFAR10_MD5[n])
            raise UsageError(f"{folder / bad}: MD5 {md5[bad]} is not the real CIFAR-10's ({CIFAR10_MD5[bad]}) and "
                             f"{folder / META_FILE} does not mark the folder as torchrig's stand-in; {_REMEDY}")
        if sums is None:
            raise UsageError(f"{folder} holds a torchrig stand-in without recorded sha256 sums (written by an older "
                             f"torchrig); {_REMEDY}")
        bad_files = [n for n in sums if sums[n] != sha[n]]
        if bad_files:
            raise UsageError(f"{folder / bad_files[0]}: sha256 {sha[bad_files[0]][:16]}... is not the one "
                             f"{META_FILE} records for the stand-in ({sums[bad_files[0]][:16]}...): the file was "
                             f"changed after it was written; {_REMEDY}")
        synthetic = dict(info)
    if log:
        log(f"{folder}: digests match {'the real CIFAR-10' if real else 'the stand-in its meta records'}")
    train = [_batch(folder / n, raw.pop(n)) for n in TRAIN_FILES]
    test = _batch(folder / TEST_FILE, raw.pop(TEST_FILE))
    return Verified(train=train, test=test, meta=meta, synthetic=synthetic, sha256=total.hexdigest())
