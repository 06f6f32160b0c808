"""regression: y = 2x + 1 is found, and a broken setup is caught by the gates."""

from __future__ import annotations

import pytest

from torchrig.results.records import validate_record

pytestmark = pytest.mark.torch


def test_regression_quick_passes_on_cpu(run_task) -> None:
    r = run_task("regression", "--quick", "--device", "cpu", "--env-id", "test-env")
    assert r.rc == 0, r.stdout + r.stderr
    rec = r.record()
    assert validate_record(rec) == []
    assert rec["verdict"] == "pass" and rec["env_id"] == "test-env"
    assert abs(r.metric("w") - 2) < 1e-2 and abs(r.metric("b") - 1) < 1e-2 and r.metric("mse") < 1e-3
    assert {g["metric"] for g in rec["gates"]} == {"w_abs_err", "b_abs_err", "mse"}
    assert rec["metrics"]["mse"]["unit"] == "squared error"
    assert rec["config"]["seed"] == 0 and rec["config"]["resolved"]["epochs"] == 20
    assert "epoch 20/20" in r.stdout  # progress on the console


@pytest.mark.parametrize("broken", [["--lr", "0"], ["--shuffle-labels"]], ids=["lr0", "shuffled-labels"])
def test_regression_broken_setup_fails_the_gate(run_task, broken: list[str]) -> None:
    r = run_task("regression", "--quick", "--device", "cpu", "--quiet", *broken)
    assert r.rc == 1, r.stdout + r.stderr
    rec = r.record()
    assert validate_record(rec) == []
    assert rec["verdict"] == "fail"
    assert not all(g["passed"] for g in rec["gates"])


def test_regression_is_deterministic(run_task) -> None:
    a = run_task("regression", "--quick", "--device", "cpu", "--quiet", "--seed", "3")
    b = run_task("regression", "--quick", "--device", "cpu", "--quiet", "--seed", "3")
    c = run_task("regression", "--quick", "--device", "cpu", "--quiet", "--seed", "4")
    assert a.rc == b.rc == c.rc == 0
    assert abs(a.metric("final_loss") - b.metric("final_loss")) <= 1e-6
    assert a.metric("w") == b.metric("w")
    assert a.metric("final_loss") != c.metric("final_loss")  # the seed matters


@pytest.mark.parametrize("task", ["smoke", "regression", "cifar_cnn", "bert_classifier"])
def test_device_cuda_without_gpu_is_bad_input(run_task, task: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    r = run_task(task, "--device", "cuda")
    assert r.rc == 2, r.stdout + r.stderr
    assert "--device cuda was requested but torch" in r.stderr and "sees no GPU" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.records() == []


def test_bad_option_values_are_bad_input(run_task) -> None:
    r = run_task("regression", "--epochs", "0")
    assert r.rc == 2 and "--epochs must be at least 1" in r.stderr and "Traceback" not in r.stderr
    r = run_task("regression", "--lr", "-1")
    assert r.rc == 2 and "--lr must be" in r.stderr
