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
    from tasks._common import compile_limitation

    if compile_limitation() is None:
        assert gates["torch_compile_works"]
    else:  # e.g. torch 2.0 on Python 3.11: a warning that names the fix, not a failure
        assert any("known limitation: torch.compile" in w for w in rec["warnings"])


def _this_python() -> str:
    import sys

    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_smoke_skips_compile_where_compat_data_says_this_python_is_too_new(run_task) -> None:
    # What run-tasks passes from compat.yaml: pretend this torch's compiler stops one Python below this one.
    older = f"3.{int(_this_python().split('.')[1]) - 1}"
    env = task_env(TORCHRIG_COMPILE_MAX_PYTHON=older)
    r = run_task("smoke", "--device", "cpu", "--expect-torch", _public_torch(), "--compile-backend", "no-such",
                 env=env)
    assert r.rc == 0, r.stdout + r.stderr  # the bogus backend is never tried
    rec = r.record()
    assert "torch_compile_works" not in {g["metric"] for g in rec["gates"]}
    assert any(w.startswith("known limitation: torch.compile") and f"up to {older}" in w and _this_python() in w
               for w in rec["warnings"]), rec["warnings"]


def test_a_compile_failure_is_a_skip_only_where_support_is_unknown(run_task) -> None:
    args = ("--device", "cpu", "--expect-torch", _public_torch(), "--compile-backend", "no-such-backend")
    unknown = run_task("smoke", *args, env=task_env(TORCHRIG_COMPILE_MAX_PYTHON="not-a-version"))
    assert unknown.rc == 0, unknown.stdout + unknown.stderr
    rec = unknown.record()
    assert "torch_compile_works" not in {g["metric"] for g in rec["gates"]}
    assert any(w.startswith("torch.compile skipped: it failed") and "not-a-version" in w
               for w in rec["warnings"]), rec["warnings"]

    known = run_task("smoke", *args, env=task_env(TORCHRIG_COMPILE_MAX_PYTHON=_this_python()))
    assert known.rc == 1, known.stdout + known.stderr
    failed = {g["metric"] for g in known.record()["gates"] if not g["passed"]}
    assert failed == {"torch_compile_works"}


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
