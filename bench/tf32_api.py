"""Which TF32 API to drive on each torch release: the release ranges are compat data (compat.yaml ``tf32_api``,
each range with its reason and source), read through :func:`torchrig.matrix.compat.load_compat`.

torch >= 2.9 has two ways to set TF32: the legacy flags (``torch.backends.cuda.matmul.allow_tf32``,
``torch.backends.cudnn.allow_tf32``) and the per-backend ``fp32_precision`` attributes. After a write through the new
API, the legacy getters (and ``torch.get_float32_matmul_precision()``) raise "you have used mix of the legacy and new
APIs" -- and inductor still calls them while it compiles, so a TF32 ``torch.compile`` case fails (pytorch#166387,
reported on 2.9 and 2.10). The legacy setters, on the other hand, also update the new per-backend state, so after a
legacy write both families of getters answer. The rule is therefore: the legacy API on every release where it exists
and inductor reads it; the new API only from a release shown to have migrated every reader (none listed yet).

Checked on torch 2.14.1 (this project's venv, 2026-12-06): after ``torch.backends.cuda.matmul.fp32_precision =
"tf32"``, ``torch.get_float32_matmul_precision()`` and ``torch.backends.cuda.matmul.allow_tf32`` both raise
RuntimeError; after ``allow_tf32 = True`` the new getters read ``"tf32"``; and 2.14.1's
``torch/_inductor/kernel/conv.py`` still reads ``torch.backends.cudnn.allow_tf32`` and ``codecache.py`` still calls
``torch.get_float32_matmul_precision()``.

Where the compat data cannot be read (an image without PyYAML), every release is "outside the table" and gets the
legacy flags while they exist -- the same answer the table gives for every release it lists today.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

if TYPE_CHECKING:
    from torchrig.matrix.compat import Tf32Range

__all__ = ["Tf32Api", "Tf32Choice", "choose_api", "parse_release", "tf32_ranges"]

Tf32Api = Literal["allow_tf32", "fp32_precision"]


def tf32_ranges() -> tuple[Tf32Range, ...]:
    """compat.yaml's ``tf32_api`` ranges; () where it cannot be read."""
    try:
        from torchrig.errors import FatalError
        from torchrig.matrix.compat import load_compat
    except ImportError:  # no PyYAML in this Python
        return ()
    try:
        return load_compat().tf32_api
    except (FatalError, OSError):
        return ()


@dataclass(frozen=True)
class Tf32Choice:
    api: Tf32Api
    why: str
    known_release: bool  # False: a release outside compat.yaml's tf32_api ranges (chosen by what torch offers)


def parse_release(version: str) -> tuple[int, int] | None:
    """``(2, 9)`` for ``"2.9.1+cu128"`` / ``"2.10.0a0+git..."``; None when it does not start with N.N."""
    m = re.match(r"\s*(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def choose_api(version: str, *, has_legacy: bool, has_new: bool) -> Tf32Choice:
    """The API to use for torch ``version``, given which attributes this torch offers."""
    release = parse_release(version)
    ranges = tf32_ranges()
    if release is not None:
        for r in ranges:
            if r.holds(release):
                api = cast(Tf32Api, r.api)
                if api == "allow_tf32" and not has_legacy and has_new:  # a build without the legacy flags
                    return Tf32Choice("fp32_precision", f"{r.why}; but this build has no allow_tf32", True)
                return Tf32Choice(api, r.why, True)
    # Outside the table: the legacy flags while they exist (safe with inductor, see the module docstring).
    where = ("is not in compat.yaml's tf32_api table" if ranges else
             "has no TF32 rule here (compat.yaml could not be read in this Python)")
    if has_legacy:
        return Tf32Choice("allow_tf32", f"torch {version} {where}; the legacy flags exist and are safe with inductor",
                          False)
    return Tf32Choice("fp32_precision", f"torch {version} {where}, and this build has no legacy flags", False)
