"""The draft of one matrix.yaml row while :mod:`torchrig.matrix.rules` validate it, and the helpers they share.

:class:`Row` holds the merged raw mapping (defaults + row) and the values the parsing rules have read from it so far.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchrig.matrix.compat import Compat, TorchRelease
from torchrig.matrix.model import Target, flavour_of

__all__ = ["ENV_KEYS", "REQUIRED_VALUE", "Problem", "Row", "Rule", "string_list", "string_value", "suggest"]

Problem = tuple[str, str]  # (where, message): "cuda121.cuda", "torch 2.0.1 has no cu121 build; ..."

ENV_KEYS = (
    "id", "description", "accelerator", "torch", "torchvision", "python", "cuda", "rocm",
    "targets", "index", "extra_index", "extras", "size_budget_mb", "dockerfile", "platforms",
)
# Keys whose value may not be empty (null), with an example value for the message.
REQUIRED_VALUE: dict[str, str] = {
    "accelerator": "cpu", "torch": '"2.0.1"', "torchvision": '"0.15.2"', "python": '"3.11"', "cuda": '"11.8"',
    "rocm": '"5.4.2"', "targets": "{runtime: python:3.11-slim-bookworm}",
    "index": "https://download.pytorch.org/whl/{flavour}", "size_budget_mb": "{runtime: 6000}",
    "dockerfile": "images/Dockerfile", "platforms": "[linux/amd64, linux/arm64]",
}
def suggest(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, 1, 0.6)
    return f" Perhaps you meant {close[0]!r}?" if close else f" Allowed keys: {', '.join(allowed)}."


@dataclass(kw_only=True)
class Row:
    """One environment while it is validated: the merged mapping and what the rules have parsed from it."""

    eid: str
    raw: dict[str, Any]
    merged: dict[str, Any]
    compat: Compat
    root: Path
    warnings: list[str] = field(default_factory=list)
    accelerator: Any = None
    description: str = ""
    torch: str | None = None
    torchvision: str | None = None
    python: str | None = None
    cuda: str | None = None
    rocm: str | None = None
    release: TorchRelease | None = None
    targets: dict[Target, str] | None = None
    index: str | None = None
    extra_index: tuple[str, ...] | None = None
    extras: tuple[str, ...] | None = None
    budgets: dict[Target, int] | None = None
    dockerfile: str | None = None
    platforms: tuple[str, ...] | None = None
    index_url: str = ""
    extra_urls: tuple[str, ...] = ()

    def key(self, name: str) -> str:
        return f"{self.eid}.{name}"

    @property
    def flavour(self) -> str:
        return flavour_of(self.accelerator, self.cuda, self.rocm)


Rule = Callable[[Row], list[Problem]]


def string_value(where: str, value: Any, out: list[Problem], *, pattern: re.Pattern[str] | None = None,
            example: str = "") -> str | None:
    """``value`` if it is a string (matching ``pattern``), else None with the problem appended to ``out``."""
    if value is None:
        return None
    if not isinstance(value, str):
        hint = " Write versions quoted: YAML reads an unquoted 3.10 as the number 3.1." \
            if isinstance(value, int | float) else ""
        out.append((where, f"expected a string, got {type(value).__name__} {value!r}.{hint}"))
        return None
    if pattern is not None and not pattern.match(value):
        out.append((where, f"{value!r} is not a valid value{f' (expected e.g. {example})' if example else ''}"))
        return None
    return value


def string_list(where: str, value: Any, out: list[Problem]) -> tuple[str, ...] | None:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        out.append((where, f"expected a list of strings, got {value!r}"))
        return None
    return tuple(value)
