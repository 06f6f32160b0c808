"""cifar_cnn and make_data: the checked loader (tasks/cifar_files.py) on the synthetic CIFAR-10, the gates, bad data."""

from __future__ import annotations

import http.server
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tasks.tasks_support import CIFAR_TEST, CIFAR_TRAIN, ROOT, task_env
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
    resolved = rec["config"]["resolved"]
    assert resolved["data"] == "synthetic" and resolved["data_origin"] == "found there"
    assert resolved["data_rows"] == {"train": CIFAR_TRAIN, "test": CIFAR_TEST}
    assert resolved["train_limit"] == 6000 and resolved["test_limit"] == 1000
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


@pytest.fixture
def no_network() -> Iterator[str]:
    """A download URL on a local port that refuses connections: "no network", decided at once on any machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: a connect is refused
        yield f"http://127.0.0.1:{s.getsockname()[1]}/cifar-10-python.tar.gz"


@pytest.fixture
def failing_mirror() -> Iterator[str]:
    """A download URL whose host answers, but with 404: the download itself fails."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
    finally:
        server.shutdown()
        server.server_close()


def test_no_data_and_no_network_trains_on_the_synthetic_stand_in(run_task, tmp_path: Path, no_network: str) -> None:
    """The default on a fresh offline machine: no flags but --quick, an empty data directory -> a pass, and the
    console and the record say it was the synthetic stand-in, with its sha256 and row counts."""
    from tasks.make_data import dataset_sha256, is_synthetic

    data = tmp_path / "data"
    r = run_task("cifar_cnn", "--quick", "--device", "cpu", "--data", str(data), "--mirror", no_network)
    assert r.rc == 0, r.stdout + r.stderr
    rec = r.record()
    assert validate_record(rec) == [] and rec["verdict"] == "pass"
    resolved = rec["config"]["resolved"]
    assert resolved["data"] == "synthetic"
    assert resolved["data_origin"] == "generated here (127.0.0.1 cannot be reached)"
    assert resolved["data_sha256"] == dataset_sha256(data) and len(resolved["data_sha256"]) == 64
    assert resolved["data_rows"] == {"train": 50000, "test": 10000}
    assert is_synthetic(data) == resolved["synthetic"]
    assert "writing the synthetic stand-in" in r.stdout
    assert (f"data: synthetic stand-in (not CIFAR-10) in {data / 'cifar-10-batches-py'}, generated here "
            f"(127.0.0.1 cannot be reached); sha256 {resolved['data_sha256'][:16]}...; 50000 train / 10000 test "
            "images") in r.stdout


def test_a_failed_download_falls_back_to_the_stand_in(run_task, tmp_path: Path, failing_mirror: str) -> None:
    data = tmp_path / "data"
    r = run_task("cifar_cnn", *SMALL, "--train-limit", "256", "--data", str(data), "--mirror", failing_mirror,
                 "--train-size", "500", "--test-size", "100")
    assert r.rc in (0, 1), r.stdout + r.stderr
    rec = r.record()
    assert rec["config"]["resolved"]["data"] == "synthetic"
    assert rec["config"]["resolved"]["data_rows"] == {"train": 500, "test": 100}
    assert rec["config"]["resolved"]["data_origin"].startswith(f"generated here (the download from {failing_mirror}")
    assert any("training on the synthetic stand-in instead of CIFAR-10" in w for w in rec["warnings"])


def test_download_without_network_is_bad_input(run_task, tmp_path: Path, no_network: str) -> None:
    """--download asks for the real data: when it cannot be had, that is exit 2 and no record, not a stand-in."""
    r = run_task("cifar_cnn", "--device", "cpu", "--download", "--data", str(tmp_path / "d"), "--mirror", no_network)
    assert r.rc == 2, r.stdout + r.stderr
    assert f"downloading CIFAR-10 from {no_network}" in r.stderr and "leave out --download" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.records() == []
    assert not (tmp_path / "d" / "cifar-10-batches-py").exists()


def test_an_incomplete_cifar_folder_is_bad_input(run_task, tmp_path: Path, no_network: str) -> None:
    from tasks.make_data import write_synthetic_cifar

    folder = write_synthetic_cifar(tmp_path, train_size=50, test_size=10)
    (folder / "data_batch_3").unlink()
    r = run_task("cifar_cnn", "--device", "cpu", "--data", str(tmp_path), "--mirror", no_network)
    assert r.rc == 2, r.stdout + r.stderr
    assert "is incomplete (no data_batch_3)" in r.stderr and "Traceback" not in r.stderr
    assert r.records() == []


def test_real_format_without_the_synthetic_mark_must_pass_md5(run_task, tmp_path: Path) -> None:
    """Files that claim to be the real CIFAR-10 are checked like it: a mismatch is bad input naming the file and
    both sums, not a crash."""
    from tasks.make_data import META_FILE, _dump, _Py2Str, write_synthetic_cifar

    folder = write_synthetic_cifar(tmp_path, train_size=50, test_size=10)
    (folder / META_FILE).write_bytes(_dump({_Py2Str(b"label_names"): [_Py2Str(b"x")] * 10}))
    r = run_task("cifar_cnn", "--device", "cpu", "--data", str(tmp_path))
    assert r.rc == 2, r.stdout + r.stderr
    assert f"{folder / 'data_batch_1'}: MD5 " in r.stderr and "is not the real CIFAR-10's" in r.stderr
    assert "Traceback" not in r.stderr


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
