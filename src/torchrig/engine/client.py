"""Connecting to the Docker engine: one place that turns "no daemon" into a message the user can act on.

Every command that needs the engine calls :func:`connect`. docker-py raises a bare ``DockerException`` with a
connection traceback when nothing answers; torchrig says which address it tried (``DOCKER_HOST`` or the default
socket) and what to do next.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from torchrig.errors import DockerUnavailableError

if TYPE_CHECKING:
    import docker

__all__ = ["DEFAULT_TIMEOUT_S", "connect", "daemon_address", "is_local_daemon"]

# Builds and pushes stream for minutes; the timeout bounds each socket read, not the whole call.
DEFAULT_TIMEOUT_S = 600


def daemon_address() -> str:
    """The engine address docker-py will use: ``$DOCKER_HOST`` or the default Unix socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(timeout: int = DEFAULT_TIMEOUT_S) -> docker.DockerClient:
    """A client for the engine named by ``$DOCKER_HOST`` (or the default socket), checked with a ping.

    Raises DockerUnavailableError naming the address when no daemon answers, instead of docker-py's traceback.
    """
    try:
        import docker
    except ImportError:  # pragma: no cover - docker is a declared dependency
        raise DockerUnavailableError("the Docker SDK for Python is not installed: pip install 'docker>=7'") from None
    address = daemon_address()
    try:
        # version=None: negotiate the API version, so old engines (20.10 here) and new ones both work.
        client = docker.from_env(timeout=timeout, version=None)
        client.ping()
    except Exception as e:  # noqa: BLE001 - docker-py raises DockerException, requests and OS errors alike
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DockerUnavailableError(
            f"cannot reach a Docker engine at DOCKER_HOST={address} ({reason}).\n"
            "Start the Docker daemon (e.g. `sudo systemctl start docker`, or `dockerd &`), or set DOCKER_HOST to "
            "an engine that is running (e.g. DOCKER_HOST=unix:///run/user/1000/docker.sock for rootless Docker)."
        ) from None
    return client


def is_local_daemon(address: str | None = None) -> bool:
    """Whether build containers run on this machine, so ``network_mode="host"`` reaches this host's 127.0.0.1.

    A Unix socket (or Windows named pipe) is local; ``tcp://`` is local only for a loopback host; ``ssh://`` is
    taken as remote. Docker Desktop's VM is the case this cannot see: its socket is local but its network is not.
    """
    url = urlparse(address or daemon_address())
    if url.scheme in ("unix", "npipe", ""):
        return True
    if url.scheme in ("tcp", "http", "https"):
        return (url.hostname or "") in ("localhost", "127.0.0.1", "::1")
    return False
