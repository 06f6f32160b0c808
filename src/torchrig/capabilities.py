"""What the torch in this process can do, decided once for tasks/ and bench/: torch.compile on this Python, a
GradScaler for a device.

Runs inside the images: the standard library and torch (imported lazily) only. Which Python torch.compile supports
per torch release is a fact of compat.yaml (``compile_max_python``). An image may have no PyYAML to read it, so
:func:`compile_support` asks, in order: ``$TORCHRIG_COMPILE_MAX_PYTHON`` (``torchrig run-tasks`` / ``run-bench``
pass it from the compat data), :mod:`torchrig.matrix.compat` (on a host where torchrig is installed), and else
says it does not know -- then callers try torch.compile and report a failure as a skip with its reason.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torchrig.results.contract import COMPILE_MAX_PYTHON_ENV

__all__ = ["CompileSupport", "compile_support", "grad_scaler", "torch_minor"]

_MINOR_RE = re.compile(r"(\d+)\.(\d+)")


def _minor(text: str) -> tuple[int, int] | None:
    m = _MINOR_RE.match(text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def torch_minor(version: str | None = None) -> str:
    """``"2.9"`` for torch ``2.9.1+cu128`` (``version`` defaults to the installed torch's)."""
    if version is None:
        import torch

        version = str(torch.__version__)
    m = _minor(version)
    return f"{m[0]}.{m[1]}" if m else version


@dataclass(frozen=True, kw_only=True)
class CompileSupport:
    """The newest Python torch.compile supports with this torch (None: unknown), and where that came from."""

    torch: str  # the torch minor release, "2.9"
    max_python: str | None
    source: str

    @property
    def known(self) -> bool:
        return self.max_python is not None

    def limitation(self, python: tuple[int, int] | None = None) -> str | None:
        """The known-limitation message when torch.compile cannot work on ``python`` (default: this one)."""
        py = python or (sys.version_info[0], sys.version_info[1])
        top = _minor(self.max_python) if self.max_python else None
        if top is None or py <= top:
            return None
        return (f"known limitation: torch.compile in torch {self.torch} supports Python up to {self.max_python} "
                f"({self.source}), this is Python {py[0]}.{py[1]}: use a newer torch for torch.compile")


    def failure_skip(self, error: BaseException) -> str | None:
        """When support is unknown, the skip reason for a torch.compile that failed with ``error``; else None (a
        failure where support is known is a real failure)."""
        if self.known:
            return None
        text = str(error).strip()
        first = text.splitlines()[0] if text else ""
        py = sys.version_info
        return (f"torch.compile skipped: it failed ({type(error).__name__}: {first}) and its support for Python "
                f"{py[0]}.{py[1]} in torch {self.torch} is unknown here ({self.source})")


def compile_support(torch_version: str | None = None, environ: Mapping[str, str] | None = None) -> CompileSupport:
    """Where torch.compile works for ``torch_version`` (default: the installed torch); see the module docstring."""
    minor = torch_minor(torch_version)
    env = os.environ if environ is None else environ
    given = (env.get(COMPILE_MAX_PYTHON_ENV) or "").strip()
    if given:
        if _minor(given) is None:
            return CompileSupport(torch=minor, max_python=None,
                                  source=f"${COMPILE_MAX_PYTHON_ENV}={given!r} is not a Python version such as 3.12")
        return CompileSupport(torch=minor, max_python=given, source=f"${COMPILE_MAX_PYTHON_ENV}")
    try:
        from torchrig.matrix.compat import load_compat

        release = load_compat().release(minor)
    except (ImportError, OSError) as e:  # an image without PyYAML (or without the compat data)
        return CompileSupport(torch=minor, max_python=None, source=f"no compat data here ({type(e).__name__}: {e})")
    if release is None:
        return CompileSupport(torch=minor, max_python=None, source=f"torch {minor} is not in compat.yaml")
    return CompileSupport(torch=minor, max_python=release.compile_max_python, source="compat.yaml")


def grad_scaler(device_type: str = "cuda", *, enabled: bool = True) -> Any:
    """A GradScaler for ``device_type``: ``torch.amp.GradScaler`` from torch 2.3, ``torch.cuda.amp`` before (CUDA
    only: there was no CPU scaler then, and this raises RuntimeError)."""
    import torch

    amp = getattr(torch, "amp", None)
    if amp is not None and hasattr(amp, "GradScaler"):
        return amp.GradScaler(device_type, enabled=enabled)
    if device_type == "cuda":
        return torch.cuda.amp.GradScaler(enabled=enabled)
    raise RuntimeError(f"no GradScaler for {device_type} in torch {torch.__version__}")
