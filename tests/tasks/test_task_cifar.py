"""cifar_cnn and make_data: the real torchvision loader on the synthetic CIFAR-10, the gates, bad data."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tasks_support import ROOT, task_env

from torchrig.results.records import validate_record

pytestmark = pytest.mark.torch


def test_synthetic_files_have_the_cifar_python_format(tmp_path: Path) -> None:
    from tasks.make_data import CLASSES, write_synthetic_cifar

    folder = write_synthetic_cifar(tmp_path, seed=5, train_size=100, test_size=30)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                     "test_batch"]
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")  # the classic recipe: bytes keys, like the original files
    assert {b"data", b"labels", b"batch_label", b"filenames"} <= set(raw)
    assert raw[b"data"].dtype.name == "uint8" and raw[b"data"].shape == (20, 3072)
    assert all(isinstance(v, int) and 0 <= v < 10 for v in raw[b"labels"])
    with open(folder / "test_batch", "rb") as f:
        t = pickle.load(f, encoding="latin1")  # torchvision's way: str keys
    assert t["data"].shape == (30, 3072) and len(t["labels"]) == 30
    with open(folder / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    assert meta["label_names"] == list(CLASSES)
    assert meta["torchrig_synthetic"]["seed"] == 5
    # Deterministic: the same seed writes the same bytes, another seed other bytes.
    again = write_synthetic_cifar(tmp_path / "again", seed=5, train_size=100, test_size=30)
    other = write_synthetic_cifar(tmp_path / "other", seed=6, train_size=100, test_size=30)
    assert (again / "data_batch_3").read_bytes() == (folder / "data_batch_3").read_bytes()
    assert (other / "data_batch_3").read_bytes() != (folder / "data_batch_3").read_bytes()


def test_synthetic_classes_are_not_linearly_trivial() -> None:
    """A least-squares linear classifier on pixels stays far below the CNN gate (the phases are random)."""
    import numpy as np

    from tasks.make_data import generate_images

    rng = np.random.default_rng(0)
    xtr, ytr = generate_images(2000, rng)
    xte, yte = generate_images(500, rng)

    def feats(x: np.ndarray) -> np.ndarray:
        f = x.reshape(len(x), -1).astype(np.float32) / 255
        return np.hstack([f - 0.5, np.ones((len(x), 1), np.float32)])

    f = feats(xtr)  # ridge regression onto one-hot labels
    w = np.linalg.solve(f.T @ f + 10 * np.eye(f.shape[1], dtype=np.float32), f.T @ np.eye(10, dtype=np.float32)[ytr])
    acc = float(((feats(xte) @ w).argmax(1) == yte).mean())
    assert acc < 0.5


def test_cifar_quick_passes_on_cpu(run_task, cifar_dir: Path) -> None:
    r = run_task("cifar_cnn", "--quick", "--device", "cpu", "--data", str(cifar_dir))
    assert r.rc == 0, r.stdout + r.stderr
    rec = r.record()
    assert validate_record(rec) == []
    assert rec["verdict"] == "pass"
    assert r.metric("test_accuracy") >= 90.0
    assert rec["gates"] == [{"metric": "test_accuracy", "op": ">=", "threshold": 90.0, "passed": True}]
    assert rec["metrics"]["throughput"]["unit"] == "img/s"
    assert rec["config"]["resolved"]["data"] == "synthetic"
    assert "epoch 2/2" in r.stdout and "img/s" in r.stdout


SMALL = ["--device", "cpu", "--quiet", "--train-limit", "1280", "--test-limit", "300", "--epochs", "1",
         "--width", "8"]


@pytest.mark.parametrize("broken", [["--lr", "0"], ["--shuffle-labels"]], ids=["lr0", "shuffled-labels"])
def test_cifar_broken_setup_fails_the_gate(run_task, cifar_dir: Path, broken: list[str]) -> None:
    r = run_task("cifar_cnn", *SMALL, "--data", str(cifar_dir), *broken)
    assert r.rc == 1, r.stdout + r.stderr
    assert r.record()["verdict"] == "fail"
    assert r.metric("test_accuracy") < 40.0


def test_cifar_is_deterministic(run_task, cifar_dir: Path) -> None:
    small = [*SMALL, "--train-limit", "512", "--data", str(cifar_dir)]
    a = run_task("cifar_cnn", *small)
    b = run_task("cifar_cnn", *small)
    assert a.rc in (0, 1) and b.rc in (0, 1)
    assert abs(a.metric("final_loss") - b.metric("final_loss")) <= 1e-6
    assert a.metric("test_accuracy") == b.metric("test_accuracy")


def test_missing_cifar_data_is_bad_input(run_task, tmp_path: Path) -> None:
    r = run_task("cifar_cnn", "--device", "cpu", "--data", str(tmp_path / "nothing"))
    assert r.rc == 2
    assert "--download" in r.stderr and "--make-synthetic" in r.stderr and "tasks.make_data" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.records() == []


def test_real_format_without_the_synthetic_mark_must_pass_md5(run_task, tmp_path: Path) -> None:
    """Files that claim to be the real CIFAR-10 are checked like it: a mismatch is bad input, not a crash."""
    from tasks.make_data import META_FILE, _dump, _Py2Str, write_synthetic_cifar

    folder = write_synthetic_cifar(tmp_path, train_size=50, test_size=10)
    (folder / META_FILE).write_bytes(_dump({_Py2Str(b"label_names"): [_Py2Str(b"x")] * 10}))
    r = run_task("cifar_cnn", "--device", "cpu", "--data", str(tmp_path))
    assert r.rc == 2, r.stdout + r.stderr
    assert "not a readable CIFAR-10" in r.stderr and "Traceback" not in r.stderr


def test_make_synthetic_cli(tmp_path: Path) -> None:
    env = task_env()
    cmd = [sys.executable, "-m", "tasks.cifar_cnn", "--make-synthetic", "--data", str(tmp_path), "--train-size", "50",
           "--test-size", "10", "--quiet"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_5").is_file()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 0 and "already exists" in p.stdout  # kept, not overwritten
    p = subprocess.run([sys.executable, "-m", "tasks.make_data", "--data", str(tmp_path / "b"), "--train-size", "7"],
                       cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 2 and "multiple of 5" in p.stderr


def test_a_killed_run_leaves_no_record(cifar_dir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "tasks.cifar_cnn", "--device", "cpu", "--data", str(cifar_dir), "--epochs", "50",
           "--width", "8", "--results", str(results)]
    with subprocess.Popen(cmd, cwd=ROOT, env=task_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as p:
        assert p.stdout is not None
        deadline = time.monotonic() + 120
        for line in p.stdout:  # wait until it is training
            if "model:" in line or time.monotonic() > deadline:
                break
        time.sleep(1)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not results.exists() or [q for q in results.rglob("*") if q.is_file()] == []
