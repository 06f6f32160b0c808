"""Extras that contradict a runtime pin compat.yaml gives a torch release (``runtime_pins``)."""

from __future__ import annotations

import re

from torchrig.matrix.compat import Compat
from torchrig.matrix.model import requirement_name

__all__ = ["runtime_pin_problems"]

_SPEC_RE = re.compile(r"(===|==|~=|!=|<=|>=|<|>)\s*(\d+(?:\.\d+)*)")


def _bounds(requirement: str) -> list[tuple[str, tuple[int, ...]]]:
    """``[(operator, version)]`` of a requirement's specifiers (``setuptools>=82,<90`` -> [(">=", (82,)), ...])."""
    spec = re.sub(r"^\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[^\]]*\])?", "", requirement).split(";", 1)[0]
    return [(m.group(1), tuple(int(x) for x in m.group(2).split("."))) for m in _SPEC_RE.finditer(spec)]


def runtime_pin_problems(torch: str, extras: tuple[str, ...] | list[str], compat: Compat) -> list[str]:
    """Extras that contradict a runtime pin compat.yaml gives this torch (``runtime_pins``): e.g. a row pinning
    ``setuptools>=82`` for torch 2.0.1, whose cpp_extension imports the pkg_resources that 82 removed."""
    problems = []
    for pin in compat.pins_for(torch):
        caps = [v for op, v in _bounds(pin.requirement) if op == "<"]  # the pins are upper bounds
        if not caps:
            continue
        cap = min(caps)
        for req in extras:
            if requirement_name(req) != requirement_name(pin.requirement):
                continue
            if any(op in (">=", ">", "==", "===", "~=") and v >= cap for op, v in _bounds(req)):
                problems.append(f"{req!r} contradicts {pin.requirement!r}, which torch {torch} needs "
                                f"({pin.why}; compat.yaml runtime_pins): drop the pin (torchrig adds "
                                f"{pin.requirement!r}) or pin below {'.'.join(map(str, cap))}")
    return problems
