"""Helpers for the task tests: run ``python -m tasks.<name>`` in a subprocess and read the record it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# Quick mode on the CPU uses the first 6,000 training and 1,000 test images.
CIFAR_TRAIN, CIFAR_TEST = 6000, 1000


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    results: Path

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted((self.results / "task").glob("*.json"))]

    def record(self) -> dict[str, Any]:
        recs = self.records()
        assert len(recs) == 1, f"expected one record, found {len(recs)}\n{self.stdout}\n{self.stderr}"
        return recs[0]

    def metric(self, name: str) -> float:
        return float(self.record()["metrics"][name]["value"])


def task_env(**extra: str) -> dict[str, str]:
    # torchrig, tasks and bench are importable through the install (pyproject.toml), not through PYTHONPATH
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHRIG_") and k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"  # no test may reach for the network
    env.update(extra)
    return env


def run_module(module: str, *args: str, results: Path, env: dict[str, str] | None = None,
               timeout: float = 600) -> Run:
    results.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env or task_env(), capture_output=True, text=True,
        timeout=timeout, check=False,
    )
    return Run(p.returncode, p.stdout, p.stderr, results)
