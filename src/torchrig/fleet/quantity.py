"""Kubernetes resource quantities (``4``, ``500m``, ``16Gi``): parsed from flags once, checked, kept as strings.

The API types every quantity as a string; the official client (>= 37, pydantic models) refuses an integer where a
quantity goes, so the manifest carries the text the user gave (``"8"``, ``"16Gi"``), and the numeric value is
only used to compare (the memory limit against the memory-backed ``/dev/shm``).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Literal

from torchrig.errors import UsageError

__all__ = ["Quantity", "docker_size_to_quantity", "parse_quantity"]

QuantityKind = Literal["cpu", "memory"]
_QUANTITY = re.compile(r"(?P<num>\d+(?:\.\d*)?|\.\d+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?")
_BINARY: dict[str, Decimal | int] = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL: dict[str, Decimal | int] = {"m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                                      "P": 10**15, "E": 10**18}
_DOCKER = re.compile(r"(\d+)([bkmgt]?)b?")
_DOCKER_UNIT = {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi", "t": "Ti"}
_EXAMPLES = {"cpu": "4 or 500m (CPU cores)", "memory": "16Gi or 512Mi (bytes, binary suffixes)"}


class Quantity(str):
    """A checked quantity: the text for the manifest, ``.value`` for comparisons (cores or bytes)."""

    value: Decimal

    def __new__(cls, text: str, value: Decimal) -> Quantity:
        q = super().__new__(cls, text)
        q.value = value
        return q


def parse_quantity(flag: str, text: str, *, kind: QuantityKind) -> Quantity:
    """``text`` as a positive Kubernetes quantity for ``kind``, or UsageError naming ``flag`` and an example."""
    raw = str(text).strip()
    m = _QUANTITY.fullmatch(raw)
    hint = f"give a positive Kubernetes quantity such as {_EXAMPLES[kind]}"
    if m is None:
        docker = _DOCKER.fullmatch(raw.lower()) if kind == "memory" else None
        if docker and docker.group(2):
            hint = f"Kubernetes spells it {docker.group(1)}{_DOCKER_UNIT[docker.group(2)]} (Docker's {raw})"
        raise UsageError(f"{flag} {text!r} is not a Kubernetes quantity: {hint}")
    suffix = m["suffix"] or ""
    if kind == "cpu" and suffix not in ("", "m"):
        raise UsageError(f"{flag} {text!r}: CPU is counted in cores, with no suffix or `m` (millicores): {hint}")
    if kind == "memory" and suffix == "m":
        raise UsageError(f"{flag} {text!r}: `m` is milli-bytes, not megabytes (Kubernetes says Mi): {hint}")
    try:
        factor: Decimal | int = _BINARY.get(suffix) or _DECIMAL.get(suffix) or 1
        value = Decimal(m["num"]) * Decimal(factor)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimal digits
        raise UsageError(f"{flag} {text!r}: {hint}") from None
    if value <= 0:
        raise UsageError(f"{flag} {text!r}: must be more than zero; {hint}")
    if kind == "cpu" and value < Decimal("0.001"):
        raise UsageError(f"{flag} {text!r}: less than 1m (a thousandth of a core), which Kubernetes rounds to 0")
    return Quantity(raw, value)


def docker_size_to_quantity(flag: str, size: str) -> Quantity:
    """Docker's ``8g`` (``--shm-size``) -> Kubernetes' ``8Gi``, with its value in bytes."""
    m = _DOCKER.fullmatch(size.strip().lower())
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"{flag} {size!r}: give a positive size like 8g or 512m")
    return parse_quantity(flag, m.group(1) + _DOCKER_UNIT[m.group(2)], kind="memory")
