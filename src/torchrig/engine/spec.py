"""What a container is: one function decides its options, one frozen spec renders them for the SDK and the CLI.

:func:`container_spec` is the single place that turns an environment, the host facts and a purpose into a
:class:`ContainerSpec` (user, mounts, shared memory, IPC, GPU devices, groups, security options, network, labels).
The spec renders both as Docker SDK keyword arguments (:meth:`ContainerSpec.docker_kwargs`, what
:mod:`torchrig.engine.lifecycle` starts) and as a ``docker run`` command line (:meth:`ContainerSpec.cli_args`, for
the interactive ``dev`` that needs a real TTY, and for ``devcontainer.json``), so the paths cannot drift apart.
Every container torchrig starts carries the :data:`LABEL` (its purpose) and :data:`ENV_LABEL` labels and a unique
name that says what it is for, so ``docker ps --filter label=torchrig.container`` finds them all.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker.types

from torchrig.matrix import Accelerator

__all__ = [
    "CONTAINER_HOME",
    "DEFAULT_SHM_SIZE",
    "ENV_LABEL",
    "LABEL",
    "ContainerSpec",
    "GpuFlags",
    "Mount",
    "container_name",
    "container_spec",
    "gpu_flags",
    "user_environment",
]

LABEL = "torchrig.container"  # value: the purpose (tasks, bench, dev, lock, measure); every container has it
ENV_LABEL = "torchrig.env"
# Docker's default /dev/shm is 64 MB, too small for DataLoader workers (pytorch/pytorch#5040).
DEFAULT_SHM_SIZE = "8g"
# HOME for a UID the image may not know: Docker sets HOME=/ then, which nothing can write to.
CONTAINER_HOME = "/tmp"
# A name for that UID. getpass.getuser() reads LOGNAME, USER, LNAME, USERNAME before the passwd database, and
# raises KeyError for a UID with no passwd entry; inductor's cache directory calls it (torch < 2.14,
# pytorch#140765) -- torch 2.0.1's cache_dir() even when TORCHINDUCTOR_CACHE_DIR is set, because the default is
# formatted first (seen in the cpu image as UID 4242). So the name comes through the environment, for any runtime,
# with per-UID compiler caches under the writable HOME.
CONTAINER_USER = "torchrig"


@dataclass(frozen=True, kw_only=True)
class Mount:
    """A bind mount: host ``source`` at ``target`` in the container."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True, kw_only=True)
class GpuFlags:
    """What exposes an accelerator to a container -- and, for CPU or ``--no-gpu``, what keeps GPUs out."""

    nvidia: bool = False  # a device request for every NVIDIA GPU (`--gpus all`)
    devices: tuple[str, ...] = ()
    group_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)


# On hosts whose default runtime is nvidia, NVIDIA_VISIBLE_DEVICES=all (set in every torchrig image) hands the
# container every GPU even without a device request; "void" makes "no GPU" mean no GPU.
_NO_NVIDIA = {"NVIDIA_VISIBLE_DEVICES": "void"}


def gpu_flags(accelerator: Accelerator, *, use_gpu: bool = True, render_group: str | None = None) -> GpuFlags:
    """The flags an accelerator needs. ``render_group`` is the host's render GID (a number, or a placeholder in
    ``devcontainer.json``): ROCm opens ``/dev/dri/renderD*``, owned by that group, whose number differs per host."""
    if not use_gpu:
        return GpuFlags(environment=_NO_NVIDIA)
    match accelerator:
        case "cpu":
            return GpuFlags(environment=_NO_NVIDIA)
        case "cuda":
            return GpuFlags(nvidia=True)
        case "rocm":
            groups = ("video",) if render_group is None else ("video", render_group)
            # seccomp=unconfined: AMD's ROCm Docker guide asks for it (the runtime's memory mapping and NUMA
            # memory-policy calls are restricted by Docker's default profile).
            return GpuFlags(devices=("/dev/kfd", "/dev/dri"), group_add=groups,
                            security_opt=("seccomp=unconfined",), environment=_NO_NVIDIA)


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    """Everything about one container, rendered for the Docker SDK or the ``docker`` CLI from the same fields."""

    image: str
    name: str
    command: tuple[str, ...] = ()
    user: str | None = None
    working_dir: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    shm_size: str | None = None
    ipc_host: bool = False
    gpu: GpuFlags = field(default_factory=GpuFlags)
    network_mode: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    interactive: bool = False
    # A tiny init as PID 1 reaps DataLoader workers and passes signals on, so Ctrl-C and timeouts stop the run.
    init: bool = True

    def docker_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``client.containers.create``."""
        kw: dict[str, Any] = {
            "image": self.image,
            "name": self.name,
            "command": list(self.command) or None,
            "user": self.user,
            "working_dir": self.working_dir,
            "environment": dict(self.environment),
            "labels": dict(self.labels),
            "mounts": [docker.types.Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                       for m in self.mounts],
            "init": self.init,
            "tty": self.interactive,
            "stdin_open": self.interactive,
        }
        if self.shm_size:
            kw["shm_size"] = self.shm_size
        if self.ipc_host:
            kw["ipc_mode"] = "host"
        if self.network_mode:
            kw["network_mode"] = self.network_mode
        if self.gpu.nvidia:
            kw["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
        if self.gpu.devices:
            kw["devices"] = [f"{d}:{d}:rwm" for d in self.gpu.devices]
        if self.gpu.group_add:
            kw["group_add"] = list(self.gpu.group_add)
        if self.gpu.security_opt:
            kw["security_opt"] = list(self.gpu.security_opt)
        return {k: v for k, v in kw.items() if v is not None}

    def cli_args(self, *, remove: bool = True, image_and_command: bool = True) -> list[str]:
        """The ``docker run`` arguments (without ``docker run``) for the same container.

        ``image_and_command=False`` gives only the options (``devcontainer.json``'s ``runArgs``).
        """
        args: list[str] = []
        if remove:
            args.append("--rm")
        if self.interactive:
            args += ["--interactive", "--tty"]
        if self.init:
            args.append("--init")
        if self.name:
            args.append(f"--name={self.name}")
        if self.user:
            args.append(f"--user={self.user}")
        if self.working_dir:
            args.append(f"--workdir={self.working_dir}")
        args += [f"--env={k}={v}" for k, v in self.environment.items()]
        args += [f"--label={k}={v}" for k, v in self.labels.items()]
        for m in self.mounts:
            fields = ["type=bind", f"source={m.source}", f"target={m.target}"] + (["readonly"] if m.read_only else [])
            args.append("--mount=" + ",".join(_csv_field(f) for f in fields))
        if self.shm_size:
            args.append(f"--shm-size={self.shm_size}")
        if self.ipc_host:
            args.append("--ipc=host")
        if self.network_mode:
            args.append(f"--network={self.network_mode}")
        if self.gpu.nvidia:
            args.append("--gpus=all")
        args += [f"--device={d}" for d in self.gpu.devices]
        args += [f"--group-add={g}" for g in self.gpu.group_add]
        args += [f"--security-opt={s}" for s in self.gpu.security_opt]
        if image_and_command:
            args += [self.image, *self.command]
        return args


def _csv_field(text: str) -> str:
    # `--mount` is parsed as one CSV record: a path holding a comma or a quote must be quoted.
    if "," in text or '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def user_environment(uid: int) -> dict[str, str]:
    """What a container run as an arbitrary host UID needs to find a name, a HOME and compiler caches."""
    return {
        "HOME": CONTAINER_HOME,
        "USER": CONTAINER_USER,
        "LOGNAME": CONTAINER_USER,
        "TORCHINDUCTOR_CACHE_DIR": f"{CONTAINER_HOME}/torchinductor_{uid}",
        "TRITON_CACHE_DIR": f"{CONTAINER_HOME}/triton_{uid}",
    }


def container_name(env_id: str, purpose: str) -> str:
    """A unique name that says what the container is for: ``torchrig-cpu-tasks-1a2b3c4d``."""
    return f"torchrig-{env_id}-{purpose}-{secrets.token_hex(4)}"


def container_spec(
    *,
    env_id: str,
    accelerator: Accelerator,
    image: str,
    purpose: str,
    command: Sequence[str] = (),
    uid: int | None = None,
    gid: int | None = None,
    use_gpu: bool = True,
    render_group: str | None = None,
    mounts: Sequence[Mount] = (),
    environment: Mapping[str, str] | None = None,
    working_dir: str | None = None,
    shm_size: str | None = DEFAULT_SHM_SIZE,
    ipc_host: bool = False,
    network_mode: str | None = None,
    interactive: bool = False,
    name: str | None = None,
) -> ContainerSpec:
    """The one function that decides a torchrig container's options (run-tasks, run-bench, dev, devcontainer, and
    the helper containers that resolve a lock and measure an image).

    With ``uid``/``gid`` the container runs as that user (the host's, so files written to mounts belong to the
    user, not root) with ``HOME``, ``USER``/``LOGNAME`` and the inductor/Triton caches set so that a UID the image
    has no passwd entry for still works (:func:`user_environment`); without, as the image's default user.
    """
    gpu = gpu_flags(accelerator, use_gpu=use_gpu, render_group=render_group)
    env: dict[str, str] = dict(gpu.environment)
    user = None
    if uid is not None:
        user = f"{uid}:{gid if gid is not None else uid}"
        env.update(user_environment(uid))
    env.update(environment or {})
    return ContainerSpec(
        image=image,
        name=name if name is not None else container_name(env_id, purpose),
        command=tuple(command),
        user=user,
        working_dir=working_dir,
        environment=env,
        mounts=tuple(mounts),
        shm_size=shm_size,
        ipc_host=ipc_host,
        gpu=gpu,
        network_mode=network_mode,
        labels={LABEL: purpose, ENV_LABEL: env_id},
        interactive=interactive,
    )
