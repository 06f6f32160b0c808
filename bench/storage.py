"""Where the suite keeps its raw pytest-benchmark JSON: pytest-benchmark's own storage layout, so its CLI works on
a results folder as users expect.

``RESULTS/bench-raw/<machine id>/NNNN_<UTC time>-<run id>.json``:

* ``<machine id>`` is pytest-benchmark's (``Linux-CPython-3.12-64bit``: system, implementation, Python, bits), the
  folder ``pytest --benchmark-compare`` and ``pytest-benchmark compare`` look in;
* ``NNNN`` counts the runs in that folder (pytest-benchmark's own ``0001_``...), so two runs never share a label:
  ``pytest-benchmark compare`` shows a run as its file name cut to 12 characters (``0003_2026120``), which the
  counter keeps distinct where a date alone would not;
* the time and a short random run id keep names unique across machines whose folders are merged.

``pytest-benchmark --storage file://results/bench-raw compare`` lists and compares every run (docs/bench.md); the
records torchrig converts live in ``RESULTS/bench/``, outside that storage, so they never confuse it.
"""

from __future__ import annotations

import platform
import re
import secrets
from pathlib import Path

__all__ = ["RAW_FOLDER", "machine_id", "raw_json_path"]

RAW_FOLDER = "bench-raw"
_COUNTER = re.compile(r"^(\d{4})_")


def machine_id() -> str:
    """pytest-benchmark's machine id (``pytest_benchmark.utils.get_machine_id``); the same format computed here
    only where pytest-benchmark is missing (the runner then stops with a message, but names the file first)."""
    try:
        from pytest_benchmark.utils import get_machine_id
    except ImportError:
        return "-".join((platform.system(), platform.python_implementation(),
                         ".".join(platform.python_version_tuple()[:2]), platform.architecture()[0]))
    return str(get_machine_id())  # type: ignore[no-untyped-call]


def raw_json_path(results: Path, stamp: str, *, run_id: str | None = None) -> Path:
    """The next free ``NNNN_<stamp>-<run id>.json`` in this machine's folder under ``results/bench-raw``."""
    folder = results / RAW_FOLDER / machine_id()
    taken = [int(m.group(1)) for p in (folder.glob("*.json") if folder.is_dir() else ())
             if (m := _COUNTER.match(p.name))]
    n = max(taken, default=0) + 1
    rid = run_id or secrets.token_hex(3)
    path = folder / f"{n:04d}_{stamp}-{rid}.json"
    while path.exists():  # a run that started in the same instant: take the next number
        n += 1
        path = folder / f"{n:04d}_{stamp}-{rid}.json"
    return path
