"""CIFAR-10 files a user points at are never unpickled unchecked (issue 17 item 4).

tasks/cifar_files.py checks digests and loads with a restricted unpickler. The properties: a pickle that would run
code is refused (exit 2 naming the file) and the code does not run; generated plain data round-trips; generated
disallowed objects and mutated bytes of a real stand-in batch end in a clean load or a UsageError, never another
exception.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.cifar_files import (
    CIFAR10_MD5,
    META_FILE,
    TRAIN_FILES,
    _batch,
    read_meta_file,
    restricted_loads,
    verify_folder,
)
from tasks.make_data import _dump, _Py2Str, write_synthetic_cifar
from torchrig.errors import UsageError

pytestmark = pytest.mark.torch


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        import builtins

        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


class _Popen:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (subprocess.Popen, (["touch", str(self.marker)],))


PAYLOADS = (_System, _Exec, _Popen)


def test_the_md5_sums_are_torchvisions() -> None:
    from torchvision.datasets import CIFAR10

    listed = {n: m for n, m in CIFAR10.train_list + CIFAR10.test_list}
    listed[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    assert listed == CIFAR10_MD5


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.__name__)
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_code_running_pickle_is_refused_unrun(tmp_path: Path, payload: type, protocol: int) -> None:
    marker = tmp_path / "MARK"
    blob = pickle.dumps({"label_names": [payload(marker)]}, protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        restricted_loads(blob)
    assert not marker.exists()


def _crafted_folder(root: Path, marker: Path, payload: type, where: str) -> Path:
    """A stand-in whose ``where`` file is replaced by a code-running pickle; for a batch, the meta records the
    crafted file's sha256, so the digest check passes and the unpickler is what must refuse it."""
    folder = write_synthetic_cifar(root, train_size=50, test_size=10)
    evil = pickle.dumps({"data": payload(marker), "labels": [0]}, protocol=2)
    (folder / where).write_bytes(evil)
    if where != META_FILE:
        meta = read_meta_file(folder / META_FILE)
        info = meta["torchrig_synthetic"]
        sums = {_Py2Str(k.encode()): _Py2Str(v.encode()) for k, v in info["sha256"].items()}
        sums[_Py2Str(where.encode())] = _Py2Str(hashlib.sha256(evil).hexdigest().encode())
        new_info = {_Py2Str(k.encode()): (_Py2Str(v.encode()) if isinstance(v, str) else v)
                    for k, v in info.items() if k != "sha256"}
        new_info[_Py2Str(b"sha256")] = sums
        (folder / META_FILE).write_bytes(_dump({_Py2Str(b"label_names"): [_Py2Str(c.encode()) for c in
                                                                          meta["label_names"]],
                                                _Py2Str(b"torchrig_synthetic"): new_info}))
    return folder


@pytest.mark.parametrize("where", [META_FILE, "data_batch_1", "test_batch"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.__name__)
def test_verify_folder_refuses_a_crafted_file(tmp_path: Path, payload: type, where: str) -> None:
    marker = tmp_path / "MARK"
    folder = _crafted_folder(tmp_path / "d", marker, payload, where)
    with pytest.raises(UsageError, match=f"{folder / where} is not a CIFAR-10 python file.*refused global"):
        verify_folder(folder)
    assert not marker.exists()


@pytest.mark.parametrize("where", [META_FILE, "data_batch_1"])
def test_the_cnn_task_exits_2_on_a_crafted_file_and_runs_nothing(run_task, tmp_path: Path, where: str) -> None:
    """The issue's example, end to end: ``--data`` at a folder with a crafted batches.meta (or batch)."""
    marker = tmp_path / "MARK"
    _crafted_folder(tmp_path / "d", marker, _System, where)
    r = run_task("cifar_cnn", "--device", "cpu", "--data", str(tmp_path / "d"), "--mirror", "http://127.0.0.1:9/x")
    assert r.rc == 2, r.stdout + r.stderr
    assert where in r.stderr and "refused global posix.system" in r.stderr
    assert "Traceback" not in r.stderr and r.records() == []
    assert not marker.exists()


def test_a_changed_stand_in_batch_fails_its_recorded_sha256(tmp_path: Path) -> None:
    folder = write_synthetic_cifar(tmp_path, train_size=50, test_size=10)
    blob = bytearray((folder / "data_batch_2").read_bytes())
    blob[-100] ^= 1  # one pixel
    (folder / "data_batch_2").write_bytes(bytes(blob))
    with pytest.raises(UsageError, match=r"data_batch_2: sha256 .* is not the one batches.meta records"):
        verify_folder(folder)


def test_special_and_oversized_files_are_refused(tmp_path: Path) -> None:
    folder = write_synthetic_cifar(tmp_path, train_size=50, test_size=10)
    (folder / "data_batch_1").unlink()
    os.mkfifo(folder / "data_batch_1")
    with pytest.raises(UsageError, match="data_batch_1: is a FIFO"):
        verify_folder(folder)  # and returns: a FIFO is never opened
    (folder / "data_batch_1").unlink()
    with open(folder / "data_batch_1", "wb") as f:
        f.truncate(257 * 1024 * 1024)  # sparse: no disk used
    with pytest.raises(UsageError, match=r"data_batch_1: is 257\.0 MiB, over the 256\.0 MiB limit"):
        verify_folder(folder)


# ------------------------------------------------------------------------------------ generated inputs

_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                  st.text(max_size=20), st.binary(max_size=40),
                  st.builds(lambda n, k: np.arange(n * k, dtype=np.uint8).reshape(n, k),
                            st.integers(0, 4), st.integers(0, 8)))
_plain = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all())
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=120)
@given(obj=_plain, protocol=st.sampled_from([0, 2, 3, 4, 5]))
def test_plain_data_round_trips(obj: Any, protocol: int) -> None:
    assert _same(restricted_loads(pickle.dumps(obj, protocol=protocol)), obj)


_disallowed = st.one_of(
    st.sets(st.integers(), min_size=1, max_size=3), st.frozensets(st.integers(), max_size=3),
    st.complex_numbers(allow_nan=False), st.just(os.system), st.just(print), st.just(eval),
    st.just(np.array([None], dtype=object)), st.just(np.zeros(2, dtype=[("a", "u1")])),
    st.builds(bytearray, st.binary(max_size=8)), st.just(range(3)), st.just(slice(1, 2)),
    st.just(Path("/etc/passwd")), st.dates(), st.just(NotImplemented), st.just(Ellipsis),
)


@settings(max_examples=80)
@given(inner=_disallowed, outer=_plain, protocol=st.sampled_from([0, 2, 4, 5]))
def test_anything_else_is_refused(inner: Any, outer: Any, protocol: int) -> None:
    obj = {"data": [outer, inner]}
    with pytest.raises(pickle.UnpicklingError):
        restricted_loads(pickle.dumps(obj, protocol=protocol))


@pytest.fixture(scope="module")
def small_batch(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = write_synthetic_cifar(tmp_path_factory.mktemp("cifar-mut"), train_size=50, test_size=10)
    return (folder / TRAIN_FILES[0]).read_bytes()


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.just(0)),
)


def _mutate(blob: bytes, muts: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(blob)
    for kind, at, v in muts:
        i = at % (len(b) + 1)
        if kind == "flip" and i < len(b):
            b[i] ^= v
        elif kind == "cut":
            del b[i:]
        elif kind == "insert":
            b.insert(i, v)
        elif kind == "delete" and i < len(b):
            del b[i]
    return bytes(b)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(muts=st.lists(_mutation, min_size=1, max_size=4), near_start=st.booleans())
def test_mutated_batches_load_cleanly_or_are_bad_input(small_batch: bytes, tmp_path: Path,
                                                       muts: list[tuple[str, int, int]], near_start: bool) -> None:
    """Mutations land anywhere, or (half the time) in the first 400 bytes where the opcodes and lengths are."""
    if near_start:
        muts = [(k, at % 400, v) for k, at, v in muts]
    blob = _mutate(small_batch, muts)
    path = tmp_path / "data_batch_1"
    try:
        b = _batch(path, blob)
    except UsageError as e:
        assert str(path) in str(e)
    else:
        assert b.images.dtype == np.uint8 and b.images.shape[1:] == (32, 32, 3) and len(b.labels) == len(b.images)


def test_a_folder_that_is_neither_real_nor_the_stand_in_is_refused(tmp_path: Path) -> None:
    folder = write_synthetic_cifar(tmp_path, train_size=50, test_size=10)
    (folder / META_FILE).write_bytes(_dump({_Py2Str(b"label_names"): [_Py2Str(b"x")] * 10}))
    with pytest.raises(UsageError, match=r"data_batch_1: MD5 \w+ is not the real CIFAR-10's"):
        verify_folder(folder)
