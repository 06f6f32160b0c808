"""Which of a build's download sources this machine cannot reach: asked only after a build failed, to say so.

A build downloads from the base image's registry (the engine pulls it) and from the package index and extra
indexes (pip inside the build). When one fails, the engine names only the first thing that broke; this module
connects to every source at once (a TCP connect, ``CONNECT_TIMEOUT`` seconds each, all in parallel, the whole
check bounded by ``CHECK_TIMEOUT``) so the error can name each unreachable one and the one setup that avoids them.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from torchrig.engine.registry import registry_of
from torchrig.images.base import missing_base_hint, suite_for_python

if TYPE_CHECKING:
    from torchrig.images.plan import Plan

__all__ = ["CHECK_TIMEOUT", "CONNECT_TIMEOUT", "MAX_SOURCES", "Source", "build_sources", "explain_build_failure",
           "setup_hint", "unreachable", "unreachable_report"]

CONNECT_TIMEOUT = 3.0  # seconds per source: a reachable registry or index answers a TCP connect in well under 1 s
CHECK_TIMEOUT = 5.0  # the whole check (name resolution has no timeout of its own: a hung resolver is cut here)
MAX_SOURCES = 8  # a row has one base, one index and a few extra indexes: more is a mistake, not a reason to wait
_DOCKER_HUB = "registry-1.docker.io"  # where the engine pulls a name without a registry from


@dataclass(frozen=True, kw_only=True)
class Source:
    what: str  # "the registry of the base image python:3.11-slim", "the package index https://..."
    host: str
    port: int
    via: str = ""  # the proxy URL the connection goes through, when the environment names one for it


def _proxied(url: str, host: str) -> tuple[str, int, str] | None:
    scheme = urlsplit(url).scheme
    proxy = urllib.request.getproxies_environment().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    try:
        port = p.port or (443 if p.scheme == "https" else 80)
    except ValueError:
        return None
    return (p.hostname, port, proxy) if p.hostname else None


def _index_source(url: str, what: str) -> Source | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None  # file:// and the like: nothing to connect to
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port out of range: the plan's URL check reports that
        return None
    proxied = _proxied(url, parts.hostname)
    if proxied:
        return Source(what=f"{what} {url}", host=proxied[0], port=proxied[1], via=proxied[2])
    return Source(what=f"{what} {url}", host=parts.hostname, port=port)


def build_sources(base: str, index_url: str | None, extra_index_urls: tuple[str, ...] = ()) -> list[Source]:
    """The base's registry and each index (``index_url=None``: installed from a wheelhouse), one per host:port."""
    registry = registry_of(base)
    host, _, port = (_DOCKER_HUB if registry == "docker.io" else registry).partition(":")
    found: list[Source] = [Source(what=f"the registry of the base image {base}", host=host,
                                  port=int(port) if port.isdigit() and 0 < int(port) < 65536 else 443)]
    urls = [] if index_url is None else [(index_url, "the package index"),
                                         *((u, "the extra index") for u in extra_index_urls)]
    for url, what in urls:
        src = _index_source(url, what)
        if src is not None:
            found.append(src)
    seen: set[tuple[str, int, str]] = set()
    unique = []
    for s in found:
        if (s.host, s.port, s.what) not in seen:
            seen.add((s.host, s.port, s.what))
            unique.append(s)
    return unique[:MAX_SOURCES]


def _connect(source: Source, timeout: float) -> str | None:
    """None when a TCP connection opens, else why not."""
    try:
        with socket.create_connection((source.host, source.port), timeout=timeout):
            return None
    except socket.gaierror as e:
        return f"the name {source.host} does not resolve ({e.strerror or e})"
    except TimeoutError:
        return f"no answer from {source.host}:{source.port} within {timeout:g} s"
    except OSError as e:
        return f"{source.host}:{source.port}: {e.strerror or e}"


def unreachable(sources: list[Source], *, timeout: float = CONNECT_TIMEOUT,
                bound: float = CHECK_TIMEOUT) -> list[tuple[Source, str]]:
    """Each source no TCP connection reached, with why; in parallel, returning within ``bound`` seconds."""
    results: dict[int, str | None] = {}

    def probe(i: int, s: Source) -> None:
        try:
            results[i] = _connect(s, timeout)
        except Exception as e:  # noqa: BLE001 - a probe thread must never die with a traceback
            results[i] = f"{s.host}:{s.port}: {type(e).__name__}: {e}"

    threads = [threading.Thread(target=probe, args=(i, s), daemon=True) for i, s in enumerate(sources[:MAX_SOURCES])]
    for t in threads:
        t.start()
    deadline = time.monotonic() + bound
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    out = []
    for i, s in enumerate(sources[:MAX_SOURCES]):
        if i not in results:
            out.append((s, f"no answer from {s.host}:{s.port} within {bound:g} s (name resolution or connect)"))
        elif (why := results[i]) is not None:
            out.append((s, why))
    return out


_INDEX_LINES = ('  index-url = "https://pypi.org/simple"   # or your mirror of PyPI / the PyTorch index\n'
                "(PyPI's Linux torch wheels carry CUDA libraries: also size-budget-mb = 5800 for cpu)")


def setup_hint(python: str, suite: str | None, *, index_down: bool = True, base_down: bool = True) -> str:
    """The one command that sets a machine without registry or index up, and the torchrig.toml lines it needs."""
    index = _INDEX_LINES
    if not base_down:
        return f"Point builds at an index this machine reaches, once, in torchrig.toml (beside matrix.yaml):\n{index}."
    if suite is None:
        base = (f"no Debian suite ships Python {python}: pull a base with it from a registry you can reach "
                "and set base-image to it")
        return f"Set this machine up once in torchrig.toml (beside matrix.yaml): {base}" + (
            f"; the package index is unreachable too, so add\n{index}." if index_down else ".")
    return (f"Set this machine up once: `nox -s base-local -- --suite {suite} --write-config` builds a local Debian "
            f"base and writes\n  base-image = \"torchrig-base:{suite}\"\ninto torchrig.toml (beside matrix.yaml)"
            + (f"; the package index is unreachable too, so add there\n{index}." if index_down else "."))


def unreachable_report(sources: list[Source], *, timeout: float = CONNECT_TIMEOUT,
                       bound: float = CHECK_TIMEOUT) -> str:
    """A paragraph naming each unreachable source ("" when every one answered)."""
    return _report(unreachable(sources, timeout=timeout, bound=bound), len(sources))


def _report(down: list[tuple[Source, str]], checked: int) -> str:
    if not down:
        return ""
    lines = [f"Unreachable from this machine ({len(down)} of {checked} sources checked):"]
    for s, why in down:
        via = f" through the proxy {s.via}" if s.via else ""
        lines.append(f"  - {s.what}{via}: {why}")
    return "\n".join(lines)


def explain_build_failure(message: str, plan: Plan, *, from_failed: bool, offline: bool) -> str:
    """The engine's build error, plus each source of ``plan`` this machine cannot reach and the setup that avoids
    them. ``from_failed``: the base image could not be pulled; ``offline``: packages come from a wheelhouse."""
    index = None if offline else plan.index_url
    sources = build_sources(plan.base, index, plan.extra_index_urls)
    if not from_failed:
        sources = sources[1:]  # the base is here: only the indexes can explain a failed RUN step
    down = unreachable(sources)
    lines = [message]
    if from_failed:
        lines.append(f"The base image {plan.base} could not be had: pull it, or {missing_base_hint(plan.env.python)}.")
    if down:
        index_down = any(not s.what.startswith("the registry") for s, _ in down)
        lines += [_report(down, len(sources)),
                  setup_hint(plan.env.python, suite_for_python(plan.env.python), index_down=index_down,
                             base_down=from_failed)]
    return "\n".join(lines)
