"""Training throughput: ResNet-50 (ImageNet-sized inputs), the CIFAR CNN, BERT-base (sequence 128 and 384).

Each case is one full training step (forward, loss, backward, optimizer step with a real learning rate) in eager
mode or under ``torch.compile``, fp32, TF32 or AMP (bf16, or fp16 with a grad scaler), channels-last for the CNNs.
Compilation and cuDNN autotuning (``cudnn.benchmark`` is on) happen in the first step, which is timed and reported
on its own (``first_step_s``, ``compile_overhead_s``) and kept out of the throughput.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import torch

from bench.flags import precision_flags
from bench.harness import measure
from bench.peaks import device_lookup
from bench.results import capture_warnings, fill_extra_info, metric, rate_metrics, timing_metrics
from bench.sizes import BenchContext, TrainCase
from bench.workloads import build_workload, compile_problem, count_flops, model_problem, precision_problem
from torchrig.capabilities import compile_support

# Which measured GEMM ceiling a model's FLOPS utilisation is taken against.
CEILING_KEY = {"fp32": "fp32", "tf32": "tf32", "amp_bf16": "bf16", "amp_fp16": "fp16"}


def _oom_types() -> tuple[type[BaseException], ...]:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom,) if oom is not None else ()


def test_train(benchmark: Any, train_case: TrainCase, bench: BenchContext) -> None:
    t0 = time.perf_counter()
    case = train_case
    problem = model_problem(case) or precision_problem(case.precision, bench.device) or (
        compile_problem(bench.device.type) if case.compile else None)
    if problem:
        pytest.skip(problem)
    benchmark.group = f"train: {case.model}"
    try:
        with capture_warnings() as seen, \
                precision_flags(tf32=case.precision == "tf32", cudnn_benchmark=True) as flags:
            w = build_workload(case, bench.device)
            m = measure(benchmark, w.step, device=bench.device, plan=bench.size_set.plan)
            first_loss = float(m.first_result.float().item())
            last_loss = float(m.result.float().item())
            # FLOPs of one eager step (the math the compiled graph runs too). Counted after the measurement so
            # that the first measured step is the model's very first: cuDNN autotuning and compilation land there.
            flops, flops_method = count_flops(w.eager_step, w.model, extra_forward_flops=w.extra_forward_flops)
    except _oom_types() as e:
        pytest.skip(f"out of GPU memory at batch {case.batch} (lower it with --bench-batch {case.model}=N): {e}")
    except Exception as e:
        skip = compile_support().failure_skip(e) if case.compile else None
        if skip:
            pytest.skip(skip)
        raise
    finally:
        if case.compile:
            import torch._dynamo

            torch._dynamo.reset()  # drop compiled graphs and their memory before the next case

    metrics = {
        **rate_metrics(m, name="throughput", per_step=w.items_per_step, unit=f"{w.item_unit}/s"),
        **timing_metrics(m),
    }
    if flops:
        metrics.update(rate_metrics(m, name="tflops", per_step=flops / 1e12, unit="TFLOP/s"))
        peak = device_lookup(bench.device)
        peak_tflops = peak.tflops.get(CEILING_KEY[case.precision]) if peak else None
        if peak_tflops:
            metrics["mfu_spec_pct"] = metric(100 * metrics["tflops"]["value"] / peak_tflops, "%", repeats=m.rounds)
    if bench.device.type == "cuda":
        metrics["peak_memory_gb"] = metric(torch.cuda.max_memory_allocated(bench.device.torch_device) / 2**30, "GiB",
                                           higher_is_better=False)
    fill_extra_info(
        benchmark, name=f"train-{case.id}", bench="train",
        case={**vars(case), "device": bench.device.name, "items_per_step": w.items_per_step,
              "item_unit": w.item_unit, "flops_per_step": flops, "flops_method": flops_method},
        workload=w.config, flags=flags, measurement=m, metrics=metrics, warnings_seen=seen,
        wall_time_s=time.perf_counter() - t0,
        ceiling_key=CEILING_KEY[case.precision],
        loss={"first": first_loss, "last": last_loss},
    )
    assert math.isfinite(last_loss), f"training diverged: loss {last_loss}"
