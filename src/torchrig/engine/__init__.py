"""The Docker engine: the client, build/pull stream reading, the SDK renderer of a container, the one container
lifecycle, the host check and the registry.

* :mod:`~torchrig.engine.client` -- connect (with a clear error when no engine answers), local or remote daemon.
* :mod:`~torchrig.engine.spec` -- :func:`docker_kwargs`: a :class:`~torchrig.container.SuiteContainer` (the one
  description, :mod:`torchrig.container`) as Docker SDK keyword arguments.
* :mod:`~torchrig.engine.lifecycle` -- :func:`run` / :func:`read_output` / :func:`started`: label, timeout, log
  streaming, cleanup in ``finally``, keep-for-debugging. Every container torchrig starts goes through it.
* :mod:`~torchrig.engine.hostcheck` -- can this host run an environment's image (driver, runtime, CDI, devices)?
* :mod:`~torchrig.engine.stream` and :mod:`~torchrig.engine.registry` -- build/push/pull progress, push and pull.

The container names below are re-exported here: import them from ``torchrig.engine``.
"""

from __future__ import annotations

from torchrig.container import (
    ENV_LABEL,
    LABEL,
    SHM_SIZE,
    GpuFlags,
    Mount,
    SuiteContainer,
    container,
    container_name,
    gpu_flags,
)
from torchrig.engine.lifecycle import Output, RunResult, read_output, run, run_python, started
from torchrig.engine.spec import docker_kwargs

__all__ = [
    "ENV_LABEL",
    "LABEL",
    "SHM_SIZE",
    "GpuFlags",
    "Mount",
    "Output",
    "RunResult",
    "SuiteContainer",
    "container",
    "container_name",
    "docker_kwargs",
    "gpu_flags",
    "read_output",
    "run",
    "run_python",
    "started",
]
