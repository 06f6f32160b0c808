"""The Docker engine: the client, build/pull stream reading, container specs and the one container lifecycle,
the host check and the registry.

* :mod:`~torchrig.engine.client` -- connect (with a clear error when no engine answers), local or remote daemon.
* :mod:`~torchrig.engine.spec` -- :func:`container_spec`: every container option decided in one place, rendered for
  the SDK and the ``docker run`` CLI.
* :mod:`~torchrig.engine.lifecycle` -- :func:`run` / :func:`started`: label, timeout, log streaming, cleanup in
  ``finally``, keep-for-debugging. Every container torchrig starts goes through it.
* :mod:`~torchrig.engine.hostcheck` -- can this host run an environment's image (driver, runtime, devices)?
* :mod:`~torchrig.engine.stream` and :mod:`~torchrig.engine.registry` -- build/push/pull progress, push and pull.

The container names below are re-exported here: import them from ``torchrig.engine``.
"""

from __future__ import annotations

from torchrig.engine.lifecycle import RunResult, run, started
from torchrig.engine.spec import (
    DEFAULT_SHM_SIZE,
    ENV_LABEL,
    LABEL,
    ContainerSpec,
    GpuFlags,
    Mount,
    container_name,
    container_spec,
    gpu_flags,
)

__all__ = [
    "DEFAULT_SHM_SIZE",
    "ENV_LABEL",
    "LABEL",
    "ContainerSpec",
    "GpuFlags",
    "Mount",
    "RunResult",
    "container_name",
    "container_spec",
    "gpu_flags",
    "run",
    "started",
]
