"""``torchrig doctor [ENV]``: one table of what this host has against what each environment needs."""

from __future__ import annotations

import argparse

from torchrig import doctor
from torchrig.matrix import load_matrix
from torchrig.settings import Settings

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check this host against what an environment needs, before anything is built",
                       description="Check the Docker engine, disk, shared memory and, per accelerator, the NVIDIA "
                                   "driver vs the environment's CUDA minimum, the Container Toolkit/CDI and visible "
                                   "GPUs, or /dev/kfd, /dev/dri and the render group. Exit 0 when ENV can run here "
                                   "(without ENV: when at least one environment can), 1 when it cannot.")
    p.add_argument("env", nargs="?", help="environment id from matrix.yaml (default: every environment)")
    p.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    settings = Settings.from_environ(matrix=args.matrix)
    matrix = load_matrix(settings.matrix_path, settings=settings)
    envs = [matrix.get(args.env)] if args.env else list(matrix.environments)
    facts = doctor.gather()
    verdicts = []
    for env in envs:
        checks = doctor.diagnose(env, facts)
        verdicts.append((env.id, doctor.can_run(checks)))
        print(doctor.render(env, checks), end="\n\n" if len(envs) > 1 else "\n")
    ok = [e for e, can in verdicts if can]
    if len(envs) > 1:
        print(f"can run here: {', '.join(ok) or 'none'}; cannot: "
              f"{', '.join(e for e, can in verdicts if not can) or 'none'}")
    return 0 if ok and (args.env is None or verdicts[0][1]) else 1
