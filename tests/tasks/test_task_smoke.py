"""smoke: the environment is what it claims, and its compiled parts run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tasks.tasks_support import task_env
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
    for cap in ("cpp_extension_imports", "torchvision_decode_png", "torchvision_decode_jpeg", "dataloader_2_workers"):
        assert gates[cap], cap
    skipped = rec["config"]["resolved"].get("skipped", {})
    assert skipped.get("cuda_extension_load_inline") == "no GPU in use (CPU run or no GPU visible)"
    import shutil

    if shutil.which("c++") and shutil.which("ninja"):  # a compiler here: the extension is built and called
        assert gates["cpp_extension_load_inline"]
    else:
        assert "cpp_extension_load_inline" in skipped
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
    msg = "this is a CUDA image but no NVIDIA device is in the container (no /dev/nvidiactl, /dev/nvidia0): run it "
    if Path("/dev/nvidiactl").exists():
        msg = "this is a CUDA image and /dev/nvidia* is present"
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


def test_smoke_on_a_gpu_image_with_device_cpu_skips_the_gpu_with_the_reason(run_task) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    env = task_env(TORCHRIG_ACCELERATOR="rocm", TORCHRIG_COMPILE_MAX_PYTHON="3.0", CXX="/nonexistent/c++")
    r = run_task("smoke", "--device", "cpu", "--expect-torch", _public_torch(), env=env)
    rec = r.record()
    gates = {g["metric"] for g in rec["gates"]}
    assert "gpu_visible" not in gates
    skipped = rec["config"]["resolved"]["skipped"]
    assert skipped["gpu_visible"] == "--device cpu was asked for"
    # no compiler (CXX points nowhere): load_inline is a skip with the reason, not a failure
    assert "C++ compiler" in skipped["cpp_extension_load_inline"]
    assert any(w.startswith("skipped cpp_extension_load_inline: ") for w in rec["warnings"])
    # torch is a CUDA/CPU build here, not ROCm: that mismatch is the only failure
    assert {g["metric"] for g in rec["gates"] if not g["passed"]} <= {"torch_build_matches_image"}
