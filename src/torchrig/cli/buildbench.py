"""``torchrig build-bench ENV``: torchrig's build against the hand-written uv Dockerfile, both no cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from torchrig.cli import types
from torchrig.cli.context import settings as resolve_settings
from torchrig.cli.images import _source_flags
from torchrig.engine.client import connect
from torchrig.images import BuildOptions
from torchrig.images.buildbench import bench_build
from torchrig.matrix import load_matrix

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build-bench", help="time ENV's build against a hand-written one-layer uv Dockerfile",
                       description="Build ENV (runtime) with torchrig and then a hand-written Dockerfile that runs "
                       "`uv pip install --require-hashes -r` on the same lock (same base, index and CA bundle), "
                       "back to back, both without the layer cache; print both times, the ratio and where "
                       "torchrig's time went. Both images are removed afterwards.")
    p.add_argument("env")
    _source_flags(p)
    p.add_argument("--size-budget-mb", type=types.size_budget_mb, metavar="MB",
                   help="the size budget of the torchrig build ($TORCHRIG_SIZE_BUDGET_MB)")
    p.add_argument("--lock", metavar="FILE", type=Path, help="the lock both builds install (default: the one "
                   "`torchrig build` would use)")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    settings = resolve_settings(args)
    matrix = load_matrix(settings.matrix_path, settings=settings)
    options = BuildOptions.from_settings(settings, matrix, lock_file=args.lock)
    report = bench_build(matrix.get(args.env), options, client=connect())
    print("\n".join(report.lines()))
    return 0
