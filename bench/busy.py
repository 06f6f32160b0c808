"""The busy check: how much of a timed round the device actually spent running work.

The wall-vs-device self-check (:func:`bench.harness.check_agreement`) cannot catch a launch- or host-bound case on
a GPU: every round ends with a synchronisation, and CUDA events count the idle gaps between kernels as device time,
so the two clocks agree however idle the GPU was. This check profiles one extra round with ``torch.profiler``
(CPU + CUDA activities; ROCm reports its kernels as CUDA activity too), takes the union of the kernel (and
memcpy/memset) intervals -- a union, so kernels overlapping on several streams are not counted twice -- and divides
it by the round's wall time as the benchmark measured it without the profiler. Below :data:`BUSY_MIN_PCT` the case
is flagged: the figure then measures Python, launch latency or host-side work as much as the GPU.

On the CPU the host is the device. What torch.profiler gives there is the time inside torch operators (``aten::``
ops, user annotations such as ``Optimizer.step#SGD.step`` left out because they wrap Python); busy % is then the
share of the round spent in operators, the rest being Python between them. It is recorded with that meaning
(``method``), and a CPU case below the threshold is marked ``flagged`` in the record but raises no warning: at the
CPU suite's small sizes that share is low by design and says nothing about a GPU.

The profiler adds host overhead per operator; on a GPU it does not enter the figure, because the kernels' own
time (which the profiler does not change) is divided by the round's wall time measured without the profiler.

Nothing here imports torch at module level; :func:`judge` is pure so tests can feed it fake profiler timings.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["BUSY_MIN_PCT", "Busy", "judge", "profile_round", "union_s"]

BUSY_MIN_PCT = 90.0  # below this share of the round running device work, a GPU case is launch-/host-bound

# record_function wrappers around Python code: their time is not operator time
_ANNOTATION_PREFIXES = ("Optimizer.", "## ", "ProfilerStep")


@dataclass(frozen=True, kw_only=True)
class Busy:
    """The verdict for one case. ``pct`` is None when it could not be measured (``message`` says why)."""

    pct: float | None
    flagged: bool
    method: str
    message: str
    threshold_pct: float = BUSY_MIN_PCT
    warn: bool = False  # a GPU case below the threshold: raise a BenchTimingWarning for the record

    def info(self) -> dict[str, Any]:
        return {"pct": self.pct, "flagged": self.flagged, "method": self.method, "message": self.message,
                "threshold_pct": self.threshold_pct}


def union_s(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by ``(start, end)`` intervals; empty, reversed or non-finite ones count for nothing."""
    clean = sorted((a, b) for a, b in intervals if math.isfinite(a) and math.isfinite(b) and b > a)
    total, cur_a, cur_b = 0.0, None, None
    for a, b in clean:
        if cur_b is None or a > cur_b:
            if cur_a is not None and cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None and cur_b is not None:
        total += cur_b - cur_a
    return total


def judge(intervals: Iterable[tuple[float, float]], round_s: float, *, method: str, gpu: bool,
          threshold_pct: float = BUSY_MIN_PCT) -> Busy:
    """Busy % of a round of ``round_s`` seconds whose work ran in ``intervals`` (seconds), and the verdict."""
    if not (math.isfinite(round_s) and round_s > 0):
        return Busy(pct=None, flagged=False, method=method, message=f"unavailable: round time {round_s!r} s",
                    threshold_pct=threshold_pct)
    spans = list(intervals)
    if not spans:
        what = ("the profiler recorded no device activity (CUPTI/roctracer missing or not permitted in this "
                "container)" if gpu else "the profiler recorded no torch operators")
        return Busy(pct=None, flagged=False, method=method, message=f"unavailable: {what}",
                    threshold_pct=threshold_pct)
    pct = min(100.0, 100.0 * union_s(spans) / round_s)
    flagged = pct < threshold_pct
    where = "device" if gpu else "torch operators"
    if not flagged:
        msg = f"{where} busy {pct:.1f} % of the round (>= {threshold_pct:g} %)"
    elif gpu:
        msg = (f"device busy only {pct:.1f} % of the round (< {threshold_pct:g} %): launch- or host-bound; the "
               "figure measures Python/launch overhead as much as the GPU (larger batch, CUDA graphs or "
               "torch.compile)")
    else:
        msg = (f"torch operators {pct:.1f} % of the round (< {threshold_pct:g} %): the rest is Python between "
               "operators (expected at the CPU suite's small sizes; no warning on the CPU)")
    return Busy(pct=pct, flagged=flagged, method=method, message=msg, threshold_pct=threshold_pct,
                warn=flagged and gpu)


def _intervals(events: Iterable[Any], *, gpu: bool) -> list[tuple[float, float]]:
    """(start, end) in seconds of the device events (GPU) or the torch operators (CPU) of a profile."""
    out: list[tuple[float, float]] = []
    for e in events:
        kind = str(getattr(e, "device_type", ""))
        if gpu and not kind.endswith("CUDA"):
            continue
        if not gpu:
            name = str(getattr(e, "name", ""))
            if kind.endswith("CUDA") or getattr(e, "is_user_annotation", False) \
                    or name.startswith(_ANNOTATION_PREFIXES):
                continue
        tr = e.time_range
        out.append((float(tr.start) / 1e6, float(tr.end) / 1e6))  # profiler times are microseconds
    return out


def profile_round(run_round: Callable[[], None], *, gpu: bool, round_s: float | None = None) -> Busy:
    """Profile one call of ``run_round`` (a whole round, ending with a synchronisation) and judge it.

    ``round_s``: the round's wall time as measured without the profiler (used on a GPU); on the CPU, and where it
    is not given, the profiled round's own wall time. Any profiler failure becomes ``unavailable: reason``."""
    method = ("torch.profiler CPU+CUDA: union of kernel/memcpy intervals / unprofiled round wall time" if gpu else
              "torch.profiler CPU: union of torch operator intervals / profiled round wall time (host = device)")
    try:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if gpu else [])]
        # the profiler's own warnings ("CUDA is not available, disabling CUDA profiling") are not the case's;
        # the step's own warnings were already seen in the timed rounds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with profile(activities=activities) as prof:
                t0 = time.perf_counter()
                run_round()
                wall = time.perf_counter() - t0
            spans = _intervals(prof.events(), gpu=gpu)
    except Exception as e:  # noqa: BLE001 - a profiler that cannot run must not fail the benchmark
        return Busy(pct=None, flagged=False, method=method,
                    message=f"unavailable: torch.profiler failed: {type(e).__name__}: {e}"[:500])
    return judge(spans, round_s if gpu and round_s else wall, method=method, gpu=gpu)
