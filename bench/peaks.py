"""Vendor spec peaks of known GPUs (``gpu_peaks.json``, with a source per entry), per visible torch device."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PEAKS_FILE", "GpuPeak", "load_peaks", "lookup"]

PEAKS_FILE = Path(__file__).with_name("gpu_peaks.json")


@dataclass(frozen=True, kw_only=True)
class GpuPeak:
    id: str
    tflops: dict[str, float | None]  # per torch device, dense
    bandwidth_gbs: float  # per torch device
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "tflops": self.tflops, "bandwidth_gbs": self.bandwidth_gbs, "source": self.source}


@functools.cache
def load_peaks(path: Path = PEAKS_FILE) -> tuple[tuple[tuple[re.Pattern[str], ...], GpuPeak], ...]:
    data = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for e in data["gpus"]:
        n = int(e.get("devices_per_card", 1))
        peak = GpuPeak(
            id=e["id"],
            tflops={k: (None if v is None else float(v) / n) for k, v in e["tflops"].items()},
            bandwidth_gbs=float(e["bandwidth_gbs"]) / n,
            source=e["source"],
        )
        out.append((tuple(re.compile(p) for p in e["match"]), peak))
    return tuple(out)


def lookup(gpu_name: str | None) -> GpuPeak | None:
    """The peaks of the GPU torch calls ``gpu_name`` (None for the CPU or a GPU not in the table)."""
    if not gpu_name:
        return None
    for patterns, peak in load_peaks():
        if any(p.search(gpu_name) for p in patterns):
            return peak
    return None
