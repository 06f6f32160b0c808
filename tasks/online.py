"""Whether a download host can be reached from here, decided quickly (seconds, not a minute of retries).

The tasks ask before they download anything (CIFAR-10 from its host, a Hub dataset): offline machines -- CI,
air-gapped clusters, this project's own checks -- then take their offline path at once instead of waiting for a
download to time out.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

__all__ = ["HUB_OFFLINE_VARIABLES", "hub_offline", "reachable"]

HUB_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def reachable(url: str, timeout: float = 3.0) -> bool:
    """True when a TCP connection to ``url``'s host and port opens within ``timeout`` seconds."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return False
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    # Name resolution has no timeout of its own: probe in a thread and stop waiting for it.
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def hub_offline() -> str | None:
    """The variable (e.g. ``HF_HUB_OFFLINE=1``) that tells Hugging Face libraries to stay offline, if one is set."""
    for name in HUB_OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name}={os.environ[name]}"
    return None
