"""Build, tag and label an environment's image through the Docker SDK; measure it against its payload.

Public API (what ``containers.py`` and the CLI call):

* :class:`BuildOptions` -- the site overrides (base image, index, wheelhouse, CA bundle, size budget), each also
  read from a ``TORCHRIG_*`` variable by :meth:`BuildOptions.from_environ`.
* :func:`build_image` -- build ``env``/``target`` and return a :class:`BuiltImage` (tags, labels, size, payload).
* :func:`ensure_image` -- the same, but reuse an existing image whose ``io.torchrig.inputs`` label matches.
* :func:`find_image` -- the existing image for ``env``/``target``/``options``, or None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import NotAvailableYetError
from .matrix import Environment, ImageRef, Target

if TYPE_CHECKING:
    import docker

__all__ = ["BuildOptions", "BuiltImage", "Log", "build_image", "ensure_image", "find_image"]

Log = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """How to build: every field defaults to "what matrix.yaml says"; see ``torchrig build --help``."""

    base_image: str | None = None
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] | None = None
    wheelhouse: Path | None = None
    ca_bundle: Path | None = None
    keep_ca_bundle: bool = False
    size_budget_mb: int | None = None
    use_lock: bool = True
    lock_file: Path | None = None
    uid: int = 1000
    gid: int = 1000
    no_cache: bool = False
    root: Path | None = None
    extra_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    """An image that exists in the engine, with what a user wants to know about it."""

    env_id: str
    target: Target
    image_id: str
    ref: ImageRef
    labels: Mapping[str, str]
    size_bytes: int
    base_size_bytes: int
    site_packages_bytes: int
    build_seconds: float
    reused: bool

    @property
    def payload_bytes(self) -> int:
        """What the image cannot do without: its base image plus the installed site-packages."""
        return self.base_size_bytes + self.site_packages_bytes

    @property
    def ratio(self) -> float:
        return self.size_bytes / self.payload_bytes if self.payload_bytes else float("inf")


def build_image(env: Environment, target: Target = "runtime", options: BuildOptions | None = None, *,
                client: docker.DockerClient | None = None, log: Log | None = None) -> BuiltImage:
    """Build ``env``'s ``target`` image, tag it ``env.tags(target)`` (immutable + alias) and measure it.

    Raises BuildError (with the last log lines) when the build fails or the image exceeds its size budget;
    a failed build leaves no new tag behind.
    """
    raise NotAvailableYetError("build_image lands with the images work (issue 3)")


def ensure_image(env: Environment, target: Target = "runtime", options: BuildOptions | None = None, *,
                 client: docker.DockerClient | None = None, log: Log | None = None) -> BuiltImage:
    """The image for ``env``/``target``: reused when one with the same build inputs exists, else built."""
    raise NotAvailableYetError("ensure_image lands with the images work (issue 3)")


def find_image(env: Environment, target: Target = "runtime", options: BuildOptions | None = None, *,
               client: docker.DockerClient | None = None) -> BuiltImage | None:
    """The existing image built from the same inputs as ``build_image`` would use, or None."""
    raise NotAvailableYetError("find_image lands with the images work (issue 3)")
