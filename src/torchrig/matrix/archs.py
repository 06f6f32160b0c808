"""GPU architectures: which ones a torch wheel carries code for, what a GPU is, and whether one runs on the other.

The data is in ``compat.yaml`` (``wheel_archs``, ``cuda_driver_floor``, ``gpus``, each with its sources); this
module holds the data and applies the rule of :mod:`torchrig.results.archs` (shared with the tasks in the image):

* NVIDIA: a cubin built for ``sm_XY`` runs on every GPU of the same major with minor >= Y (``sm_80`` runs on
  ``sm_86`` and ``sm_89``, not on ``sm_90`` or ``sm_75``); PTX for ``compute_XY`` is JIT-compiled by the driver for
  any GPU >= XY, when the driver is at least the toolkit's full-feature minimum (minor-version compatibility,
  between the major's floor and that minimum, runs cubins only).
* AMD: a code object for ``gfxNNN`` runs on exactly that target (no forward compatibility, no JIT).
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from typing import Any, Literal

from torchrig.matrix.compat import parse_version, read_packaged
from torchrig.results.archs import kernel_for

__all__ = [
    "ArchData",
    "Gpu",
    "Support",
    "WheelArchs",
    "cuda_runs",
    "load_arch_data",
    "parse_arch",
    "parse_arch_list",
    "parse_driver",
]

Vendor = Literal["nvidia", "amd"]
_SM_RE = re.compile(r"^(?:sm_?|compute_?)?(\d{1,2})(\d)$|^(\d{1,2})\.(\d)$")
_GFX_RE = re.compile(r"^gfx[0-9]{2,4}[a-f]?$")
_DRIVER_RE = re.compile(r"^\d{2,4}(\.\d{1,3}){0,2}$")


def parse_arch(text: str) -> str:
    """Normalise ``sm_90``, ``sm90``, ``9.0``, ``90`` to ``sm_90`` and ``gfx942`` to itself; ValueError if neither."""
    t = text.strip().lower()
    if _GFX_RE.match(t):
        return t
    m = _SM_RE.match(t)
    if m:
        major, minor = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        return f"sm_{int(major)}{minor}"
    raise ValueError(f"{text!r} is not a GPU architecture (write sm_90, 9.0 or gfx942)")


def parse_driver(text: str) -> str:
    """A driver version as nvidia-smi prints it (``580.65.06``, ``550``); ValueError for anything else."""
    t = text.strip()
    if not _DRIVER_RE.match(t):
        raise ValueError(f"{text!r} is not an NVIDIA driver version (write it as nvidia-smi prints it, e.g. "
                         "580.65.06)")
    return t


@dataclass(frozen=True, kw_only=True)
class WheelArchs:
    """The code one wheel variant carries: cubins (``sm_XY`` / ``gfxNNN``) and PTX (``compute_XY``)."""

    cubins: tuple[str, ...]
    ptx: tuple[str, ...]
    source: str
    verified: bool

    @property
    def vendor(self) -> Vendor:
        return "amd" if any(a.startswith("gfx") for a in self.cubins) else "nvidia"

    def describe(self) -> str:
        return ", ".join((*self.cubins, *self.ptx))


def parse_arch_list(text: str, *, source: str = "", verified: bool = True) -> WheelArchs:
    """A TORCH_CUDA_ARCH_LIST / PYTORCH_ROCM_ARCH string (``"7.5;8.0;12.0+PTX"``, ``"gfx90a;gfx942"``)."""
    cubins: list[str] = []
    ptx: list[str] = []
    for item in re.split(r"[;\s]+", text.strip()):
        if not item:
            continue
        base, plus = item.upper().removesuffix("+PTX"), item.upper().endswith("+PTX")
        arch = parse_arch(base)
        cubins.append(arch)
        if plus:
            ptx.append(arch.replace("sm_", "compute_"))
    return WheelArchs(cubins=tuple(cubins), ptx=tuple(ptx), source=source, verified=verified)


@dataclass(frozen=True, kw_only=True)
class Support:
    """Whether a wheel runs on a GPU: ``ok`` None when it cannot be decided; ``via`` the code that would run."""

    ok: bool | None
    via: str | None  # "sm_86 cubin", "compute_120 PTX (JIT)", None
    reason: str


def cuda_runs(wheel: WheelArchs, arch: str, *, jit: bool = True) -> Support:
    """The CUDA rule (:func:`torchrig.results.archs.kernel_for`): a cubin of the same major and a lower-or-equal
    minor, else PTX of an arch <= the GPU's. ``jit`` False (a driver in minor-version compatibility) leaves only
    cubins."""
    kernel = kernel_for(arch, (*wheel.cubins, *wheel.ptx), jit=jit)
    if kernel is not None:
        via = f"{kernel} cubin" if kernel.startswith("sm_") else f"{kernel} PTX (JIT)"
        return Support(ok=True, via=via, reason="")
    why = f"no kernels for {arch}"
    if (ptx := kernel_for(arch, wheel.ptx)) is not None:
        why += f" except {ptx} PTX, which this driver cannot JIT (below the full-feature minimum)"
    return Support(ok=False, via=None, reason=why)


def rocm_runs(wheel: WheelArchs, arch: str) -> Support:
    if kernel_for(arch, wheel.cubins) is not None:
        return Support(ok=True, via=f"{arch} code object", reason="")
    return Support(ok=False, via=None, reason=f"no kernels for {arch}")


@dataclass(frozen=True, kw_only=True)
class Gpu:
    """A GPU as a machine describes it: its name (if known) and architecture."""

    name: str | None
    arch: str

    @property
    def vendor(self) -> Vendor:
        return "amd" if self.arch.startswith("gfx") else "nvidia"

    @property
    def label(self) -> str:
        return f"{self.arch} ({self.name})" if self.name else self.arch


@dataclass(frozen=True, kw_only=True)
class ArchData:
    wheels: dict[tuple[str, str], WheelArchs]  # (torch minor, flavour) -> archs
    driver_floor: dict[str, str]  # CUDA major -> the oldest driver that runs it (minor-version compatibility)
    _gpus: tuple[tuple[re.Pattern[str], str, str], ...]

    def wheel(self, torch: str, flavour: str) -> WheelArchs | None:
        return self.wheels.get((".".join(torch.split(".")[:2]), flavour))

    def gpu(self, name: str) -> Gpu:
        """The GPU a name describes; ValueError naming close matches for an unknown one."""
        for pattern, canonical, arch in self._gpus:
            if pattern.search(name):
                return Gpu(name=name.strip() or canonical, arch=arch)
        known = [c for _, c, _ in self._gpus]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown GPU {name!r}{hint}. Give its architecture instead (--gpu-arch sm_90 / gfx942), "
                         "or add it to `gpus:` in src/torchrig/matrix/compat.yaml")

    def known_gpus(self) -> tuple[Gpu, ...]:
        """Every GPU family of compat.yaml's ``gpus:`` table, in its order."""
        return tuple(Gpu(name=canonical, arch=arch) for _, canonical, arch in self._gpus)

    def gpu_name(self, arch: str) -> str | None:
        names = [c for _, c, a in self._gpus if a == arch]
        return " / ".join(names) if names else None

    def newest_with(self, gpu: Gpu) -> tuple[str, str] | None:
        """The newest (torch minor, flavour) whose wheel runs on ``gpu`` (cubin or PTX), or None."""
        found = [(k, w) for k, w in self.wheels.items() if w.vendor == gpu.vendor and
                 (cuda_runs(w, gpu.arch).ok if gpu.vendor == "nvidia" else rocm_runs(w, gpu.arch).ok)]
        if not found:
            return None
        return max(found, key=lambda kw: (parse_version(kw[0][0]), kw[0][1]))[0]

    def cuda_floor(self, cuda: str) -> str | None:
        return self.driver_floor.get(cuda.split(".", maxsplit=1)[0])


def _from_data(data: dict[str, Any]) -> ArchData:
    wheels = {}
    for minor, variants in (data.get("wheel_archs") or {}).items():
        for flavour, entry in variants.items():
            wheels[(str(minor), str(flavour))] = parse_arch_list(
                str(entry["archs"]), source=str(entry.get("source", "")), verified=bool(entry.get("verified", True)))
    gpus = tuple((re.compile(g["match"], re.IGNORECASE), str(g["name"]), str(g["arch"]))
                 for g in data.get("gpus") or [])
    floor = {str(k): str(v) for k, v in (data.get("cuda_driver_floor") or {}).items()}
    return ArchData(wheels=wheels, driver_floor=floor, _gpus=gpus)


@functools.cache
def load_arch_data() -> ArchData:
    """compat.yaml's arch keys, read like :func:`~torchrig.matrix.compat.load_compat` reads the rest."""
    return read_packaged(_from_data, "the GPU architecture keys (wheel_archs, cuda_driver_floor, gpus) cannot be "
                                     "read")
