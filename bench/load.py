"""Was the machine quiet? Load facts sampled before and after a benchmark session, and the busy-machine verdict.

A run on a host where other processes take the CPU or the GPU reads slower, often with a small CV (on a 2-core
machine a loaded run read 50x slower at 0.3 % CV), and nothing in the numbers says so. :func:`sample` reads, each
fact on its own and never failing (a missing source is ``"unavailable: reason"``):

- ``os.getloadavg()``, the CPU count, and ``/proc/stat``'s busy CPU time together with this process's own CPU time
  (itself, its reaped children, and its live descendants such as inductor's compile workers), so the CPU time
  *other* processes took between two samples is known;
- on NVIDIA GPUs, ``nvidia-smi`` (SM clock against its maximum, power against its limit, the active clock-throttle
  reasons, and the compute processes); on AMD GPUs, ``amd-smi process --json`` (the compute processes). Each
  command runs with a timeout.

:func:`judge` compares a before and an after sample against the thresholds defined once here (documented in
docs/bench.md): the machine is *busy* when any of them is crossed, and every record of the session carries the
reasons as a warning. Standard library only.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["LOAD_PER_CORE_MAX", "OTHER_CPU_SHARE_MAX", "SMI_TIMEOUT_S", "THROTTLE_BUSY_BITS", "Verdict", "judge",
           "parse_amd_processes", "parse_nvidia_apps", "parse_nvidia_gpus", "parse_proc_stat", "sample"]

# The thresholds: a machine above any of them during a session is "busy".
LOAD_PER_CORE_MAX = 0.5  # 1-minute load average per core, beyond what this process itself accounts for
OTHER_CPU_SHARE_MAX = 0.25  # share of all cores' time that other processes used between the two samples
# Clock-throttle reasons (NVML nvmlClocksThrottleReason* bits) that mean something else slows the GPU: HW slowdown
# 0x8, SW thermal 0x20, HW thermal 0x40, HW power brake 0x80. Idle (0x1), application clocks (0x2) and the SW
# power cap (0x4, normal under full load) are recorded but do not make a machine busy.
THROTTLE_BUSY_BITS = {0x8: "hw_slowdown", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
                      0x80: "hw_power_brake_slowdown"}
SMI_TIMEOUT_S = 10.0

_GPU_FIELDS = ("index", "name", "clocks.sm", "clocks.max.sm", "power.draw", "power.limit", "temperature.gpu",
               "utilization.gpu", "clocks_throttle_reasons.active")
_APP_FIELDS = ("gpu_uuid", "pid", "process_name", "used_memory")


# ------------------------------------------------------------------------------------------------ parsers


def parse_proc_stat(text: str) -> dict[str, float] | str:
    """``/proc/stat``'s aggregate ``cpu`` line as busy and total seconds, or ``"unavailable: reason"``."""
    line = next((ln for ln in text.splitlines() if ln.startswith("cpu ")), None)
    if line is None:
        return "unavailable: no aggregate 'cpu' line in /proc/stat"
    try:
        jiffies = [int(x) for x in line.split()[1:9]]
    except ValueError:
        return f"unavailable: /proc/stat cpu line is not numbers: {line[:80]!r}"
    if len(jiffies) < 4 or any(j < 0 for j in jiffies):
        return f"unavailable: /proc/stat cpu line too short or negative: {line[:80]!r}"
    hz = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
    total = sum(jiffies)  # user nice system idle iowait irq softirq steal (guest is already in user)
    idle = jiffies[3] + (jiffies[4] if len(jiffies) > 4 else 0)
    return {"busy_s": (total - idle) / hz, "total_s": total / hz}


def _num(text: str) -> float | None:
    t = text.strip()
    try:
        v = float(int(t, 16)) if t.lower().startswith("0x") else float(t)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]", garbage
    return v if math.isfinite(v) else None


def parse_nvidia_gpus(text: str) -> list[dict[str, Any]]:
    """``nvidia-smi --query-gpu=<_GPU_FIELDS> --format=csv,noheader,nounits``: one dict per well-formed line."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(_GPU_FIELDS):
            continue
        row: dict[str, Any] = {k: _num(v) for k, v in zip(_GPU_FIELDS, cells, strict=True)}
        row["name"] = cells[1][:200]
        mask = row.pop("clocks_throttle_reasons.active")
        row["throttle_mask"] = int(mask) if mask is not None and 0 <= mask < 2**64 else None
        row["throttle_busy"] = [name for bit, name in THROTTLE_BUSY_BITS.items()
                                if row["throttle_mask"] is not None and row["throttle_mask"] & bit]
        out.append(row)
    return out


def parse_nvidia_apps(text: str) -> list[dict[str, Any]]:
    """``nvidia-smi --query-compute-apps=<_APP_FIELDS> --format=csv,noheader,nounits``: one dict per process."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(_APP_FIELDS) or not cells[1].isdigit() or len(cells[1]) > 10:
            continue
        out.append({"gpu_uuid": cells[0][:80], "pid": int(cells[1]), "name": cells[2][:200],
                    "used_memory_mib": _num(cells[3])})
    return out


def _pids(node: Any, depth: int = 0) -> Iterator[int]:
    if depth > 20:
        return
    if isinstance(node, dict):
        pid = node.get("pid")
        if isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31:
            yield pid
        elif isinstance(pid, str) and pid.isdigit() and len(pid) <= 10:
            yield int(pid)
        for v in node.values():
            yield from _pids(v, depth + 1)
    elif isinstance(node, list):
        for v in node:
            yield from _pids(v, depth + 1)


def parse_amd_processes(text: str) -> list[int] | str:
    """The pids in ``amd-smi process --json`` (its layout differs between ROCm releases: any ``pid`` key found)."""
    if "no running processes" in text.lower():
        return []
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        return f"unavailable: amd-smi output is not JSON ({type(e).__name__})"
    return sorted(set(_pids(doc)))


# ------------------------------------------------------------------------------------------------ sampling


def _run(cmd: list[str], *, timeout: float = SMI_TIMEOUT_S) -> str:
    """stdout of ``cmd``, or raise OSError/subprocess errors (the caller turns them into 'unavailable')."""
    if shutil.which(cmd[0]) is None:
        raise FileNotFoundError(f"{cmd[0]} not found on PATH")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise OSError(f"{cmd[0]} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:200]}")
    return proc.stdout


def _guard(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        return f"unavailable: {type(e).__name__}: {e}"[:300]


def _descendants_cpu_s() -> float:
    """CPU seconds of this process's live descendants (compile workers, DataLoader workers)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    hz = float(os.sysconf("SC_CLK_TCK"))
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / hz
    me, total = os.getpid(), 0.0
    for pid, seconds in cpu.items():
        p, seen = parent.get(pid), 0
        while p and p != me and seen < 64:
            p, seen = parent.get(p), seen + 1
        if p == me and pid != me:
            total += seconds
    return total


def _own_cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = _guard(_descendants_cpu_s)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + (live if isinstance(live, float) else 0.0)


def _proc_stat() -> dict[str, float] | str:
    with open("/proc/stat") as f:
        return parse_proc_stat(f.read())


def _nvidia() -> dict[str, Any]:
    gpus = _guard(lambda: parse_nvidia_gpus(_run(
        ["nvidia-smi", f"--query-gpu={','.join(_GPU_FIELDS)}", "--format=csv,noheader,nounits"])))
    apps = _guard(lambda: parse_nvidia_apps(_run(
        ["nvidia-smi", f"--query-compute-apps={','.join(_APP_FIELDS)}", "--format=csv,noheader,nounits"])))
    return {"gpus": gpus, "compute_apps": apps}


def sample() -> dict[str, Any]:
    """The load facts now (JSON-ready). GPU facts come from whichever of nvidia-smi / amd-smi is on PATH."""
    load = _guard(os.getloadavg)
    out: dict[str, Any] = {
        "time": time.time(),
        "monotonic_s": time.monotonic(),
        "cpu_count": os.cpu_count() or 1,
        "loadavg": list(load) if isinstance(load, tuple) else load,
        "proc_stat": _guard(_proc_stat),
        "own_cpu_s": _own_cpu_s(),
        "pid": os.getpid(),
    }
    if shutil.which("nvidia-smi"):
        out["nvidia_smi"] = _nvidia()
    if not (shutil.which("nvidia-smi") or shutil.which("amd-smi")):
        out["gpu_tools"] = "unavailable: neither nvidia-smi nor amd-smi is on PATH"
    if shutil.which("amd-smi"):
        out["amd_smi"] = {"compute_pids": _guard(lambda: parse_amd_processes(_run(["amd-smi", "process", "--json"])))}
    return out


# ------------------------------------------------------------------------------------------------ verdict


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """Busy or quiet, why, and the facts behind it: what a record's ``load`` field holds (:meth:`to_dict`)."""

    busy: bool
    reasons: tuple[str, ...]
    other_cpu_share: float | None
    load_excess_per_core: tuple[float | None, float | None]  # before, after
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def warning(self) -> str:
        return "busy machine: " + "; ".join(self.reasons) + " (rerun on a quiet machine)"

    def to_dict(self) -> dict[str, Any]:
        return {"busy": self.busy, "reasons": list(self.reasons), "other_cpu_share": self.other_cpu_share,
                "load_excess_per_core": list(self.load_excess_per_core),
                "thresholds": {"load_per_core_max": LOAD_PER_CORE_MAX, "other_cpu_share_max": OTHER_CPU_SHARE_MAX,
                               "throttle_busy_bits": {hex(b): n for b, n in THROTTLE_BUSY_BITS.items()}},
                "before": self.before, "after": self.after}


def _obj(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _f(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _other_cpu_share(before: dict[str, Any], after: dict[str, Any], wall: float, cpus: int) -> float | None:
    a, b = before.get("proc_stat"), after.get("proc_stat")
    own0, own1 = _f(before.get("own_cpu_s")), _f(after.get("own_cpu_s"))
    if not (isinstance(a, dict) and isinstance(b, dict) and own0 is not None and own1 is not None and wall > 0):
        return None
    busy0, busy1 = _f(a.get("busy_s")), _f(b.get("busy_s"))
    if busy0 is None or busy1 is None:
        return None
    return min(1.0, max(0.0, (busy1 - busy0 - (own1 - own0)) / (wall * cpus)))


def _load_excess(s: dict[str, Any], own_cores: float, cpus: int) -> float | None:
    load = s.get("loadavg")
    one = _f(load[0]) if isinstance(load, list) and load else None
    return None if one is None else max(0.0, one - own_cores) / cpus


def _other_gpu_pids(s: dict[str, Any], *, holds_context: bool) -> list[int]:
    apps = _obj(s.get("nvidia_smi")).get("compute_apps")
    nv = [p["pid"] for p in (apps if isinstance(apps, list) else []) if isinstance(p, dict)
          and isinstance(p.get("pid"), int)]
    amd = _obj(s.get("amd_smi")).get("compute_pids")
    found = nv + (amd if isinstance(amd, list) else [])
    own = s.get("pid")
    others = [p for p in found if p != own]
    if holds_context and own not in found and others:
        others = others[1:]  # a container's PID namespace hides our host pid: one entry is ours
    return others


def _throttles(s: dict[str, Any]) -> list[str]:
    gpus = _obj(s.get("nvidia_smi")).get("gpus")
    return sorted({str(t) for g in gpus if isinstance(g, dict) and isinstance(g.get("throttle_busy"), list)
                   for t in g["throttle_busy"]}) if isinstance(gpus, list) else []


def judge(before: dict[str, Any], after: dict[str, Any]) -> Verdict:
    """Busy or quiet between two :func:`sample` results, against the thresholds above. Never raises."""
    cpus = max(1, int(_f(after.get("cpu_count")) or 1))
    t0, t1 = _f(before.get("monotonic_s")), _f(after.get("monotonic_s"))
    wall = (t1 - t0) if t0 is not None and t1 is not None else 0.0
    own0, own1 = _f(before.get("own_cpu_s")), _f(after.get("own_cpu_s"))
    own_cores = min(float(cpus), (own1 - own0) / wall) if wall > 0 and own0 is not None and own1 is not None \
        else 0.0
    share = _other_cpu_share(before, after, wall, cpus)
    # before: this process is running (1 runnable task); after: the cores it used over the session
    excess = (_load_excess(before, 1.0, cpus), _load_excess(after, max(1.0, own_cores), cpus))
    reasons: list[str] = []
    for when, x in zip(("before", "after"), excess, strict=True):
        if x is not None and x > LOAD_PER_CORE_MAX:
            reasons.append(f"load average {when} is {x:.2f} per core beyond this process (> {LOAD_PER_CORE_MAX})")
    if share is not None and share > OTHER_CPU_SHARE_MAX:
        reasons.append(f"other processes used {100 * share:.0f} % of the {cpus} CPUs' time during the session "
                       f"(> {100 * OTHER_CPU_SHARE_MAX:.0f} %)")
    for when, s, ctx in (("before", before, False), ("after", after, True)):
        pids = _other_gpu_pids(s, holds_context=ctx)
        if pids:
            reasons.append(f"{len(pids)} other GPU compute process(es) {when}: pid {', '.join(map(str, pids[:5]))}")
        thr = _throttles(s)
        if thr:
            reasons.append(f"GPU clocks throttled {when}: {', '.join(thr)}")
    return Verdict(busy=bool(reasons), reasons=tuple(reasons), other_cpu_share=share, load_excess_per_core=excess,
                   before=before, after=after)
