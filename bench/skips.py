"""Skipped benchmarks keep their reason: pytest-benchmark's JSON lists only the benchmarks that ran, so a case
skipped for a reason (TF32 on a GPU without it, DDP with one GPU, a model that cannot be imported, out of memory)
would vanish from the report. The conftest hands pytest's skip reports here; :func:`add_skipped` writes them into
the JSON as ``torchrig_skipped`` (name as the benchmark would have recorded it, and the reason), and
:mod:`torchrig.results.benchconv` turns each into a ``verdict="skip"`` record with that reason.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

__all__ = ["SKIPPED_KEY", "add_skipped", "benchmark_name", "record_skip"]

SKIPPED_KEY = "torchrig_skipped"
# test function -> the record-name prefix the benchmark itself uses (bench_*.py: name=f"gemm-{case.id}", ...)
_PREFIX = {"test_gemm": "gemm", "test_copy_bandwidth": "copy", "test_train": "train", "test_ddp_scaling": "ddp"}
_NODE = re.compile(r"::(?P<func>test_\w+)(?:\[(?P<param>.*)\])?$")
_STASH = pytest.StashKey[list[dict[str, str]]]()


def benchmark_name(nodeid: str) -> str:
    """``bench/bench_calibration.py::test_gemm[tf32-n8192]`` -> ``gemm-tf32-n8192``."""
    m = _NODE.search(nodeid)
    if not m:
        return nodeid
    prefix = _PREFIX.get(m["func"], m["func"].removeprefix("test_"))
    return f"{prefix}-{m['param']}" if m["param"] else prefix


def _reason(report: pytest.TestReport) -> str:
    longrepr: Any = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "skipped")


def record_skip(config: pytest.Config, report: pytest.TestReport) -> None:
    """Remember a skipped benchmark (called from the conftest's ``pytest_runtest_logreport``)."""
    if not report.skipped or getattr(report, "wasxfail", None):
        return
    config.stash.setdefault(_STASH, []).append({"name": benchmark_name(report.nodeid), "nodeid": report.nodeid,
                                                "reason": _reason(report)})


def add_skipped(config: pytest.Config, output_json: dict[str, Any]) -> None:
    """Put the skipped benchmarks into pytest-benchmark's JSON (called from ``pytest_benchmark_update_json``)."""
    skipped = config.stash.get(_STASH, [])
    if skipped:
        output_json[SKIPPED_KEY] = list(skipped)
