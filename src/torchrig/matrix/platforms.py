"""Whether a row's ``platforms:`` can be built: every platform needs a torch wheel for it on the row's index.

linux/amd64 is what every release in compat.yaml ships. linux/arm64 needs an aarch64 wheel of the row's torch and
flavour (compat.yaml ``aarch64``): PyPI serves one build per release (CPU up to 2.10, CUDA 13.0 from 2.11), the
PyTorch index one folder per flavour. An index that is neither (a mirror, a wheelhouse) is taken to carry what either
of them does.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from torchrig.matrix.compat import Compat

__all__ = ["platform_problems"]

_PYPI_HOSTS = ("pypi.org", "files.pythonhosted.org")
_PYTORCH_HOST = "download.pytorch.org"


def platform_problems(platforms: tuple[str, ...], *, torch: str, flavour: str, index: str,
                      compat: Compat) -> list[str]:
    """What keeps each of ``platforms`` from being built (empty when all can be): one message per platform."""
    if "linux/arm64" not in platforms:
        return []
    minor = ".".join(torch.split(".")[:2])
    wheels = compat.aarch64.get(minor)
    if wheels is None:
        return [f"linux/arm64: compat.yaml knows no aarch64 wheels of torch {minor}; remove linux/arm64, or add "
                f"torch {minor}'s aarch64 builds (with their source) to compat.yaml's aarch64 table"]
    host = (urlsplit(index).hostname or "").lower()
    if host in _PYPI_HOSTS:
        ok = wheels.pypi == flavour
    elif host == _PYTORCH_HOST:
        ok = flavour in wheels.index
    else:
        ok = flavour == wheels.pypi or flavour in wheels.index
    if ok:
        return []
    return [f"linux/arm64: torch {torch} has no aarch64 {flavour} wheel on {index} ({wheels.describe()}; compat.yaml "
            f"aarch64 [{', '.join(wheels.sources)}]); remove linux/arm64 or use an index and flavour that has one"]
