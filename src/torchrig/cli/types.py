"""argparse ``type=`` functions for every flag that takes a number, a size or a boolean: one parser each, shared
with the settings layer (:mod:`torchrig.config.values`), so a flag and its variable accept the same spellings.

A bad value is argparse's usage error (exit 2) with the flag and what it accepts, never a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from torchrig.config import values

__all__ = [
    "boolean",
    "directory",
    "docker_size",
    "finite_positive",
    "fraction",
    "image_ref",
    "non_negative_seconds",
    "port",
    "positive_int",
    "positive_seconds",
    "size_budget_mb",
    "uid",
    "url",
]

T = TypeVar("T")


def _wrap(parse: Callable[[str], T], name: str) -> Callable[[str], T]:
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None

    convert.__name__ = name  # argparse names the type in some messages
    return convert


boolean: Callable[[str], bool] = _wrap(values.boolean, "boolean")
positive_int: Callable[[str], int] = _wrap(values.positive_int, "positive_int")
size_budget_mb: Callable[[str], int] = _wrap(values.size_budget_mb, "size_budget_mb")
uid: Callable[[str], int] = _wrap(values.uid, "uid")
port: Callable[[str], int] = _wrap(values.port, "port")
positive_seconds: Callable[[str], float] = _wrap(values.positive_seconds, "positive_seconds")
non_negative_seconds: Callable[[str], float] = _wrap(values.non_negative_seconds, "non_negative_seconds")
finite_positive: Callable[[str], float] = _wrap(values.finite_positive, "finite_positive")
fraction: Callable[[str], float] = _wrap(values.fraction, "fraction")
docker_size: Callable[[str], str] = _wrap(values.docker_size, "docker_size")
directory: Callable[[str], Path] = _wrap(values.directory, "directory")
image_ref: Callable[[str], str] = _wrap(values.image_ref, "image_ref")
url: Callable[[str], str] = _wrap(values.url, "url")
