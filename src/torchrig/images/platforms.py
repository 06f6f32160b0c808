"""Which OCI platform a build is for: ``--platform`` parsed, checked against the row, and named per platform.

A row lists its platforms in matrix.yaml (``platforms: [linux/amd64, linux/arm64]``; amd64 the default). One local
engine holds one image per tag, so an image for a platform other than amd64 is tagged with the platform's
architecture after the tag (``...:2.0.1-cpu-py3.11-arm64``, as docker-stacks tags ``aarch64-...``); ``torchrig
push`` pushes each platform's image and then one OCI image index under the plain tag (engine/registry.py).
A lock names the platform it was resolved for (uv's ``--python-platform``, e.g. ``aarch64-manylinux_2_17``): an
arm64 build refuses a lock resolved for x86_64, and the other way round.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torchrig.errors import BuildError, UsageError
from torchrig.matrix import Environment, ImageRef

if TYPE_CHECKING:
    import docker

__all__ = [
    "DEFAULT_PLATFORM",
    "PLATFORM_ARCH",
    "PLATFORM_MACHINE",
    "check_base_platform",
    "check_lock_platform",
    "check_row_platform",
    "lock_machine",
    "parse_platform",
    "platform_ref",
]

DEFAULT_PLATFORM = "linux/amd64"
# OCI platform -> the architecture in image configs and Debian (``amd64``), and the machine in wheel tags/uname
PLATFORM_ARCH: dict[str, str] = {"linux/amd64": "amd64", "linux/arm64": "arm64"}
PLATFORM_MACHINE: dict[str, str] = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
# what people write for the same platform: the kernel's and the wheels' names, and arm64's only variant v8
_SPELLINGS: dict[str, str] = {
    "linux/amd64": "linux/amd64", "linux/x86_64": "linux/amd64", "amd64": "linux/amd64", "x86_64": "linux/amd64",
    "linux/arm64": "linux/arm64", "linux/arm64/v8": "linux/arm64", "linux/aarch64": "linux/arm64",
    "arm64": "linux/arm64", "aarch64": "linux/arm64",
}
_MAX_LEN = 64


def parse_platform(text: str) -> str:
    """The OCI platform ``text`` names (``linux/arm64``), or UsageError (exit 2) saying which ones exist."""
    word = text.strip().lower() if isinstance(text, str) else ""
    if word in _SPELLINGS:
        return _SPELLINGS[word]
    shown = text if isinstance(text, str) and len(text) <= _MAX_LEN and text.isprintable() else \
        repr(text)[:_MAX_LEN] + "..."
    raise UsageError(f"unknown platform {shown!r}: choose one of {', '.join(PLATFORM_ARCH)} (OS/architecture, as "
                     "`docker build --platform` takes it)")


def check_row_platform(env: Environment, platform: str) -> None:
    """UsageError (exit 2) unless ``env``'s row lists ``platform``: the compat check of its wheels ran for those."""
    listed = tuple(getattr(env, "platforms", (DEFAULT_PLATFORM,)))
    if platform not in listed:
        raise UsageError(f"{env.id} does not build for {platform}: its platforms are {', '.join(listed)}. Add "
                         f"{platform} to {env.id}'s platforms: in matrix.yaml (`torchrig validate` checks that its "
                         "torch has wheels there), or build one of those")


def platform_ref(ref: ImageRef, platform: str) -> ImageRef:
    """The local names of ``ref``'s image for ``platform``: unchanged for amd64, ``-<arch>`` after both tags else."""
    if platform == DEFAULT_PLATFORM:
        return ref
    arch = PLATFORM_ARCH[platform]
    return ImageRef(immutable=f"{ref.immutable}-{arch}", alias=f"{ref.alias}-{arch}")


def lock_machine(lock_platform: str) -> str:
    """The machine a lock's ``platform:`` header resolved for: ``x86_64-manylinux_2_28`` -> ``x86_64``."""
    m = re.match(r"^(x86_64|aarch64|arm64|amd64)\b", lock_platform.strip().lower())
    if m is None:
        return "x86_64"  # uv's platforms all start with their machine; an old header without one meant x86_64
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m.group(1), m.group(1))


def check_lock_platform(*, lock_name: str, lock_platform: str, platform: str, env_id: str) -> None:
    """BuildError unless the lock was resolved for ``platform``'s machine (its wheels would not install there)."""
    want, have = PLATFORM_MACHINE[platform], lock_machine(lock_platform)
    if want != have:
        raise BuildError(f"{lock_name} was resolved for {lock_platform} ({have}), but this build is for {platform} "
                         f"({want} wheels): write the {platform} lock with `torchrig lock {env_id} --platform "
                         f"{platform}` and build with it (--lock-file), or build for the lock's platform")


def check_base_platform(client: docker.DockerClient, base: str, platform: str) -> None:
    """BuildError when the local base image is for another architecture: the legacy builder would use it anyway
    and label an amd64 image arm64."""
    import docker.errors

    try:
        arch = client.images.get(base).attrs.get("Architecture")
    except docker.errors.ImageNotFound:
        return  # pulled by the build, for the platform it asks for
    if arch and arch != PLATFORM_ARCH[platform]:
        raise BuildError(f"the base image {base} is {arch}, not {PLATFORM_ARCH[platform]}: for {platform} build from "
                         f"an {PLATFORM_ARCH[platform]} base (`torchrig base-local --arch {PLATFORM_ARCH[platform]}` "
                         f"and --base-image torchrig-base:bookworm-{PLATFORM_ARCH[platform]}, or pull the base with "
                         f"--platform {platform})")
