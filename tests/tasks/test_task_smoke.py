"""smoke: the environment is what it claims, and its compiled parts run."""

from __future__ import annotations

import pytest
from tasks_support import task_env

from torchrig.results.records import validate_record

pytestmark = pytest.mark.torch


def _public_torch() -> str:
    import torch

    return torch.__version__.split("+")[0]


def test_smoke_passes_on_this_machine(run_task) -> None:
    r = run_task("smoke", "--device", "cpu", "--expect-torch", _public_torch())
    assert r.rc == 0, r.stdout + r.stderr
    rec = r.record()
    assert validate_record(rec) == []
    assert rec["kind"] == "task" and rec["name"] == "smoke" and rec["verdict"] == "pass"
    gates = {g["metric"]: g["passed"] for g in rec["gates"]}
    assert gates["torch_version_matches"] and gates["matmul_rel_err_cpu"] and gates["torchvision_nms_cpu"]
    from tasks._common import dynamo_limitation

    if dynamo_limitation() is None:
        assert gates["torch_compile_works"]
    else:  # torch 2.0 on Python 3.11: a warning that names the fix, not a failure
        assert any("use torch >= 2.1 for Python 3.11" in w for w in rec["warnings"])


def test_smoke_fails_a_gpu_image_without_gpu_and_a_wrong_torch(run_task) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    env = task_env(TORCHRIG_ACCELERATOR="cuda", TORCHRIG_TORCH_VERSION="1.13.1+cu117")
    r = run_task("smoke", "--quiet", env=env)
    assert r.rc == 1, r.stdout + r.stderr
    msg = "this is a CUDA image but no GPU is visible: run with --gpus all / check the NVIDIA Container Toolkit"
    assert msg in r.stderr
    rec = r.record()
    assert validate_record(rec) == []
    assert rec["verdict"] == "fail"
    failed = {g["metric"] for g in rec["gates"] if not g["passed"]}
    assert {"gpu_visible", "torch_version_matches"} <= failed
    assert any(msg in w for w in rec["warnings"])


def test_smoke_ignores_the_local_version_part() -> None:
    from tasks.smoke import public_version

    assert public_version("2.0.1+cu118") == public_version("2.0.1") == "2.0.1"
    assert public_version("2.1.0") != public_version("2.1.1")
