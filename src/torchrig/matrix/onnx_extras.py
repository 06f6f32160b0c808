"""Which onnx / onnxruntime / numpy pins in an environment's extras can work with its torch.

torch < 2.3 is built against numpy 1.x and breaks under numpy 2, so those rows pin ``numpy<2``. onnxruntime before
1.19 and onnx before 1.17 are built against numpy 1.x too (onnxruntime 1.18's own metadata says ``numpy<2.0``), so
a row that runs numpy 2 cannot use them. :func:`onnx_extras_problems` names every such conflict in a row's extras.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["NUMPY2_FIRST", "onnx_extras_problems"]

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


def _show(name: str, specs: list[tuple[str, tuple[int, ...]]]) -> str:
    return name + ",".join(f"{op}{'.'.join(map(str, v))}" for op, v in specs)
