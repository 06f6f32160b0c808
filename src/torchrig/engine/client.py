"""Connecting to the Docker engine: one place that turns "no daemon" into a message the user can act on.

Every command that needs the engine calls :func:`connect`. docker-py raises a bare ``DockerException`` with a
connection traceback when nothing answers; torchrig says which address it tried (``DOCKER_HOST`` or the default
socket) and what to do next.

Two timeouts: the first requests (API version, ping) get a short one (:data:`PING_TIMEOUT_S`, or
``TORCHRIG_DOCKER_PING_TIMEOUT``), so a socket that accepts and never answers -- a stalled daemon, a stale
forward -- ends in seconds; only then does the client get the long per-read timeout that builds, pushes and
pulls need (a layer can be silent for minutes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from torchrig.config.values import positive_seconds
from torchrig.errors import ConfigurationError, DockerUnavailableError

if TYPE_CHECKING:
    import docker

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "PING_TIMEOUT_ENV",
    "PING_TIMEOUT_S",
    "check_docker_host",
    "connect",
    "daemon_address",
    "is_local_daemon",
    "ping_timeout",
]

# Builds and pushes stream for minutes; the timeout bounds each socket read, not the whole call.
DEFAULT_TIMEOUT_S = 600
# The first answer of a healthy engine takes milliseconds; a loaded one, a second or two.
PING_TIMEOUT_S = 5.0
PING_TIMEOUT_ENV = "TORCHRIG_DOCKER_PING_TIMEOUT"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def daemon_address() -> str:
    """The engine address docker-py will use: ``$DOCKER_HOST`` or the default Unix socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def _where(address: str) -> str:
    return f"DOCKER_HOST={address}" if os.environ.get("DOCKER_HOST") else f"the default socket {address}"


def check_docker_host(address: str | None = None) -> None:
    """Refuse a ``DOCKER_HOST`` docker-py cannot use, before any connection (ConfigurationError, exit 2).

    docker-py's own rules (``docker.utils.parse_host``): ``unix://``, ``tcp://`` (with a port), ``ssh://`` and
    ``npipe://``; ``http://``/``https://`` are its aliases for tcp (https: with TLS), and a bare ``host:port`` is
    tcp. Anything else (``fd://``, ``docker://``, a typo) would fail later with a connection traceback.
    """
    import docker.errors
    import docker.utils

    address = address or daemon_address()
    try:
        docker.utils.parse_host(address)
    except (docker.errors.DockerException, ValueError) as e:  # ValueError: urllib's "Invalid IPv6 URL", a port
        raise ConfigurationError([
            f"{address!r}: {e}",
            "docker-py accepts unix:///path/to/docker.sock, tcp://HOST:PORT (or http(s)://HOST:PORT), "
            "ssh://[USER@]HOST[:PORT] and npipe:////./pipe/NAME; fix or unset DOCKER_HOST "
            f"(unset: {DEFAULT_SOCKET})",
        ], source="DOCKER_HOST") from None


def ping_timeout(environ: Mapping[str, str] | None = None) -> float:
    """Seconds to wait for the engine's first answer: ``TORCHRIG_DOCKER_PING_TIMEOUT`` or :data:`PING_TIMEOUT_S`."""
    raw = (os.environ if environ is None else environ).get(PING_TIMEOUT_ENV, "").strip()
    if not raw:
        return PING_TIMEOUT_S
    try:  # the settings layer's own parser for this setting (torchrig.config.table), so the rule is one
        return positive_seconds(raw)
    except ValueError as e:
        raise ConfigurationError([f"{PING_TIMEOUT_ENV}={raw!r}: {e}; give a number of seconds > 0 (default "
                                  f"{PING_TIMEOUT_S:g})"], source="environment") from None


def connect(timeout: int = DEFAULT_TIMEOUT_S, *, ping_timeout_s: float | None = None) -> docker.DockerClient:
    """A client for the engine named by ``$DOCKER_HOST`` (or the default socket), checked with a ping.

    The version negotiation and the ping wait at most ``ping_timeout_s`` (default :func:`ping_timeout`); the
    client returned waits ``timeout`` seconds per read. Raises ConfigurationError (exit 2) for a DOCKER_HOST
    docker-py cannot use, and DockerUnavailableError (exit 3) naming the address when no daemon answers in time.
    """
    try:
        import docker
    except ImportError:  # pragma: no cover - docker is a declared dependency
        raise DockerUnavailableError("the Docker SDK for Python is not installed: pip install 'docker>=7'") from None
    address = daemon_address()
    check_docker_host(address)
    short = ping_timeout() if ping_timeout_s is None else ping_timeout_s
    try:
        # version=None: negotiate the API version, so old engines (20.10 here) and new ones both work.
        client = docker.from_env(timeout=short, version=None)  # type: ignore[arg-type]  # docker-py takes floats
        client.ping()
    except Exception as e:  # noqa: BLE001 - docker-py raises DockerException, requests and OS errors alike
        raise DockerUnavailableError(_unreachable(address, e, short)) from None
    client.api.timeout = timeout
    return client


def _unreachable(address: str, error: Exception, waited: float) -> str:
    text = str(error)
    reason = text.splitlines()[0] if text else type(error).__name__
    if "timed out" in text.lower() or "timeout" in type(error).__name__.lower():
        return (f"the Docker engine at {_where(address)} accepted the connection but did not answer within "
                f"{waited:g} s ({reason}).\nThe daemon is stalled or something else holds that socket: restart it "
                "(e.g. `sudo systemctl restart docker`), check `docker info`, or point DOCKER_HOST at an engine "
                f"that answers; on a slow link raise {PING_TIMEOUT_ENV} (seconds, default {PING_TIMEOUT_S:g}).")
    return (f"cannot reach a Docker engine at {_where(address)} ({reason}).\n"
            "Start the Docker daemon (e.g. `sudo systemctl start docker`, or `dockerd &`), or set DOCKER_HOST to "
            "an engine that is running (e.g. DOCKER_HOST=unix:///run/user/1000/docker.sock for rootless Docker).")


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
