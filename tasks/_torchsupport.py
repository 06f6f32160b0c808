"""The torch side every task shares: CPUs and the device, seeding and determinism, mixed precision, torch.compile.

Runs inside the images: Python >= 3.10, torch 2.0.1 and newer, numpy 1.x or 2.x; torch and numpy are imported
inside the functions, so importing this module (and ``--help``) stays fast.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from pathlib import Path
from typing import Any

from torchrig.capabilities import compile_support
from torchrig.errors import UsageError
from torchrig.results.contract import ACCELERATOR_ENV, ACCELERATORS

__all__ = [
    "NO_GPU_MESSAGES",
    "accelerator_env",
    "amp_autocast",
    "available_cpus",
    "compile_limitation",
    "dataloader_generator",
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
