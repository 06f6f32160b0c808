"""Pinned bases (``locks/bases.yaml``): each base image tag resolved to its digest, so a build uses ``tag@digest``.

Tags move (``python:3.11-slim-bookworm`` gets security updates; NVIDIA deletes end-of-life CUDA tags); a digest
names one manifest for good. ``torchrig pin-bases [ENV]`` asks each base's registry, through the engine
(``docker.DockerClient.images.get_registry_data``: no pull), for the digest its tag points at now and records it
beside the locks. A build then uses ``<tag>@<digest>`` as its ``FROM`` and labels the image
``org.opencontainers.image.base.digest``; a base that is not recorded (a local ``torchrig-base:bookworm``, a new
target) is built from its tag and the build says so. Run it again to move to the bases' current digests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from torchrig.engine.registry import registry_of
from torchrig.engine.stream import registry_hint
from torchrig.errors import ConfigurationError, RegistryError
from torchrig.matrix import Environment
from torchrig.matrix.yamlsafe import YamlError, load_yaml
from torchrig.results.io import atomic_write_text
from torchrig.results.reading import InputFileError

if TYPE_CHECKING:
    import docker

__all__ = ["BASES_FILE", "PinnedBase", "bases_file", "pin", "pin_bases", "read_pins", "resolve_digest", "write_pins"]

BASES_FILE = Path("locks") / "bases.yaml"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEADER = """\
# Base image digests: written by `torchrig pin-bases [ENV]`, which asks each registry what the tag points at now.
# Builds use <tag>@<digest> and label org.opencontainers.image.base.digest; run it again to take newer bases.
"""


def bases_file(matrix_path: Path) -> Path:
    """Where the pins of a matrix live: ``locks/bases.yaml`` beside it."""
    return matrix_path.resolve().parent / BASES_FILE


@dataclass(frozen=True, kw_only=True)
class PinnedBase:
    ref: str  # what FROM uses: tag@digest, or the tag when not pinned
    name: str  # the tag (org.opencontainers.image.base.name)
    digest: str | None  # org.opencontainers.image.base.digest

    def describe(self) -> str:
        if self.digest is None:
            return f"{self.name} (not pinned: `torchrig pin-bases` records its digest)"
        return f"{self.name} pinned at {self.digest[:19]}"


def pin(base: str, pins: Mapping[str, str]) -> PinnedBase:
    """``base`` as a build uses it: a reference that already names a digest, or the recorded digest, or the tag."""
    name, sep, digest = base.partition("@")
    if sep:
        return PinnedBase(ref=base, name=name, digest=digest)
    if base in pins:
        return PinnedBase(ref=f"{base}@{pins[base]}", name=base, digest=pins[base])
    return PinnedBase(ref=base, name=base, digest=None)


def read_pins(path: Path) -> dict[str, str]:
    """The recorded digests (tag -> sha256:...); empty when there is no file. ConfigurationError when malformed."""
    if not path.exists() and not path.is_symlink():  # a FIFO, a directory or a broken link is named, not skipped
        return {}
    try:
        data = load_yaml(path, kind="bases", string_keys=True) or {}
    except InputFileError as e:
        raise ConfigurationError([e.reason], source=str(path)) from None
    except YamlError as e:
        raise ConfigurationError([f"not YAML: {e.where + ': ' if e.where else ''}{e.problem}"],
                                 source=str(path)) from None
    bases = data.get("bases") if isinstance(data, dict) else None
    if not isinstance(bases, dict):
        raise ConfigurationError(["expected a mapping `bases: {TAG: sha256:...}`; rewrite it with "
                                  "`torchrig pin-bases`"], source=str(path))
    bad = [f"{k}: {v!r}" for k, v in bases.items() if not isinstance(v, str) or not _DIGEST_RE.match(v)]
    if bad:
        raise ConfigurationError([f"not a sha256 digest: {b}" for b in bad] + ["rewrite it with `torchrig pin-bases`"],
                                 source=str(path))
    return {str(k): str(v) for k, v in bases.items()}


def write_pins(path: Path, pins: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump({"bases": dict(sorted(pins.items()))}, default_flow_style=False, sort_keys=False)
    atomic_write_text(path, _HEADER + body)


def resolve_digest(client: docker.DockerClient, ref: str) -> str:
    """The digest ``ref``'s tag points at in its registry now (the manifest list's, for a multi-platform tag)."""
    import docker.errors

    registry = registry_of(ref)
    try:
        digest = str(client.images.get_registry_data(ref).id)
    except docker.errors.APIError as e:
        msg = str(e.explanation or e)
        raise RegistryError(f"cannot resolve {ref} to a digest: {registry_hint(registry, msg)}\n"
                            f"  engine said: {msg}") from None
    if not _DIGEST_RE.match(digest):
        raise RegistryError(f"the registry {registry} answered {digest!r} for {ref}, not a sha256 digest")
    return digest


def pin_bases(envs: Iterable[Environment], *, client: docker.DockerClient, path: Path,
              log: Callable[[str], None]) -> dict[str, str]:
    """Resolve every target base of ``envs`` and record the digests in ``path`` (other recorded bases stay)."""
    pins = read_pins(path)
    for base in sorted({b for env in envs for b in env.targets.values()}):
        if "@" in base:
            log(f"{base}: names its digest already")
            continue
        digest = resolve_digest(client, base)
        was = pins.get(base)
        pins[base] = digest
        change = "unchanged" if was == digest else (f"was {was[:19]}" if was else "new")
        log(f"{base}: {digest} ({change})")
    write_pins(path, pins)
    return pins
