"""pytest-benchmark's own CLI on the suite's raw JSON: ``pytest-benchmark --storage file://RESULTS/bench-raw
compare`` finds every run and labels two runs differently (its labels are file names cut to 12 characters, so the
runner names files ``NNNN_<time>-<run id>.json`` in pytest-benchmark's ``<machine id>/`` folders), and the records
torchrig writes beside them never reach it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.storage import machine_id, raw_json_path

pytestmark = [pytest.mark.torch, pytest.mark.slow]


def _cli() -> list[str]:
    exe = shutil.which("pytest-benchmark", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "pytest_benchmark.cli"]


def test_two_suite_runs_get_two_labels_in_pytest_benchmark_compare(tmp_path: Path) -> None:
    results = tmp_path / "results"
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "bench", "--tiny", "--device", "cpu", "--results", str(results),
                               "-k", "gemm and fp32"], capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    raw = sorted((results / "bench-raw" / machine_id()).glob("*.json"))
    assert [p.name[:5] for p in raw] == ["0001_", "0002_"]
    storage = f"file://{results / 'bench-raw'}"
    listed = subprocess.run([*_cli(), "--storage", storage, "list"], capture_output=True, text=True, timeout=120,
                            check=True).stdout.split()
    assert sorted(Path(p).name for p in listed) == [p.name for p in raw]
    out = subprocess.run([*_cli(), "--storage", storage, "compare", "--columns=min,mean"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    labels = set(re.findall(r"test_gemm\[fp32-n\d+\] \(([^)]+)\)", out))
    assert len(labels) == 2, out  # one per run: pytest-benchmark tells them apart
    # the whole results folder as storage: torchrig's records (results/bench/*.json) are not loaded as runs
    whole = subprocess.run([*_cli(), "--storage", f"file://{results}", "compare"], capture_output=True, text=True,
                           timeout=120, check=False)
    assert "Traceback" not in whole.stderr and "test_gemm" not in whole.stdout


def test_the_counter_follows_the_runs_already_in_the_folder(tmp_path: Path) -> None:
    first = raw_json_path(tmp_path, "T", run_id="aaaaaa")
    first.parent.mkdir(parents=True)
    first.write_text("{}")
    (first.parent / "0007_old-bbbbbb.json").write_text("{}")
    (first.parent / "notes.json").write_text("{}")
    nxt = raw_json_path(tmp_path, "T", run_id="aaaaaa")
    assert nxt.name == "0008_T-aaaaaa.json" and nxt.parent == tmp_path / "bench-raw" / machine_id()
