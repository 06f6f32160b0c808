"""export: onnxruntime's GPU provider falls back to the CPU silently (issue 18): a GPU run whose sessions end up
CPU-only is a failed gate naming the provider and the package, unless the image installs only the CPU build (a row
no GPU build fits): then the check is skipped with that reason; a CPU run expects CPUExecutionProvider."""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks._common import Context
from tasks.export_onnx import GPU_PACKAGES, GPU_PROVIDERS, provider_problem

PROVIDERS = ["CPUExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider", "MIGraphXExecutionProvider",
             "TensorrtExecutionProvider", "OpenVINOExecutionProvider"]
_lists = st.lists(st.sampled_from(PROVIDERS), unique=True, max_size=len(PROVIDERS))


@given(gpu=st.sampled_from([None, "cuda", "rocm"]), available=_lists, session=st.none() | _lists)
def test_a_problem_exactly_when_the_work_does_not_land_where_torch_runs(gpu: str | None, available: list[str],
                                                                         session: list[str] | None) -> None:
    problem = provider_problem(gpu, available, session, version="1.2.3")
    if gpu is None:
        ok = "CPUExecutionProvider" in available and (session is None or "CPUExecutionProvider" in session)
        assert (problem is None) == ok
        return
    wanted = [p for p, short in GPU_PROVIDERS.items() if short == gpu]
    have = [p for p in wanted if p in available]
    ok = bool(have) and (session is None or (bool(session) and session[0] in have))
    assert (problem is None) == ok, problem
    if problem is not None:  # it names what is missing and what to install
        assert any(p in problem for p in wanted) and GPU_PACKAGES[gpu] in problem and "1.2.3" in problem


# ---------------------------------------------------------------- the task's check, with a fake onnxruntime


def _fake_ort(available: list[str], falls_back: bool) -> types.ModuleType:
    """An onnxruntime stand-in: the providers it offers, and sessions that keep or drop the GPU provider."""
    ort = types.ModuleType("onnxruntime")
    ort.__version__ = "9.9.9"  # type: ignore[attr-defined]

    class SessionOptions:
        intra_op_num_threads = inter_op_num_threads = log_severity_level = 0

    class InferenceSession:
        def __init__(self, path: str, sess_options: object = None, providers: list[str] | None = None) -> None:
            asked = [p for p in providers or [] if p in available]
            self._providers = [p for p in asked if p == "CPUExecutionProvider"] if falls_back else asked

        def get_providers(self) -> list[str]:
            return self._providers

    ort.get_available_providers = lambda: list(available)  # type: ignore[attr-defined]
    ort.SessionOptions = SessionOptions  # type: ignore[attr-defined]
    ort.InferenceSession = InferenceSession  # type: ignore[attr-defined]
    return ort


def _check(monkeypatch: pytest.MonkeyPatch, device: str, available: list[str], *, falls_back: bool = False,
           hip: str | None = None, installed: tuple[str, ...] = ("onnxruntime-gpu",)) -> Context:
    import torch

    import tasks.export_onnx
    from tasks.export import _gate_providers

    monkeypatch.setitem(sys.modules, "onnxruntime", _fake_ort(available, falls_back))
    monkeypatch.setattr(torch.version, "hip", hip, raising=False)
    monkeypatch.setattr(tasks.export_onnx, "installed_onnxruntime_builds", lambda: list(installed))
    ctx = Context(name="export", args=argparse.Namespace(quiet=True), device=device)
    ctx.resolved["why_not"] = _gate_providers(ctx, Path("model.onnx"), threads=1)
    return ctx


def _passed(ctx: Context) -> bool:
    (gate,) = [g for g in ctx.gates if g.metric == "onnxruntime_providers"]
    return bool(gate.passed)


@pytest.mark.torch
def test_gpu_run_with_a_gpu_build_offering_no_gpu_provider_fails_naming_the_package(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for installed in (("onnxruntime-gpu",), ("onnxruntime", "onnxruntime-gpu")):  # both: the CPU one can shadow it
        ctx = _check(monkeypatch, "cuda", ["CPUExecutionProvider"], installed=installed)
        assert not _passed(ctx) and ctx.resolved["why_not"] is None
        assert "CUDAExecutionProvider" in ctx.problems[0] and "onnxruntime-gpu" in ctx.problems[0]


@pytest.mark.torch
@pytest.mark.parametrize("hip", [None, "6.4"])
def test_gpu_run_of_an_image_with_only_the_cpu_build_is_skipped_with_the_reason(
        monkeypatch: pytest.MonkeyPatch, hip: str | None) -> None:
    """Rows where no GPU build fits (cuda121, the ROCm rows) install the CPU build: said, not failed, not silent."""
    ctx = _check(monkeypatch, "cuda", ["CPUExecutionProvider"], hip=hip, installed=("onnxruntime",))
    assert not [g for g in ctx.gates if g.metric == "onnxruntime_providers"] and not ctx.problems
    why = ctx.resolved["why_not"]
    assert why and "CPU-only onnxruntime" in why and ("onnxruntime-gpu" in why) == (hip is None)
    assert ctx.resolved["ort_session_providers"] == ["CPUExecutionProvider"]


@given(gpu=st.sampled_from([None, "cuda", "rocm"]),
       available=st.lists(st.sampled_from(["CPUExecutionProvider", *GPU_PROVIDERS]), unique=True),
       installed=st.lists(st.sampled_from(["onnxruntime", "onnxruntime-gpu", "onnxruntime-rocm",
                                           "onnxruntime-migraphx", "onnxruntime-training"]), unique=True))
def test_the_check_is_skipped_only_for_a_gpu_run_of_a_cpu_only_build(
        gpu: str | None, available: list[str], installed: list[str]) -> None:
    from tasks.export_onnx import cpu_only_build

    has_gpu_provider = any(GPU_PROVIDERS[p] == gpu for p in available if p in GPU_PROVIDERS)
    only_cpu = "onnxruntime" in installed and set(installed) <= {"onnxruntime", "onnxruntime-training"}
    expected = gpu is not None and not has_gpu_provider and only_cpu
    assert (cpu_only_build(gpu, available, installed) is not None) == expected


@pytest.mark.torch
def test_gpu_provider_that_falls_back_to_the_cpu_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _check(monkeypatch, "cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], falls_back=True)
    assert not _passed(ctx)
    assert "could not load" in ctx.problems[0] and ctx.resolved["ort_session_providers"] == ["CPUExecutionProvider"]


@pytest.mark.torch
def test_gpu_run_whose_session_gets_the_gpu_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _check(monkeypatch, "cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert _passed(ctx) and ctx.problems == []
    assert ctx.resolved["ort_session_providers"][0] == "CUDAExecutionProvider"


@pytest.mark.torch
def test_rocm_torch_wants_an_amd_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _check(monkeypatch, "cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], hip="6.4")
    assert not _passed(ctx) and "onnxruntime-rocm" in ctx.problems[0]
    assert _passed(_check(monkeypatch, "cuda", ["MIGraphXExecutionProvider", "CPUExecutionProvider"], hip="6.4"))


@pytest.mark.torch
def test_cpu_run_expects_the_cpu_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _check(monkeypatch, "cpu", ["CPUExecutionProvider"])
    assert _passed(ctx) and ctx.resolved["ort_session_providers"] == ["CPUExecutionProvider"]
