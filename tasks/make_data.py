"""Write a synthetic, learnable stand-in for CIFAR-10 in the real CIFAR-10 python format.

``python -m tasks.make_data [--data DIR]`` (or ``python -m tasks.cifar_cnn --make-synthetic``) writes
``DIR/cifar-10-batches-py/`` with ``data_batch_1..5``, ``test_batch`` and ``batches.meta`` -- the files the real
``torchvision.datasets.CIFAR10`` loader reads, so machines without internet (CI, this project's own checks) run the
real loading path; ``cifar_cnn`` writes it by itself when ``--data`` holds nothing and CIFAR-10 cannot be
downloaded (tasks/cifar_data.py). Each batch is a pickled dict with ``data`` (uint8, N x 3072, channel-major rows
like CIFAR), ``labels`` (list of int), ``batch_label`` and ``filenames``; its keys are Python-2 strings, exactly
like the original files: ``pickle.load(f, encoding="bytes")`` gives ``b"data"``/``b"labels"``, the ``encoding="latin1"``
that torchvision uses gives ``"data"``/``"labels"``. ``batches.meta`` carries the extra key
``torchrig_synthetic`` (generator version, seed, sizes, and the sha256 of each batch file): the CNN task applies
its synthetic-data gate when it finds it, and checks the batches against those sums instead of the real files'
MD5 (tasks/cifar_files.py; every file is loaded with a restricted unpickler either way).

The ten classes are flip-invariant textures (stripes, rings and checkerboards at two scales, a starburst, a spot)
with random phase, position, frequency jitter, colours, contrast, a smooth distractor and pixel noise: a
linear model on pixels stays near chance (the random phase averages every class to the same mean image), a small
CNN learns them in a few epochs. Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives
the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tasks.cifar_files import (
    BASE_FOLDER,
    MAX_IMAGES_PER_FILE,
    META_FILE,
    TEST_FILE,
    TRAIN_FILES,
    read_meta_file,
)
from torchrig.errors import UsageError
from torchrig.results.io import file_sha256

__all__ = [
    "BASE_FOLDER",
    "CLASSES",
    "GENERATOR_VERSION",
    "META_FILE",
    "TEST_FILE",
    "TRAIN_FILES",
    "cifar_present",
    "dataset_sha256",
    "generate_images",
    "is_synthetic",
    "main",
    "read_meta",
    "write_synthetic_cifar",
]

GENERATOR_VERSION = 2  # 2: the meta records each batch's sha256
CLASSES = (
    "hstripes-wide",
    "hstripes-narrow",
    "vstripes-wide",
    "vstripes-narrow",
    "rings-wide",
    "rings-narrow",
    "checker-wide",
    "checker-narrow",
    "starburst",
    "spot",
)
SIZE = 32


# -------------------------------------------------------------------------------------------- the images


def generate_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8, N x 32 x 32 x 3) and their labels (balanced, shuffled)."""
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    x = xx[None] + 0.5
    y = yy[None] + 0.5
    two_pi = np.float32(2 * np.pi)

    def u(lo: float, hi: float, *shape: int) -> np.ndarray:
        return rng.uniform(lo, hi, size=(n, *shape)).astype(np.float32)

    wide, narrow = 1 / 8, 1 / 5  # cycles per pixel
    jitter = u(0.82, 1.18, 1, 1)
    freq = np.where((labels % 2 == 0)[:, None, None], wide, narrow).astype(np.float32) * jitter
    ph1, ph2 = u(0, 2 * np.pi, 1, 1), u(0, 2 * np.pi, 1, 1)
    cx, cy = u(6, 26, 1, 1), u(6, 26, 1, 1)
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)

    s = np.empty((n, SIZE, SIZE), np.float32)
    for c in range(len(CLASSES)):
        m = labels == c
        if not m.any():
            continue
        f, p1, p2 = freq[m], ph1[m], ph2[m]
        if c in (0, 1):
            s[m] = np.sin(two_pi * f * y + p1)
        elif c in (2, 3):
            s[m] = np.sin(two_pi * f * x + p1)
        elif c in (4, 5):
            s[m] = np.sin(two_pi * f * r[m] + p1)
        elif c in (6, 7):
            s[m] = np.sin(two_pi * f * x + p1) * np.sin(two_pi * f * y + p2) * 2
        elif c == 8:
            theta = np.arctan2(y - cy[m], x - cx[m])
            s[m] = np.sin(np.round(8 * jitter[m]) * theta + p1)
        else:
            sigma = u(2.0, 3.5, 1, 1)[m]
            s[m] = 3 * np.exp(-(r[m] ** 2) / (2 * sigma**2)) - 0.5
        s[m] = np.clip(s[m], -1.5, 1.5)

    background = u(0.2, 0.8, 1, 1, 3)
    colour = u(-1, 1, 1, 1, 3)
    colour /= np.maximum(np.abs(colour).max(axis=-1, keepdims=True), 1e-3)
    contrast = u(0.08, 0.3, 1, 1, 1)
    img = background + contrast * s[..., None] * colour
    # A smooth blob of random colour at a random place: present in every class, so it carries no label.
    bx, by, bs = u(0, SIZE, 1, 1), u(0, SIZE, 1, 1), u(5, 10, 1, 1)
    blob = np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * bs**2))
    img += blob[..., None] * u(-0.25, 0.25, 1, 1, 3)
    img += rng.normal(0, 0.12, size=img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), labels.astype(np.int64)


# -------------------------------------------------------------- pickles in the original (Python 2) format


class _Py2Str(bytes):
    """A Python 2 ``str``: loads as ``bytes`` with encoding="bytes" and as ``str`` with encoding="latin1"."""


def _dump(obj: Any) -> bytes:
    """Pickle (protocol 2) dicts/lists/ints/``_Py2Str``/``str``/uint8 arrays the way the CIFAR files were written.

    The standard pickler cannot write Python-2 strings; the original files have them as dict keys, and both
    common loaders depend on it. Arrays are written as ``numpy.ndarray(shape, "uint8", buffer)`` so the file
    loads under numpy 1.x and 2.x alike (numpy 2's own pickles name ``numpy._core``, which numpy 1 lacks).
    """
    out = bytearray(b"\x80\x02")

    def save(o: Any) -> None:
        if isinstance(o, _Py2Str):
            b = bytes(o)
            out.extend(b"U" + struct.pack("<B", len(b)) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b)
        elif isinstance(o, (bytes, bytearray, memoryview)):
            b = bytes(o)
            out.extend(b"B" + struct.pack("<I", len(b)) + b)  # BINBYTES: bytes under any encoding
        elif isinstance(o, str):
            b = o.encode("utf-8")
            out.extend(b"X" + struct.pack("<I", len(b)) + b)
        elif isinstance(o, bool):
            out.extend(b"\x88" if o else b"\x89")
        elif isinstance(o, (int, np.integer)):
            v = int(o)
            if 0 <= v < 256:
                out.extend(b"K" + struct.pack("<B", v))
            elif -(2**31) <= v < 2**31:
                out.extend(b"J" + struct.pack("<i", v))
            else:
                raise ValueError(f"integer {v} out of range")
        elif isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                save(k)
                save(v)
            out.extend(b"u")
        elif isinstance(o, list):
            out.extend(b"](")
            for v in o:
                save(v)
            out.extend(b"e")
        elif isinstance(o, np.ndarray):
            if o.dtype != np.uint8:
                raise ValueError("only uint8 arrays are written")
            out.extend(b"cnumpy\nndarray\n(")  # GLOBAL numpy.ndarray, MARK
            out.extend(b"(")
            for d in o.shape:
                save(d)
            out.extend(b"t")  # the shape tuple
            save("uint8")
            save(np.ascontiguousarray(o).tobytes())
            out.extend(b"tR")  # args tuple, REDUCE
        else:
            raise TypeError(f"cannot write {type(o).__name__}")

    save(obj)
    out.extend(b".")
    return bytes(out)


def _batch(images: np.ndarray, labels: np.ndarray, name: str, offset: int) -> dict[Any, Any]:
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3 * SIZE * SIZE)  # R plane, G plane, B plane
    return {
        _Py2Str(b"batch_label"): _Py2Str(name.encode()),
        _Py2Str(b"labels"): [int(v) for v in labels],
        _Py2Str(b"data"): np.ascontiguousarray(data),
        _Py2Str(b"filenames"): [
            _Py2Str(f"synthetic_{CLASSES[int(c)]}_{offset + i:06d}.png".encode()) for i, c in enumerate(labels)
        ],
    }


def _meta(seed: int, n_train: int, n_test: int, sha256: dict[str, str]) -> dict[Any, Any]:
    return {
        _Py2Str(b"num_cases_per_batch"): n_train // len(TRAIN_FILES),
        _Py2Str(b"label_names"): [_Py2Str(c.encode()) for c in CLASSES],
        _Py2Str(b"num_vis"): 3 * SIZE * SIZE,
        _Py2Str(b"torchrig_synthetic"): {
            _Py2Str(b"generator"): _Py2Str(b"tasks.make_data"),
            _Py2Str(b"version"): GENERATOR_VERSION,
            _Py2Str(b"seed"): int(seed),
            _Py2Str(b"train_size"): int(n_train),
            _Py2Str(b"test_size"): int(n_test),
            _Py2Str(b"sha256"): {_Py2Str(k.encode()): _Py2Str(v.encode()) for k, v in sha256.items()},
        },
    }


# ----------------------------------------------------------------------------------------------- on disk


def cifar_present(root: str | os.PathLike[str]) -> bool:
    folder = Path(root) / BASE_FOLDER
    return all((folder / f).is_file() for f in (*TRAIN_FILES, TEST_FILE, META_FILE))


def dataset_sha256(root: str | os.PathLike[str]) -> str:
    """sha256 over the data set's files in a fixed order (data_batch_1..5, test_batch, batches.meta): one value
    that names the exact data a run trained on, real or synthetic."""
    h = hashlib.sha256()
    folder = Path(root) / BASE_FOLDER
    for name in (*TRAIN_FILES, TEST_FILE, META_FILE):
        file_sha256(folder / name, h)
    return h.hexdigest()


def read_meta(root: str | os.PathLike[str]) -> dict[str, Any]:
    """``batches.meta`` through the restricted unpickler (tasks/cifar_files.py); UsageError when it is not one."""
    return read_meta_file(Path(root) / BASE_FOLDER / META_FILE)


def is_synthetic(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The generator info when ``root`` holds this module's synthetic data, None for the real CIFAR-10."""
    info = read_meta(root).get("torchrig_synthetic")
    return dict(info) if isinstance(info, dict) else None


def write_synthetic_cifar(root: str | os.PathLike[str], *, seed: int = 0, train_size: int = 50000,
                          test_size: int = 10000, force: bool = False,
                          log: Any = None) -> Path:
    """Write the synthetic data set under ``root/cifar-10-batches-py`` (atomically) and return that folder."""
    if train_size < len(TRAIN_FILES) * len(CLASSES) or train_size % len(TRAIN_FILES):
        raise ValueError(f"train size must be a multiple of {len(TRAIN_FILES)} and at least 50, got {train_size}")
    if test_size < len(CLASSES):
        raise ValueError(f"test size must be at least {len(CLASSES)}, got {test_size}")
    if max(train_size // len(TRAIN_FILES), test_size) > MAX_IMAGES_PER_FILE:
        raise ValueError(f"at most {MAX_IMAGES_PER_FILE} images per file (train size {len(TRAIN_FILES)} x "
                         f"{MAX_IMAGES_PER_FILE}, test size {MAX_IMAGES_PER_FILE}): a bigger file is over the cap "
                         "the loader reads")
    root = Path(root)
    final = root / BASE_FOLDER
    if final.exists() and not force:
        raise FileExistsError(f"{final} already exists (use --force to replace it)")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{BASE_FOLDER}-", dir=root))
    tmp.chmod(0o755)  # mkdtemp makes it private; the data set is meant to be shared
    try:
        rng = np.random.default_rng(seed)
        per = train_size // len(TRAIN_FILES)
        sums: dict[str, str] = {}

        def write(name: str, blob: bytes) -> None:
            (tmp / name).write_bytes(blob)
            sums[name] = hashlib.sha256(blob).hexdigest()

        for i, name in enumerate(TRAIN_FILES):
            imgs, labels = generate_images(per, rng)
            title = f"training batch {i + 1} of {len(TRAIN_FILES)} (torchrig synthetic)"
            write(name, _dump(_batch(imgs, labels, title, i * per)))
            if log:
                log(f"wrote {name} ({per} images)")
        imgs, labels = generate_images(test_size, rng)
        write(TEST_FILE, _dump(_batch(imgs, labels, "testing batch 1 of 1 (torchrig synthetic)", 0)))
        (tmp / META_FILE).write_bytes(_dump(_meta(seed, train_size, test_size, sums)))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train-size", type=int, default=50000, help="training images (5 batches), default 50000")
    p.add_argument("--test-size", type=int, default=10000, help="test images, default 10000")
    p.add_argument("--force", action="store_true", help="replace an existing cifar-10-batches-py folder")


def make(data: str, *, seed: int, train_size: int, test_size: int, force: bool, quiet: bool) -> int:
    """Generate (or keep) the data set; returns an exit code (0 written or already there, 2 bad input)."""
    folder = Path(data) / BASE_FOLDER
    if folder.exists() and not force:
        try:
            kind = "synthetic" if cifar_present(data) and is_synthetic(data) else "real or incomplete"
        except UsageError:
            kind = "not readable as CIFAR-10"
        print(f"{folder} already exists ({kind}); leaving it (use --force to replace it)", flush=True)
        return 0
    try:
        path = write_synthetic_cifar(data, seed=seed, train_size=train_size, test_size=test_size, force=force,
                                     log=None if quiet else lambda m: print(f"[make_data] {m}", flush=True))
    except (ValueError, OSError) as e:
        print(f"make_data: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote a synthetic CIFAR-10 stand-in ({train_size} train / {test_size} test images) to {path}",
          flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tasks.make_data", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("TORCHRIG_DATA") or "data",
                   help="data directory (default: $TORCHRIG_DATA or ./data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    add_arguments(p)
    a = p.parse_args(argv)
    return make(a.data, seed=a.seed, train_size=a.train_size, test_size=a.test_size, force=a.force, quiet=a.quiet)


if __name__ == "__main__":
    raise SystemExit(main())
