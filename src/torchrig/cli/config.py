"""``torchrig config``: every setting's effective value and the layer it came from; the ``--help`` epilog."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from torchrig.cli.context import settings as resolve
from torchrig.config.files import PROJECT_FILE
from torchrig.config.table import SETTINGS, Setting
from torchrig.errors import FatalError
from torchrig.matrix import load_matrix
from torchrig.settings import Settings

__all__ = ["epilog", "register"]

LAYERS = ("default", "matrix.yaml", f"{PROJECT_FILE} (or pyproject.toml [tool.torchrig])", "env VAR", "flag --x")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="print every setting's effective value and where it came from",
                       description="Resolve every setting through " + " -> ".join(LAYERS) + " (later wins) and "
                       f"print KEY = VALUE with its source. {PROJECT_FILE} lives beside matrix.yaml; its keys are "
                       "the long flags. An invalid value anywhere is exit 2 naming it.",
                       epilog=epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="machine-readable: {key: {value, source}}")
    p.set_defaults(func=_config)


def epilog() -> str:
    """Every setting: file key / flag, variables, accepted values (the top-level ``--help`` shows it)."""
    lines = [f"settings ({' -> '.join(LAYERS)}; later wins; `torchrig config` shows the effective values):"]
    for s in SETTINGS:
        flag = s.flag or ""
        where = "" if s.in_file else "  (not in the file)"
        lines.append(f"  {s.key:<18} {flag:<18} ${' / $'.join(s.env)}{where}")
        lines.append(f"      {s.doc}; accepted: {s.accepted}; unset: {s.fallback}")
    return "\n".join(lines)


def _display(s: Setting, value: object, matrix_registry: str | None) -> str:
    if value is None:
        if s.key == "registry" and matrix_registry is not None:
            return matrix_registry or '""'
        return f"({s.fallback})"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return " ".join(value) if value else "(none)"
    if isinstance(value, Path):
        return str(value)
    return '""' if value == "" else str(value)


def rows(settings: Settings) -> list[tuple[str, str, str]]:
    """(key, shown value, source) for every setting."""
    try:
        registry: str | None = load_matrix(settings.matrix_path, settings=settings).registry
    except (FatalError, OSError):
        registry = None  # an invalid or missing matrix: `torchrig validate` says why; the settings still show
    return [(s.key, _display(s, settings.value(s), registry), settings.sources.get(s.key, "default"))
            for s in SETTINGS]


def _config(args: argparse.Namespace) -> int:
    settings = resolve(args)
    table = rows(settings)
    if args.json:
        print(json.dumps({k: {"value": v, "source": src} for k, v, src in table}, indent=2))
        return 0
    width = max(len(k) for k, _, _ in table)
    read = settings.project_file or f"none ({PROJECT_FILE} beside {settings.matrix_path.name} would be read)"
    print(f"# project file: {read}")
    for key, value, source in table:
        print(f"{key:<{width}} = {value}  # {source}")
    return 0
