"""Calibration: the measured ceilings of this machine -- dense GEMM throughput per precision and device-to-device
copy bandwidth -- and how close they come to the vendor's spec peak where the GPU is in ``gpu_peaks.json``.

The GEMM results are the denominators of the model benchmarks' FLOPS utilisation (``mfu_pct``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from bench.flags import precision_flags
from bench.harness import TorchDevice, measure
from bench.peaks import device_lookup
from bench.results import capture_warnings, fill_extra_info, metric, rate_metrics, timing_metrics
from bench.rocm_env import tf32_problem
from bench.sizes import BenchContext, CopyCase, GemmCase

_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _gemm_problem(case: GemmCase, device: TorchDevice) -> str | None:
    if case.dtype == "tf32":
        if device.type == "cpu":
            return "TF32 is a GPU tensor-core mode; on CPU it would be plain fp32"
        if device.accelerator == "cuda" and torch.cuda.get_device_capability(device.torch_device)[0] < 8:
            return f"TF32 needs compute capability >= 8.0 ({device.gpu_name})"
        rocm = tf32_problem(torch)  # ROCm: hipBLASLt's TF32 needs torch >= 2.6 and HIPBLASLT_ALLOW_TF32=1
        if rocm:
            return rocm
    if case.dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return f"{device.gpu_name} does not support bf16"
    try:  # e.g. fp16 matmul on the CPU of older torch: "addmm_impl_cpu_" not implemented for 'Half'
        a = torch.ones(4, 4, dtype=_DTYPES[case.dtype], device=device.torch_device)
        torch.mm(a, a)
    except RuntimeError as e:
        return f"{case.dtype} matmul is not available on {device.name} in torch {torch.__version__}: {e}"
    return None


def test_gemm(benchmark: Any, gemm_case: GemmCase, bench: BenchContext) -> None:
    """Square n x n matmul, C = A @ B into a preallocated C; 2 n^3 FLOPs per matmul."""
    t0 = time.perf_counter()
    problem = _gemm_problem(gemm_case, bench.device)
    if problem:
        pytest.skip(problem)
    benchmark.group = "calibration: gemm"
    n, dtype, dev = gemm_case.n, _DTYPES[gemm_case.dtype], bench.device.torch_device
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
    c = torch.empty(n, n, device=dev, dtype=dtype)
    flops = 2.0 * n**3

    def step() -> torch.Tensor:
        return torch.mm(a, b, out=c)

    with capture_warnings() as seen, precision_flags(tf32=gemm_case.dtype == "tf32", cudnn_benchmark=False) as flags:
        m = measure(benchmark, step, device=bench.device, plan=bench.size_set.plan)
    metrics = {**rate_metrics(m, name="tflops", per_step=flops / 1e12, unit="TFLOP/s"), **timing_metrics(m)}
    peak = device_lookup(bench.device)
    peak_tflops = peak.tflops.get(gemm_case.dtype) if peak else None
    if peak_tflops:
        metrics["pct_of_spec_peak"] = metric(100 * metrics["tflops"]["value"] / peak_tflops, "%",
                                             repeats=m.rounds)
    fill_extra_info(
        benchmark, name=f"gemm-{gemm_case.id}", bench="gemm",
        case={"dtype": gemm_case.dtype, "torch_dtype": str(dtype), "n": n, "flops_per_step": flops,
              "device": bench.device.name},
        flags=flags, measurement=m, metrics=metrics, warnings_seen=seen,
        wall_time_s=time.perf_counter() - t0,
        ceiling={"key": gemm_case.dtype, "tflops": metrics["tflops"]["value"]},
        spec_peak={"id": peak.id, "tflops": peak_tflops, "source": peak.source,
                   "partition": peak.partition} if peak else None,
    )
    assert torch.isfinite(c[:8, :8].float()).all()


def test_copy_bandwidth(benchmark: Any, copy_case: CopyCase, bench: BenchContext) -> None:
    """Device-to-device copy ``dst.copy_(src)``; counted as read + write (2 x size bytes per copy), as STREAM
    counts its Copy kernel, so it is comparable with the spec memory bandwidth."""
    t0 = time.perf_counter()
    benchmark.group = "calibration: copy"
    nbytes = copy_case.mib * 2**20
    dev = bench.device.torch_device
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)

    def step() -> torch.Tensor:
        return dst.copy_(src)

    with capture_warnings() as seen, precision_flags(tf32=False, cudnn_benchmark=False) as flags:
        m = measure(benchmark, step, device=bench.device, plan=bench.size_set.plan)
    moved = 2.0 * nbytes
    metrics = {**rate_metrics(m, name="bandwidth_gbs", per_step=moved / 1e9, unit="GB/s"), **timing_metrics(m)}
    peak = device_lookup(bench.device)
    if peak:
        metrics["pct_of_spec_peak"] = metric(100 * metrics["bandwidth_gbs"]["value"] / peak.bandwidth_gbs, "%",
                                             repeats=m.rounds)
    fill_extra_info(
        benchmark, name=f"copy-{copy_case.id}", bench="copy",
        case={"bytes": nbytes, "bytes_moved_per_step": moved, "counting": "read + write", "device": bench.device.name},
        flags=flags, measurement=m, metrics=metrics, warnings_seen=seen,
        wall_time_s=time.perf_counter() - t0,
        spec_peak={"id": peak.id, "bandwidth_gbs": peak.bandwidth_gbs, "source": peak.source,
                   "partition": peak.partition} if peak else None,
    )
    assert bool(dst[-1] == 1)
