"""Typed, range-checked values: every setting, flag and file key goes through one of these parsers.

A parser takes the text a user wrote (an environment variable, a torchrig.toml value turned into text, a flag) and
returns the typed value, or raises :class:`ValueError` whose message says what is accepted. The callers add
*where* the text came from (``TORCHRIG_REQUIRE_LOCK``, ``torchrig.toml: require-lock``, ``--nodes``), so the user
sees both the place and the fix.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

__all__ = [
    "BOOL_WORDS",
    "EPOCH_MAX",
    "EPOCH_MIN",
    "MAX_SIZE_BUDGET_MB",
    "MAX_TIMEOUT_S",
    "UID_MAX",
    "boolean",
    "directory",
    "docker_size",
    "epoch",
    "finite_positive",
    "fraction",
    "image_ref",
    "non_negative_seconds",
    "path",
    "port",
    "positive_int",
    "positive_seconds",
    "size_budget_mb",
    "text",
    "uid",
    "url",
    "url_list",
]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
BOOL_WORDS = "1/0, true/false, yes/no, on/off (any case)"

# Bounds that keep every later use of a number well-defined: a timeout beyond a year overflows nothing but is a
# typo; threading/select reject timeouts above ~9e9 s with OverflowError, so anything larger must stop here.
MAX_TIMEOUT_S = 366 * 24 * 3600
MAX_SIZE_BUDGET_MB = 10_000_000  # 10 TB: an image budget above that is a typo
UID_MAX = 2**32 - 2  # 2**32 - 1 is (uid_t) -1, "no change" to chown
# A zip entry's timestamp starts at 1980-01-01 (DOS time); a ustar header and the 32-bit time_t-free readers hold
# up to 2**32 - 1 (2106-02-07). SOURCE_DATE_EPOCH outside that cannot be written into every archive the build makes.
EPOCH_MIN = 315_532_800
EPOCH_MAX = 2**32 - 1

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?$", re.IGNORECASE)
_URL = re.compile(r"^(https?|file)://\S+$", re.IGNORECASE)
_FORBIDDEN_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def boolean(value: str) -> bool:
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("not a boolean")


def _int(value: str, what: str) -> int:
    word = value.strip()
    if not re.fullmatch(r"[+-]?\d{1,30}", word):
        raise ValueError(f"not a whole number of {what}")
    return int(word)


def _float(value: str, what: str) -> float:
    word = value.strip()
    if len(word) > 40:
        raise ValueError(f"not a number of {what}")
    try:
        number = float(word)
    except ValueError:
        raise ValueError(f"not a number of {what}") from None
    if not math.isfinite(number):
        raise ValueError(f"not a finite number of {what}")
    return number


def positive_int(value: str, *, what: str = "items", maximum: int | None = None) -> int:
    number = _int(value, what)
    if number < 1:
        raise ValueError(f"must be at least 1 ({what})")
    if maximum is not None and number > maximum:
        raise ValueError(f"must be at most {maximum:,} {what}")
    return number


def size_budget_mb(value: str) -> int:
    return positive_int(value, what="MB", maximum=MAX_SIZE_BUDGET_MB)


def uid(value: str) -> int:
    number = _int(value, "an id")
    if not 0 <= number <= UID_MAX:
        raise ValueError(f"must be between 0 and {UID_MAX} (a Unix user or group id)")
    return number


def port(value: str) -> int:
    number = _int(value, "a port")
    if not 1 <= number <= 65535:
        raise ValueError("must be between 1 and 65535 (a TCP port)")
    return number


def positive_seconds(value: str) -> float:
    number = _float(value, "seconds")
    if number <= 0:
        raise ValueError("must be more than 0 seconds")
    if number > MAX_TIMEOUT_S:
        raise ValueError(f"must be at most {MAX_TIMEOUT_S:,} seconds (a year)")
    return number


def non_negative_seconds(value: str) -> float:
    """A timeout where 0 means no limit."""
    number = _float(value, "seconds")
    if number < 0:
        raise ValueError("must be 0 (no limit) or more seconds")
    if number > MAX_TIMEOUT_S:
        raise ValueError(f"must be at most {MAX_TIMEOUT_S:,} seconds (a year), or 0 for no limit")
    return number + 0.0  # -0.0 -> 0.0


def finite_positive(value: str) -> float:
    number = _float(value, "units")
    if number <= 0:
        raise ValueError("must be a finite number above 0")
    return number


def fraction(value: str) -> float:
    """0 <= x < 1, e.g. a relative noise floor."""
    number = _float(value, "a fraction")
    if not 0 <= number < 1:
        raise ValueError("must be a fraction from 0 up to (not including) 1, e.g. 0.005 for 0.5%")
    return number + 0.0


def docker_size(value: str) -> str:
    """A size as Docker writes it (``8g``, ``512m``, ``1.5g``, ``1024``): returned as written, lower case."""
    word = value.strip()
    m = _SIZE.fullmatch(word) if len(word) <= 32 else None
    if m is None:
        raise ValueError("not a Docker size: a number with an optional unit b, k, m, g, t, e.g. 8g or 512m")
    if float(m.group(1)) <= 0:
        raise ValueError("must be more than 0")
    return word.lower()


def epoch(value: str) -> int:
    number = _int(value, "seconds since 1970")
    if not EPOCH_MIN <= number <= EPOCH_MAX:
        raise ValueError(f"must be a Unix time from {EPOCH_MIN} (1980-01-01, the earliest a zip holds) to "
                         f"{EPOCH_MAX} (2106-02-07): e.g. `git log -1 --format=%ct`")
    return number


def text(value: str) -> str:
    word = value.strip()
    if not word:
        raise ValueError("is empty")
    if any(ch in word for ch in "\n\r\t\0"):
        raise ValueError("holds a control character")
    return word


def image_ref(value: str) -> str:
    word = text(value)
    if any(ch.isspace() for ch in word) or len(word) > 512:
        raise ValueError("not an image reference: NAME[:TAG][@DIGEST] without spaces, e.g. torchrig-base:bookworm")
    return word


def url(value: str) -> str:
    word = value.strip()
    if not _URL.fullmatch(word) or len(word) > 2048:
        raise ValueError("not a package index URL: http://, https:// or file://, e.g. https://pypi.org/simple")
    return word


def url_list(value: str) -> tuple[str, ...]:
    """Space- or comma-separated URLs; empty means none."""
    return tuple(url(part) for part in value.replace(",", " ").split())


def path(value: str) -> Path:
    word = value.strip()
    if not word or "\0" in word:
        raise ValueError("not a path")
    return Path(word).expanduser()


def directory(value: str) -> Path:
    """A directory torchrig may create and write: not an existing file, not under /proc, /sys or /dev, and under a
    parent this user can write (checked, not created: nothing is made before it is needed)."""
    p = path(value)
    absolute = Path(os.path.abspath(p))
    for root in _FORBIDDEN_ROOTS:
        if absolute == root or root in absolute.parents:
            raise ValueError(f"is under {root}, which holds no files torchrig can write: choose another directory")
    if absolute.exists() and not absolute.is_dir():
        raise ValueError("is an existing file, not a directory: choose a directory")
    ancestor = absolute
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"cannot be created: {ancestor} is a file")
    if absolute != ancestor and not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"cannot be created: {ancestor} is not writable by this user")
    return p
