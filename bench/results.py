"""Turn a :class:`~bench.harness.Measurement` into derived metrics and the ``extra_info`` of one benchmark.

``benchmark.extra_info`` is what lands in the pytest-benchmark JSON beside the raw statistics. Its layout
(``torchrig_bench`` = 1) is what :mod:`torchrig.results.benchconv` reads::

    name, bench ("gemm" | "copy" | "train" | "ddp"), case (the parameters), workload (model details),
    flags (TF32, cudnn.benchmark ... as in effect), timing (rounds, steps per round, first step, self-check ...),
    metrics {name: {value, unit, higher_is_better, repeats, stddev}}, ceiling / ceiling_key, spec_peak,
    warnings [..], wall_time_s
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

from bench.harness import Measurement

__all__ = ["EXTRA_INFO_VERSION", "capture_warnings", "fill_extra_info", "metric", "rate_metrics"]

EXTRA_INFO_VERSION = 1


def metric(value: float, unit: str, *, higher_is_better: bool = True, repeats: int = 1,
           stddev: float | None = None) -> dict[str, Any]:
    return {"value": float(value), "unit": unit, "higher_is_better": higher_is_better, "repeats": int(repeats),
            "stddev": None if stddev is None else float(stddev)}


def rate_metrics(m: Measurement, *, name: str, per_step: float, unit: str) -> dict[str, Any]:
    """``per_step / step time`` as a metric, its stddev propagated from the round times (first order)."""
    rate = per_step / m.step_s
    return {name: metric(rate, unit, repeats=m.rounds, stddev=rate * m.step_stddev_s / m.step_s)}


def timing_metrics(m: Measurement) -> dict[str, Any]:
    busy = {"busy_pct": metric(m.busy.pct, "%")} if m.busy is not None and m.busy.pct is not None else {}
    return {
        **busy,
        "step_time_s": metric(m.step_s, "s", higher_is_better=False, repeats=m.rounds, stddev=m.step_stddev_s),
        "cv_pct": metric(m.cv_pct, "%", higher_is_better=False, repeats=m.rounds),
        "first_step_s": metric(m.first_step_s, "s", higher_is_better=False),
        "compile_overhead_s": metric(m.compile_overhead_s, "s", higher_is_better=False),
        "timer_disagreement_pct": metric(m.agreement.max_disagreement_pct, "%", higher_is_better=False,
                                         repeats=m.rounds),
        "timer_flagged_rounds": metric(m.agreement.flagged_rounds, "rounds", higher_is_better=False,
                                       repeats=m.rounds),
    }


@contextlib.contextmanager
def capture_warnings() -> Iterator[list[str]]:
    """Collect the warnings raised inside, then re-issue them once each so pytest's summary still shows them.
    The list is filled when the block exits (store it with the result after the ``with``)."""
    seen: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield seen
    reissue = []
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in seen:
            seen.append(text)
            reissue.append(w)
    for w in reissue:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def fill_extra_info(benchmark: Any, *, name: str, bench: str, case: dict[str, Any], flags: dict[str, Any],
                    measurement: Measurement | None, metrics: dict[str, Any], warnings_seen: list[str],
                    wall_time_s: float, **extra: Any) -> None:
    benchmark.extra_info.update(_finite({
        "torchrig_bench": EXTRA_INFO_VERSION,
        "name": name,
        "bench": bench,
        "case": case,
        "flags": flags,
        "timing": measurement.timing_info() if measurement else None,
        "metrics": metrics,
        "warnings": list(warnings_seen),
        "wall_time_s": wall_time_s,
        **extra,
    }))
