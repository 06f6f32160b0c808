"""Which device the suite measures, and the refusals that keep a GPU environment's record honest.

``--bench-device auto`` takes the first GPU torch sees. In a GPU image (``$TORCHRIG_ACCELERATOR`` cuda or rocm)
with no GPU visible it does not fall back to the CPU: a CPU figure recorded as the cuda121 environment's would
pass as one. It stops and names what is missing (``--gpus``, the driver, ``/dev/kfd``: the shared logic is
:func:`tasks._torchsupport.missing_gpu`, which smoke uses too). ``--bench-device cpu`` (``python -m bench
--no-gpu``) still runs on the CPU, and every record of that run then carries a warning saying so. On a GPU, the
device's arch must be one this torch has kernels for (:func:`tasks._torchsupport.arch_problem`), else the suite
stops naming both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks._torchsupport import GpuFacts, accelerator_env, gpu_facts, missing_gpu, no_gpu_hint

__all__ = ["DeviceChoice", "DeviceProblem", "choose_device"]


class DeviceProblem(Exception):
    """The suite cannot run on the device asked for (or found); the message says what is missing."""


@dataclass(frozen=True)
class DeviceChoice:
    name: str  # "cpu", "cuda", "cuda:N": what TorchDevice is built from
    warnings: tuple[str, ...] = field(default=())  # go into every record of the run


def _index(option: str) -> int:
    _, _, n = option.partition(":")
    if n and not n.isdigit():
        raise DeviceProblem(f"--bench-device {option!r}: expected auto, cpu, cuda or cuda:N")
    return int(n) if n else 0


def choose_device(option: str, *, cuda_available: bool | None = None, torch_cuda: str | None = None,
                  facts: Callable[[], Sequence[GpuFacts]] = gpu_facts, accelerator: str | None = None,
                  dev: Path = Path("/dev"), proc: Path = Path("/proc")) -> DeviceChoice:
    """The device for ``--bench-device option``; raises :class:`DeviceProblem` with what is missing."""
    torch: Any = None
    if cuda_available is None:
        import torch as _torch

        torch = _torch
        cuda_available = bool(torch.cuda.is_available())
        torch_cuda = torch.version.cuda
    accel = accelerator if accelerator is not None else accelerator_env()
    option = option.strip().lower() or "auto"
    if option not in ("auto", "cpu") and not option.startswith("cuda"):
        raise DeviceProblem(f"--bench-device {option!r}: expected auto, cpu, cuda or cuda:N (ROCm GPUs are cuda)")
    if option == "cpu":
        if accel in ("cuda", "rocm"):
            return DeviceChoice("cpu", (
                f"a {accel} environment measured on the CPU by request (--bench-device cpu / --no-gpu): "
                "these are CPU figures, not the GPU environment's",))
        return DeviceChoice("cpu")
    if not cuda_available:
        problem = missing_gpu(accel, gpu_count=0, requested="auto", dev=dev, proc=proc, torch_cuda=torch_cuda)
        if problem:
            raise DeviceProblem(problem)
        if option == "auto":
            return DeviceChoice("cpu")
        hint = no_gpu_hint() if torch is not None else "no GPU is visible to torch here"
        raise DeviceProblem(f"--bench-device {option} was asked for but torch sees no GPU: {hint}")
    index = _index(option)
    visible = list(facts())
    if index >= len(visible):
        raise DeviceProblem(f"--bench-device {option}: torch sees {len(visible)} GPU(s) (cuda:0 .. "
                            f"cuda:{len(visible) - 1}); check CUDA_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES")
    problem = visible[index].problem()
    if problem:
        raise DeviceProblem(f"{problem}; use an environment whose torch carries this GPU's arch "
                            "(`torchrig doctor ENV`), or --bench-device cpu")
    return DeviceChoice("cuda" if option == "auto" else option)
