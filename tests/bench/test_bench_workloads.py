"""Pieces of the suite that need torch: workloads, FLOP counting, precision flags, capability checks, DDP worker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch


@pytest.fixture
def cpu():  # type: ignore[no-untyped-def]
    from bench.harness import TorchDevice

    return TorchDevice("cpu")


def test_training_step_moves_the_weights(cpu) -> None:  # type: ignore[no-untyped-def]
    import torch

    from bench.sizes import TrainCase
    from bench.workloads import build_workload

    w = build_workload(TrainCase(model="cifar_cnn", batch=4, resolution=32, precision="fp32", channels_last=True,
                                 small=True), cpu)
    before = [p.detach().clone() for p in w.model.parameters()]
    losses = [float(w.step()) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert w.config["lr"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, w.model.parameters(), strict=True))
    assert w.items_per_step == 4 and w.item_unit == "images"


def test_flop_count_fallback_agrees_with_flop_counter(cpu, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """torch 2.0 has no torch.utils.flop_counter: the module-hook fallback must give about the same count."""
    from bench.sizes import TrainCase
    from bench.workloads import build_workload, count_flops

    w = build_workload(TrainCase(model="cifar_cnn", batch=4, resolution=32, precision="fp32", small=True), cpu)
    exact, how = count_flops(w.eager_step, w.model)
    assert exact and "flop_counter" in how
    monkeypatch.setitem(sys.modules, "torch.utils.flop_counter", None)  # makes the import fail
    approx, how2 = count_flops(w.eager_step, w.model)
    assert approx is not None and "hooks" in how2
    assert approx == pytest.approx(exact, rel=0.1)


def test_bert_flops_include_attention(cpu) -> None:  # type: ignore[no-untyped-def]
    from bench.sizes import TrainCase
    from bench.workloads import build_workload, count_flops

    case = TrainCase(model="bert", batch=2, resolution=64, precision="fp32", small=True)
    w = build_workload(case, cpu)
    exact, _ = count_flops(w.eager_step, w.model)
    approx, _ = count_flops(w.eager_step, w.model, extra_forward_flops=w.extra_forward_flops)
    assert exact and approx
    assert approx == pytest.approx(exact, rel=0.15)
    assert w.item_unit == "sequences" and w.config["num_hidden_layers"] == 2


def test_bert_gets_no_attention_mask(cpu) -> None:  # type: ignore[no-untyped-def]
    """An all-ones mask made eager sync with the host each step and run another attention kernel than the
    compiled graph: the BERT model is called with no mask at all (its sequences are unpadded)."""
    from bench.sizes import TrainCase
    from bench.workloads import build_workload

    w = build_workload(TrainCase(model="bert", batch=2, resolution=16, precision="fp32", small=True), cpu)
    seen: list[object] = []
    inner = w.model.m
    handle = inner.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs.get("attention_mask")),
                                             with_kwargs=True)
    try:
        w.step()
    finally:
        handle.remove()
    assert seen == [None] and w.config["attention_mask"] is None


def test_precision_flags_are_set_read_back_and_restored() -> None:
    from bench.flags import precision_flags, read_flags

    before = read_flags()
    with precision_flags(tf32=True, cudnn_benchmark=True) as on:
        assert on["tf32_matmul"] is True and on["tf32_cudnn"] is True and on["cudnn_benchmark"] is True
        with precision_flags(tf32=False, cudnn_benchmark=False) as off:
            assert off["tf32_matmul"] is False and off["tf32_cudnn"] is False and off["cudnn_benchmark"] is False
        assert read_flags()["tf32_matmul"] is True
    assert read_flags() == before


def test_compile_is_skipped_where_compat_data_says_this_python_is_too_new(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import bench.workloads as wl

    monkeypatch.delenv("TORCHRIG_COMPILE_MAX_PYTHON", raising=False)
    monkeypatch.setattr(torch, "__version__", "2.0.1+cu118")
    monkeypatch.setattr(sys, "version_info", (3, 11, 4, "final", 0))
    problem = wl.compile_problem("cuda")
    assert problem is not None and "torch.compile in torch 2.0 supports Python up to 3.10 (compat.yaml)" in problem
    monkeypatch.setattr(sys, "version_info", (3, 10, 12, "final", 0))
    assert wl.compile_problem("cpu") is None or "C++ compiler" in str(wl.compile_problem("cpu"))
    # in an image, run-bench passes the same fact through the environment
    monkeypatch.setenv("TORCHRIG_COMPILE_MAX_PYTHON", "3.9")
    assert "supports Python up to 3.9 ($TORCHRIG_COMPILE_MAX_PYTHON)" in str(wl.compile_problem("cpu"))


def test_cpu_precision_problems(cpu) -> None:  # type: ignore[no-untyped-def]
    from bench.workloads import precision_problem

    assert "GPU tensor-core mode" in str(precision_problem("tf32", cpu))
    assert precision_problem("fp32", cpu) is None
    assert precision_problem("amp_bf16", cpu) is None


@pytest.mark.slow
def test_ddp_worker_on_cpu(tmp_path: Path) -> None:
    """The DDP scaling worker under torchrun with two processes (gloo): the code the multi-GPU benchmark runs."""
    from bench.ddp_worker import launch
    from bench.harness import Plan
    from bench.sizes import TrainCase

    case = TrainCase(model="cifar_cnn", batch=4, resolution=32, precision="fp32", channels_last=True, small=True)
    plan = Plan(rounds=2, warmup_rounds=1, target_round_s=0.01, max_steps_per_round=2)
    r = launch(case, nproc=2, plan=plan, device="cpu", out=tmp_path / "ddp.json", timeout_s=300)
    assert r["world_size"] == 2 and r["backend"] == "gloo"
    assert r["global_batch"] == 8 and len(r["round_s"]) == 2
    assert r["throughput"] == pytest.approx(8 / r["step_s"])
    assert r["workload"]["model"] == "cifar_cnn"
