"""Matrix commands: validate, envs, tags, readme-table, ci-matrix, compat-check."""

from __future__ import annotations

import argparse
import json
import sys

from torchrig.cli import types
from torchrig.cli.context import settings as resolve_settings
from torchrig.images.serve import resolve_ca_bundle
from torchrig.matrix import TARGETS, load_matrix
from torchrig.matrix.ci import github_matrix
from torchrig.matrix.compat import load_compat
from torchrig.matrix.compat_check import PYPI_INDEX, PYTORCH_INDEX, check_index, parse_selection
from torchrig.matrix.docs import env_table_markdown


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check matrix.yaml; exit 0 if valid, 2 listing every problem if not")
    p.add_argument("path", nargs="?", default=None, help="matrix file (default: --matrix / ./matrix.yaml)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("envs", help="list the environments")
    p.add_argument("--ids", action="store_true", help="only the ids, one per line")
    p.set_defaults(func=_envs)

    p = sub.add_parser("tags", help="print the image names of an environment")
    p.add_argument("env")
    p.add_argument("--target", choices=TARGETS, default="runtime")
    p.set_defaults(func=_tags)

    p = sub.add_parser("readme-table", help="print the README's environment table (Markdown)")
    p.set_defaults(func=_readme_table)

    p = sub.add_parser("ci-matrix", help="print the GitHub Actions matrix (JSON) derived from matrix.yaml")
    p.set_defaults(func=_ci_matrix)

    p = sub.add_parser("compat-check", help="compare compat.yaml with the torch/torchvision builds a package index "
                       "offers; exit 0 in agreement, 1 printing the differences")
    p.add_argument("torch", nargs="*", metavar="TORCH", help="releases to check, 2.12 or 2.12.1 (default: all)")
    p.add_argument("--index", action="append", metavar="URL", type=types.url,
                   help=f"simple index (PEP 503/691) to read; repeatable (default: {PYTORCH_INDEX}; "
                   f"{PYPI_INDEX} checks PyPI's default builds). CA bundle: $PIP_CERT, $REQUESTS_CA_BUNDLE, "
                   "$SSL_CERT_FILE")
    p.set_defaults(func=_compat_check)


def _validate(args: argparse.Namespace) -> int:
    m = load_matrix(args.path or args.matrix)
    for w in m.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{m.path}: valid ({len(m.environments)} environments: {', '.join(m.ids)})")
    return 0


def _envs(args: argparse.Namespace) -> int:
    m = load_matrix(args.matrix)
    for e in m.environments:
        if args.ids:
            print(e.id)
        else:
            print(f"{e.id:<10} {e.accelerator:<5} torch {e.torch:<7} {e.flavour:<10} py{e.python:<5} {e.description}")
    return 0


def _tags(args: argparse.Namespace) -> int:
    ref = load_matrix(args.matrix).get(args.env).tags(args.target)
    print(ref.immutable)
    print(ref.alias)
    return 0


def _readme_table(args: argparse.Namespace) -> int:
    print(env_table_markdown(load_matrix(args.matrix)), end="")
    return 0


def _ci_matrix(args: argparse.Namespace) -> int:
    print(json.dumps(github_matrix(load_matrix(args.matrix)), indent=2))
    return 0


def _compat_check(args: argparse.Namespace) -> int:
    selection = parse_selection(args.torch)
    settings = resolve_settings(args)
    ca_bundle = resolve_ca_bundle(None, settings.ca_bundle, settings.ca_bundle_source)
    rc = 0
    for index in args.index or [PYTORCH_INDEX]:
        report = check_index(load_compat(), index, selection=selection, ca_bundle=ca_bundle)
        print(report.render(), end="")
        rc = rc or (0 if report.agrees else 1)
    return rc
