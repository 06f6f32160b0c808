"""The numerics flags a benchmark runs under, set explicitly and read back into the results.

TF32 changes fp32 matmul/convolution throughput several-fold on Ampere and later, and ``cudnn.benchmark`` changes
which convolution algorithms run: a number is meaningless without them. torch >= 2.9 has a new per-backend API
(``fp32_precision``) and raises when it is mixed with the legacy ``allow_tf32`` flags in one process, so exactly
one of the two is used: the one :mod:`bench.tf32_api` names for this torch release (the legacy flags on every release
so far, because inductor still reads them: pytorch#166387).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.tf32_api import Tf32Choice, choose_api

__all__ = ["precision_flags", "read_flags"]


def _has(obj: Any, name: str) -> bool:
    try:  # torch 2.0's matmul backend raises AssertionError (not AttributeError) for unknown attributes
        getattr(obj, name)
    except (AttributeError, AssertionError):
        return False
    except RuntimeError:  # the attribute exists; reading it raised (the mixed-API check)
        return True
    return True


def tf32_choice(torch: Any) -> Tf32Choice:
    """Which TF32 API this torch is driven through, and why (recorded with the flags)."""
    has_new = _has(torch.backends.cuda.matmul, "fp32_precision") and _has(torch.backends.cudnn, "conv")
    has_legacy = _has(torch.backends.cuda.matmul, "allow_tf32") and _has(torch.backends.cudnn, "allow_tf32")
    return choose_api(str(torch.__version__), has_legacy=has_legacy, has_new=has_new)


def _new_api(torch: Any) -> bool:
    return tf32_choice(torch).api == "fp32_precision"


def read_flags() -> dict[str, Any]:
    """The flags in effect now, as JSON-ready values."""
    import torch

    out: dict[str, Any] = {}

    def get(key: str, fn: Any) -> None:
        try:
            v = fn()
            out[key] = v if isinstance(v, (bool, int, float, str)) or v is None else str(v)
        except Exception as e:  # noqa: BLE001 - a flag that cannot be read is recorded as such, not fatal
            out[key] = f"unreadable: {e}"

    choice = tf32_choice(torch)
    out["tf32_api_why"] = choice.why
    if choice.api == "fp32_precision":
        out["tf32_api"] = "fp32_precision"
        get("matmul_fp32_precision", lambda: torch.backends.cuda.matmul.fp32_precision)
        get("cudnn_conv_fp32_precision", lambda: torch.backends.cudnn.conv.fp32_precision)
        get("fp32_precision", lambda: getattr(torch.backends, "fp32_precision", None))
        out["tf32_matmul"] = out["matmul_fp32_precision"] == "tf32"
        out["tf32_cudnn"] = out["cudnn_conv_fp32_precision"] == "tf32"
    else:
        out["tf32_api"] = "allow_tf32"
        get("tf32_matmul", lambda: bool(torch.backends.cuda.matmul.allow_tf32))
        get("tf32_cudnn", lambda: bool(torch.backends.cudnn.allow_tf32))
        get("float32_matmul_precision", torch.get_float32_matmul_precision)
    get("fp16_reduced_precision_reduction",
        lambda: bool(torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction))
    get("bf16_reduced_precision_reduction",
        lambda: bool(torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction))
    get("cudnn_benchmark", lambda: bool(torch.backends.cudnn.benchmark))
    get("cudnn_deterministic", lambda: bool(torch.backends.cudnn.deterministic))
    get("cudnn_enabled", lambda: bool(torch.backends.cudnn.enabled))
    get("deterministic_algorithms", torch.are_deterministic_algorithms_enabled)
    get("num_threads", torch.get_num_threads)
    return out


@contextmanager
def precision_flags(*, tf32: bool, cudnn_benchmark: bool) -> Iterator[dict[str, Any]]:
    """Set TF32 (matmul and cuDNN/MIOpen convolutions) and ``cudnn.benchmark``; yield what is then in effect;
    restore the previous values afterwards."""
    import torch

    new = _new_api(torch)
    if new:
        saved: tuple[Any, ...] = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
        mode = "tf32" if tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    saved_bench = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        yield read_flags()
    finally:
        torch.backends.cudnn.benchmark = saved_bench
        if new:
            torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved
        else:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
