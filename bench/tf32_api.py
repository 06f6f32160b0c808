"""Which TF32 API to drive on each torch release: the release ranges are data, each row with its source.

torch >= 2.9 has two ways to set TF32: the legacy flags (``torch.backends.cuda.matmul.allow_tf32``,
``torch.backends.cudnn.allow_tf32``) and the per-backend ``fp32_precision`` attributes. After a write through the new
API, the legacy getters (and ``torch.get_float32_matmul_precision()``) raise "you have used mix of the legacy and new
APIs" -- and inductor still calls them while it compiles, so a TF32 ``torch.compile`` case fails (pytorch#166387,
reported on 2.9 and 2.10; the readers' migration, pytorch#173731 / #189955, had not reached a release we could
check). The legacy setters, on the other hand, also update the new per-backend state, so after a legacy write
both families of getters answer. The rule is therefore: the legacy API on every release where it exists and
inductor reads it; the new API only from a release shown to have migrated every reader (none listed yet).

Checked on torch 2.14.1 (this project's venv, 2026-12-06): after ``torch.backends.cuda.matmul.fp32_precision =
"tf32"``, ``torch.get_float32_matmul_precision()`` and ``torch.backends.cuda.matmul.allow_tf32`` both raise
RuntimeError; after ``allow_tf32 = True`` the new getters read ``"tf32"``; and 2.14.1's
``torch/_inductor/kernel/conv.py`` still reads ``torch.backends.cudnn.allow_tf32`` and ``codecache.py`` still calls
``torch.get_float32_matmul_precision()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["TF32_RANGES", "Tf32Api", "Tf32Choice", "choose_api", "parse_release"]

Tf32Api = Literal["allow_tf32", "fp32_precision"]


@dataclass(frozen=True, kw_only=True)
class Tf32Range:
    first: tuple[int, int]  # first release (major, minor) of the range, inclusive
    end: tuple[int, int] | None  # first release after the range; None: open-ended
    api: Tf32Api
    why: str


TF32_RANGES: tuple[Tf32Range, ...] = (
    Tf32Range(first=(2, 0), end=(2, 9), api="allow_tf32",
              why="fp32_precision does not exist before torch 2.9 (torch 2.9 release notes, notes/cuda.html)"),
    Tf32Range(first=(2, 9), end=(2, 15), api="allow_tf32",
              why="inductor reads the legacy getters, which raise after a write through fp32_precision "
                  "(pytorch#166387; seen in 2.9/2.10 reports, checked in 2.14.1's inductor sources); the legacy "
                  "setters keep the new state in step"),
)


@dataclass(frozen=True)
class Tf32Choice:
    api: Tf32Api
    why: str
    known_release: bool  # False: a release outside TF32_RANGES (chosen by what the module offers)


def parse_release(version: str) -> tuple[int, int] | None:
    """``(2, 9)`` for ``"2.9.1+cu128"`` / ``"2.10.0a0+git..."``; None when it does not start with N.N."""
    m = re.match(r"\s*(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def choose_api(version: str, *, has_legacy: bool, has_new: bool) -> Tf32Choice:
    """The API to use for torch ``version``, given which attributes this torch offers."""
    release = parse_release(version)
    if release is not None:
        for r in TF32_RANGES:
            if r.first <= release and (r.end is None or release < r.end):
                api: Tf32Api = r.api
                if api == "allow_tf32" and not has_legacy and has_new:  # a build without the legacy flags
                    return Tf32Choice("fp32_precision", f"{r.why}; but this build has no allow_tf32", True)
                return Tf32Choice(api, r.why, True)
    # Outside the table: the legacy flags while they exist (safe with inductor, see the module docstring).
    if has_legacy:
        return Tf32Choice("allow_tf32", f"torch {version} is not in bench/tf32_api.py's table; the legacy flags "
                          "exist and are safe with inductor", False)
    return Tf32Choice("fp32_precision", f"torch {version} is not in bench/tf32_api.py's table and has no legacy "
                      "flags", False)
