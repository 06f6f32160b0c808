"""Multi-GPU data-parallel scaling: DDP training throughput on N GPUs through ``torchrun``, against one GPU.

Scaling efficiency = throughput(N) / (N x throughput(1)), both measured here by the same worker
(:mod:`bench.ddp_worker`) with the same per-GPU batch. Skipped with the reason on fewer than two GPUs.

pytest-benchmark's own statistics for this entry time the whole N-process launch (start-up, warm-up and measured
rounds); the throughput metrics come from the workers' synchronised rounds and are what the record reports.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.ddp_worker import launch
from bench.results import capture_warnings, fill_extra_info, metric
from bench.sizes import BenchContext, TrainCase
from bench.workloads import compile_problem, model_problem, precision_problem


def test_ddp_scaling(benchmark: Any, ddp_case: TrainCase, bench: BenchContext,
                     tmp_path: Path) -> None:
    t0 = time.perf_counter()
    visible = torch.cuda.device_count() if bench.device.type == "cuda" else 0
    if visible < 2:
        pytest.skip(f"DDP scaling needs >= 2 GPUs; {visible} visible on {bench.device.name}")
    n = bench.ddp_gpus or visible
    if not 2 <= n <= visible:
        pytest.skip(f"--bench-ddp-gpus {n}: needs 2..{visible}")
    problem = model_problem(ddp_case) or precision_problem(ddp_case.precision, bench.device) or (
        compile_problem("cuda") if ddp_case.compile else None)
    if problem:
        pytest.skip(problem)
    benchmark.group = "ddp scaling"
    plan = bench.size_set.plan
    with capture_warnings() as seen:
        one = launch(ddp_case, nproc=1, plan=plan, device="cuda", out=tmp_path / "ddp1.json")
        many: dict[str, Any] = {}

        def run_n() -> None:
            many.update(launch(ddp_case, nproc=n, plan=plan, device="cuda", out=tmp_path / f"ddp{n}.json"))

        benchmark.pedantic(run_n, rounds=1, warmup_rounds=0, iterations=1)
    eff = 100 * many["throughput"] / (n * one["throughput"])
    unit = f"{many['item_unit']}/s"
    metrics = {
        "throughput": metric(many["throughput"], unit, repeats=len(many["round_s"]),
                             stddev=many["throughput_stddev"]),
        "throughput_1gpu": metric(one["throughput"], unit, repeats=len(one["round_s"]),
                                  stddev=one["throughput_stddev"]),
        "scaling_efficiency_pct": metric(eff, "%", repeats=len(many["round_s"])),
        "step_time_s": metric(many["step_s"], "s", higher_is_better=False, repeats=len(many["round_s"]),
                              stddev=many["step_stddev_s"]),
        "cv_pct": metric(many["cv_pct"], "%", higher_is_better=False, repeats=len(many["round_s"])),
        "first_step_s": metric(many["first_step_s"], "s", higher_is_better=False),
    }
    fill_extra_info(
        benchmark, name=f"ddp-{n}gpu-{ddp_case.id}", bench="ddp",
        case={**vars(ddp_case), "gpus": n, "device": bench.device.name, "scaling": "weak (fixed batch per GPU)"},
        flags=many["flags"], measurement=None, metrics=metrics, warnings_seen=seen,
        wall_time_s=time.perf_counter() - t0,
        workload=many["workload"],
        ddp={"n": {k: v for k, v in many.items() if k not in ("flags", "workload")},
             "one": {k: v for k, v in one.items() if k not in ("flags", "workload")},
             "stats_measure": "pytest-benchmark stats time the whole N-GPU torchrun launch"},
    )
    assert eff > 0
