"""Push and pull an environment's images (immutable tag and alias), with per-layer progress.

docker-py's push and pull do not raise when the registry fails: the failure is an item in the stream
(docker/docker-py#3161). :class:`~torchrig.engine.stream.TransferStream` reads it and raises
:class:`~torchrig.errors.RegistryError` with what to do next (e.g. "cannot reach registry 127.0.0.1:5999: is it
running? set TORCHRIG_REGISTRY").

The engine talks to the registry; torchrig reads the engine's stream with the client's long per-read timeout
(:data:`~torchrig.engine.client.DEFAULT_TIMEOUT_S`: a big layer can be silent for minutes). While the stream is
silent a line says every :data:`WAIT_NOTICE_S` seconds that it is still waiting and on which registry; a stream
silent past the read timeout (a stalled registry, or engine) is a RegistryError naming both, not a traceback.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torchrig.engine.oci_index import RegistryHTTP, index_document, split_name
from torchrig.engine.stream import TransferStream, registry_hint
from torchrig.errors import RegistryError
from torchrig.matrix import ImageRef
from torchrig.results.io import Log

if TYPE_CHECKING:
    import docker

__all__ = ["WAIT_NOTICE_S", "merge_index", "platform_tag", "pull_image", "push_image", "push_platforms", "registry_of",
           "waiting"]

WAIT_NOTICE_S = 30.0
_END = object()


def waiting(items: Iterable[Any], *, log: Log, what: str, every_s: float = WAIT_NOTICE_S) -> Iterator[Any]:
    """``items``, read in a thread, with a line every ``every_s`` seconds of silence saying what it waits for.

    An exception the reading raises (a read timeout) is raised here, in the caller's thread.
    """
    box: queue.Queue[Any] = queue.Queue(maxsize=64)

    def pump() -> None:
        try:
            for item in items:
                box.put(item)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            box.put(e)
        box.put(_END)

    threading.Thread(target=pump, name=f"torchrig-{what}", daemon=True).start()
    start = time.monotonic()
    while True:
        try:
            item = box.get(timeout=every_s)
        except queue.Empty:
            log(f"[{what}] still waiting for the engine ({time.monotonic() - start:.0f} s, nothing new for "
                f"{every_s:g} s)")
            continue
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _stalled(action: str, name: str, registry: str, error: BaseException, client: docker.DockerClient) -> str:
    from torchrig.engine.client import daemon_address

    waited = getattr(client.api, "timeout", None)
    within = f" within {waited:g} s" if isinstance(waited, (int, float)) else ""
    return (f"{action} {name} failed: the engine at {daemon_address()} sent nothing{within} while talking to "
            f"registry {registry} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}).\n"
            f"Registry {registry} (or the engine) is stalled: check it answers (`curl -sS https://{registry}/v2/`), "
            "set TORCHRIG_REGISTRY to one that does, and try again.")


def _transfer_errors() -> tuple[type[BaseException], ...]:
    import requests.exceptions
    import urllib3.exceptions

    return (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, TimeoutError, ConnectionError)



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
    _check_pushable(ref)
    digest = None
    for name in (ref.immutable, ref.alias):
        digest = _push_one(name, client=client, log=log) or digest
    return digest


def _push_one(name: str, *, client: docker.DockerClient, log: Log) -> str | None:
    import docker.errors

    repo, tag = name.rsplit(":", 1)
    registry = registry_of(name)
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        raise RegistryError(f"there is no local image {name} to push: build it first (`torchrig build ENV`), "
                            "or pull it") from None
    stream = TransferStream(action="push", ref=name, registry=registry, log=log)
    try:
        stream.consume(waiting(client.api.push(repo, tag=tag, stream=True, decode=True), log=log,
                               what=f"push {name} to {registry}"))
    except docker.errors.APIError as e:
        msg = str(e.explanation or e)
        raise RegistryError(f"push {name} failed: {registry_hint(registry, msg)}\n  engine said: {msg}") from None
    except _transfer_errors() as e:
        raise RegistryError(_stalled("push", name, registry, e, client)) from None
    return stream.digest


def platform_tag(ref: ImageRef, platform: str) -> str:
    """The name one platform's image is pushed under before the index: ``<immutable>-<arch>``."""
    return f"{ref.immutable}-{platform.split('/')[1]}"


def push_platforms(ref: ImageRef, local: Mapping[str, str], *, client: docker.DockerClient, log: Log) -> str:
    """Push each platform's local image (``local``: OCI platform -> local image name) under
    :func:`platform_tag`, then one OCI image index of them under the immutable tag and the alias; return the
    index's digest. The engine pulling the tag picks its own platform from the index."""
    import docker.errors

    _check_pushable(ref)
    for platform, name in local.items():
        try:
            image = client.images.get(name)
        except docker.errors.ImageNotFound:
            raise RegistryError(f"there is no local {platform} image {name} to push: build it first (`torchrig "
                                f"build ENV --platform {platform}`)") from None
        arch = image.attrs.get("Architecture")
        if arch != platform.split("/")[1]:
            raise RegistryError(f"{name} is a {arch} image, not {platform}: rebuild it with --platform {platform}")
        per = platform_tag(ref, platform)
        image.tag(*per.rsplit(":", 1))
        _push_one(per, client=client, log=log)
    return merge_index(ref, list(local), log=log)


def merge_index(ref: ImageRef, platforms: Sequence[str], *, log: Log) -> str:
    """PUT one OCI image index of the platforms' already pushed images (:func:`platform_tag`) under the immutable
    tag and the alias (what CI's merge job runs after each runner pushed its platform); return its digest."""
    host, repo, tag = split_name(ref.immutable)
    alias_tag = ref.alias.rsplit(":", 1)[1]
    with RegistryHTTP(host, repo) as reg:
        children = [reg.manifest(platform_tag(ref, p).rsplit(":", 1)[1], p) for p in platforms]
        body = index_document(children, annotations={"org.opencontainers.image.ref.name": tag})
        digest = reg.put_index(tag, body)
        reg.put_index(alias_tag, body)
    log(f"[push {ref.immutable}] image index {digest[:19]}: {', '.join(platforms)}; also {ref.alias}")
    return digest


def pull_image(ref: ImageRef, *, client: docker.DockerClient, log: Log) -> str:
    """Pull the immutable tag, point the alias at it locally, and return the image id."""
    import docker.errors

    repo, tag = ref.immutable.rsplit(":", 1)
    registry = registry_of(ref.immutable)
    stream = TransferStream(action="pull", ref=ref.immutable, registry=registry, log=log)
    try:
        stream.consume(waiting(client.api.pull(repo, tag=tag, stream=True, decode=True), log=log,
                               what=f"pull {ref.immutable} from {registry}"))
        image = client.images.get(ref.immutable)
    except docker.errors.ImageNotFound:
        raise RegistryError(f"pull {ref.immutable} reported success but no such image exists locally") from None
    except docker.errors.APIError as e:
        msg = str(e.explanation or e)
        raise RegistryError(f"pull {ref.immutable} failed: {registry_hint(registry, msg)}\n  engine said: {msg}") \
            from None
    except _transfer_errors() as e:
        raise RegistryError(_stalled("pull", ref.immutable, registry, e, client)) from None
    alias_repo, alias_tag = ref.alias.rsplit(":", 1)
    image.tag(alias_repo, alias_tag)
    log(f"[pull {ref.immutable}] {image.short_id}; tagged {ref.alias}")
    return str(image.id)
