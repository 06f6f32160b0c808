"""The busy check (bench/busy.py): fake profiler timings for the verdict, a real CPU profile for the wiring."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.busy import BUSY_MIN_PCT, _intervals, judge, profile_round, union_s


def _kernels(round_s: float, busy_fraction: float, n: int) -> list[tuple[float, float]]:
    """``n`` back-to-back kernels covering ``busy_fraction`` of a round, with equal idle gaps between them."""
    busy, idle = round_s * busy_fraction, round_s * (1 - busy_fraction)
    k, gap = busy / n, idle / n
    return [(i * (k + gap), i * (k + gap) + k) for i in range(n)]


@given(round_s=st.floats(1e-4, 10.0), frac=st.floats(0.0, 1.0), n=st.integers(1, 50))
def test_busy_below_the_threshold_is_flagged_and_above_is_not(round_s: float, frac: float, n: int) -> None:
    b = judge(_kernels(round_s, frac, n), round_s, method="fake", gpu=True)
    assert b.pct is not None and b.pct == pytest.approx(100 * frac, abs=1e-6)
    if 100 * frac < BUSY_MIN_PCT - 1e-6:
        assert b.flagged and b.warn and "launch- or host-bound" in b.message
    elif 100 * frac >= BUSY_MIN_PCT + 1e-6:
        assert not b.flagged and not b.warn


@given(spans=st.lists(st.tuples(st.floats() | st.floats(-1e3, 1e3),
                                st.floats() | st.floats(-1e3, 1e3)), max_size=60),
       round_s=st.floats(allow_nan=True, allow_infinity=True))
def test_any_timings_give_a_verdict_never_an_exception(spans: list[tuple[float, float]], round_s: float) -> None:
    """Overlapping, reversed, NaN, infinite kernel times and any round time: a bounded figure or 'unavailable'."""
    b = judge(spans, round_s, method="fake", gpu=True)
    if b.pct is None:
        assert b.message.startswith("unavailable:") and not b.flagged
    else:
        assert 0.0 <= b.pct <= 100.0 and b.flagged == (b.pct < BUSY_MIN_PCT)


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 10)), max_size=40))
def test_union_counts_overlap_once(raw: list[tuple[float, float]]) -> None:
    """Kernels on several streams overlap: their union is at most the sum and at least the longest kernel, and
    listing every kernel twice changes nothing."""
    spans = [(a, a + d) for a, d in raw]
    u = union_s(spans)
    lengths = [d for _, d in raw if d > 0]
    assert u <= sum(lengths) + 1e-9
    assert u >= (max(lengths) if lengths else 0.0) - 1e-9
    assert math.isclose(union_s(spans + spans), u, abs_tol=1e-9)


def test_named_examples() -> None:
    # one 0.9 ms kernel in a 1 ms round: exactly at the threshold is not flagged
    assert not judge([(0.0, 0.9e-3)], 1e-3, method="fake", gpu=True).flagged
    # BERT-like: 30 short kernels with launch gaps, 60 % busy
    assert judge(_kernels(1e-2, 0.6, 30), 1e-2, method="fake", gpu=True).flagged
    # two streams fully overlapping: 100 %, not 200 %
    assert judge([(0, 1), (0, 1)], 1.0, method="fake", gpu=True).pct == 100.0
    # a CPU case below the threshold is marked but raises no warning
    cpu = judge([(0, 0.5)], 1.0, method="fake", gpu=False)
    assert cpu.flagged and not cpu.warn and "Python" in cpu.message
    # a GPU profile without device activity (no CUPTI) is unavailable, not 0 % busy
    none = judge([], 1.0, method="fake", gpu=True)
    assert none.pct is None and "CUPTI" in none.message


@dataclass
class _Range:
    start: float
    end: float


@dataclass
class _Event:
    name: str
    device_type: str
    time_range: _Range
    is_user_annotation: bool = False


def test_event_selection_from_a_fake_profile() -> None:
    """GPU: only device (CUDA-type) events count; CPU: torch operators, not the Python-wrapping annotations."""
    events: list[Any] = [
        _Event("aten::mm", "DeviceType.CPU", _Range(0, 100)),
        _Event("Optimizer.step#SGD.step", "DeviceType.CPU", _Range(0, 1000), True),
        _Event("ampere_sgemm_128x64", "DeviceType.CUDA", _Range(50, 850)),
    ]
    assert _intervals(events, gpu=True) == [(50e-6, 850e-6)]
    assert _intervals(events, gpu=False) == [(0.0, 100e-6)]


def test_a_real_cpu_round_is_profiled() -> None:
    torch = pytest.importorskip("torch")
    a = torch.randn(128, 128)

    def one_round() -> None:
        for _ in range(20):
            torch.mm(a, a)

    b = profile_round(one_round, gpu=False)
    assert b.pct is not None and 0 < b.pct <= 100, b
    assert b.method.startswith("torch.profiler CPU:") and not b.warn


def test_a_failing_profiler_is_unavailable_not_fatal() -> None:
    pytest.importorskip("torch")

    def boom() -> None:
        raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED")

    b = profile_round(boom, gpu=True, round_s=1.0)
    assert b.pct is None and "CUPTI_ERROR_NOT_INITIALIZED" in b.message and b.message.startswith("unavailable")
