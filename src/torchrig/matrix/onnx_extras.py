"""Which onnx / onnxruntime / numpy pins in an environment's extras can work with its torch.

torch < 2.3 is built against numpy 1.x and breaks under numpy 2, so those rows pin ``numpy<2``. onnxruntime before
1.19 and onnx before 1.17 are built against numpy 1.x too (onnxruntime 1.18's own metadata says ``numpy<2.0``), so
a row that runs numpy 2 cannot use them. :func:`onnx_extras_problems` names every such conflict in a row's extras.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["NUMPY2_FIRST", "ORT_GPU_CUDA", "onnx_extras_problems", "onnxruntime_build_advice"]

# The first release of each package that works with numpy 2 (older ones are built against numpy 1.x).
NUMPY2_FIRST = {"torch": (2, 3), "onnxruntime": (1, 19), "onnxruntime-gpu": (1, 19), "onnx": (1, 17)}
_PIN_RE = re.compile(r"^\s*([A-Za-z0-9._-]+)\s*(?:\[[^\]]*\])?\s*(.*?)\s*(?:;.*)?$")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _specs(extras: Sequence[str]) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """canonical name -> [(operator, version)] of its specifiers, for every extra (unpinned ones: [])."""
    out: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for req in extras:
        m = _PIN_RE.match(req)
        if not m:
            continue
        name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
        out.setdefault(name, [])
        for part in filter(None, (p.strip() for p in m.group(2).split(","))):
            op = re.match(r"(===|==|~=|!=|<=|>=|<|>)", part)
            if op and _version(part[op.end():]):
                out.setdefault(name, []).append((op.group(1), _version(part[op.end():])))
    return out


def onnx_extras_problems(torch: str, extras: Sequence[str]) -> list[str]:
    """Why this row's onnx/onnxruntime/numpy pins cannot work with torch ``torch`` (empty when they can)."""
    specs = _specs(extras)
    numpy = specs.get("numpy", [])
    # numpy 1.x: an upper bound at or below 2.0, or an exact/compatible pin of a 1.x release.
    numpy1 = any((op in ("<", "<=") and v <= (2,)) or (op in ("==", "===", "~=") and v < (2,)) for op, v in numpy)
    numpy2 = any(op in (">=", ">", "==", "===", "~=") and v >= (2,) for op, v in numpy)
    old_torch = _version(torch)[:2] < NUMPY2_FIRST["torch"]
    problems: list[str] = []
    if old_torch and numpy2:
        problems.append(f"torch {torch} is built against numpy 1.x: pin 'numpy<2', not {_show('numpy', numpy)}")
    onnx_pkgs = [p for p in ("onnx", "onnxruntime", "onnxruntime-gpu") if p in specs]
    if old_torch and onnx_pkgs and not numpy1:
        problems.append(f"torch {torch} needs numpy 1.x but nothing keeps {' and '.join(onnx_pkgs)} from bringing "
                        "numpy 2: add 'numpy<2' to extras")
    if not old_torch and not numpy1:
        for pkg in ("onnx", "onnxruntime", "onnxruntime-gpu"):
            first = NUMPY2_FIRST[pkg]
            for op, v in specs.get(pkg, []):
                if op in ("==", "===", "<", "<=", "~=") and (v < first or (op == "<" and v <= first)):
                    problems.append(f"{_show(pkg, [(op, v)])} is built against numpy 1.x and this row runs "
                                    f"numpy 2 (torch {torch}): use {pkg}>={'.'.join(map(str, first))}, or pin "
                                    "'numpy<2'")
    return problems


# Which CUDA major each onnxruntime-gpu release on PyPI is built for: [first, last+1) -> (CUDA major, what it needs).
# 1.19.0 moved PyPI's onnxruntime-gpu from CUDA 11.8 + cuDNN 8 to CUDA 12 + cuDNN 9 (onnxruntime#21769, and the CUDA
# EP requirements page); the wheels' METADATA: 1.22.0 and 1.26.0 require nvidia-*-cu12, 1.27.0 nvidia-*-cu13~=13.0
# (read from PyPI's .whl.metadata files, 2026-12-06; 1.26.0 is the last CUDA 12 release there).
ORT_GPU_CUDA: tuple[tuple[tuple[int, ...], tuple[int, ...], int, int, str], ...] = (
    ((1,), (1, 19), 11, 8, "onnxruntime-gpu==1.18.1"),
    ((1, 19), (1, 27), 12, 9, "onnxruntime-gpu==1.26.0"),
    ((1, 27), (99,), 13, 9, "onnxruntime-gpu==1.31.1"),
)
# cuDNN major in torch's CUDA wheels: 8 before torch 2.4 (2.3's cu121 pins nvidia-cudnn-cu12 8.9), 9 from 2.4.
CUDNN9_FIRST_TORCH = (2, 4)


def onnxruntime_build_advice(torch: str, cuda: str | None, extras: Sequence[str]) -> tuple[list[str], list[str]]:
    """(problems, warnings) of a CUDA row's onnxruntime build: an onnxruntime-gpu built for another CUDA major is a
    problem; the CPU-only onnxruntime where a GPU build on PyPI fits the row is a warning (the export task then runs
    ONNX on the CPU and skips its GPU provider check, saying so)."""
    if not cuda or not _version(cuda):
        return [], []
    specs, major = _specs(extras), _version(cuda)[0]
    cudnn = 9 if _version(torch)[:2] >= CUDNN9_FIRST_TORCH else 8
    fits = [pin for _lo, _hi, cu, dnn, pin in ORT_GPU_CUDA if cu == major and dnn == cudnn]
    problems: list[str] = []
    for op, v in specs.get("onnxruntime-gpu", []):
        if op not in ("==", "==="):
            continue
        built = next(((cu, dnn) for lo, hi, cu, dnn, _pin in ORT_GPU_CUDA if lo <= v < hi), None)
        if built and (built[0] != major or built[1] != cudnn):
            use = f"use {fits[0]}" if fits else "no onnxruntime-gpu on PyPI fits it: use the CPU onnxruntime"
            problems.append(f"{_show('onnxruntime-gpu', [(op, v)])} is built for CUDA {built[0]} + cuDNN {built[1]}; "
                            f"this row runs CUDA {cuda} with torch {torch}'s cuDNN {cudnn}: {use}")
    warnings = []
    if "onnxruntime" in specs and "onnxruntime-gpu" not in specs and fits:
        warnings.append(f"extras install the CPU-only onnxruntime on a CUDA {cuda} row: the export task runs ONNX on "
                        f"the CPU here; {fits[0]} fits this row")
    return problems, warnings


def _show(name: str, specs: list[tuple[str, tuple[int, ...]]]) -> str:
    return name + ",".join(f"{op}{'.'.join(map(str, v))}" for op, v in specs)
