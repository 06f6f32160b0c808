"""Whether a torch build has GPU code for a device: the cubin/PTX rule, defined once (standard library only).

Used on the host (:mod:`torchrig.matrix.archs`, doctor: a wheel's arch list from compat.yaml against a described GPU)
and in the image (``tasks/_torchsupport.py``: ``torch.cuda.get_arch_list()`` against the visible device), so both
sides decide alike. Entries are written as ``torch.cuda.get_arch_list()`` writes them:

* NVIDIA: a cubin ``sm_XY`` runs on any device of the same major with minor >= Y (``sm_80`` runs on ``sm_86``, not
  on ``sm_90`` or ``sm_75``); arch-specific code (``sm_90a``) only on its own arch. PTX ``compute_XY`` is
  JIT-compiled by the driver for any device >= XY, where the driver can JIT (``jit``; a driver in CUDA minor-version
  compatibility cannot).
* AMD: a code object for ``gfxNNN`` runs on exactly that target (no forward compatibility, no JIT).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["kernel_for", "parse_sm"]

_SM_RE = re.compile(r"^(sm|compute)_(\d+?)(\d)([a-z]?)$")


def parse_sm(entry: str) -> tuple[str, int, int, str] | None:
    """``("sm", 9, 0, "a")`` for ``sm_90a``, ``("compute", 12, 0, "")`` for ``compute_120``; None for anything else."""
    m = _SM_RE.match(entry.strip())
    return (m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)) if m else None


def kernel_for(device: str, arch_list: Sequence[str], *, jit: bool = True) -> str | None:
    """The entry of ``arch_list`` whose code would run on ``device`` (``sm_90``, ``gfx942``): the newest matching
    cubin, else (``jit``) the newest PTX at or below the device; None when nothing runs, or ``device`` is neither
    an ``sm_XY`` nor a ``gfx`` target."""
    entries = [a.strip() for a in arch_list if a.strip()]
    if device.startswith("gfx"):
        return device if device in entries else None
    dev = parse_sm(device)
    if dev is None:
        return None
    _, major, minor, _ = dev
    cubins: list[tuple[tuple[int, int], str]] = []
    ptx: list[tuple[tuple[int, int], str]] = []
    for entry in entries:
        e = parse_sm(entry)
        if e is None:
            continue
        kind, emaj, emin, suffix = e
        if kind == "sm" and emaj == major and (emin == minor if suffix else emin <= minor):
            cubins.append(((emaj, emin), entry))
        elif kind == "compute" and not suffix and (emaj, emin) <= (major, minor):
            ptx.append(((emaj, emin), entry))
    if cubins:
        return max(cubins)[1]
    return max(ptx)[1] if ptx and jit else None
