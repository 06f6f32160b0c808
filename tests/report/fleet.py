"""Fixture records of three environments on two machines, written by the real task and benchmark code.

:func:`build` (a session fixture in conftest.py): the ``smoke`` and ``regression`` tasks (``--quick``) and the
calibration benchmarks (``python -m bench --tiny``, GEMM and copy) run on this machine as environment ``cpu``;
then the ``regression`` task and the benchmarks run again as ``cuda118`` and ``cuda121`` "on" a GPU node -- the
same code through ``as_machine.py``, which only changes the machine identity the records carry. The ``cpu``
benchmarks run ``AA_RUNS`` times: the repeated runs are the real A/A noise the baseline tests use.

Layout, as if copied together from two machines::

    <root>/this-machine/cpu/{tasks,bench-1..6}/     <root>/gpu-node/{cuda118,cuda121}/{tasks,bench-1}/
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

GPU_NODE = {"hostname": "gpu-node-1", "accelerator": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_count": 1,
            "gpu_memory_gb": 79.6, "driver": "550.54.14"}
BENCH_ARGS = ("--tiny", "--device", "cpu", "--", "-k", "gemm or copy", "-q")  # seconds each, no torch.compile
AA_RUNS = 6


@dataclass(frozen=True)
class Fleet:
    root: Path
    aa_runs: tuple[Path, ...]  # this machine's benchmark runs of env cpu, in the order they ran


def _run(results: Path, env_id: str, machine: dict[str, object] | None, module: str, *args: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "TORCHRIG_ENV_ID": env_id,
        "TORCHRIG_FAKE_MACHINE": json.dumps(machine or {}),
    }
    env.pop("TORCHRIG_RESULTS", None)
    cmd = [sys.executable, str(HERE / "as_machine.py"), module, "--results", str(results), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}"


def build(root: Path) -> Fleet:
    """Run the tasks and benchmarks into ``root`` (a few minutes on 2 cores: 8 benchmark runs, 4 task runs)."""
    here = root / "this-machine" / "cpu"
    _run(here / "tasks", "cpu", None, "tasks.smoke", "--quick", "--quiet")
    _run(here / "tasks", "cpu", None, "tasks.regression", "--quick", "--quiet")
    for env_id in ("cuda118", "cuda121"):
        d = root / "gpu-node" / env_id
        _run(d / "tasks", env_id, GPU_NODE, "tasks.regression", "--quick", "--quiet")
        _run(d / "bench-1", env_id, GPU_NODE, "bench", *BENCH_ARGS)
    runs = []
    for i in range(1, AA_RUNS + 1):
        runs.append(here / f"bench-{i}")
        _run(runs[-1], "cpu", None, "bench", *BENCH_ARGS)
    return Fleet(root=root, aa_runs=tuple(runs))
