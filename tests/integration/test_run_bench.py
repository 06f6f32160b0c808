"""`nox -s bench-cpu`: the whole benchmark suite (tiny on CPU) inside the real `cpu` image, records on the host.

The image carries pytest and pytest-benchmark (matrix.IMAGE_EXTRAS), so nothing is installed at run time. The
records must be the converted pytest-benchmark results with their fingerprint: the image they ran in, the host's
name (not the container's), the image's torch, and the suite's plan.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from torchrig.results.records import load_records

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PYPI = "https://pypi.org/simple"
BUDGET_S = 900  # a hang guard: the tiny suite took 8 s in the image (docs/bench.md)
BENCHES = {"gemm", "copy", "train"}


def test_run_bench_cpu_runs_the_suite_inside_the_real_image(cpu_image: Any, local_base: str, tmp_path: Path) -> None:
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    env.pop("TORCHRIG_KEEP_CONTAINERS", None)
    cmd = [sys.executable, "-m", "torchrig", "--matrix", str(ROOT / "matrix.yaml"), "run-bench", "cpu",
           "--base-image", local_base, "--index-url", PYPI, "--no-build", "--results", str(results),
           "--timeout", str(BUDGET_S)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=BUDGET_S + 120)
    print(proc.stdout[-4000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    raw = list((results / "bench-raw").glob("*/[0-9][0-9][0-9][0-9]_*.json"))  # pytest-benchmark's layout
    assert len(raw) == 1, "the pytest-benchmark JSON is kept next to the records"
    doc = json.loads(raw[0].read_text())
    benchmarks, skipped = doc["benchmarks"], doc.get("torchrig_skipped", [])
    all_records, problems = load_records([results])
    assert problems == []
    assert len(all_records) == len(benchmarks) + len(skipped) and len(benchmarks) >= 7
    skips = [r for r in all_records if r.verdict == "skip"]
    assert len(skips) == len(skipped) and all(r.config["skip_reason"] and r.env_id == "cpu" for r in skips)
    records = [r for r in all_records if r.verdict != "skip"]
    assert {r.config["bench"] for r in records} >= BENCHES
    names = {r.name for r in records}
    assert any(n.startswith("train-resnet50") for n in names) and any(n.startswith("train-bert") for n in names)
    for r in records:
        assert r.kind == "bench" and r.verdict == "pass" and r.env_id == "cpu", r.name
        assert r.container is not None and r.container.image_id == cpu_image.image_id
        assert r.container.image == cpu_image.ref.immutable
        assert r.machine.hostname == socket.gethostname(), "the host's name, not the container id"
        assert r.software.torch.split("+")[0] == "2.0.1", "the image's torch, not the host's"
        assert r.config["environment"]["suite"]["size"] == "tiny"
        assert r.metrics["step_time_s"].value > 0
    assert f"{len(all_records)} new record(s)" in proc.stdout
