"""The timing harness on fake devices: synchronisation, warm-up exclusion, the wall-vs-device self-check.

The fake "GPU" is a stream: a worker thread runs submitted work in order, an op returns as soon as it is queued,
events are stamped when the stream reaches them, and ``synchronize`` waits for the queue to drain -- the
semantics of a CUDA stream. No torch needed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from bench.harness import BenchTimingWarning, Plan, Round, check_agreement, measure

OP_S = 0.05


class FakeStreamDevice:
    """Asynchronous: work runs on a worker thread, later than it was submitted."""

    name = "fake:0"
    accelerator = "cuda"

    def __init__(self) -> None:
        self._q: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            fn = self._q.get()
            try:
                if fn is None:
                    return
                fn()
            finally:
                self._q.task_done()

    def submit(self, fn: Callable[[], None]) -> None:
        self._q.put(fn)

    def op(self) -> None:
        """A 'kernel' taking OP_S on the device; returns immediately."""
        self.submit(lambda: time.sleep(OP_S))

    def synchronize(self) -> None:
        self._q.join()

    def event(self) -> FakeEvent:
        return FakeEvent(self)

    def close(self) -> None:
        self._q.put(None)
        self._t.join(timeout=5)


class FakeEvent:
    def __init__(self, dev: FakeStreamDevice) -> None:
        self.dev = dev
        self.t: float | None = None
        self.done = threading.Event()

    def record(self) -> None:
        def stamp() -> None:
            self.t = time.perf_counter()
            self.done.set()

        self.dev.submit(stamp)

    def elapsed_s(self, end: Any) -> float:
        assert end.done.wait(10) and self.done.wait(10)
        return end.t - self.t  # type: ignore[no-any-return]


class NoSyncDevice(FakeStreamDevice):
    """The bug the self-check exists for: a synchronize that does not wait."""

    def synchronize(self) -> None:
        pass


class HostDevice:
    """A synchronous device (the CPU): work is done when the call returns."""

    name = "host"
    accelerator = "cpu"

    def synchronize(self) -> None:
        pass

    def event(self) -> Any:
        from bench.harness import _HostEvent

        return _HostEvent()


@pytest.fixture
def stream() -> Any:
    dev = FakeStreamDevice()
    yield dev
    dev.close()


@pytest.fixture
def nosync() -> Any:
    dev = NoSyncDevice()
    yield dev
    dev.close()


def test_fake_op_is_asynchronous(stream: FakeStreamDevice) -> None:
    t0 = time.perf_counter()
    stream.op()
    launched = time.perf_counter() - t0
    stream.synchronize()
    done = time.perf_counter() - t0
    assert launched < OP_S / 5 < OP_S * 0.9 < done


def test_timer_waits_for_the_device(benchmark: Any, stream: FakeStreamDevice) -> None:
    """pytest-benchmark's own clock sees the device work, though each op returns immediately."""
    plan = Plan(rounds=3, warmup_rounds=1, target_round_s=0.1, steps_per_round=2)
    m = measure(benchmark, stream.op, device=stream, plan=plan)
    data = benchmark.stats.stats.data
    assert len(data) == 3 and m.round_s == data
    assert all(2 * OP_S * 0.95 <= t < 2 * OP_S * 2 for t in data), data
    assert m.step_s == pytest.approx(OP_S, rel=0.5)
    assert m.steps_per_round == 2 and m.timer_source == "pytest-benchmark"
    assert m.agreement.ok and m.agreement.flagged_rounds == 0
    assert all(r.device_s == pytest.approx(r.wall_s, rel=0.05, abs=2e-3) for r in m.device_rounds)


def test_steps_per_round_is_sized_from_a_probe(benchmark: Any, stream: FakeStreamDevice) -> None:
    plan = Plan(rounds=2, warmup_rounds=0, target_round_s=4 * OP_S)
    m = measure(benchmark, stream.op, device=stream, plan=plan)
    assert 3 <= m.steps_per_round <= 5
    assert m.step_s == pytest.approx(OP_S, rel=0.5)


def test_a_timer_without_sync_is_flagged(benchmark: Any, nosync: NoSyncDevice) -> None:
    """With a synchronize that does not wait, wall time collapses while the device events still see the work:
    the self-check catches it and says why."""
    plan = Plan(rounds=3, warmup_rounds=0, target_round_s=0.1, steps_per_round=2)
    with pytest.warns(BenchTimingWarning, match="missing synchronisation"):
        m = measure(benchmark, nosync.op, device=nosync, plan=plan)
    assert not m.agreement.ok
    assert m.agreement.flagged_rounds == 3
    assert all(r.wall_s < r.device_s for r in m.device_rounds)
    assert m.timing_info()["self_check"]["ok"] is False


def test_first_call_is_excluded(benchmark: Any) -> None:
    """A callable whose first call is slow (compilation, autotuning): reported as first_step_s, not timed."""
    calls = []

    def step() -> None:
        calls.append(1)
        time.sleep(0.4 if len(calls) == 1 else 0.01)

    m = measure(benchmark, step, device=HostDevice(), plan=Plan(rounds=4, warmup_rounds=1, target_round_s=0.02,
                                                                 max_steps_per_round=2))
    assert m.first_step_s >= 0.4
    assert max(benchmark.stats.stats.data) < 0.2
    assert m.step_s < 0.05
    assert m.compile_overhead_s == pytest.approx(m.first_step_s - m.step_s)
    assert m.compile_overhead_s > 0.3


@pytest.mark.filterwarnings("ignore::bench.harness.BenchTimingWarning")  # wall/device agreement has tests of its
def test_warmup_rounds_are_excluded(benchmark: Any) -> None:  # own; under load a host round can disagree by ~1 ms
    """pytest-benchmark's warm-up rounds run but are not in its statistics (slow calls 1..3: first + 2 warm-up)."""
    calls = []

    def step() -> None:
        calls.append(1)
        time.sleep(0.2 if len(calls) <= 3 else 0.01)

    m = measure(benchmark, step, device=HostDevice(),
                plan=Plan(rounds=3, warmup_rounds=2, target_round_s=0.01, steps_per_round=1))
    assert len(calls) == 1 + 2 + 3 + 1  # ... + the profiled busy-check round, after the timed ones
    assert m.busy is not None and m.busy.method.startswith("torch.profiler CPU:")
    assert m.warmup_rounds == 2 and all(w >= 0.2 for w in m.warmup_s)
    # the warm-up calls sleep 0.2 s, the timed ones 0.01 s: a timed round under 0.2 s is not a warm-up, however
    # loaded the machine (a 0.1 s bound failed once in CI while another process held the CPU)
    assert len(benchmark.stats.stats.data) == 3 and max(benchmark.stats.stats.data) < 0.2


def test_disabled_benchmark_falls_back_to_harness_clock() -> None:
    """Under --benchmark-disable pedantic runs the target once and keeps no stats: the harness still measures."""

    class Disabled:
        name = "disabled"
        stats = None

        def pedantic(self, target: Callable[[], None], **kw: Any) -> None:
            target()

    m = measure(Disabled(), lambda: time.sleep(0.01), device=HostDevice(),
                plan=Plan(rounds=5, warmup_rounds=2, target_round_s=0.01, steps_per_round=1))
    assert m.rounds == 1 and m.round_s[0] >= 0.01 and m.timer_source.startswith("harness")


# ------------------------------------------------------------------------------------------ check_agreement


def test_agreement_within_tolerance() -> None:
    a = check_agreement([Round(0.100, 0.099), Round(0.200, 0.2005)])
    assert a.ok and a.flagged_rounds == 0 and a.max_disagreement_pct == pytest.approx(1.0)


@pytest.mark.parametrize(("wall", "device", "why"), [
    (0.010, 0.100, "missing synchronisation"),
    (0.100, 0.050, "host-side time"),
])
def test_disagreement_is_flagged(wall: float, device: float, why: str) -> None:
    a = check_agreement([Round(0.1, 0.1), Round(wall, device)])
    assert not a.ok and a.flagged_rounds == 1
    assert why in a.message and "round 1" in a.message


def test_tiny_absolute_differences_are_not_flagged() -> None:
    """Event/launch latency of tens of microseconds on a very short round is not a disagreement."""
    a = check_agreement([Round(0.001, 0.00095)], tolerance=0.01, floor_s=200e-6)
    assert a.ok
