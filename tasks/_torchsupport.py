"""The torch side every task shares: CPUs and the device, seeding and determinism, mixed precision, torch.compile.

Runs inside the images: Python >= 3.10, torch 2.0.1 and newer, numpy 1.x or 2.x; torch and numpy are imported
inside the functions, so importing this module (and ``--help``) stays fast.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchrig.capabilities import compile_support
from torchrig.errors import UsageError
from torchrig.results.archs import kernel_for, parse_sm
from torchrig.results.contract import ACCELERATOR_ENV, ACCELERATORS

__all__ = [
    "NO_GPU_MESSAGES",
    "GpuFacts",
    "accelerator_env",
    "amp_autocast",
    "arch_problem",
    "available_cpus",
    "compile_limitation",
    "dataloader_generator",
    "device_arch",
    "gpu_facts",
    "missing_gpu",
    "no_gpu_hint",
    "resolve_device",
    "seed_everything",
    "seed_worker",
    "set_deterministic",
    "shuffled_labels",
]

NO_GPU_MESSAGES = {
    "cuda": "this is a CUDA image but no GPU is visible: run with --gpus all / check the NVIDIA Container Toolkit",
    "rocm": (
        "this is a ROCm image but no GPU is visible: run with --device /dev/kfd --device /dev/dri "
        "(and the video/render groups) / check the amdgpu driver"
    ),
}


# ------------------------------------------------------------------------------------------------ hardware


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (``docker run --cpus``)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="utf-8").split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def accelerator_env() -> str | None:
    """$TORCHRIG_ACCELERATOR: what the image was built for (cpu, cuda, rocm), or None outside an image."""
    v = os.environ.get(ACCELERATOR_ENV, "").strip().lower() or None
    if v is not None and v not in ACCELERATORS:
        raise UsageError(f"{ACCELERATOR_ENV}={v!r} is not one of {', '.join(ACCELERATORS)}")
    return v


def no_gpu_hint() -> str:
    """Why torch sees no GPU, and what to do about it."""
    import torch

    accel = accelerator_env()
    if accel in NO_GPU_MESSAGES:
        return NO_GPU_MESSAGES[accel]
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return f"this torch ({torch.__version__}) is a CPU-only build: install a CUDA or ROCm build of torch"
    return "no GPU is visible to torch here: use --device cpu (or auto), or run where a GPU is visible"


def resolve_device(requested: str) -> str:
    """"cpu" or "cuda" for ``--device auto|cpu|cuda`` (ROCm GPUs are "cuda" to torch)."""
    import torch

    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise UsageError(f"--device cuda was requested but torch {torch.__version__} sees no GPU: {no_gpu_hint()}")
    return "cpu"


def compile_limitation() -> str | None:
    """The known-limitation message when torch.compile cannot work with this Python and torch (compat.yaml's
    ``compile_max_python``), else None -- also None when that is not known here: then try it."""
    return compile_support().limitation()


# ---------------------------------------------------------------------- what a GPU row needs (tasks, bench)
#
# One place for "is the GPU this row promises usable here, and if not, what is missing": smoke and bench/ both
# ask it. The functions that read the machine take the paths they read, so tests give them a fake /dev and /proc.


def missing_gpu(accelerator: str | None, *, gpu_count: int, requested: str = "auto",
                dev: Path = Path("/dev"), proc: Path = Path("/proc"),
                torch_cuda: str | None = None, uid: int | None = None) -> str | None:
    """What is missing when a GPU row (``accelerator`` cuda/rocm) sees no GPU: driver, ``--gpus``, ``/dev/kfd``...

    None when nothing is missing: a GPU is visible, the image is not a GPU image (cpu, or None outside an image),
    or the user asked for the CPU (``requested == "cpu"``).
    """
    if accelerator not in ("cuda", "rocm") or gpu_count > 0 or requested == "cpu":
        return None
    if accelerator == "cuda":
        return _missing_nvidia(dev, proc, torch_cuda)
    return _missing_amd(dev, os.getuid() if uid is None else uid)


def _missing_nvidia(dev: Path, proc: Path, torch_cuda: str | None) -> str:
    ask_cpu = " (or pass --device cpu to run on the CPU)"
    if not (dev / "nvidiactl").exists() and not any(dev.glob("nvidia[0-9]*")):
        return ("this is a CUDA image but no NVIDIA device is in the container (no /dev/nvidiactl, /dev/nvidia0): "
                "run it with --gpus all (docker) / --device nvidia.com/gpu=all (CDI), with the NVIDIA Container "
                "Toolkit on the host" + ask_cpu)
    try:
        line = (proc / "driver" / "nvidia" / "version").read_text(encoding="utf-8").splitlines()[0]
        m = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", line)
        driver = m.group(1) if m else line.strip()
    except (OSError, IndexError):
        driver = None
    cuda = f"CUDA {torch_cuda}" if torch_cuda else "its CUDA"
    if driver is None:
        return ("this is a CUDA image and /dev/nvidia* is present, but no NVIDIA driver is loaded "
                "(no /proc/driver/nvidia/version): install the NVIDIA driver on the host" + ask_cpu)
    return (f"this is a CUDA image and the NVIDIA devices are present (driver {driver}), but torch sees no GPU: "
            f"the driver may be older than this torch's {cuda} needs (`torchrig doctor ENV` says), or the GPU is "
            "held or broken (nvidia-smi on the host)" + ask_cpu)


def _missing_amd(dev: Path, uid: int) -> str:
    ask_cpu = " (or pass --device cpu to run on the CPU)"
    flags = "--device /dev/kfd --device /dev/dri --group-add video --group-add <the host's render GID>"
    kfd, dri = dev / "kfd", dev / "dri"
    if not kfd.exists():
        return f"this is a ROCm image but /dev/kfd is not in the container: run it with {flags}" + ask_cpu
    if not dri.exists():
        return f"this is a ROCm image but /dev/dri is not in the container: run it with {flags}" + ask_cpu
    if uid != 0 and not os.access(kfd, os.R_OK | os.W_OK):
        return (f"this is a ROCm image and /dev/kfd is present but not read/writable by UID {uid}: add the groups "
                "that own /dev/kfd and /dev/dri/renderD* (--group-add video --group-add <render GID>)" + ask_cpu)
    return ("this is a ROCm image with /dev/kfd and /dev/dri, but torch sees no GPU: check the amdgpu driver "
            "on the host (rocminfo) and that this GPU is supported by the image's ROCm" + ask_cpu)


@dataclass(frozen=True, kw_only=True)
class GpuFacts:
    """One visible GPU as torch sees it: name, arch (``sm_90``, ``gfx942``) and the arches this torch carries."""

    index: int
    name: str
    arch: str
    arch_list: tuple[str, ...]

    def problem(self) -> str | None:
        return arch_problem(self.arch, self.arch_list, name=self.name)


def device_arch(capability: tuple[int, int] | None = None, gcn_arch: str | None = None) -> str:
    """``sm_90`` for compute capability (9, 0); ``gfx90a`` for a gcnArchName such as ``gfx90a:sramecc+:xnack-``."""
    if gcn_arch:
        return gcn_arch.split(":", 1)[0].strip()
    if capability is None:
        raise ValueError("device_arch needs a compute capability or a gcnArchName")
    return f"sm_{capability[0]}{capability[1]}"


def arch_problem(arch: str, arch_list: Sequence[str], *, name: str = "") -> str | None:
    """Why this torch cannot run kernels on a GPU of ``arch`` (None when it can).

    NVIDIA: a cubin for ``sm_XY`` runs on any device of the same major with minor >= Y (sm_80 code runs on sm_86),
    and PTX (``compute_XY``) is JIT-compiled for any device >= XY; arch-specific code (``sm_90a``) runs only on
    its own arch. AMD: the code objects are per gfx target (``gfx90a``), matched exactly.
    """
    arches = tuple(a.strip() for a in arch_list if a.strip())
    who = f"{arch} ({name})" if name else arch
    if not arches:
        return f"this torch reports no GPU architectures (torch.cuda.get_arch_list() is empty) for {who}"
    if not arch.startswith("gfx") and parse_sm(arch) is None:
        return f"{arch!r} is not an NVIDIA arch such as sm_90"
    if kernel_for(arch, arches) is not None:  # the rule doctor uses too (torchrig.results.archs)
        return None
    return f"this torch has no kernels for {who}: it carries {', '.join(arches)}"


def gpu_facts() -> list[GpuFacts]:
    """Every GPU torch sees, with its arch and this torch's arch list (empty without a GPU)."""
    import torch

    if not torch.cuda.is_available():
        return []
    arch_list = tuple(str(a) for a in torch.cuda.get_arch_list())
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gcn = getattr(props, "gcnArchName", None) if getattr(torch.version, "hip", None) else None
        arch = device_arch((int(props.major), int(props.minor)), gcn_arch=gcn)
        out.append(GpuFacts(index=i, name=str(props.name), arch=arch, arch_list=arch_list))
    return out


# ------------------------------------------------------------------------------------- reproducibility


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too


def set_deterministic() -> None:
    """Ask torch for deterministic algorithms (warnings, not errors, where an op has none)."""
    import torch

    # cuBLAS needs this before its first use for deterministic GEMMs (ignored on the CPU).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: an op without a deterministic kernel warns instead of stopping a correctness run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def dataloader_generator(seed: int) -> Any:
    import torch

    g = torch.Generator()
    g.manual_seed(seed)
    return g


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: numpy and random get the worker's torch seed (torch sets its own)."""
    import numpy as np
    import torch

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def shuffled_labels(labels: list[int], seed: int) -> list[int]:
    """``labels`` randomly permuted: every example keeps a label, but a wrong one (the broken-setup hook)."""
    rng = random.Random(seed + 7919)
    out = list(labels)
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------------------- mixed precision


def amp_autocast(device: str, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """float16 autocast on the GPU; a no-op elsewhere (CPU autocast would warn about float16)."""
    import torch

    if not enabled or device != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.float16)  # type: ignore[no-any-return]
