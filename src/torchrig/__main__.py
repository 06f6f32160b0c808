"""The ``torchrig`` command line. Every command validates matrix.yaml first and builds nothing from an invalid one.

Commands live in ``cli_*.py`` modules, one per step of the data flow; each exposes ``register(subparsers)``.
Errors the user can act on are :class:`~torchrig.errors.FatalError`: caught here once, printed without a
traceback, and turned into the error's exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .errors import FatalError

_COMMAND_MODULES = (
    "torchrig.cli_matrix",
    "torchrig.cli_images",
    "torchrig.cli_run",
    "torchrig.cli_report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrig",
        description="Reproducible, containerized PyTorch environments and benchmarks, driven by matrix.yaml.",
    )
    parser.add_argument("--version", action="version", version=f"torchrig {__version__}")
    parser.add_argument("--matrix", metavar="PATH", default=None,
                        help="matrix file (default: $TORCHRIG_MATRIX, else ./matrix.yaml or the nearest parent's)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue  # a command group not installed in this build
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except FatalError as e:
        print(f"torchrig: error: {e}", file=sys.stderr)
        return e.return_code
    except KeyboardInterrupt:
        print("torchrig: interrupted", file=sys.stderr)
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
