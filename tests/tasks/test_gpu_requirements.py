"""The shared GPU-row logic in tasks._torchsupport (smoke and bench ask it): what is missing when a GPU row sees
no GPU, and whether this torch carries kernels for the visible GPU's arch. No GPU and no torch needed."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks._common import Context
from tasks._torchsupport import GpuFacts, arch_problem, device_arch, missing_gpu

# torch.cuda.get_arch_list() of real wheels (read from the installed builds / the build matrix)
CU118_20 = ["sm_37", "sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
CU130_214 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
ROCM542 = ["gfx900", "gfx906", "gfx908", "gfx90a", "gfx1030"]


# ------------------------------------------------------------------------------------------- arch_problem


def test_named_examples() -> None:
    msg = arch_problem("sm_70", CU130_214, name="Tesla V100-SXM2-16GB")
    assert msg is not None and msg.startswith("this torch has no kernels for sm_70 (Tesla V100-SXM2-16GB)")
    assert "sm_75, sm_80" in msg  # names what it carries
    assert arch_problem("sm_90", CU130_214) is None
    assert arch_problem("sm_86", ["sm_80"]) is None  # same major, newer minor: sm_80 cubins run
    assert arch_problem("sm_80", ["sm_86"]) is not None  # but not the other way
    assert arch_problem("sm_100", CU118_20) is not None  # B200 on a 2.0 cu118 wheel: no sm_100, no PTX
    assert arch_problem("sm_100", [*CU118_20, "compute_90"]) is None  # PTX is JIT-compiled for newer GPUs
    assert arch_problem("sm_90", ["sm_90a"]) is None
    assert arch_problem("sm_100", ["sm_90a"]) is not None  # arch-specific code runs only on its arch
    gfx = arch_problem("gfx942", ROCM542, name="AMD Instinct MI300X")
    assert gfx is not None and "no kernels for gfx942 (AMD Instinct MI300X)" in gfx
    assert arch_problem("gfx90a", ROCM542) is None
    assert "empty" in (arch_problem("sm_90", []) or "")
    assert "not an NVIDIA arch" in (arch_problem("volta", CU118_20) or "")


def test_device_arch() -> None:
    assert device_arch((9, 0)) == "sm_90"
    assert device_arch((12, 0)) == "sm_120"
    assert device_arch((9, 4), gcn_arch="gfx942:sramecc+:xnack-") == "gfx942"
    with pytest.raises(ValueError, match="compute capability"):
        device_arch()


majors = st.integers(min_value=3, max_value=13)
minors = st.integers(min_value=0, max_value=9)
sm_entries = st.builds(lambda k, M, m, a: f"{k}_{M}{m}{a}", st.sampled_from(["sm", "compute"]), majors, minors,
                       st.sampled_from(["", "", "a"]))


@given(major=majors, minor=minors, entries=st.lists(sm_entries, max_size=8), extra=sm_entries)
def test_more_arches_never_take_support_away(major: int, minor: int, entries: list[str], extra: str) -> None:
    arch = device_arch((major, minor))
    before = arch_problem(arch, entries)
    after = arch_problem(arch, [*entries, extra])
    if before is None:
        assert after is None
    if after is not None:  # a refusal names the device's arch and every arch the torch carries
        assert arch in after and all(e in after for e in [*entries, extra])


@given(major=majors, minor=minors, entries=st.lists(sm_entries, max_size=8))
def test_the_exact_arch_or_older_ptx_is_always_enough(major: int, minor: int, entries: list[str]) -> None:
    arch = device_arch((major, minor))
    assert arch_problem(arch, [*entries, arch]) is None
    assert arch_problem(arch, [*entries, f"compute_{major}0"]) is None
    newer = f"sm_{major + 1}{minor}"
    only_newer = [e for e in entries if not e.startswith(("sm_", "compute_"))] + [newer, f"compute_{major + 1}0"]
    assert arch_problem(arch, only_newer) is not None  # code for a newer GPU never runs on an older one


# --------------------------------------------------------------------------------------------- missing_gpu


def _fake(tmp: Path, *devs: str, driver: str | None = None) -> tuple[Path, Path]:
    dev, proc = tmp / "dev", tmp / "proc"
    dev.mkdir()
    (proc / "driver" / "nvidia").mkdir(parents=True)
    for d in devs:
        p = dev / d
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")
    if driver:
        (proc / "driver" / "nvidia" / "version").write_text(
            f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {driver}  Wed Jan 1 00:00:00 UTC 2025\n")
    return dev, proc


def test_nothing_is_missing_where_no_gpu_is_promised_or_one_is_there(tmp_path: Path) -> None:
    dev, proc = _fake(tmp_path)
    for accel in (None, "cpu"):
        assert missing_gpu(accel, gpu_count=0, dev=dev, proc=proc) is None
    assert missing_gpu("cuda", gpu_count=1, dev=dev, proc=proc) is None
    assert missing_gpu("rocm", gpu_count=0, requested="cpu", dev=dev, proc=proc) is None  # the user asked


def test_cuda_without_devices_names_the_flag(tmp_path: Path) -> None:
    dev, proc = _fake(tmp_path)
    msg = missing_gpu("cuda", gpu_count=0, dev=dev, proc=proc) or ""
    assert "no NVIDIA device" in msg and "--gpus all" in msg and "--device cpu" in msg


def test_cuda_with_devices_but_no_driver(tmp_path: Path) -> None:
    dev, proc = _fake(tmp_path, "nvidiactl", "nvidia0")
    msg = missing_gpu("cuda", gpu_count=0, dev=dev, proc=proc) or ""
    assert "no NVIDIA driver is loaded" in msg


def test_cuda_with_an_old_driver_names_it(tmp_path: Path) -> None:
    dev, proc = _fake(tmp_path, "nvidiactl", "nvidia0", driver="525.60.13")
    msg = missing_gpu("cuda", gpu_count=0, dev=dev, proc=proc, torch_cuda="13.0") or ""
    assert "driver 525.60.13" in msg and "CUDA 13.0" in msg and "torchrig doctor" in msg


def test_rocm_names_the_missing_device(tmp_path: Path) -> None:
    dev, proc = _fake(tmp_path)
    assert "/dev/kfd is not in the container" in (missing_gpu("rocm", gpu_count=0, dev=dev, proc=proc) or "")
    (dev / "kfd").write_text("")
    assert "/dev/dri is not in the container" in (missing_gpu("rocm", gpu_count=0, dev=dev, proc=proc) or "")
    (dev / "dri").mkdir()
    os.chmod(dev / "kfd", 0)
    msg = missing_gpu("rocm", gpu_count=0, dev=dev, proc=proc, uid=12345) or ""
    if os.getuid() == 0:  # root reads anything: os.access cannot show the permission case here
        assert "amdgpu driver" in msg
    else:
        assert "not read/writable by UID 12345" in msg and "render GID" in msg
    os.chmod(dev / "kfd", 0o666)
    assert "amdgpu driver" in (missing_gpu("rocm", gpu_count=0, dev=dev, proc=proc, uid=12345) or "")


@settings(max_examples=30)
@given(accel=st.sampled_from([None, "cpu", "cuda", "rocm"]), count=st.integers(0, 8),
       requested=st.sampled_from(["auto", "cpu", "cuda"]))
def test_missing_only_for_a_gpu_row_without_gpu_unless_cpu_was_asked(accel: str | None, count: int,
                                                                      requested: str) -> None:
    empty = Path("/nonexistent-torchrig-test")
    msg = missing_gpu(accel, gpu_count=count, requested=requested, dev=empty, proc=empty, uid=1000)
    expect = accel in ("cuda", "rocm") and count == 0 and requested != "cpu"
    assert (msg is not None) == expect
    if msg:
        assert msg.startswith(f"this is a {'CUDA' if accel == 'cuda' else 'ROCm'} image")


# ------------------------------------------------------------------------------ smoke's per-GPU arch gates


def _smoke_context() -> Context:
    return Context(name="smoke", args=argparse.Namespace(quiet=True, seed=0), device="cuda")


def test_smoke_gates_each_visible_gpu_on_its_arch(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import _smoke_caps

    facts = [GpuFacts(index=0, name="NVIDIA H100 80GB HBM3", arch="sm_90", arch_list=tuple(CU130_214)),
             GpuFacts(index=1, name="Tesla V100-SXM2-16GB", arch="sm_70", arch_list=tuple(CU130_214))]
    monkeypatch.setattr(_smoke_caps, "gpu_facts", lambda: facts)
    ctx = _smoke_context()
    assert _smoke_caps.check_arches(ctx) == {"cuda:1"}, "the V100 gets no kernels from a cu130 torch 2.14"
    assert ctx.metrics["gpu_arch_supported_cuda0"].value == 1.0
    assert ctx.metrics["gpu_arch_supported_cuda1"].value == 0.0
    assert ctx.resolved == {"gpu_arch_cuda0": "sm_90", "gpu_arch_cuda1": "sm_70"}
    (problem,) = ctx.problems
    assert "gpu_arch_supported_cuda1" in problem and "no kernels for sm_70 (Tesla V100-SXM2-16GB)" in problem
    assert ctx.verdict() == "fail"


def test_smoke_fails_an_mi300x_on_the_rocm_542_row(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import _smoke_caps

    mi300x = GpuFacts(index=0, name="AMD Instinct MI300X", arch="gfx942", arch_list=tuple(ROCM542))
    monkeypatch.setattr(_smoke_caps, "gpu_facts", lambda: [mi300x])
    ctx = _smoke_context()
    assert _smoke_caps.check_arches(ctx) == {"cuda:0"}
    assert "no kernels for gfx942 (AMD Instinct MI300X)" in ctx.problems[0]


gpus = st.lists(st.tuples(st.sampled_from(["sm_70", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "gfx90a",
                                           "gfx942", "gfx950"]),
                          st.sampled_from([CU118_20, CU130_214, ROCM542, []])), max_size=8)


@given(gpus)
def test_smoke_refuses_exactly_the_gpus_this_torch_has_no_kernels_for(found: list[tuple[str, list[str]]]) -> None:
    from tasks import _smoke_caps

    facts = [GpuFacts(index=i, name=f"gpu{i}", arch=arch, arch_list=tuple(archs))
             for i, (arch, archs) in enumerate(found)]
    ctx = _smoke_context()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_smoke_caps, "gpu_facts", lambda: facts)
        unusable = _smoke_caps.check_arches(ctx)
    expected = {f"cuda:{f.index}" for f in facts if arch_problem(f.arch, f.arch_list) is not None}
    assert unusable == expected
    assert len(ctx.problems) == len(expected) and len(ctx.gates) == len(facts)
    assert (ctx.verdict() == "fail") == bool(expected or not facts), "no GPU at all: no gate, which also fails"
