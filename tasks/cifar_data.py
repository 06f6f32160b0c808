"""CIFAR-10 for the CNN task: found on disk, downloaded, or the synthetic stand-in written on the spot -- and which.

With no flags the task always has data to train on. When ``--data`` holds ``cifar-10-batches-py/`` (real or the
stand-in) it is used as it is. When it holds nothing, the task downloads the real CIFAR-10 through torchvision's
own download code if the download host answers within a few seconds, and otherwise -- or when that download
fails -- writes the synthetic stand-in (tasks/make_data.py) there, so an offline machine trains at once. ``--download``
asks for the real data and fails (exit 2) when it cannot be had. Whichever it is, the console and the record say
so: real or synthetic, how it got there, the sha256 of its files and their row counts.

The files are never handed to ``pickle.load`` or to torchvision's ``CIFAR10`` (which unpickles them unchecked):
tasks/cifar_files.py checks them against the real data set's MD5 sums or the sums the stand-in records, loads
them with a restricted unpickler, and the datasets here are built from what it returns (exit 2 naming the file
otherwise).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tasks._common import UsageError
from tasks.cifar_files import BASE_FOLDER, META_FILE, TEST_FILE, TRAIN_FILES, Batch, verify_folder
from tasks.make_data import CLASSES, cifar_present, is_synthetic, write_synthetic_cifar
from tasks.online import reachable

__all__ = ["CIFAR_URL", "CifarData", "load"]

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # torchvision's CIFAR10.url
PROBE_TIMEOUT_S = 3.0
DOWNLOAD_TIMEOUT_S = 60.0  # for each connect and read of the download, not the whole of it
SYNTHETIC_SEED = 0  # the stand-in the task writes itself is the same bytes whatever --seed is

Log = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class CifarData:
    """The train and test sets (torchvision datasets) and what they are."""

    train: Any
    test: Any
    folder: Path
    synthetic: dict[str, Any] | None  # the stand-in's generator info; None for the real CIFAR-10
    origin: str  # how the files got there: found, downloaded, generated (and why)
    sha256: str  # of the files, in the order data_batch_1..5, test_batch, batches.meta

    @property
    def kind(self) -> str:
        return "synthetic" if self.synthetic is not None else "cifar10"

    def describe(self) -> str:
        what = "synthetic stand-in (not CIFAR-10)" if self.synthetic is not None else "CIFAR-10 (real)"
        return (f"{what} in {self.folder}, {self.origin}; sha256 {self.sha256[:16]}...; {len(self.train)} train / "
                f"{len(self.test)} test images")


def _download(root: Path, url: str) -> None:
    """torchvision's download (checked against CIFAR-10's MD5) and extraction, with a timeout on each read."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urllib, as torchvision calls it, would otherwise wait forever
    try:
        download_and_extract_archive(url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    finally:
        socket.setdefaulttimeout(before)


def _missing_files(root: Path) -> list[str]:
    folder = root / BASE_FOLDER
    return [f for f in (*TRAIN_FILES, TEST_FILE, META_FILE) if not (folder / f).is_file()]


def _prepare(root: Path, *, download: bool, url: str, train_size: int, test_size: int, log: Log,
             warn: Log) -> str:
    """Make ``root`` hold a CIFAR-10 (real or the stand-in); returns how it got there."""
    folder = root / BASE_FOLDER
    present = cifar_present(root)
    if download:
        if present and is_synthetic(root) is not None:
            raise UsageError(f"{folder} holds the synthetic stand-in: remove it (or use another --data directory) "
                             "before --download")
        if present:
            return "found there"
        log(f"downloading CIFAR-10 from {url} into {root}")
        try:
            _download(root, url)
        except Exception as e:  # noqa: BLE001 - network failures come in many types
            raise UsageError(f"downloading CIFAR-10 from {url} into {root} failed ({type(e).__name__}: {e}); "
                             "without internet leave out --download: the task then writes the synthetic "
                             "stand-in") from None
        return f"downloaded from {url}"
    if present:
        return "found there"
    if folder.exists():
        raise UsageError(f"{folder} is incomplete (no {', '.join(_missing_files(root))}): remove it and run again "
                         "(the task then downloads CIFAR-10, or writes the synthetic stand-in when offline)")
    host = urlsplit(url).hostname or url
    why = f"{host} cannot be reached"
    if reachable(url, PROBE_TIMEOUT_S):
        log(f"no CIFAR-10 in {folder}: downloading it from {url}")
        try:
            _download(root, url)
            return f"downloaded from {url}"
        except Exception as e:  # noqa: BLE001 - network failures come in many types
            why = f"the download from {url} failed ({type(e).__name__}: {e})"
            warn(f"{why}: training on the synthetic stand-in instead of CIFAR-10")
    log(f"no CIFAR-10 in {folder} and {why}: writing the synthetic stand-in there ({train_size} train / "
        f"{test_size} test images, seed {SYNTHETIC_SEED}; put the real files there, or use --download, to train "
        "on CIFAR-10)")
    try:
        write_synthetic_cifar(root, seed=SYNTHETIC_SEED, train_size=train_size, test_size=test_size)
    except (ValueError, OSError) as e:
        raise UsageError(f"cannot write the synthetic stand-in into {root}: {e}") from None
    return f"generated here ({why})"


class CifarSet:
    """A CIFAR-10 split in memory, read like torchvision's ``CIFAR10``: ``data`` (N x 32 x 32 x 3 uint8),
    ``targets``, ``classes``; an item is ``(transform(PIL image), label)``."""

    def __init__(self, batches: list[Batch], classes: list[str], transform: Any) -> None:
        import numpy as np

        self.data = np.concatenate([b.images for b in batches])
        self.targets: list[int] = [v for b in batches for v in b.labels]
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        img = Image.fromarray(self.data[index])
        return (self.transform(img) if self.transform is not None else img), self.targets[index]


def load(root: Path, *, download: bool, url: str, train_size: int, test_size: int, train_tf: Any, test_tf: Any,
         log: Log, warn: Log) -> CifarData:
    """The CIFAR-10 under ``root`` (found, downloaded or generated; see the module docstring), verified and
    loaded by tasks/cifar_files.py into :class:`CifarSet` datasets."""
    origin = _prepare(root, download=download, url=url, train_size=train_size, test_size=test_size, log=log,
                      warn=warn)
    v = verify_folder(root / BASE_FOLDER)
    classes = [str(c) for c in v.meta["label_names"]] if v.synthetic is None else list(CLASSES)
    train, test = CifarSet(v.train, classes, train_tf), CifarSet([v.test], classes, test_tf)
    return CifarData(train=train, test=test, folder=root / BASE_FOLDER, synthetic=v.synthetic, origin=origin,
                     sha256=v.sha256)
