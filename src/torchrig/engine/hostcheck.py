"""Can this host run an environment's image? Decide before starting a container, and before pulling gigabytes.

The facts about the host (Docker runtimes, the NVIDIA driver, ``/dev/kfd``, the render group) are gathered once
into a frozen :class:`HostFacts`; :func:`check_host` is a pure decision over those facts and the environment, so
every branch is unit-tested with made-up hosts. A host that cannot run the image raises
:class:`~torchrig.errors.HostCheckError` naming what is missing and what to do (including the minimum driver);
``--no-gpu`` runs a GPU image on the CPU deliberately and turns the GPU checks into a warning.
"""

from __future__ import annotations

import grp
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchrig.container import GpuAccess
from torchrig.engine.client import is_local_daemon
from torchrig.errors import HostCheckError
from torchrig.matrix import Environment
from torchrig.matrix.archs import load_arch_data
from torchrig.matrix.compat import parse_version
from torchrig.results.probe import gpu_driver, parse_nvidia_proc_version
from torchrig.results.reading import InputFileError, read_bytes

__all__ = [
    "HostCheck",
    "HostFacts",
    "check_host",
    "cuda_driver_floor",
    "driver_older",
    "driver_runs",
    "gather_host_facts",
    "parse_nvidia_proc_version",
]

# Where the NVIDIA Container Toolkit writes CDI specs (`nvidia-ctk cdi generate --output=...`).
_CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))
_CDI_SPEC_CAP = 16 << 20  # a spec nvidia-ctk writes for 8 GPUs is tens of kB
_INSTALL_TOOLKIT = (
    "install the NVIDIA Container Toolkit and register it with Docker "
    "(`sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker`, see "
    "https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html)"
)


@dataclass(frozen=True, kw_only=True)
class HostFacts:
    """What torchrig needs to know about the host; built by :func:`gather_host_facts`, or by hand in tests."""

    uid: int
    gid: int
    docker_runtimes: tuple[str, ...] = ()
    nvidia_hook: bool = False  # nvidia-container-runtime-hook on PATH: `--gpus` works without the nvidia runtime
    cdi_nvidia: bool = False  # a CDI spec for NVIDIA devices exists
    nvidia_driver: str | None = None
    has_kfd: bool = False
    has_dri: bool = False
    render_gid: int | None = None
    daemon_local: bool = True  # False: the daemon runs elsewhere and the facts above describe the wrong machine

    @property
    def nvidia_runtime(self) -> bool:
        """Whether Docker can hand NVIDIA GPUs to a container at all (runtime, hook or CDI)."""
        return self.nvidia_gpu_access is not None

    @property
    def nvidia_gpu_access(self) -> GpuAccess | None:
        """How: through the NVIDIA runtime or hook (``--gpus``), or -- where the host offers only a CDI spec --
        as the CDI device ``nvidia.com/gpu=all``; None: neither."""
        if "nvidia" in self.docker_runtimes or self.nvidia_hook:
            return "runtime"
        return "cdi" if self.cdi_nvidia else None


@dataclass(frozen=True, kw_only=True)
class HostCheck:
    """The verdict: the host can run the image (``use_gpu`` says whether with its GPU); ``warnings`` to print."""

    use_gpu: bool
    warnings: tuple[str, ...] = ()
    gpu_access: GpuAccess = "runtime"  # how NVIDIA GPUs are requested (CDI where the host has only a CDI spec)


def _group_gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _render_gid() -> int | None:
    # The render node's owning group is what the container must join; its number differs between hosts
    # (and may have no name in the image), so it is passed as a number.
    nodes = sorted(Path("/dev/dri").glob("renderD*")) if Path("/dev/dri").is_dir() else []
    for node in nodes:
        try:
            return os.stat(node).st_gid
        except OSError:
            continue
    return _group_gid("render")


def _names_nvidia_gpu(folder: Path) -> bool:
    """Whether a CDI spec in ``folder`` (``*.yaml``, ``*.json``) declares the ``nvidia.com/gpu`` kind."""
    if not folder.is_dir():
        return False
    for spec in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml"), *folder.glob("*.json")])[:64]:
        try:
            text = read_bytes(spec, kind="CDI spec", cap=_CDI_SPEC_CAP)
        except InputFileError:
            continue  # unreadable, or not a plain file: the daemon cannot use it either
        if b"nvidia.com/gpu" in text:
            return True
    return False


def gather_host_facts(docker_info: Mapping[str, Any]) -> HostFacts:
    """Read the facts from this machine; ``docker_info`` is ``client.info()`` (its ``Runtimes``, ``CDISpecDirs``)."""
    runtimes = tuple(sorted((docker_info.get("Runtimes") or {}).keys()))
    cdi_dirs = [Path(d) for d in (docker_info.get("CDISpecDirs") or [])] or list(_CDI_DIRS)
    cdi_nvidia = any(_names_nvidia_gpu(d) for d in cdi_dirs)
    dri = Path("/dev/dri")
    return HostFacts(
        uid=os.getuid(),
        gid=os.getgid(),
        docker_runtimes=runtimes,
        nvidia_hook=shutil.which("nvidia-container-runtime-hook") is not None,
        cdi_nvidia=cdi_nvidia,
        nvidia_driver=gpu_driver("cuda"),
        has_kfd=Path("/dev/kfd").exists(),
        has_dri=dri.is_dir(),
        render_gid=_render_gid(),
        daemon_local=is_local_daemon(),
    )


def driver_older(version: str, minimum: str) -> bool:
    """Whether a driver version is older than a minimum, compared as numbers (unparsable: not older)."""
    try:
        return parse_version(version) < parse_version(minimum)
    except ValueError:
        return False  # an unparsable driver string is reported by the run, not refused here


def cuda_driver_floor(cuda: str) -> str | None:
    """The oldest driver that runs CUDA ``cuda`` at all: minor-version compatibility (compat.yaml's
    ``cuda_driver_floor``; cubins only, no PTX JIT, below the full-feature minimum)."""
    return load_arch_data().cuda_floor(cuda)


def driver_runs(driver: str, env: Environment) -> bool:
    """Whether ``driver`` runs ``env``'s CUDA at all (full-feature minimum or minor-version compatibility)."""
    if env.cuda is None:
        return False
    limit = cuda_driver_floor(env.cuda) or env.min_driver()
    return limit is None or not driver_older(driver, limit)


def _cuda_alternatives(driver: str, others: Sequence[Environment]) -> str:
    fits = [e.id for e in others if e.accelerator == "cuda" and e.min_driver() and driver_runs(driver, e)]
    return f", use an environment this driver can run ({', '.join(fits)})" if fits else ""


def check_host(env: Environment, facts: HostFacts, *, no_gpu: bool = False,
               others: Sequence[Environment] = ()) -> HostCheck:
    """Decide whether this host can run ``env``'s image; raise :class:`HostCheckError` saying what to do if not.

    ``others`` (the rest of the matrix) lets a too-old driver be answered with the environments it can run.
    """
    if env.accelerator == "cpu":
        return HostCheck(use_gpu=False)
    if no_gpu:
        return HostCheck(use_gpu=False, warnings=(
            f"--no-gpu: running the {env.accelerator} image {env.id!r} without a GPU; "
            "the tasks will report that no GPU is visible",))
    if not facts.daemon_local:
        return HostCheck(use_gpu=True, warnings=(
            "the Docker daemon is not on this machine (DOCKER_HOST); its GPU, driver and runtime were not checked",))
    if env.accelerator == "cuda":
        return _check_cuda(env, facts, others)
    return _check_rocm(env, facts)


def _check_cuda(env: Environment, facts: HostFacts, others: Sequence[Environment]) -> HostCheck:
    minimum = env.min_driver()
    need = f"NVIDIA driver >= {minimum} (CUDA {env.cuda})" if minimum else f"an NVIDIA driver for CUDA {env.cuda}"
    if facts.nvidia_driver is None:
        raise HostCheckError(
            f"{env.id} needs {need}, but no NVIDIA driver was found on this host (no /proc/driver/nvidia/version, "
            "no nvidia-smi). Install the driver, or pass --no-gpu to run the image on the CPU.")
    floor = cuda_driver_floor(env.cuda or "")
    if minimum and not driver_runs(facts.nvidia_driver, env):
        at_all = f" (minor-version compatibility runs it from {floor})" if floor else ""
        raise HostCheckError(
            f"{env.id} needs {need}{at_all}, but this host has driver {facts.nvidia_driver}. Upgrade the driver to "
            f"{minimum} or newer{_cuda_alternatives(facts.nvidia_driver, others)}, or pass --no-gpu to run on the CPU.")
    if not facts.nvidia_runtime:
        runtimes = ", ".join(facts.docker_runtimes) or "none"
        raise HostCheckError(
            f"{env.id} needs the NVIDIA container runtime, but Docker knows only the runtimes {runtimes} and no "
            f"NVIDIA CDI spec exists: {_INSTALL_TOOLKIT}; or pass --no-gpu to run on the CPU.")
    warnings: tuple[str, ...] = () if minimum else (
        f"no minimum driver is known for CUDA {env.cuda} (src/torchrig/matrix/compat.yaml); driver "
        f"{facts.nvidia_driver} was not checked",)
    if minimum and driver_older(facts.nvidia_driver, minimum):
        warnings = (f"driver {facts.nvidia_driver} is older than {minimum}, CUDA {env.cuda}'s full-feature minimum: "
                    f"it runs through minor-version compatibility (>= {floor}), without PTX JIT, so a GPU whose "
                    "architecture the wheel has no cubin for fails; `torchrig doctor` checks that",)
    access = facts.nvidia_gpu_access or "runtime"
    if access == "cdi":
        warnings += ("no NVIDIA runtime in Docker, but a CDI spec names nvidia.com/gpu: the GPUs are requested as "
                     "the CDI device nvidia.com/gpu=all (Docker >= 25 with CDI enabled)",)
    return HostCheck(use_gpu=True, warnings=warnings, gpu_access=access)


def _check_rocm(env: Environment, facts: HostFacts) -> HostCheck:
    if not facts.has_kfd:
        raise HostCheckError(
            f"{env.id} (ROCm {env.rocm}) needs /dev/kfd, which this host does not have: the amdgpu kernel driver is "
            "not loaded. Install it (`amdgpu-install --usecase=dkms`, see https://rocm.docs.amd.com) and reboot; "
            "or pass --no-gpu to run on the CPU.")
    if not facts.has_dri:
        raise HostCheckError(
            f"{env.id} (ROCm {env.rocm}) needs /dev/dri, which this host does not have: check that the amdgpu "
            "driver is loaded (`lsmod | grep amdgpu`); or pass --no-gpu to run on the CPU.")
    if facts.render_gid is None:
        return HostCheck(use_gpu=True, warnings=(
            "no render group found (/dev/dri/renderD*); the container joins only `video`, which some hosts need "
            "`render` beside",))
    return HostCheck(use_gpu=True)
