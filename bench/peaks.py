"""Vendor spec peaks of known GPUs (``gpu_peaks.json``, with a source per entry), per visible torch device.

A device that reports fewer multiprocessors than its entry (a MIG slice of an H100, an MI300X in CPX mode) is a
partition: :func:`lookup` scales its peaks by its share of the SMs/CUs and says so (``partition``), so a slice is
not scored against the whole GPU. The scaling is a first-order estimate (MIG memory slices are not exactly
proportional to SMs); the record carries both counts.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["PEAKS_FILE", "GpuPeak", "device_lookup", "load_peaks", "lookup"]

PEAKS_FILE = Path(__file__).with_name("gpu_peaks.json")


@dataclass(frozen=True, kw_only=True)
class GpuPeak:
    id: str
    tflops: dict[str, float | None]  # per torch device, dense
    bandwidth_gbs: float  # per torch device
    source: str
    multiprocessors: int | None = None  # SMs / CUs of the whole device (None: not known)
    partition: str | None = None  # set when the device is a partition and the peaks were scaled

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "tflops": self.tflops, "bandwidth_gbs": self.bandwidth_gbs, "source": self.source,
                "multiprocessors": self.multiprocessors, "partition": self.partition}


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
            multiprocessors=None if e.get("multiprocessors") is None else int(e["multiprocessors"]),
        )
        out.append((tuple(re.compile(p) for p in e["match"]), peak))
    return tuple(out)


def lookup(gpu_name: str | None, multiprocessors: int | None = None) -> GpuPeak | None:
    """The peaks of the GPU torch calls ``gpu_name`` (None for the CPU or a GPU not in the table), scaled to
    ``multiprocessors`` (the device's ``multi_processor_count``) where that is fewer than the entry's."""
    if not gpu_name:
        return None
    for patterns, peak in load_peaks():
        if any(p.search(gpu_name) for p in patterns):
            return _scaled(peak, multiprocessors)
    return None


def _scaled(peak: GpuPeak, multiprocessors: int | None) -> GpuPeak:
    full = peak.multiprocessors
    if not multiprocessors or not full or multiprocessors >= full:
        return peak
    share = multiprocessors / full
    return replace(
        peak,
        tflops={k: (None if v is None else v * share) for k, v in peak.tflops.items()},
        bandwidth_gbs=peak.bandwidth_gbs * share,
        partition=(f"{multiprocessors} of {full} multiprocessors (a MIG slice or CPX/DPX partition): peaks scaled "
                   f"by {share:.3f}"),
    )


def device_lookup(device: Any) -> GpuPeak | None:
    """:func:`lookup` for a :class:`bench.harness.TorchDevice` (its name and multiprocessor count)."""
    name = getattr(device, "gpu_name", None)
    if not name:
        return None
    return lookup(name, getattr(device, "multiprocessors", None))
