"""``torchrig doctor [ENV]``: what this host (or a machine described with ``--gpu``) has against what each
environment needs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from torchrig import doctor
from torchrig.cli.context import settings as resolve_settings
from torchrig.doctor_gpu import described_checks, described_gpus
from torchrig.errors import UsageError
from torchrig.matrix import Environment, load_matrix
from torchrig.matrix.archs import Gpu

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check this host (or a described machine) against what an environment needs",
                       description="Check the Docker engine, disk at the engine's data root, shared memory and, per "
                                   "accelerator, the NVIDIA driver vs the environment's CUDA, the GPU's architecture "
                                   "vs the kernels in the environment's torch wheel, the Container Toolkit/CDI and "
                                   "visible GPUs, or /dev/kfd, /dev/dri and the render group. With --gpu/--gpu-arch "
                                   "it answers for a machine you describe (no GPU or engine needed here). Exit 0 when "
                                   "ENV can run (without ENV: when at least one environment can), 1 when it cannot, "
                                   "2 for a flag it cannot read. Details: docs/doctor.md.")
    p.add_argument("env", nargs="?", help="environment id from matrix.yaml (default: every environment)")
    p.add_argument("--gpu", action="append", default=[], metavar="NAME",
                   help='describe a machine by its GPU name as nvidia-smi/amd-smi print it, e.g. "NVIDIA H100 80GB '
                        'HBM3" (repeat for several machines)')
    p.add_argument("--gpu-arch", action="append", default=[], metavar="ARCH",
                   help="describe a machine by its GPU architecture: sm_90 (or 9.0), gfx942 (repeatable)")
    p.add_argument("--driver", metavar="VERSION",
                   help="the described machines' NVIDIA driver, e.g. 550.54.15 (unchecked when not given)")
    p.add_argument("--all", action="store_true",
                   help="one line per machine: which environments it can run and why not the others")
    p.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    gpus, driver = described_gpus(args.gpu, args.gpu_arch, args.driver)
    if args.all and args.env:
        raise UsageError(f"--all lists every environment: drop {args.env!r}, or drop --all to check only it")
    settings = resolve_settings(args)
    matrix = load_matrix(settings.matrix_path, settings=settings)
    envs = [matrix.get(args.env)] if args.env else list(matrix.environments)
    others = matrix.environments
    if gpus:
        return _described(envs, others, gpus, driver, summary=args.all)
    facts = doctor.gather(cache_dir=settings.cache_dir)
    results = [(env, doctor.diagnose(env, facts, others)) for env in envs]
    if args.all:
        print(_summary("this host", results))
    else:
        for env, checks in results:
            print(doctor.render(env, checks), end="\n\n" if len(envs) > 1 else "\n")
        if len(envs) > 1:
            print(_can_line("here", results))
    ok = [env for env, checks in results if doctor.can_run(checks)]
    return 0 if ok and (args.env is None or len(ok) == len(envs)) else 1


def _described(envs: Sequence[Environment], others: Sequence[Environment], gpus: Sequence[Gpu], driver: str | None,
               *, summary: bool) -> int:
    code = 0
    for gpu in gpus:
        machine = gpu.label + (f", driver {driver}" if driver and gpu.vendor == "nvidia" else "")
        results = [(env, described_checks(env, gpu, driver, others)) for env in envs]
        if summary:
            print(_summary(machine, results))
        else:
            for env, checks in results:
                print(doctor.render(env, checks, where=f"on {machine}"), end="\n\n" if len(results) > 1 else "\n")
            if len(results) > 1:
                print(_can_line(f"on {machine}", results))
        if not any(doctor.can_run(c) for _, c in results) or (len(envs) == 1 and not doctor.can_run(results[0][1])):
            code = 1
    return code


def _can_line(where: str, results: Sequence[tuple[Environment, list[doctor.Check]]]) -> str:
    ok = [e.id for e, c in results if doctor.can_run(c)]
    bad = [e.id for e, c in results if not doctor.can_run(c)]
    return f"can run {where}: {', '.join(ok) or 'none'}; cannot: {', '.join(bad) or 'none'}"


def _summary(machine: str, results: Sequence[tuple[Environment, list[doctor.Check]]]) -> str:
    lines = [f"{machine}:"]
    for env, checks in results:
        bad = [c for c in checks if c.ok is False]
        unchecked = [c.name for c in checks if c.ok is None and c.name not in ("host", "GPU")]
        if bad:
            lines.append(f"  ✗ {env.id}: " + "; ".join(f"{c.name}: {c.detail}" for c in bad))
        else:
            lines.append(f"  ✓ {env.id}" + (f" ({', '.join(unchecked)} not checked)" if unchecked else ""))
    return "\n".join(lines)
