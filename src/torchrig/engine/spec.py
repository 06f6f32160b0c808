"""The Docker SDK renderer of a container description: :func:`docker_kwargs` for ``client.containers.create``.

The description itself (:class:`~torchrig.container.SuiteContainer`, made by :func:`torchrig.container.container`
or :func:`~torchrig.container.suite_container`) lives in :mod:`torchrig.container`, with the ``docker run`` words
(:func:`~torchrig.container.oci_args`) that render the same fields for the command line. Every container torchrig
starts carries the :data:`~torchrig.container.LABEL` (its purpose) and :data:`~torchrig.container.ENV_LABEL`
labels and a unique name that says what it is for, so ``docker ps --filter label=torchrig.container`` finds them.
"""

from __future__ import annotations

from typing import Any

import docker.types

from torchrig.container import SuiteContainer

__all__ = ["docker_kwargs"]


def _device_requests(c: SuiteContainer) -> list[docker.types.DeviceRequest]:
    requests = []
    if c.gpu.nvidia:
        ids = None if c.gpu.nvidia_gpus == "all" else c.gpu.nvidia_gpus.split(",")
        requests.append(docker.types.DeviceRequest(count=-1 if ids is None else 0, device_ids=ids,
                                                   capabilities=[["gpu"]]))
    if c.gpu.cdi:
        # Docker >= 25 takes CDI devices as a device request with the "cdi" driver (what `--device
        # nvidia.com/gpu=all` sends); the daemon resolves the names from its CDI spec directories.
        requests.append(docker.types.DeviceRequest(driver="cdi", device_ids=list(c.gpu.cdi)))
    return requests


def docker_kwargs(c: SuiteContainer) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.create`` that carry every field of ``c``."""
    kw: dict[str, Any] = {
        "image": c.image,
        "name": c.name,
        "command": list(c.command) or None,
        "user": c.user,
        "working_dir": c.working_dir,
        "environment": dict(c.environment),
        "labels": dict(c.labels),
        "mounts": [docker.types.Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                   for m in c.mounts],
        "init": c.init,
        "tty": c.interactive,
        "stdin_open": c.interactive,
    }
    if c.gpu.pass_env:
        raise ValueError(f"{c.name}: variables passed on by name ({', '.join(c.gpu.pass_env)}) are for a node's "
                         "command line, not for a container started through the SDK")
    if c.shm_size:
        kw["shm_size"] = c.shm_size
    if c.ipc_host:
        kw["ipc_mode"] = "host"
    if c.network_mode:
        kw["network_mode"] = c.network_mode
    if requests := _device_requests(c):
        kw["device_requests"] = requests
    if c.gpu.devices:
        kw["devices"] = [f"{d}:{d}:rwm" for d in c.gpu.devices]
    if c.gpu.group_add:
        kw["group_add"] = list(c.gpu.group_add)
    if c.gpu.security_opt:
        kw["security_opt"] = list(c.gpu.security_opt)
    return {k: v for k, v in kw.items() if v is not None}
