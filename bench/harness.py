"""Timing that is correct on an asynchronous device: the one place the suite measures time.

A GPU kernel launch returns before the kernel has run, so ``time.perf_counter`` around a launch measures the launch,
not the work. Every timed round here therefore ends with the device's ``synchronize`` (inside the callable that
pytest-benchmark times), and is bracketed by device events so the same round is also measured on the device's own
clock. The two must agree: :func:`check_agreement` flags a round whose wall time and device time differ (a missing
synchronisation makes the wall time too short; host work the device never sees makes it too long).

The device is an object with ``synchronize()`` and ``event()``, so a test can pass a fake asynchronous device.
:class:`TorchDevice` covers CUDA, ROCm (HIP is exposed as ``torch.cuda``) and the CPU, where ops are synchronous
and an "event" is a host timestamp. Nothing here imports torch at module level: the tests' fake devices need none.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.busy import Busy, profile_round

__all__ = [
    "Agreement",
    "BenchTimingWarning",
    "Device",
    "Event",
    "Measurement",
    "Plan",
    "Round",
    "TorchDevice",
    "check_agreement",
    "measure",
]


class BenchTimingWarning(UserWarning):
    """A measurement that should not be trusted as it stands (wall and device time disagree)."""


class Event(Protocol):
    def record(self) -> None: ...

    def elapsed_s(self, end: Event) -> float:
        """Seconds from this event to ``end`` on the device's clock (both recorded; waits for ``end``)."""
        ...


class Device(Protocol):
    name: str  # "cuda:0", "cpu", ...
    accelerator: str  # "cuda", "rocm" or "cpu": what records.Machine calls it

    def synchronize(self) -> None: ...

    def event(self) -> Event: ...


class _TorchCudaEvent:
    def __init__(self, torch: Any) -> None:
        self._torch = torch
        self._ev = torch.cuda.Event(enable_timing=True)

    def record(self) -> None:
        self._ev.record()  # on the current stream, like the work it brackets

    def elapsed_s(self, end: Event) -> float:
        assert isinstance(end, _TorchCudaEvent)
        end._ev.synchronize()
        return float(self._ev.elapsed_time(end._ev)) / 1e3  # elapsed_time is in milliseconds


class _HostEvent:
    """On a synchronous device the work is done when the call returns: the host clock is the device clock."""

    def __init__(self) -> None:
        self.t: float | None = None

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_s(self, end: Event) -> float:
        assert isinstance(end, _HostEvent) and self.t is not None and end.t is not None
        return end.t - self.t


class TorchDevice:
    """A torch device: ``cuda``/``cuda:N`` (NVIDIA or AMD) or ``cpu``."""

    def __init__(self, name: str = "cpu") -> None:
        import torch

        self._torch = torch
        self.torch_device = torch.device(name)
        self.name = str(self.torch_device)
        self.type = self.torch_device.type
        if self.type == "cuda":
            if self.torch_device.index is None:
                self.torch_device = torch.device("cuda", torch.cuda.current_device())
                self.name = str(self.torch_device)
            torch.cuda.set_device(self.torch_device)
            self.accelerator = "rocm" if getattr(torch.version, "hip", None) else "cuda"
        elif self.type == "cpu":
            self.accelerator = "cpu"
        else:
            raise ValueError(f"unsupported device {name!r}: the suite runs on cuda (NVIDIA/AMD) or cpu")

    def synchronize(self) -> None:
        if self.type == "cuda":
            self._torch.cuda.synchronize(self.torch_device)

    def event(self) -> Event:
        return _TorchCudaEvent(self._torch) if self.type == "cuda" else _HostEvent()

    @property
    def gpu_name(self) -> str | None:
        return self._torch.cuda.get_device_name(self.torch_device) if self.type == "cuda" else None

    @property
    def multiprocessors(self) -> int | None:
        """SMs (NVIDIA) or CUs (AMD) of this device as torch sees it: fewer than the GPU's on a MIG slice."""
        if self.type != "cuda":
            return None
        return int(self._torch.cuda.get_device_properties(self.torch_device).multi_processor_count)

    def __repr__(self) -> str:
        return f"TorchDevice({self.name!r})"


# ------------------------------------------------------------------------------------------------ measuring


@dataclass(frozen=True, kw_only=True)
class Plan:
    """How long to measure. A round is ``steps_per_round`` steps and one synchronisation; ``steps_per_round`` is
    chosen so a round lasts about ``target_round_s`` (unless fixed), which keeps the sync and event overhead small."""

    rounds: int
    warmup_rounds: int
    target_round_s: float
    max_steps_per_round: int = 10_000
    steps_per_round: int | None = None
    tolerance: float = 0.05  # max relative wall/device disagreement before a round is flagged
    floor_s: float = 200e-6  # ... and max absolute disagreement: launch + sync latency is tens of microseconds
    busy_check: bool = True  # profile one extra round: how busy the device was (bench/busy.py)


@dataclass(frozen=True)
class Round:
    wall_s: float
    device_s: float


@dataclass(frozen=True)
class Agreement:
    ok: bool
    max_disagreement_pct: float
    message: str
    flagged_rounds: int = 0


def check_agreement(rounds: Sequence[Round], *, tolerance: float = 0.05, floor_s: float = 200e-6) -> Agreement:
    """Do wall time and device time agree for every round? ``tolerance`` is relative, ``floor_s`` absolute: a
    round is flagged only when both are exceeded."""
    worst = 0.0
    bad: list[str] = []
    for i, r in enumerate(rounds):
        diff = abs(r.wall_s - r.device_s)
        ref = max(r.wall_s, r.device_s, 1e-12)
        worst = max(worst, diff / ref)
        if diff > floor_s and diff / ref > tolerance:
            why = ("wall < device: the timer did not wait for the device (missing synchronisation)"
                   if r.wall_s < r.device_s else "wall > device: host-side time the device did not see")
            bad.append(f"round {i}: wall {r.wall_s * 1e3:.3f} ms vs device {r.device_s * 1e3:.3f} ms ({why})")
    if bad:
        return Agreement(False, 100 * worst, f"{len(bad)}/{len(rounds)} rounds disagree; " + "; ".join(bad[:3]),
                         len(bad))
    return Agreement(True, 100 * worst, "wall and device time agree", 0)


@dataclass(kw_only=True)
class Measurement:
    """What :func:`measure` found. Times are per step unless named per round."""

    steps_per_round: int
    rounds: int
    warmup_rounds: int
    round_s: list[float]  # measured rounds as pytest-benchmark timed them (its timer around our callable)
    device_rounds: list[Round]  # the same rounds bracketed by device events
    first_step_s: float  # the first call: compilation, cuDNN autotuning, allocator warm-up, lazy init
    warmup_s: list[float]  # pytest-benchmark's warm-up rounds, per step
    agreement: Agreement
    total_s: float  # wall time of the whole measurement, first step included
    result: Any = None  # what the last step returned
    first_result: Any = None  # what the first step returned
    timer_source: str = "pytest-benchmark"
    tolerance: float = 0.05
    floor_s: float = 200e-6
    extra: dict[str, Any] = field(default_factory=dict)
    busy: Busy | None = None  # the busy check (bench/busy.py); None when the plan turned it off

    @property
    def step_s(self) -> float:
        return statistics.fmean(self.round_s) / self.steps_per_round

    @property
    def step_stddev_s(self) -> float:
        return (statistics.stdev(self.round_s) if len(self.round_s) > 1 else 0.0) / self.steps_per_round

    @property
    def cv_pct(self) -> float:
        m = statistics.fmean(self.round_s)
        return 100 * (statistics.stdev(self.round_s) / m) if len(self.round_s) > 1 and m > 0 else 0.0

    @property
    def compile_overhead_s(self) -> float:
        """Time the first step took beyond a steady-state step: compilation, autotuning, lazy initialisation."""
        return max(0.0, self.first_step_s - self.step_s)

    def timing_info(self) -> dict[str, Any]:
        """JSON-ready summary for ``benchmark.extra_info``."""
        return {
            "steps_per_round": self.steps_per_round,
            "rounds": self.rounds,
            "warmup_rounds": self.warmup_rounds,
            "timer_source": self.timer_source,
            "step_s": self.step_s,
            "step_stddev_s": self.step_stddev_s,
            "cv_pct": self.cv_pct,
            "first_step_s": self.first_step_s,
            "compile_overhead_s": self.compile_overhead_s,
            "warmup_step_s": self.warmup_s,
            "round_s": self.round_s,
            "device_round_s": [r.device_s for r in self.device_rounds],
            "inner_wall_round_s": [r.wall_s for r in self.device_rounds],
            "self_check": {
                "ok": self.agreement.ok,
                "flagged_rounds": self.agreement.flagged_rounds,
                "max_disagreement_pct": self.agreement.max_disagreement_pct,
                "message": self.agreement.message,
                "tolerance_pct": 100 * self.tolerance,
                "floor_s": self.floor_s,
            },
            "busy": self.busy.info() if self.busy else None,
            "total_s": self.total_s,
            **self.extra,
        }


def _timed_once(step: Callable[[], Any], device: Device) -> tuple[float, Any]:
    device.synchronize()
    t0 = time.perf_counter()
    out = step()
    device.synchronize()
    return time.perf_counter() - t0, out


def _busy_check(step: Callable[[], Any], n: int, device: Device, round_s: float) -> Busy:
    """Profile one more round of ``n`` steps (after the timed ones, so it changes none of them)."""

    def one_round() -> None:
        for _ in range(n):
            step()
        device.synchronize()

    device.synchronize()
    return profile_round(one_round, gpu=device.accelerator != "cpu", round_s=round_s)


def measure(benchmark: Any, step: Callable[[], Any], *, device: Device, plan: Plan) -> Measurement:
    """Time ``step`` (one training step, one matmul, one copy) on ``device`` through ``benchmark.pedantic``.

    1. The first call runs alone and is timed on its own (``first_step_s``): compilation and autotuning land here.
    2. One more call sizes the round: ``steps_per_round`` steps take about ``plan.target_round_s``.
    3. ``benchmark.pedantic`` runs ``plan.warmup_rounds`` untimed rounds, then ``plan.rounds`` timed ones. Each
       round launches its steps, records device events around them and synchronises before returning, so
       pytest-benchmark's clock stops when the device is done.
    """
    t_start = time.perf_counter()
    first_s, first = _timed_once(step, device)
    last = first
    if plan.steps_per_round is not None:
        n = plan.steps_per_round
    else:
        probe_s, last = _timed_once(step, device)
        n = max(1, min(plan.max_steps_per_round, math.ceil(plan.target_round_s / max(probe_s, 1e-9))))

    inner: list[Round] = []
    holder: dict[str, Any] = {"out": last}

    def one_round() -> None:
        t0 = time.perf_counter()
        start, end = device.event(), device.event()
        start.record()
        out = None
        for _ in range(n):
            out = step()
        end.record()
        device.synchronize()
        wall = time.perf_counter() - t0
        inner.append(Round(wall, start.elapsed_s(end)))
        holder["out"] = out

    benchmark.pedantic(one_round, rounds=plan.rounds, warmup_rounds=plan.warmup_rounds, iterations=1)

    stats = getattr(benchmark, "stats", None)
    data = list(getattr(getattr(stats, "stats", None), "data", None) or [])
    if data:
        warm, timed = inner[: len(inner) - len(data)], inner[len(inner) - len(data):]
        round_s, source = data, "pytest-benchmark"
    else:  # --benchmark-disable (or xdist): pedantic ran the round once and timed nothing; use our own clock
        warm, timed = [], inner[-1:]
        round_s, source = [r.wall_s for r in timed], "harness (pytest-benchmark disabled)"

    agreement = check_agreement(timed, tolerance=plan.tolerance, floor_s=plan.floor_s)
    if not agreement.ok:
        warnings.warn(BenchTimingWarning(f"{getattr(benchmark, 'name', '?')}: {agreement.message}"), stacklevel=2)
    busy = _busy_check(step, n, device, statistics.fmean(round_s)) if plan.busy_check else None
    if busy is not None and busy.warn:
        warnings.warn(BenchTimingWarning(f"{getattr(benchmark, 'name', '?')}: {busy.message}"), stacklevel=2)
    return Measurement(
        steps_per_round=n,
        rounds=len(round_s),
        warmup_rounds=len(warm),
        round_s=round_s,
        device_rounds=timed,
        first_step_s=first_s,
        warmup_s=[r.wall_s / n for r in warm],
        agreement=agreement,
        total_s=time.perf_counter() - t_start,
        result=holder["out"],
        first_result=first,
        tolerance=plan.tolerance,
        floor_s=plan.floor_s,
        timer_source=source,
        busy=busy,
    )
