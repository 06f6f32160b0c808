"""doctor's GPU lines: the GPU's architecture and the NVIDIA driver against the environment's wheel.

Pure decisions over a :class:`~torchrig.matrix.archs.Gpu` (read from this host, or described with ``--gpu`` /
``--gpu-arch``) and a driver version, with the rules and data of :mod:`torchrig.matrix.archs`. :class:`Check`,
the one line of doctor's output, lives here so that :mod:`torchrig.doctor` (the host lines) can import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torchrig.engine.hostcheck import driver_older
from torchrig.errors import UsageError
from torchrig.matrix import Environment
from torchrig.matrix.archs import ArchData, Gpu, Support, cuda_runs, load_arch_data, parse_arch, parse_driver, rocm_runs

__all__ = ["Check", "arch_check", "described_checks", "described_gpus", "driver_check", "env_runs_on", "gpus_served"]


@dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    ok: bool | None  # None: does not apply to this environment, or could not be checked
    detail: str
    fix: str = ""

    @property
    def mark(self) -> str:
        return {True: "✓", False: "✗", None: "-"}[self.ok]


def _driver_state(env: Environment, driver: str, data: ArchData) -> tuple[bool, bool]:
    """(runs, can JIT PTX): full features from the CUDA minimum, cubins only from the major's floor."""
    assert env.cuda is not None
    full = env.min_driver()
    floor = data.cuda_floor(env.cuda)
    if full is None or not driver_older(driver, full):
        return True, True
    if floor is not None and not driver_older(driver, floor):
        return True, False
    return False, False


def driver_check(env: Environment, driver: str, others: Sequence[Environment] = (),
                 data: ArchData | None = None) -> tuple[Check, bool]:
    """The driver line for a CUDA environment and whether the driver can JIT PTX."""
    data = data or load_arch_data()
    assert env.cuda is not None
    full, floor = env.min_driver(), data.cuda_floor(env.cuda)
    runs, jit = _driver_state(env, driver, data)
    if runs and jit:
        need = f">= {full}" if full else "(no known minimum)"
        return Check(name="NVIDIA driver", ok=True, detail=f"{driver} {need} for CUDA {env.cuda}"), True
    if runs:
        return Check(name="NVIDIA driver", ok=True, detail=(
            f"{driver}: CUDA {env.cuda} through minor-version compatibility (>= {floor}); below {full} the driver "
            "cannot JIT PTX, so the GPU needs a cubin in the wheel")), False
    fits = [e.id for e in others if e.accelerator == "cuda" and e.id != env.id and _driver_state(e, driver, data)[0]]
    also = f", or use an environment this driver can run ({', '.join(fits)})" if fits else \
        ", or pick an environment with an older CUDA"
    floor_txt = f"; minor-version compatibility needs >= {floor}" if floor else ""
    return Check(name="NVIDIA driver", ok=False, detail=f"{driver} < {full} (CUDA {env.cuda}{floor_txt})",
                 fix=f"upgrade the driver to {full} or newer{also}"), False


def _support(env: Environment, gpu: Gpu, data: ArchData, jit: bool) -> Support:
    wheel = data.wheel(env.torch, env.flavour)
    if wheel is None:
        return Support(ok=None, via=None, reason=f"no architecture list for torch {env.torch} {env.flavour} in "
                       "compat.yaml (wheel_archs)")
    if gpu.vendor == "nvidia":
        return cuda_runs(wheel, gpu.arch, jit=jit)
    return rocm_runs(wheel, gpu.arch)


def env_runs_on(env: Environment, gpu: Gpu, driver: str | None, data: ArchData | None = None) -> bool | None:
    """Whether ``env`` runs on ``gpu`` with ``driver`` (None: undecided, e.g. no arch list for its wheel)."""
    data = data or load_arch_data()
    if env.accelerator == "cpu":
        return True
    if (env.accelerator == "cuda") != (gpu.vendor == "nvidia"):
        return False
    jit = True
    if env.accelerator == "cuda" and driver is not None:
        runs, jit = _driver_state(env, driver, data)
        if not runs:
            return False
    return _support(env, gpu, data, jit).ok


def gpus_served(env: Environment, data: ArchData | None = None) -> str | None:
    """Which GPUs of compat.yaml's ``gpus:`` table this environment's wheel has kernels for (a driver that can JIT
    assumed), with the kernel list: what doctor prints under each GPU row. None for a CPU environment."""
    if env.accelerator == "cpu":
        return None
    data = data or load_arch_data()
    wheel = data.wheel(env.torch, env.flavour)
    if wheel is None:
        return (f"not known: compat.yaml has no architecture list for torch {env.torch} {env.flavour} "
                "(wheel_archs), so doctor cannot check a GPU against it")
    vendor = "nvidia" if env.accelerator == "cuda" else "amd"
    names = [g.name or g.arch for g in data.known_gpus() if g.vendor == vendor and
             (cuda_runs(wheel, g.arch) if vendor == "nvidia" else rocm_runs(wheel, g.arch)).ok]
    note = "" if wheel.verified else f"; list from compat.yaml source {wheel.source}, not verified at the tag"
    return f"{', '.join(names) or 'none of the GPUs doctor knows'} (kernels: {wheel.describe()}{note})"


def _suggest(env: Environment, gpu: Gpu, driver: str | None, others: Sequence[Environment],
             data: ArchData) -> str:
    gpu_rows = [e for e in others if e.id != env.id and e.accelerator != "cpu"]
    fits = [e.id for e in gpu_rows if env_runs_on(e, gpu, driver, data)]
    unknown = [e.id for e in gpu_rows if env_runs_on(e, gpu, driver, data) is None]
    text = f"environments that support it: {', '.join(fits) or 'none in matrix.yaml'}"
    if unknown:
        text += f" (not known for {', '.join(unknown)}: no arch list for their wheel)"
    newest = data.newest_with(gpu)
    rows = {(".".join(e.torch.split(".")[:2]), e.flavour) for e in others}
    if newest is None:
        return text + "; no wheel in compat.yaml's wheel_archs carries its kernels"
    if newest not in rows:
        text += (f"; the newest wheel with its kernels is torch {newest[0]} {newest[1]}, which no row in matrix.yaml "
                 "uses (add one)")
    return text


def arch_check(env: Environment, gpu: Gpu, *, driver: str | None = None, others: Sequence[Environment] = (),
               data: ArchData | None = None) -> Check:
    """The "GPU architecture" line: does this environment's wheel carry code for ``gpu`` (PTX counts only where
    ``driver`` can JIT it; None: assume it can)?"""
    data = data or load_arch_data()
    want = "NVIDIA" if env.accelerator == "cuda" else "AMD"
    if (env.accelerator == "cuda") != (gpu.vendor == "nvidia"):
        return Check(name="GPU architecture", ok=False, detail=f"{gpu.label} is not an {want} GPU ({env.id} is a "
                     f"{env.accelerator} environment)", fix=_suggest(env, gpu, driver, others, data))
    jit = True
    if env.accelerator == "cuda" and driver is not None:
        jit = _driver_state(env, driver, data)[1]
    support = _support(env, gpu, data, jit)
    wheel = data.wheel(env.torch, env.flavour)
    if support.ok is None or wheel is None:
        return Check(name="GPU architecture", ok=None, detail=f"{gpu.label}: not checked, {support.reason}")
    note = "" if wheel.verified else f" [arch list: compat.yaml source {wheel.source}, not verified at the release tag]"
    if support.ok:
        return Check(name="GPU architecture", ok=True,
                     detail=f"{gpu.label}: {support.via} in torch {env.torch} {env.flavour}{note}")
    known = gpu.name or data.gpu_name(gpu.arch)
    extra = support.reason.removeprefix(f"no kernels for {gpu.arch}").strip()
    detail = (f"this image's torch has no kernels for {gpu.arch}{f' ({known})' if known else ''}"
              f"{' ' + extra if extra else ''}; torch {env.torch} {env.flavour} carries {wheel.describe()}{note}")
    return Check(name="GPU architecture", ok=False, detail=detail, fix=_suggest(env, gpu, driver, others, data))


def described_checks(env: Environment, gpu: Gpu, driver: str | None,
                     others: Sequence[Environment] = ()) -> list[Check]:
    """The lines for a machine described on the command line (no engine or host facts are read)."""
    out = [Check(name="host", ok=None, detail="described machine: engine, disk, container toolkit and devices "
                 "not checked (run doctor on the machine itself for those)")]
    if env.accelerator == "cpu":
        return [*out, Check(name="GPU", ok=None, detail="not needed (CPU environment)")]
    if env.accelerator == "cuda" and gpu.vendor == "nvidia":
        if driver is None:
            out.append(Check(name="NVIDIA driver", ok=None, detail=f"not given (--driver); CUDA {env.cuda} needs "
                             f">= {env.min_driver() or 'a driver for it'}"))
        else:
            out.append(driver_check(env, driver, others)[0])
    out.append(arch_check(env, gpu, driver=driver, others=others))
    return out


def described_gpus(names: Sequence[str], archs: Sequence[str], driver: str | None) -> tuple[list[Gpu], str | None]:
    """The machines ``--gpu NAME`` / ``--gpu-arch ARCH`` describe and the ``--driver`` they share, validated
    (:class:`UsageError`, exit 2, naming the flag and what to write)."""
    data = load_arch_data()
    gpus: list[Gpu] = []
    for name in names:
        try:
            gpus.append(data.gpu(name))
        except ValueError as e:
            raise UsageError(f"--gpu: {e}") from None
    for text in archs:
        try:
            arch = parse_arch(text)
        except ValueError as e:
            raise UsageError(f"--gpu-arch: {e}") from None
        gpus.append(Gpu(name=data.gpu_name(arch), arch=arch))
    if driver is not None:
        if not gpus:
            raise UsageError("--driver describes a machine: give its GPU too (--gpu NAME or --gpu-arch ARCH)")
        try:
            driver = parse_driver(driver)
        except ValueError as e:
            raise UsageError(f"--driver: {e}") from None
    return gpus, driver
