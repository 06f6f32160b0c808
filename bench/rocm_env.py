"""ROCm's environment variables that change what a benchmark measures: set before torch touches the device,
recorded in the run's fingerprint, or the case skipped with the reason.

- ``HIPBLASLT_ALLOW_TF32=1``: on ROCm, ``Context::allowTF32CuBLAS`` returns false unless this variable is ``"1"``
  (pytorch/pytorch#139869, "[AMD] Turn on TF32 for aten::mm", first in torch 2.6; ROCm/pytorch#1803 backports it
  to 2.4 with ``TORCH_BLAS_PREFER_CUBLASLT=1``), so a "tf32" case without it is plain fp32. The suite sets it;
  with torch < 2.6 on ROCm, or when the user set it to something else, the TF32 cases are skipped with the reason
  (:func:`tf32_problem`).
- ``PYTORCH_MIOPEN_SUGGEST_NHWC=1``: PyTorch sends channels-last convolutions to MIOpen's NHWC kernels by default
  only from MIOpen 3.5 (ROCm 7.0; pytorch/pytorch#170947 then limits the default to MI-series GPUs); before that,
  only with this variable (read once, at the first convolution, in older releases). The suite sets it so the
  channels-last cases measure NHWC kernels on every ROCm release.
- ``MIOPEN_USER_DB_PATH`` / ``MIOPEN_CUSTOM_CACHE_DIR``: MIOpen keeps its tuning database under
  ``$HOME/.config/miopen`` and compiled kernels under ``$HOME/.cache/miopen``; a suite container's HOME is
  thrown away (torchrig.container.CONTAINER_HOME), so every run would tune and compile again inside its first
  step. They are pointed into the data directory the suite container already mounts from the host
  (``$TORCHRIG_DATA``, :data:`torchrig.results.contract.DATA_IN`): ``.cache/miopen/{db,kernels}`` there.

A value the user set (``--env NAME=VALUE``) is kept and recorded as theirs. Nothing is set off ROCm.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

from torchrig.results.contract import DATA_ENV

__all__ = ["ROCM_VARS", "TF32_MIN_TORCH", "apply_rocm_env", "tf32_problem"]

ROCM_VARS: tuple[str, ...] = ("HIPBLASLT_ALLOW_TF32", "PYTORCH_MIOPEN_SUGGEST_NHWC", "MIOPEN_USER_DB_PATH",
                              "MIOPEN_CUSTOM_CACHE_DIR")
TF32_MIN_TORCH = (2, 6)  # the first release with pytorch#139869 (HIPBLASLT_ALLOW_TF32)


def _is_rocm(torch: Any) -> bool:
    return bool(getattr(getattr(torch, "version", None), "hip", None))


def _release(version: str) -> tuple[int, int]:
    parts = version.split("+", maxsplit=1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


def _db_dirs(environ: MutableMapping[str, str]) -> tuple[str, str] | str:
    """(user DB dir, kernel cache dir) under the persisted data directory, or why there is none."""
    data = environ.get(DATA_ENV, "")
    if not data:
        return (f"{DATA_ENV} is not set (not in a suite container): MIOpen keeps its defaults under "
                f"HOME={environ.get('HOME', '?')}")
    base = os.path.join(data, ".cache", "miopen")
    dirs = (os.path.join(base, "db"), os.path.join(base, "kernels"))
    try:
        for d in dirs:
            os.makedirs(d, exist_ok=True)
    except OSError as e:
        return (f"{base} is not writable ({e.strerror}): MIOpen tunes into the container's throw-away HOME, so "
                "first-step times include tuning on every run")
    return dirs


def apply_rocm_env(torch: Any, environ: MutableMapping[str, str] | None = None) -> dict[str, Any]:
    """Set the variables above (call after ``import torch``, before the first kernel); return what is in effect,
    for the fingerprint: ``{"applies": bool, "vars": {NAME: {"value", "source"}}, "notes": [...]}``."""
    env = os.environ if environ is None else environ
    if not _is_rocm(torch):
        return {"applies": False, "why": "not a ROCm torch (torch.version.hip is unset)"}
    wanted: dict[str, str] = {"HIPBLASLT_ALLOW_TF32": "1", "PYTORCH_MIOPEN_SUGGEST_NHWC": "1"}
    notes: list[str] = []
    dirs = _db_dirs(env)
    if isinstance(dirs, tuple):
        wanted["MIOPEN_USER_DB_PATH"], wanted["MIOPEN_CUSTOM_CACHE_DIR"] = dirs
    else:
        notes.append(dirs)
    out: dict[str, dict[str, str | None]] = {}
    for name in ROCM_VARS:
        if name in env:
            out[name] = {"value": env[name], "source": "user"}
        elif name in wanted:
            env[name] = wanted[name]
            out[name] = {"value": wanted[name], "source": "bench/rocm_env.py"}
        else:
            out[name] = {"value": None, "source": "unset"}
    problem = tf32_problem(torch, env)
    if problem:
        notes.append(problem)
    return {"applies": True, "hip": str(torch.version.hip), "vars": out, "notes": notes}


def tf32_problem(torch: Any, environ: MutableMapping[str, str] | None = None) -> str | None:
    """Why a TF32 case on this ROCm torch would measure plain fp32 (None off ROCm, or when TF32 is real)."""
    env = os.environ if environ is None else environ
    if not _is_rocm(torch):
        return None
    version = str(getattr(torch, "__version__", "0.0"))
    if _release(version) < TF32_MIN_TORCH:
        return (f"TF32 on ROCm needs torch >= {'.'.join(map(str, TF32_MIN_TORCH))} (pytorch#139869, "
                f"HIPBLASLT_ALLOW_TF32); torch {version} runs a tf32 case as plain fp32")
    if env.get("HIPBLASLT_ALLOW_TF32") != "1":
        return (f"HIPBLASLT_ALLOW_TF32={env.get('HIPBLASLT_ALLOW_TF32')!r} (not '1'): hipBLASLt ignores "
                "allow_tf32, so a tf32 case would be plain fp32")
    return None
