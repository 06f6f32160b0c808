"""The command line: argparse only. One module per command group, each exposing ``register(subparsers)``.

The groups are imported statically, so a renamed or broken module fails loudly instead of silently dropping its
commands from the menu. The work itself lives in the packages that name the steps (matrix, images, run, report).
"""

from __future__ import annotations

import argparse

from torchrig import __version__
from torchrig.cli import buildbench, config, doctor, fleet, images, matrix, report, run, verify

__all__ = ["build_parser"]

_GROUPS = (matrix, config, doctor, images, buildbench, verify, run, report, fleet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrig",
        description="Reproducible, containerized PyTorch environments and benchmarks, driven by matrix.yaml.",
        epilog=config.epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"torchrig {__version__}")
    parser.add_argument("--matrix", metavar="PATH", default=None,
                        help="matrix file (default: $TORCHRIG_MATRIX, else ./matrix.yaml or the nearest parent's)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in _GROUPS:
        group.register(sub)
    return parser
