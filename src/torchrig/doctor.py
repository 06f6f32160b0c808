"""``torchrig doctor``: what this host has against what each environment needs, before anything is pulled or built.

The facts are gathered once (:func:`gather`: the engine and its data root, disk, memory, the GPUs and their
architectures, the last measured image sizes, and :mod:`torchrig.engine.hostcheck`'s host facts: driver,
container toolkit/CDI, ``/dev/kfd``, ``/dev/dri``, render group); :func:`diagnose` is a pure decision over those
facts and one environment, so every verdict is unit-tested with made-up hosts. The GPU-architecture and driver
lines come from :mod:`torchrig.doctor_gpu`, which also answers for a machine described on the command line. Each
line is ✓ or ✗ with the fix; ``-`` marks a line that does not apply or could not be checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchrig.container import SHM_SIZE
from torchrig.doctor_gpu import Check, arch_check, driver_check, gpus_served
from torchrig.engine.client import connect, daemon_address
from torchrig.engine.hostcheck import HostFacts, gather_host_facts
from torchrig.errors import DockerUnavailableError
from torchrig.matrix import Environment
from torchrig.matrix.archs import Gpu, parse_arch
from torchrig.results.probe import local_gpus
from torchrig.results.reading import InputFileError, read_json

__all__ = ["Check", "DoctorFacts", "MeasuredSize", "diagnose", "gather", "read_measured_sizes", "render"]

GB = 1_000_000_000
# Space a build needs besides the finished image: the layer being committed and pip's unpacked wheels.
BUILD_HEADROOM = 2.0
# An environment with neither a measured build nor a size budget: a CUDA runtime image is about this size
# (docs/doctor.md; the measured cpu image from PyPI's CUDA torch 2.0.1 is 5.2 GB, cuda130's budget 8 GB).
DEFAULT_BUDGET_MB = 8000
SHM_BYTES = 8 * 2**30  # container.SHM_SIZE in bytes, backed by host memory (tests/unit/test_one_default.py)


@dataclass(frozen=True, kw_only=True)
class MeasuredSize:
    """The runtime image's size as the last build on this machine measured it (images/measure.py's record)."""

    size_bytes: int
    recorded_at: str = ""


@dataclass(frozen=True, kw_only=True)
class DoctorFacts:
    """Everything :func:`diagnose` looks at; built by :func:`gather`, or by hand in tests."""

    engine_version: str | None  # None: no engine answered
    engine_error: str | None = None
    storage_driver: str | None = None
    docker_root: str | None = None  # `docker info`'s DockerRootDir (None: no engine answered)
    disk_free_bytes: int | None = None  # at docker_root; None where that path is not on this machine
    memory_bytes: int | None = None
    nvidia_gpus: int = 0  # GPUs nvidia-smi lists
    amd_render_nodes: int = 0  # /dev/dri/renderD* nodes
    gpus: tuple[Gpu, ...] = ()  # with their architectures (nvidia-smi compute_cap, rocminfo gfx target)
    measured: Mapping[str, MeasuredSize] = field(default_factory=dict)  # env id -> last measured runtime image
    host: HostFacts


def _free_bytes(path: str | None) -> int | None:
    # The data root itself, never a parent: a root that is not here (a remote engine, Docker Desktop's VM,
    # rootless Docker's own path) says nothing about the disk the images go to.
    if path is None:
        return None
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def read_measured_sizes(cache_dir: Path) -> dict[str, MeasuredSize]:
    """The last measured runtime image of each environment (``<cache>/images/<env>-runtime.json``)."""
    out: dict[str, MeasuredSize] = {}
    for path in sorted((cache_dir / "images").glob("*-runtime.json")):
        try:
            data = read_json(path, kind="size-record")
            out[str(data["env_id"])] = MeasuredSize(size_bytes=int(data["size_bytes"]),
                                                    recorded_at=str(data.get("recorded_at", "")))
        except (InputFileError, ValueError, KeyError, TypeError):
            continue  # a damaged record is no estimate, not an error
    return out


def _gpus() -> tuple[Gpu, ...]:
    out = []
    for name, arch in local_gpus():
        try:
            out.append(Gpu(name=name, arch=parse_arch(arch)))
        except ValueError:
            continue
    return tuple(dict.fromkeys(out))


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def _nvidia_gpus() -> int:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def gather(connect_engine: Callable[[], Any] = connect, *, cache_dir: Path | None = None) -> DoctorFacts:
    """Read the facts from this machine. No engine is a fact (reported as ✗), not an error."""
    info: dict[str, Any] = {}
    version = error = None
    try:
        client = connect_engine()
        info = dict(client.info())
        version = str(client.version().get("Version", "unknown"))
    except DockerUnavailableError as e:
        error = str(e).splitlines()[0]
    root = str(info["DockerRootDir"]) if info.get("DockerRootDir") else None
    dri = Path("/dev/dri")
    return DoctorFacts(
        engine_version=version, engine_error=error, storage_driver=info.get("Driver"), docker_root=root,
        disk_free_bytes=_free_bytes(root), memory_bytes=_memory_bytes(), nvidia_gpus=_nvidia_gpus(),
        amd_render_nodes=len(list(dri.glob("renderD*"))) if dri.is_dir() else 0, gpus=_gpus(),
        measured=read_measured_sizes(cache_dir) if cache_dir else {}, host=gather_host_facts(info),
    )


def _engine(facts: DoctorFacts) -> Check:
    if facts.engine_version is None:
        return Check(name="Docker engine", ok=False, detail=facts.engine_error or f"nothing answers at "
                     f"{daemon_address()}", fix="start the daemon (`sudo systemctl start docker`) or set DOCKER_HOST")
    where = "" if facts.host.daemon_local else " (remote: the GPU lines below describe this machine, not it)"
    return Check(name="Docker engine", ok=True,
                 detail=f"{facts.engine_version} ({facts.storage_driver or 'unknown storage driver'}){where}")


def _estimate(env: Environment, facts: DoctorFacts) -> tuple[int, str]:
    """The runtime image's expected size in bytes, and where the figure comes from."""
    measured = facts.measured.get(env.id)
    if measured is not None:
        when = f", {measured.recorded_at[:10]}" if measured.recorded_at else ""
        return measured.size_bytes, f"last measured build{when}"
    budget = env.size_budget_mb.get("runtime")
    if budget:
        return budget * 1_000_000, "size_budget_mb.runtime in matrix.yaml"
    return DEFAULT_BUDGET_MB * 1_000_000, "torchrig's estimate for a CUDA image (no budget, never built here)"


def _disk(env: Environment, facts: DoctorFacts) -> Check:
    size, source = _estimate(env, facts)
    need = int(size * BUILD_HEADROOM)
    if facts.docker_root is None:
        return Check(name="disk space", ok=None, detail="not checked: no engine answered, so where it stores "
                     "images (docker info: DockerRootDir) is unknown")
    if facts.disk_free_bytes is None:
        return Check(name="disk space", ok=None, detail=f"not checked: the engine stores images at "
                     f"{facts.docker_root}, which is not on this machine (a remote engine or a VM); see "
                     "`docker system df` there")
    free = facts.disk_free_bytes
    detail = (f"{free / GB:.1f} GB free at {facts.docker_root}; the runtime image is ~{size / GB:.1f} GB ({source}), "
              f"~{need / GB:.1f} GB while building")
    if free < need:
        return Check(name="disk space", ok=False, detail=detail,
                     fix="free space (`docker system prune`, `docker image prune`) or move Docker's data root")
    return Check(name="disk space", ok=True, detail=detail)


def _shm(facts: DoctorFacts) -> Check:
    if facts.memory_bytes is None:
        return Check(name="shared memory", ok=None, detail="could not read the host's memory")
    detail = (f"containers get --shm-size {SHM_SIZE} (DataLoader workers); "
              f"the host has {facts.memory_bytes / 2**30:.0f} GiB")
    if facts.memory_bytes < SHM_BYTES:
        return Check(name="shared memory", ok=False, detail=detail,
                     fix="pass a smaller --shm-size (e.g. --shm-size 2g) to run-tasks/run-bench/dev")
    return Check(name="shared memory", ok=True, detail=detail)


def _cuda(env: Environment, facts: DoctorFacts, others: Sequence[Environment]) -> list[Check]:
    host = facts.host
    minimum = env.min_driver()
    out: list[Check] = []
    if host.nvidia_driver is None:
        out.append(Check(name="NVIDIA driver", ok=False, detail=f"none found; {env.id} (CUDA {env.cuda}) needs "
                         f">= {minimum or 'a driver for it'}",
                         fix="install the NVIDIA driver, or run with --no-gpu on the CPU"))
    else:
        out.append(driver_check(env, host.nvidia_driver, others)[0])
    out += [arch_check(env, g, driver=host.nvidia_driver, others=others) for g in facts.gpus if g.vendor == "nvidia"]
    ways = [w for w, on in (("nvidia runtime", "nvidia" in host.docker_runtimes),
                            ("nvidia-container-runtime-hook", host.nvidia_hook), ("CDI spec", host.cdi_nvidia)) if on]
    out.append(Check(name="NVIDIA Container Toolkit", ok=bool(ways), detail=", ".join(ways) or "not found",
                     fix="" if ways else "install the NVIDIA Container Toolkit and run "
                     "`sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker`"))
    out.append(Check(name="GPUs visible", ok=facts.nvidia_gpus > 0, detail=f"{facts.nvidia_gpus} (nvidia-smi -L)",
                     fix="" if facts.nvidia_gpus else "check `nvidia-smi`; the driver sees no GPU"))
    works = host.nvidia_driver is not None and bool(ways) and facts.nvidia_gpus > 0
    out.append(Check(name="--gpus would work", ok=works, detail="yes" if works else "no (see the lines above)",
                     fix="" if works else "fix the lines above, or run the image on the CPU with --no-gpu"))
    return out


def _rocm(env: Environment, facts: DoctorFacts, others: Sequence[Environment]) -> list[Check]:
    host = facts.host
    out = [*(arch_check(env, g, others=others) for g in facts.gpus if g.vendor == "amd"),
        Check(name="/dev/kfd", ok=host.has_kfd, detail="present" if host.has_kfd else "missing",
              fix="" if host.has_kfd else "load the amdgpu kernel driver (`amdgpu-install --usecase=dkms`), reboot"),
        Check(name="/dev/dri", ok=host.has_dri,
              detail=f"{facts.amd_render_nodes} render node(s)" if host.has_dri else "missing",
              fix="" if host.has_dri else "check that amdgpu is loaded (`lsmod | grep amdgpu`)"),
        Check(name="render group", ok=host.render_gid is not None,
              detail=f"gid {host.render_gid}" if host.render_gid is not None else "none found",
              fix="" if host.render_gid is not None else "add a `render` group owning /dev/dri/renderD*"),
    ]
    works = host.has_kfd and host.has_dri
    out.append(Check(name="ROCm devices would work", ok=works, detail=f"ROCm {env.rocm}: " + ("yes" if works else "no"),
                     fix="" if works else "fix the lines above, or run the image on the CPU with --no-gpu"))
    return out


def diagnose(env: Environment, facts: DoctorFacts, others: Sequence[Environment] = ()) -> list[Check]:
    """The checks for one environment, in the order a user fixes them; ``others`` (the matrix) are what a GPU or
    driver this environment cannot use is pointed to."""
    checks = [_engine(facts), _disk(env, facts), _shm(facts)]
    match env.accelerator:
        case "cuda":
            checks += _cuda(env, facts, others)
        case "rocm":
            checks += _rocm(env, facts, others)
        case "cpu":
            checks.append(Check(name="GPU", ok=None, detail="not needed (CPU environment)"))
    return checks


def can_run(checks: Sequence[Check]) -> bool:
    return all(c.ok is not False for c in checks)


def render(env: Environment, checks: Sequence[Check], *, where: str = "here") -> str:
    gpu = {"cpu": "CPU", "cuda": f"CUDA {env.cuda}", "rocm": f"ROCm {env.rocm}"}[env.accelerator]
    lines = [f"{env.id}: torch {env.torch}, {gpu}, Python {env.python}"]
    if (served := gpus_served(env)) is not None:
        lines.append(f"  serves: {served}")
    width = max(len(c.name) for c in checks)
    for c in checks:
        lines.append(f"  {c.mark} {c.name:<{width}}  {c.detail}")
        if c.ok is False and c.fix:
            lines.append(f"    {'':<{width}}  fix: {c.fix}")
    bad = sum(c.ok is False for c in checks)
    lines.append(f"  => {env.id} can run {where}" if not bad else
                 f"  => {env.id} cannot run {where} ({bad} problem{'s' if bad != 1 else ''})")
    return "\n".join(lines)
