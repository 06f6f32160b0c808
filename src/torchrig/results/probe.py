"""Describe where a run happens: the machine (CPU, GPUs, driver), the software stack, the container image.

Every probe is best effort: an unreadable file or a missing tool leaves a field empty, never stops a run. torch is
imported lazily, only when a GPU run asks for its devices or when :func:`collect_software` looks for it.

Standard library only, Python >= 3.10: this module ships into every image.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
from pathlib import Path

from torchrig.results.contract import HOSTNAME_ENV, IMAGE_DIGEST_ENV, IMAGE_ENV, IMAGE_ID_ENV
from torchrig.results.schema import Container, Machine, Software

__all__ = [
    "NVIDIA_PROC_VERSION",
    "collect_container",
    "collect_machine",
    "collect_software",
    "gpu_driver",
    "local_gpus",
    "parse_nvidia_proc_version",
    "parse_nvidia_smi_gpus",
    "parse_rocminfo_gpus",
]

NVIDIA_PROC_VERSION = Path("/proc/driver/nvidia/version")
AMDGPU_VERSION = Path("/sys/module/amdgpu/version")
# "NVIDIA UNIX x86_64 Kernel Module  535.104.05" (proprietary) or
# "NVIDIA UNIX Open Kernel Module for x86_64  550.54.14" (open kernel modules)
_NVIDIA_DRIVER_RE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)")


def parse_nvidia_proc_version(text: str) -> str | None:
    """The driver version in ``/proc/driver/nvidia/version`` (``NVRM version: NVIDIA UNIX x86_64 Kernel Module
    535.104.05 ...``; the open kernel modules write ``... Open Kernel Module for x86_64  550.54.14 ...``)."""
    m = _NVIDIA_DRIVER_RE.search(text)
    return m.group(1) if m else None


# nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader: "NVIDIA H100 80GB HBM3, 9.0, 550.54.15"
_CC_RE = re.compile(r"^(\d{1,2})\.(\d)$")
_DRIVER_RE = re.compile(r"^\d+(?:\.\d+){0,2}$")
# rocminfo: one "Agent N" block per device; GPU agents have "Name: gfx942" and "Marketing Name: AMD Instinct ..."
_ROCM_NAME_RE = re.compile(r"^\s*Name:\s+(gfx[0-9]{2,4}[a-f]?)\s*$")
_ROCM_MARKETING_RE = re.compile(r"^\s*Marketing Name:\s+(\S.*?)\s*$")


def parse_nvidia_smi_gpus(text: str) -> list[tuple[str, str, str | None]]:
    """(name, ``sm_XY``, driver) per GPU in ``nvidia-smi --query-gpu=name,compute_cap,driver_version
    --format=csv,noheader`` output; lines that do not parse are skipped."""
    out: list[tuple[str, str, str | None]] = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        cc = _CC_RE.match(parts[1]) if len(parts) in (2, 3) and parts[0] else None
        if cc:
            driver = parts[2] if len(parts) == 3 and _DRIVER_RE.match(parts[2]) else None
            out.append((parts[0], f"sm_{int(cc.group(1))}{cc.group(2)}", driver))
    return out


def parse_rocminfo_gpus(text: str) -> list[tuple[str | None, str]]:
    """(marketing name or None, ``gfxNNN``) per GPU agent in ``rocminfo`` output (CPU agents have no gfx name)."""
    out: list[tuple[str | None, str]] = []
    in_gpu = False  # the Marketing Name belongs to the agent whose Name came last, if that one is a GPU
    for line in text.splitlines():
        mk = _ROCM_MARKETING_RE.match(line)
        if mk:
            if in_gpu and out[-1][0] is None:
                out[-1] = (mk.group(1), out[-1][1])
            continue
        m = _ROCM_NAME_RE.match(line)
        if m:
            out.append((None, m.group(1)))
            in_gpu = True
        elif line.lstrip().startswith(("Name:", "Agent ")):
            in_gpu = False
    return out


def _run_tool(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return ""


def local_gpus() -> list[tuple[str | None, str]]:
    """(name, arch) of this machine's GPUs: nvidia-smi's compute capability, else rocminfo's gfx target; [] if
    neither tool answers."""
    smi = parse_nvidia_smi_gpus(_run_tool(
        ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]))
    if smi:
        return [(name, arch) for name, arch, _ in smi]
    return parse_rocminfo_gpus(_run_tool(["rocminfo"]))


def gpu_driver(accelerator: str, *, nvidia_proc: Path = NVIDIA_PROC_VERSION,
               amdgpu_version: Path = AMDGPU_VERSION) -> str | None:
    """The GPU driver's version: for CUDA from ``/proc`` (else ``nvidia-smi``), for ROCm the amdgpu module's."""
    if accelerator == "cuda":
        try:
            found = parse_nvidia_proc_version(nvidia_proc.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            found = None
        if found:
            return found
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20, check=True,
            )
            return out.stdout.strip().splitlines()[0].strip()
        except (OSError, subprocess.SubprocessError, IndexError):
            return None
    try:
        return amdgpu_version.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_machine(device: str = "cpu") -> Machine:
    """Describe this machine. ``device`` is the torch device type the run used ("cpu" or "cuda")."""
    accelerator = "cpu"
    gpu_name = driver = None
    gpu_count = 0
    gpu_mem = None
    if device.startswith("cuda"):
        import torch

        accelerator = "rocm" if getattr(torch.version, "hip", None) else "cuda"
        gpu_count = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        gpu_name = props.name
        gpu_mem = round(props.total_memory / 2**30, 1)
        driver = gpu_driver(accelerator)
    m = Machine(
        # in a container, the host's name (torchrig passes it): the container's own is a random id
        hostname=os.environ.get(HOSTNAME_ENV) or socket.gethostname(),
        os=f"{platform.system()} {platform.release()}",
        cpu=_cpu_model(),
        cpu_count=os.cpu_count() or 1,
        accelerator=accelerator,
        gpu_name=gpu_name,
        gpu_count=gpu_count,
        gpu_memory_gb=gpu_mem,
        driver=driver,
    )
    return m.with_fingerprint()


def collect_software() -> Software:
    """Versions of the Python stack (torch imported if installed)."""
    try:
        import torch
    except ImportError:
        return Software(python=platform.python_version())
    cudnn = None
    try:
        if torch.backends.cudnn.is_available():
            cudnn = str(torch.backends.cudnn.version())
    except Exception:  # noqa: BLE001 - a broken cuDNN must not stop the record
        cudnn = None
    return Software(
        python=platform.python_version(),
        torch=torch.__version__,
        torch_git=getattr(torch.version, "git_version", None),
        torchvision=_version_of("torchvision"),
        transformers=_version_of("transformers"),
        cuda=getattr(torch.version, "cuda", None),
        rocm=getattr(torch.version, "hip", None),
        cudnn=cudnn,
    )


def _version_of(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def collect_container() -> Container | None:
    """The image this process runs in, from the variables ``torchrig`` sets when it starts a container."""
    image, image_id, digest = (os.environ.get(k) or None for k in (IMAGE_ENV, IMAGE_ID_ENV, IMAGE_DIGEST_ENV))
    if not (image or image_id or digest):
        return None
    return Container(image=image, image_id=image_id, image_digest=digest)
