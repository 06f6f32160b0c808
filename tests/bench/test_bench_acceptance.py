"""`python -m bench --acceptance`: the verdict follows the ratio and CV rules for any figures, the pedantic
runner times rounds like pytest-benchmark, and a tiny run on this CPU prints one line per benchmark and a verdict."""

from __future__ import annotations

import statistics
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.acceptance import RATIO_GOAL, PedanticRunner, Row, run_acceptance, verdict_line
from bench.acceptance_data import ANCHORS, Case, cases_for

_figures = st.lists(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False), min_size=1, max_size=6)


@given(harness=_figures, bare=_figures, ok=st.booleans(), cv_limit=st.sampled_from([5.0, 15.0]))
def test_verdict_follows_ratio_cv_and_self_check(harness: list[float], bare: list[float], ok: bool,
                                                 cv_limit: float) -> None:
    row = Row(case=Case(kind="gemm", n=64), unit="TFLOP/s", harness=harness, bare=bare, self_check_ok=ok)
    ratio = statistics.median(harness) / statistics.median(bare)  # medians: a stalled repeat moves neither
    cv = 100 * statistics.stdev(harness) / statistics.fmean(harness) if len(harness) > 1 else 0.0
    expect_pass = ratio >= RATIO_GOAL and cv <= cv_limit and ok
    problems = row.problems(cv_limit)
    assert (not problems) == expect_pass
    line = verdict_line([row], problems, cv_limit=cv_limit, where="CPU", seconds=1.0)
    assert line.startswith("acceptance: PASS" if expect_pass else "acceptance: FAIL")
    assert row.line().startswith("gemm fp32 n=64") and f"ratio {row.ratio:.3f}" in row.line()


def test_pedantic_runner_times_each_round() -> None:
    calls: list[float] = []
    r = PedanticRunner()

    def fn() -> None:
        calls.append(time.perf_counter())
        time.sleep(0.002)

    r.pedantic(fn, rounds=3, warmup_rounds=2, iterations=1)
    assert len(calls) == 5 and len(r.stats.stats.data) == 3
    assert all(0.0015 < d < 0.5 for d in r.stats.stats.data)


def test_cases_and_anchors() -> None:
    for dev in ("cuda", "cpu"):
        for size in ("tiny", "quick", "full"):
            cases, plan, repeats = cases_for(dev, size)
            assert cases and plan.rounds >= 3 and repeats >= 2
            assert {c.kind for c in cases} == {"gemm", "copy", "train"}
    gpu, _, _ = cases_for("cuda", "full")
    keys = {c.anchor_key for c in gpu}
    assert ANCHORS["h100-sxm"]["gemm_bf16"].value == 794.5 and ANCHORS["h200-sxm"]["resnet50_amp"].value == 3079
    for per_gpu in ANCHORS.values():
        assert set(per_gpu) <= keys


def test_tiny_run_on_this_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.harness import TorchDevice

    lines: list[str] = []
    passed, rows = run_acceptance(TorchDevice("cpu"), size="tiny", out=lines.append)
    assert len(rows) == 3 and all(r.harness and r.bare and r.ratio > 0 for r in rows)
    assert lines[0].startswith("acceptance: cpu")
    assert lines[-1].startswith("acceptance: PASS" if passed else "acceptance: FAIL")
    body = [line for line in lines if " harness " in line and not line.startswith("acceptance:")]
    assert len(body) == 3 and all("ratio" in line and "CV" in line for line in body)
    assert all(" busy " in line for line in body)  # the busy check's column (a CPU case is never HOST-BOUND)
    assert not any("HOST-BOUND" in line for line in body)
    assert all(r.busy is not None and r.busy.method.startswith("torch.profiler CPU:") for r in rows)
    (load,) = [line for line in lines if line.startswith("load: ")]
    assert "other processes' CPU share" in load and ("BUSY" in load) == ("busy machine" in lines[-1])


def test_runner_routes_acceptance(monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.acceptance
    from bench.__main__ import main

    seen: list[list[str]] = []

    def fake(argv: list[str]) -> int:
        seen.append(argv)
        return 1

    monkeypatch.setattr(bench.acceptance, "main", fake)
    assert main(["--acceptance", "--quick", "--device", "cpu"]) == 1
    assert seen == [["--device", "cpu", "--size", "quick"]]
