"""The build's file server: the CA bundle and the wheelhouse, on the host's 127.0.0.1, for the length of one build.

docker-py drives Docker's legacy builder: no build secrets, no ``RUN --mount``. Build args end up in ``docker
history`` and files in the context end up in a layer once COPY'd. So the things a build must *use* but not *keep*
are served instead: a ``ThreadingHTTPServer`` bound to 127.0.0.1 on an ephemeral port, under a random token path,
serving a private temp copy of the CA bundle and the wheelhouse directory in place (gigabytes of wheels never go
into the context tar). The build runs with ``network_mode="host"``; each downloading RUN step fetches the CA into
/tmp, uses it and deletes it (images/build-env.sh). The server's address travels in ``FTP_PROXY``, one of Docker's
predefined build args: those are the only ones kept out of both the layer-cache key and ``docker history``, so a
new port and token per build neither invalidates cached layers nor leaves a trace in the image.

A remote engine (``DOCKER_HOST=tcp://other-host``) runs its build containers elsewhere, where this 127.0.0.1 is
not this machine: :func:`plan` refuses that case with what to do instead.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from torchrig.engine.client import daemon_address, is_local_daemon
from torchrig.errors import UsageError

__all__ = ["FileServer", "ServePlan", "plan", "resolve_ca_bundle", "serving"]

_OFF = ("", "none", "off", "no", "0", "false")


def resolve_ca_bundle(option: str | os.PathLike[str] | None, setting: str | None = None,
                      source: str | None = None) -> Path | None:
    """The CA bundle a build serves: the ``--ca-bundle`` option, else the setting (``Settings.ca_bundle``: the raw
    value of TORCHRIG_CA_BUNDLE, else of PIP_CERT, REQUESTS_CA_BUNDLE or SSL_CERT_FILE -- what pip and requests on
    this host already use, so a host behind a TLS-intercepting proxy builds without extra flags), read from the
    variable ``source``.

    ``none`` (option or variable) turns it off. A file that does not exist is an error naming where it came from.
    """
    if option is not None:
        source, value = "--ca-bundle", os.fspath(option)
    elif setting is not None:
        source, value = source or "TORCHRIG_CA_BUNDLE", setting
    else:
        return None
    if value.strip().lower() in _OFF:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise UsageError(f"the CA bundle {value!r} (from {source}) is not a file: point {source} at a PEM bundle, "
                         "or pass --ca-bundle none to build without one")
    return path


@dataclass(frozen=True, kw_only=True)
class ServePlan:
    ca_bundle: Path | None
    wheelhouse: Path | None

    @property
    def needed(self) -> bool:
        return self.ca_bundle is not None or self.wheelhouse is not None

    @property
    def manifest(self) -> str:
        return " ".join(n for n, v in (("ca", self.ca_bundle), ("wheels", self.wheelhouse)) if v is not None)


def plan(*, ca_bundle: Path | None, wheelhouse: Path | None, daemon: str | None = None) -> ServePlan:
    """What to serve, refusing a remote engine (its build containers cannot reach this host's 127.0.0.1)."""
    if wheelhouse is not None and not wheelhouse.is_dir():
        raise UsageError(f"the wheelhouse {wheelhouse} is not a directory: fill one with `pip download -d DIR ...`")
    p = ServePlan(ca_bundle=ca_bundle, wheelhouse=wheelhouse)
    address = daemon or daemon_address()
    if p.needed and not is_local_daemon(address):
        what = " and ".join(x for x, v in (("the CA bundle", ca_bundle), ("the wheelhouse", wheelhouse)) if v)
        raise UsageError(
            f"DOCKER_HOST={address} is a remote engine: its build containers cannot fetch {what} from this "
            "machine's 127.0.0.1, which is how torchrig hands them to a build without leaving them in the image. "
            "Run torchrig on the engine's host, or build without them (--ca-bundle none, no --wheelhouse)."
        )
    return p


@contextlib.contextmanager
def serving(*, ca_bundle: Path | None, wheelhouse: Path | None) -> Iterator[str | None]:
    """``with serving(...) as url:`` the file server's URL for the build or the lock resolver, or None when there is
    nothing to serve (the same decision and the same refusal of a remote engine for both)."""
    p = plan(ca_bundle=ca_bundle, wheelhouse=wheelhouse)
    if not p.needed:
        yield None
        return
    with FileServer(p) as srv:
        yield srv.url


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: _Server

    def translate_path(self, path: str) -> str:
        prefix = f"/{self.server.token}/"
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if not clean.startswith(prefix):
            return "/nonexistent/torchrig"  # anything without the token is a 404
        rest = clean[len(prefix):]
        if rest == "manifest":
            return str(self.server.root / "manifest")
        if rest == "ca.pem" and self.server.plan.ca_bundle is not None:
            return str(self.server.root / "ca.pem")
        if (rest == "wheels" or rest.startswith("wheels/")) and self.server.plan.wheelhouse is not None:
            self.directory = str(self.server.plan.wheelhouse)
            return super().translate_path("/" + rest[len("wheels"):].lstrip("/"))
        return "/nonexistent/torchrig"

    def log_message(self, format: str, *args: Any) -> None:
        with self.server.lock:
            self.server.requests.append(self.path.replace(self.server.token, "<token>"))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, token: str, serve_plan: ServePlan) -> None:
        self.root, self.token, self.plan = root, token, serve_plan
        self.requests: list[str] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class FileServer:
    """``with FileServer(plan) as srv:`` -> ``srv.url`` (``http://127.0.0.1:PORT/TOKEN/``) while the build runs."""

    def __init__(self, serve_plan: ServePlan) -> None:
        self.plan = serve_plan
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FileServer:
        self._tmp = tempfile.TemporaryDirectory(prefix="torchrig-serve-")
        root = Path(self._tmp.name)
        root.chmod(0o700)
        (root / "manifest").write_text(self.plan.manifest + "\n")
        if self.plan.ca_bundle is not None:
            # A private copy: what the build receives cannot change mid-build or be read by other users.
            shutil.copyfile(self.plan.ca_bundle, root / "ca.pem")
        self._server = _Server(root, secrets.token_urlsafe(24), self.plan)
        self._thread = threading.Thread(target=self._server.serve_forever, name="torchrig-file-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def url(self) -> str:
        assert self._server is not None, "use FileServer as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/{self._server.token}/"

    @property
    def requests(self) -> list[str]:
        """Paths served so far (token masked): what the build steps actually fetched."""
        assert self._server is not None
        with self._server.lock:
            return list(self._server.requests)
