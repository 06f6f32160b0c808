"""What every command starts from: the settings resolved from the flags on ``args`` (and every other layer)."""

from __future__ import annotations

import argparse

from torchrig.config.table import SETTINGS
from torchrig.settings import Settings

__all__ = ["settings"]


def settings(args: argparse.Namespace) -> Settings:
    """The one cascade, with the flags this command was given (those it does not have count as not given)."""
    flags: dict[str, object] = {}
    for s in SETTINGS:
        if s.dest and s.key != "matrix":
            value = getattr(args, s.dest, None)
            if value is not None:
                flags[s.key] = value
    return Settings.from_environ(matrix=getattr(args, "matrix", None), flags=flags)
