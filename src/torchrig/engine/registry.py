"""Push and pull an environment's images (immutable tag and alias), with per-layer progress.

docker-py's push and pull do not raise when the registry fails: the failure is an item in the stream
(docker/docker-py#3161). :class:`~torchrig.engine.stream.TransferStream` reads it and raises
:class:`~torchrig.errors.RegistryError` with what to do next (e.g. "cannot reach registry 127.0.0.1:5999: is it
running? set TORCHRIG_REGISTRY").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchrig.engine.stream import TransferStream, registry_hint
from torchrig.errors import RegistryError
from torchrig.matrix import ImageRef
from torchrig.results.io import Log

if TYPE_CHECKING:
    import docker

__all__ = ["pull_image", "push_image", "registry_of"]



def registry_of(name: str) -> str:
    """The registry host of an image name (``docker.io`` when the name has none, as Docker decides)."""
    first, sep, _ = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _check_pushable(ref: ImageRef) -> None:
    if registry_of(ref.immutable) == "docker.io" and "/" not in ref.immutable.split(":", 1)[0]:
        raise RegistryError(f"{ref.immutable} has no registry in its name: set TORCHRIG_REGISTRY (or registry: "
                            "in matrix.yaml) to the registry to push to, e.g. TORCHRIG_REGISTRY=localhost:5000")


def push_image(ref: ImageRef, *, client: docker.DockerClient, log: Log) -> str | None:
    """Push the immutable tag and the alias; return the pushed digest (None if the engine did not say)."""
    import docker.errors

    _check_pushable(ref)
    digest = None
    for name in (ref.immutable, ref.alias):
        repo, tag = name.rsplit(":", 1)
        registry = registry_of(name)
        try:
            client.images.get(name)
        except docker.errors.ImageNotFound:
            raise RegistryError(f"there is no local image {name} to push: build it first (`torchrig build ENV`), "
                                "or pull it") from None
        stream = TransferStream(action="push", ref=name, registry=registry, log=log)
        try:
            stream.consume(client.api.push(repo, tag=tag, stream=True, decode=True))
        except docker.errors.APIError as e:
            msg = str(e.explanation or e)
            raise RegistryError(f"push {name} failed: {registry_hint(registry, msg)}\n  engine said: {msg}") from None
        digest = digest or stream.digest
    return digest


def pull_image(ref: ImageRef, *, client: docker.DockerClient, log: Log) -> str:
    """Pull the immutable tag, point the alias at it locally, and return the image id."""
    import docker.errors

    repo, tag = ref.immutable.rsplit(":", 1)
    registry = registry_of(ref.immutable)
    stream = TransferStream(action="pull", ref=ref.immutable, registry=registry, log=log)
    try:
        stream.consume(client.api.pull(repo, tag=tag, stream=True, decode=True))
        image = client.images.get(ref.immutable)
    except docker.errors.ImageNotFound:
        raise RegistryError(f"pull {ref.immutable} reported success but no such image exists locally") from None
    except docker.errors.APIError as e:
        msg = str(e.explanation or e)
        raise RegistryError(f"pull {ref.immutable} failed: {registry_hint(registry, msg)}\n  engine said: {msg}") \
            from None
    alias_repo, alias_tag = ref.alias.rsplit(":", 1)
    image.tag(alias_repo, alias_tag)
    log(f"[pull {ref.immutable}] {image.short_id}; tagged {ref.alias}")
    return str(image.id)
