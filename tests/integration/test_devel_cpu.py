"""The devel image does what a developer does in it: compile a C++ extension against the image's torch.

Builds the ``cpu`` environment's devel target (the base stage comes from the layer cache the ``cpu_image`` fixture
filled, so this adds the compilers and the code: about 2.5 minutes here) and runs the smoke task in it through
``torchrig run-tasks cpu --target devel -- --only smoke``. The runtime cpu image (torch 2.0 on Python 3.11: no
torch.compile, so no compiler) skips the ``cpp_extension_load_inline`` gate with its reason; the devel image must
pass it -- ``torch.utils.cpp_extension.load_inline`` compiles a tiny extension with g++ and ninja and calls it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.integration.images_support import CPU_PYPI_BUDGET_MB, PYPI, ROOT, host_ca_bundle
from torchrig.engine import LABEL
from torchrig.results.records import Record, load_records

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BUDGET_S = 1200  # a guard against a hung build or run, not a timing test


def _smoke_record(results: Path) -> Record:
    records, problems = load_records([results])
    assert problems == []
    assert [r.name for r in records] == ["smoke"], records
    return records[0]


def test_devel_image_compiles_and_runs_a_cpp_extension(cpu_image: Any, local_base: str, tmp_path: Path,
                                                       docker_client: docker.DockerClient) -> None:
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    env.pop("TORCHRIG_KEEP_CONTAINERS", None)
    cmd = [sys.executable, "-m", "torchrig", "--matrix", str(ROOT / "matrix.yaml"), "run-tasks", "cpu",
           "--target", "devel", "--base-image", local_base, "--index-url", PYPI,
           "--ca-bundle", str(host_ca_bundle()), "--size-budget-mb", str(CPU_PYPI_BUDGET_MB),
           "--results", str(results), "--data", str(tmp_path / "data"), "--timeout", str(BUDGET_S),
           "--", "--only", "smoke"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=BUDGET_S + 600)
    out = proc.stdout + proc.stderr
    print(out[-3000:])
    assert proc.returncode == 0, out[-4000:]

    record = _smoke_record(results)
    assert record.verdict == "pass"
    gates = {g.metric: g.passed for g in record.gates}
    assert gates.get("cpp_extension_imports") is True, gates
    assert gates.get("cpp_extension_load_inline") is True, (
        "the devel image has g++ and ninja: load_inline must compile and run, not be skipped", gates)
    assert "check cpp_extension_load_inline: ok" in out
    assert record.container is not None and "devel" in record.container.image, record.container
    assert record.container.image_id != cpu_image.image_id, "smoke ran in the devel image, not the runtime one"
    # Its container is gone.
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL}=tasks",
                                                                "ancestor": record.container.image_id})
