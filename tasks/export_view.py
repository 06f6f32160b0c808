"""Serve an exported model in Netron (the PyPI package ``netron``, which ships its web app: nothing is downloaded).

``serve(path)`` starts Netron's HTTP server in this process on a free port of ``host`` and returns a
:class:`Viewer` with the URL to open and the URL of the model file itself; ``Viewer.stop()`` ends it.
"""

from __future__ import annotations

import importlib.util
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks._common import UsageError

__all__ = ["Viewer", "netron_missing", "serve"]


def netron_missing() -> str | None:
    """The message for a machine without netron, or None when it is installed."""
    if importlib.util.find_spec("netron") is not None:
        return None
    return ("--view needs the netron package: pip install netron (or keep the files with --out DIR and open them "
            "in Netron elsewhere)")


@dataclass(frozen=True, kw_only=True)
class Viewer:
    url: str  # the page to open in a browser
    model_url: str  # the model file as Netron's page fetches it
    host: str
    port: int

    def stop(self) -> None:
        import netron

        netron.stop((self.host, self.port))

    def wait(self, seconds: float | None, *, sleep: Callable[[float], None] = time.sleep) -> None:
        """Keep serving for ``seconds`` (None: until Ctrl-C), then stop."""
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            while deadline is None or time.monotonic() < deadline:
                sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()


def serve(path: Path, *, host: str = "127.0.0.1", port: int = 0) -> Viewer:
    """Start Netron on ``host:port`` (0: a free port) serving ``path``; UsageError when it cannot start."""
    missing = netron_missing()
    if missing:
        raise UsageError(missing)
    import logging

    import netron

    logging.getLogger("netron.server").setLevel(logging.WARNING)  # we print the URL ourselves
    try:
        bound_host, bound_port = netron.serve(str(path), None, address=(host, port), browse=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"--view: Netron cannot serve on {host}:{port}: {e}") from None
    base = f"http://{bound_host}:{bound_port}/"
    return Viewer(url=base, model_url=base + "data/" + urllib.parse.quote(path.name), host=str(bound_host),
                  port=int(bound_port))
