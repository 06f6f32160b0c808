"""bench/device.py: a GPU image that sees no GPU stops naming what is missing instead of measuring the CPU;
the CPU by request is marked in the records; a GPU whose arch this torch lacks stops naming both."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.device import DeviceChoice, DeviceProblem, choose_device
from tasks._torchsupport import GpuFacts

H100 = GpuFacts(index=0, name="NVIDIA H100 80GB HBM3", arch="sm_90", arch_list=("sm_80", "sm_86", "sm_90"))
V100 = GpuFacts(index=0, name="Tesla V100-SXM2-16GB", arch="sm_70", arch_list=("sm_75", "sm_80", "sm_90"))
MI300 = GpuFacts(index=0, name="AMD Instinct MI300X", arch="gfx942", arch_list=("gfx90a", "gfx1030"))


def _choose(option: str, tmp: Path, *, accel: str | None, gpus: list[GpuFacts] | None = None,
            devices: tuple[str, ...] = ()) -> DeviceChoice:
    dev = tmp / "dev"
    dev.mkdir(exist_ok=True)
    for d in devices:
        (dev / d).mkdir(parents=True, exist_ok=True)
    return choose_device(option, cuda_available=bool(gpus), torch_cuda="12.1", facts=lambda: gpus or [],
                         accelerator=accel, dev=dev, proc=tmp / "proc")


def test_cuda_image_without_gpu_names_gpus_flag(tmp_path: Path) -> None:
    with pytest.raises(DeviceProblem, match=r"--gpus all.*--device cpu"):
        _choose("auto", tmp_path, accel="cuda")


def test_cuda_image_with_devices_but_no_driver(tmp_path: Path) -> None:
    with pytest.raises(DeviceProblem, match="no NVIDIA driver"):
        _choose("auto", tmp_path, accel="cuda", devices=("nvidiactl", "nvidia0"))


def test_rocm_image_without_kfd(tmp_path: Path) -> None:
    with pytest.raises(DeviceProblem, match="/dev/kfd"):
        _choose("auto", tmp_path, accel="rocm")


def test_cpu_by_request_is_marked(tmp_path: Path) -> None:
    c = _choose("cpu", tmp_path, accel="cuda")
    assert c.name == "cpu" and c.warnings and "on the CPU by request" in c.warnings[0]
    assert _choose("cpu", tmp_path, accel="cpu").warnings == ()


def test_arch_mismatch_names_both(tmp_path: Path) -> None:
    with pytest.raises(DeviceProblem, match=r"no kernels for sm_70 \(Tesla V100-SXM2-16GB\).*sm_75"):
        _choose("auto", tmp_path, accel="cuda", gpus=[V100])
    with pytest.raises(DeviceProblem, match=r"gfx942.*gfx90a"):
        _choose("cuda", tmp_path, accel="rocm", gpus=[MI300])
    assert _choose("cuda:0", tmp_path, accel="cuda", gpus=[H100]).name == "cuda:0"
    with pytest.raises(DeviceProblem, match="sees 1 GPU"):
        _choose("cuda:3", tmp_path, accel="cuda", gpus=[H100])


@settings(max_examples=60)
@given(option=st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:1", "CPU", " auto ", "tpu", "cuda:x"]),
       accel=st.sampled_from([None, "cpu", "cuda", "rocm"]),
       gpus=st.sampled_from([[], [H100], [V100], [MI300], [H100, H100]]),
       devices=st.sampled_from([(), ("nvidiactl",), ("kfd",), ("kfd", "dri")]))
def test_never_a_silent_cpu_run_of_a_gpu_image(tmp_path_factory: pytest.TempPathFactory, option: str,
                                               accel: str | None, gpus: list[GpuFacts],
                                               devices: tuple[str, ...]) -> None:
    """Any option x image x visible GPUs: either a device, or DeviceProblem with a message; a GPU image ends on
    the CPU only when the CPU was asked for, and then says so."""
    tmp = tmp_path_factory.mktemp("d")
    try:
        c = _choose(option, tmp, accel=accel, gpus=gpus, devices=devices)
    except DeviceProblem as e:
        assert str(e)
        return
    if c.name == "cpu" and accel in ("cuda", "rocm"):
        assert option.strip().lower() == "cpu" and c.warnings
    if c.name.startswith("cuda"):
        assert gpus and gpus[0].problem() is None


def test_runner_stops_with_exit_2_in_a_gpu_image_without_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m bench` in a cuda image where torch sees no GPU (this machine): exit 2, one message, no run."""
    import torch

    from bench.__main__ import main, pytest_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("TORCHRIG_ACCELERATOR", "cuda")
    assert main(["--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: this is a CUDA image") and "--gpus all" in err
    assert not (tmp_path / "bench-raw").exists()
    _, _, cmdline = pytest_args(["--no-gpu"], "stamp")
    assert "--bench-device=cpu" in cmdline
