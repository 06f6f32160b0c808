"""The environment a benchmark ran in, for ``machine_info`` in the pytest-benchmark JSON.

The parts the shared record schema knows (machine, software, container) come from :mod:`torchrig.results.records`, so a
benchmark record and a task record of the same machine carry the same fingerprint. The rest -- GPU properties,
cuDNN/MIOpen and NCCL versions, clocks and power limits from ``nvidia-smi``/``rocm-smi`` where they answer -- goes
alongside. Every probe is optional: a missing tool or an unreadable value is recorded as absent, never fatal.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict
from typing import Any

from bench.flags import read_flags
from bench.harness import TorchDevice
from bench.peaks import lookup
from torchrig.results.contract import (
    ACCELERATOR_ENV,
    CONTAINER_ENV_VARS,
    ENV_ID_ENV,
    TORCH_VERSION_ENV,
    recorded_user_env,
)
from torchrig.results.records import collect_container, collect_machine, collect_software

__all__ = ["ENV_VARS", "environment", "smi"]

# What torchrig hands a container, and what the image itself says it is (on the host: what the user set).
ENV_VARS: tuple[str, ...] = (*CONTAINER_ENV_VARS, ACCELERATOR_ENV, TORCH_VERSION_ENV)

_NVIDIA_FIELDS = (
    "index", "name", "driver_version", "memory.total", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem",
    "power.limit", "power.max_limit", "pstate", "temperature.gpu", "persistence_mode", "compute_mode",
)


def _run(cmd: list[str], timeout: float = 20) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def smi(accelerator: str) -> dict[str, Any] | None:
    """Clocks, power limits and similar from the vendor tool, or None where it is absent or fails."""
    if accelerator == "cuda":
        # nvidia-smi rejects the whole query if one field is unknown to this driver: fall back to the basics
        for fields in (_NVIDIA_FIELDS, _NVIDIA_FIELDS[:4]):
            text = _run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
            if text:
                gpus = [dict(zip(fields, (v.strip() for v in line.split(",")), strict=False))
                        for line in text.strip().splitlines()]
                return {"tool": "nvidia-smi", "units": "MiB, MHz, W, C", "gpus": gpus}
        return None
    if accelerator == "rocm":
        text = _run(["rocm-smi", "--showproductname", "--showdriverversion", "--showclocks", "--showmaxpower",
                     "--showpower", "--json"])
        if not text:
            return None
        try:
            return {"tool": "rocm-smi", "data": json.loads(text)}
        except json.JSONDecodeError:
            return {"tool": "rocm-smi", "raw": text[:4000]}
    return None


def _gpu(device: TorchDevice) -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(device.torch_device)
    info: dict[str, Any] = {
        "name": props.name,
        "memory_gb": round(props.total_memory / 2**30, 2),
        "multiprocessors": props.multi_processor_count,
        "capability": f"{props.major}.{props.minor}",
        "count": torch.cuda.device_count(),
    }
    arch = getattr(props, "gcnArchName", None)
    if arch:
        info["gcn_arch"] = arch
    try:
        nccl = torch.cuda.nccl.version()
        info["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
    except Exception:  # noqa: BLE001 - no NCCL/RCCL in this build
        info["nccl"] = None
    peak = lookup(props.name, props.multi_processor_count)
    info["spec_peak"] = peak.as_dict() if peak else None
    return info


def environment(device: TorchDevice) -> dict[str, Any]:
    """Everything that makes this run's numbers comparable (or not) with another's."""
    import torch

    software = collect_software()
    container = collect_container()
    env: dict[str, Any] = {
        "device": device.name,
        "accelerator": device.accelerator,
        "env_id": os.environ.get(ENV_ID_ENV),
        "env_vars": {k: os.environ.get(k) for k in ENV_VARS},
        # what the user passed with --env (NCCL_*, ...): names and values, secret-looking values as "<set>"
        "user_env": recorded_user_env(),
        "machine": asdict(collect_machine(device.type)),
        "software": asdict(software),
        "container": asdict(container) if container else None,
        # cuDNN on CUDA builds; torch reports the MIOpen version through the same call on ROCm builds
        "dnn_library": ("MIOpen" if device.accelerator == "rocm" else "cuDNN") if software.cudnn else None,
        "flags_at_start": read_flags(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "hip_visible_devices": os.environ.get("HIP_VISIBLE_DEVICES"),
        "torch_threads": torch.get_num_threads(),
        "gpu": _gpu(device) if device.type == "cuda" else None,
        "smi": smi(device.accelerator),
    }
    return env
