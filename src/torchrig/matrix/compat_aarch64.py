"""``torchrig compat-check`` for compat.yaml's ``aarch64`` table (which Linux aarch64 torch builds an index lists)
and its ``free_threaded`` table (the cp3XXt wheels of torch and torchvision).

PyPI carries one aarch64 build per release: compared with ``pypi``, and where the index serves core metadata
(PEP 658) its CUDA is read from the wheel's own pins (those whose marker limits them to x86_64 do not count: 2.9's
aarch64 wheel lists the x86_64 nvidia-* pins, and is a CPU build). The PyTorch index is compared with ``index``
(a plain aarch64 wheel there is the CPU build). An index that lists no Linux aarch64 wheel at all (a mirror of the
x86_64 files) is not compared, and the report says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from torchrig.matrix.compat import Compat
from torchrig.matrix.simple_index import IndexFile, parse_wheel

__all__ = ["aarch64_diffs", "aarch64_flavour", "free_threaded_diffs", "observe_aarch64", "observe_free_threaded"]

Arm = dict[str, dict[str, IndexFile]]  # version -> local label ("" = plain) -> one file
_FINAL = re.compile(r"^\d+\.\d+\.\d+$")
_FT_ABI = re.compile(r"^cp3(\d+)t$")
_X86_ONLY = re.compile(r"platform_machine\s*==\s*['\"]x86_64['\"]")


def observe_aarch64(files: Iterable[IndexFile]) -> Arm:
    out: Arm = {}
    for f in files:
        w = parse_wheel(f.filename)
        if w is None or f.yanked or not _FINAL.match(w.version):
            continue
        if any(p.endswith("aarch64") and (p.startswith("linux") or p.startswith("manylinux")) for p in w.platforms):
            out.setdefault(w.version, {}).setdefault(w.local, f)
    return out


def aarch64_flavour(requires: Iterable[str], cuda_of: Callable[[Iterable[str]], str | None]) -> str:
    """``cpu`` or ``cuXYZ``: the build an aarch64 wheel is, from its Requires-Dist (x86_64-only pins left out)."""
    cuda = cuda_of(r for r in requires if not _X86_ONLY.search(r))
    return "cpu" if cuda is None else "cu" + cuda.replace(".", "")


def aarch64_diffs(compat: Compat, arm: Arm, *, versions: Iterable[str], pypi: bool,
                  read_metadata: Callable[[IndexFile], list[str]] | None,
                  cuda_of: Callable[[Iterable[str]], str | None]) -> tuple[list[str], list[str]]:
    """(disagreements, notes) between compat.yaml's aarch64 table and the aarch64 wheels of ``versions``."""
    if not arm:
        return [], ["aarch64 not compared: the index lists no Linux aarch64 torch wheels"]
    diffs: list[str] = []
    unread = False
    for version in versions:
        wheels = compat.aarch64.get(".".join(version.split(".")[:2]))
        if wheels is None:
            continue
        have = arm.get(version, {})
        if pypi:
            if ("" in have) != (wheels.pypi is not None):
                diffs.append(f"- torch {version}: no aarch64 wheel (compat.yaml aarch64: {wheels.describe()})"
                             if wheels.pypi else f"+ torch {version}: aarch64 wheels, compat.yaml aarch64 says none")
            elif "" in have and (read_metadata is None or not have[""].has_metadata):
                unread = True
            elif "" in have and read_metadata is not None:
                got = aarch64_flavour(read_metadata(have[""]), cuda_of)
                if got != wheels.pypi:
                    diffs.append(f"+ torch {version}: PyPI's aarch64 wheel is the {got} build, compat.yaml aarch64 "
                                 f"says {wheels.pypi}")
            continue
        seen = {local or "cpu" for local in have}
        want = set(wheels.index)
        if missing := sorted(want - seen):
            diffs.append(f"- torch {version}: aarch64 builds {', '.join(missing)}")
        if extra := sorted(seen - want):
            diffs.append(f"+ torch {version}: aarch64 builds {', '.join(extra)}")
    notes = ["aarch64 build of PyPI's wheels not read: the index serves no core metadata (PEP 658)"] if unread else []
    return diffs, notes


def observe_free_threaded(files: Iterable[IndexFile]) -> dict[str, set[str]]:
    """version -> the Pythons (``3.14``) with a free-threaded (``cp314t``) Linux x86_64 wheel of it."""
    out: dict[str, set[str]] = {}
    for f in files:
        w = parse_wheel(f.filename)
        if w is None or f.yanked or not w.linux_x86_64 or not _FINAL.match(w.version):
            continue
        for abi in w.abi_tags:
            if m := _FT_ABI.match(abi):
                out.setdefault(w.version, set()).add(f"3.{m.group(1)}")
    return out


def free_threaded_diffs(compat: Compat, torch_ft: dict[str, set[str]], vision_ft: dict[str, set[str]], *,
                        versions: Iterable[str]) -> tuple[list[str], list[str]]:
    """(disagreements, notes): compat.yaml ``free_threaded`` (the Pythons every patch of a minor has free-threaded
    wheels of torch and its torchvision for) against the index. A patch missing one is reported, and a Python all
    the patches compared have that the table lacks (one patch with more, like 2.12.0's cp313t that 2.12.1 dropped,
    is not a disagreement). Minors the table does not list are not compared, nor an index with no cp3XXt wheel."""
    if not torch_ft:
        return [], ["free-threaded Pythons not compared: the index lists no cp3XXt torch wheels"]
    diffs = []
    common: dict[str, set[str]] = {}
    for version in versions:
        minor = ".".join(version.split(".")[:2])
        release = compat.releases.get(minor)
        if minor not in compat.free_threaded or release is None:
            continue
        tv = release.torchvision.get(version)
        both = torch_ft.get(version, set()) & (vision_ft.get(tv, set()) if tv else set())
        common[minor] = common[minor] & both if minor in common else both
        if missing := sorted(set(compat.free_threaded[minor]) - both, key=_py_key):
            diffs.append(f"- torch {version}: free-threaded wheels (with torchvision {tv}) for Python "
                         f"{', '.join(missing)}")
    for minor, pythons in common.items():
        if extra := sorted(pythons - set(compat.free_threaded[minor]), key=_py_key):
            diffs.append(f"+ torch {minor}: free-threaded wheels of every patch compared for Python {', '.join(extra)}")
    return diffs, []


def _py_key(python: str) -> tuple[int, ...]:
    return tuple(map(int, python.split(".")))
