"""Run ``python -m MODULE ARGS...`` as if on another machine: ``python as_machine.py MODULE ARGS...``.

``$TORCHRIG_FAKE_MACHINE`` holds Machine fields as JSON (e.g. a GPU name and driver); every record the run
writes then names that machine, with its own fingerprint, while the numbers are this machine's. This is how the
report tests get records of "two machines" out of one: through the real task and benchmark code, where
``torchrig.results.records.collect_machine`` is wrapped before that code imports it.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from dataclasses import replace

from torchrig.results import records

_real = records.collect_machine
_fields = json.loads(os.environ.get("TORCHRIG_FAKE_MACHINE") or "{}")


def _as_other_machine(device: str = "cpu") -> records.Machine:
    return replace(_real("cpu"), **_fields).with_fingerprint()


if _fields:
    records.collect_machine = _as_other_machine

module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
