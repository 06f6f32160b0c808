"""The container torchrig runs, described once: :class:`SuiteContainer`, and the ``docker``/``podman`` command line.

:func:`suite_container` turns typed inputs (the environment, the image's reference, content id and registry
digest, the suite kind, the results and data folders, the device request, the user, the user's ``--env``) into one
frozen :class:`SuiteContainer`: image, command, environment, mounts, devices, user, shared memory, working
directory. :func:`container` is the same for the other containers (``dev``, devcontainer, the helpers that resolve a
lock or measure an image). Renderers take the description and never edit each other's output:

* Docker SDK keyword arguments -- :func:`torchrig.engine.spec.docker_kwargs` (what the lifecycle starts);
* ``docker run`` / ``podman run`` words -- :func:`oci_args` here (interactive ``dev``, fleet nodes, devcontainer);
* Slurm pyxis and apptainer -- :mod:`torchrig.fleet.runtimes`; the Kubernetes pod container --
  :mod:`torchrig.fleet.kubernetes`; ``devcontainer.json`` -- :mod:`torchrig.matrix.devcontainer`.

Each constant (the shared-memory size, the image's UID, the HOME a foreign UID gets) is defined here once. This
module imports neither the Docker SDK nor the engine, so the matrix step can render from it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from torchrig.errors import UsageError
from torchrig.matrix.compat import load_compat
from torchrig.results import contract
from torchrig.results.contract import Accelerator

__all__ = [
    "CDI_NVIDIA_ALL",
    "CONTAINER_HOME",
    "CONTAINER_USER",
    "ENV_LABEL",
    "IMAGE_GID",
    "IMAGE_UID",
    "LABEL",
    "SHM_SIZE",
    "GpuAccess",
    "GpuFlags",
    "Mount",
    "OciRuntime",
    "SuiteContainer",
    "SuiteImage",
    "SuiteKind",
    "compile_max_python",
    "container",
    "container_name",
    "gpu_flags",
    "oci_args",
    "parse_user_env",
    "suite_command",
    "suite_container",
    "suite_environment",
    "user_environment",
]

SuiteKind = Literal["tasks", "bench"]
"""Which suite a container runs: ``python -m tasks`` or ``python -m bench``."""
GpuAccess = Literal["runtime", "cdi"]
"""How the host hands NVIDIA GPUs to a container: the NVIDIA runtime/hook (``--gpus``), or a CDI spec only."""
OciRuntime = Literal["docker", "podman"]

LABEL = "torchrig.container"  # value: the purpose (tasks, bench, dev, lock, measure); every container has it
ENV_LABEL = "torchrig.env"
# Docker's default /dev/shm is 64 MB, too small for DataLoader workers (pytorch/pytorch#5040).
SHM_SIZE = "8g"
# The image's own non-root user (images/Dockerfile ARG TORCHRIG_UID/GID): what Kubernetes pods run as by default.
IMAGE_UID = 1000
IMAGE_GID = 1000
# HOME for a UID the image may not know: Docker sets HOME=/ then, which nothing can write to. Suites also start
# here (the image's /workspace belongs to IMAGE_UID).
CONTAINER_HOME = "/tmp"
# A name for that UID. getpass.getuser() reads LOGNAME, USER, LNAME, USERNAME before the passwd database, and
# raises KeyError for a UID with no passwd entry; inductor's cache directory calls it (torch < 2.14,
# pytorch#140765) -- torch 2.0.1's cache_dir() even when TORCHINDUCTOR_CACHE_DIR is set, because the default is
# formatted first (seen in the cpu image as UID 4242). So the name comes through the environment, for any runtime,
# with per-UID compiler caches under the writable HOME.
CONTAINER_USER = "torchrig"
# The CDI name of every NVIDIA GPU (`nvidia-ctk cdi generate`): Docker >= 25 takes it as a device request with
# the "cdi" driver, podman and `docker run --device` as a device name.
CDI_NVIDIA_ALL = "nvidia.com/gpu=all"


@dataclass(frozen=True, kw_only=True)
class Mount:
    """A bind mount: host ``source`` at ``target`` in the container."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True, kw_only=True)
class GpuFlags:
    """What exposes an accelerator to a container -- and, for CPU or ``--no-gpu``, what keeps GPUs out."""

    nvidia: bool = False  # a device request for NVIDIA GPUs through the runtime (`--gpus`)
    nvidia_gpus: str = "all"  # which: `all`, or the GPUs a scheduler allocated (a node-side placeholder)
    cdi: tuple[str, ...] = ()  # CDI device names, where the host offers only a CDI spec
    devices: tuple[str, ...] = ()  # device nodes (ROCm: /dev/kfd, /dev/dri)
    group_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    pass_env: tuple[str, ...] = ()  # host variables passed on by name where set (Slurm's ROCR_VISIBLE_DEVICES)

    @property
    def any(self) -> bool:
        """Whether the container gets an accelerator at all."""
        return self.nvidia or bool(self.cdi) or bool(self.devices)


# On hosts whose default runtime is nvidia, NVIDIA_VISIBLE_DEVICES=all (set in every torchrig image) hands the
# container every GPU even without a device request; "void" makes "no GPU" mean no GPU.
_NO_NVIDIA = {"NVIDIA_VISIBLE_DEVICES": "void"}


def gpu_flags(accelerator: Accelerator, *, use_gpu: bool = True, render_group: str | None = None,
              access: GpuAccess = "runtime", nvidia_gpus: str = "all", pass_env: Sequence[str] = ()) -> GpuFlags:
    """The flags an accelerator needs. ``render_group`` is the host's render GID (a number, or a placeholder in
    ``devcontainer.json``): ROCm opens ``/dev/dri/renderD*``, owned by that group, whose number differs per host.
    ``access="cdi"``: the host has a CDI spec for NVIDIA GPUs and no NVIDIA runtime."""
    if not use_gpu:
        return GpuFlags(environment=_NO_NVIDIA)
    match accelerator:
        case "cpu":
            return GpuFlags(environment=_NO_NVIDIA)
        case "cuda":
            if access == "cdi":
                return GpuFlags(cdi=(CDI_NVIDIA_ALL,), pass_env=tuple(pass_env))
            return GpuFlags(nvidia=True, nvidia_gpus=nvidia_gpus, pass_env=tuple(pass_env))
        case "rocm":
            groups = ("video",) if render_group is None else ("video", render_group)
            # seccomp=unconfined: AMD's ROCm Docker guide asks for it (the runtime's memory mapping and NUMA
            # memory-policy calls are restricted by Docker's default profile).
            return GpuFlags(devices=("/dev/kfd", "/dev/dri"), group_add=groups, security_opt=("seccomp=unconfined",),
                            environment=_NO_NVIDIA, pass_env=tuple(pass_env))


@dataclass(frozen=True, kw_only=True)
class SuiteContainer:
    """Everything about one container; every renderer (SDK, CLI, pyxis, apptainer, Kubernetes, devcontainer.json)
    reads these fields and nothing else."""

    image: str
    name: str
    command: tuple[str, ...] = ()
    user: str | None = None  # "UID:GID"; None: the image's own user
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


def user_environment(uid: int | str) -> dict[str, str]:
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


def container(
    *,
    env_id: str,
    accelerator: Accelerator,
    image: str,
    purpose: str,
    command: Sequence[str] = (),
    uid: int | str | None = None,
    gid: int | str | None = None,
    gpu: GpuFlags | None = None,
    use_gpu: bool = True,
    render_group: str | None = None,
    mounts: Sequence[Mount] = (),
    environment: Mapping[str, str] | None = None,
    working_dir: str | None = None,
    shm_size: str | None = SHM_SIZE,
    ipc_host: bool = False,
    network_mode: str | None = None,
    interactive: bool = False,
    name: str | None = None,
) -> SuiteContainer:
    """The one function that decides a torchrig container's options (suites, ``dev``, devcontainer, and the helper
    containers that resolve a lock and measure an image).

    With ``uid``/``gid`` (numbers, or node-side placeholders) the container runs as that user -- the host's, so
    files written to mounts are the user's -- with ``HOME``, ``USER``/``LOGNAME`` and the compiler caches set so a
    UID the image has no passwd entry for still works (:func:`user_environment`); without, as the image's user.
    ``gpu`` overrides the flags :func:`gpu_flags` derives from ``accelerator``/``use_gpu``/``render_group``.
    """
    gpu = gpu or gpu_flags(accelerator, use_gpu=use_gpu, render_group=render_group)
    env: dict[str, str] = dict(gpu.environment)
    user = None
    if uid is not None:
        user = f"{uid}:{gid if gid is not None else uid}"
        env.update(user_environment(uid))
    env.update(environment or {})
    return SuiteContainer(
        image=image, name=name if name is not None else container_name(env_id, purpose), command=tuple(command),
        user=user, working_dir=working_dir, environment=env, mounts=tuple(mounts), shm_size=shm_size,
        ipc_host=ipc_host, gpu=gpu, network_mode=network_mode, labels={LABEL: purpose, ENV_LABEL: env_id},
        interactive=interactive,
    )


# ------------------------------------------------------------------------------------------------ suites


@dataclass(frozen=True, kw_only=True)
class SuiteImage:
    """The image a suite runs in, as the records should name it."""

    ref: str
    id: str = ""  # content id (sha256:...), or a node-side placeholder; "" when not known before the start
    digest: str | None = None  # registry digest REPO@sha256:..., the name another machine can pull it by


_POSIX_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OWN_PREFIX = "TORCHRIG_"


def parse_user_env(items: Sequence[str], *, flag: str = "--env") -> dict[str, str]:
    """``NAME=VALUE`` items (``--env``, repeatable) -> a mapping; UsageError (exit 2) naming a bad one."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{flag} {item!r}: give NAME=VALUE (e.g. {flag} NCCL_DEBUG=INFO)")
        if not _POSIX_NAME.fullmatch(name):
            raise UsageError(f"{flag} {item!r}: {name!r} is not a variable name (letters, digits and _, not "
                             "starting with a digit)")
        if name.startswith(_OWN_PREFIX) or name in user_environment(0):
            raise UsageError(f"{flag} {name}=...: {name} is set by torchrig itself (the host/image contract, "
                             "src/torchrig/results/contract.py); pick another name")
        if "\x00" in value or "\n" in value:
            raise UsageError(f"{flag} {name}=...: the value holds a NUL or a newline, which no runtime passes on")
        out[name] = value
    return out


def compile_max_python(torch: str) -> str | None:
    """The newest Python torch.compile supports with this torch (compat.yaml), for an image that cannot read it."""
    release = load_compat().release(torch)
    return release.compile_max_python if release is not None else None


def suite_command(kind: SuiteKind, *, quick: bool = False, synthetic_cifar: bool = False,
                  args: Sequence[str] = ()) -> tuple[str, ...]:
    """The suite's command in the container; records go to :data:`~torchrig.results.contract.RESULTS_IN`."""
    cmd = ["python", "-m", kind, "--results", contract.RESULTS_IN, *(["--quick"] if quick else [])]
    if kind == "tasks" and synthetic_cifar:
        cmd.append("--synthetic-cifar")
    return (*cmd, *args)


def suite_environment(*, env_id: str, image: SuiteImage, hostname: str, compile_max_python: str | None,
                      user_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every variable of :data:`~torchrig.results.contract.CONTAINER_ENV_VARS` (unknown values empty, which the
    records read as absent), then the user's ``--env``, named in ``TORCHRIG_USER_ENV`` for the fingerprint."""
    user_env = dict(user_env or {})
    out = {
        contract.ENV_ID_ENV: env_id,
        contract.IMAGE_ENV: image.ref,
        contract.IMAGE_ID_ENV: image.id,
        contract.IMAGE_DIGEST_ENV: image.digest or "",
        contract.HOSTNAME_ENV: hostname,
        contract.RESULTS_ENV: contract.RESULTS_IN,
        contract.DATA_ENV: contract.DATA_IN,
        contract.COMPILE_MAX_PYTHON_ENV: compile_max_python or "",
        contract.USER_ENV_ENV: ",".join(sorted(user_env)),
    }
    return {**user_env, **out}


def suite_container(
    *,
    env_id: str,
    accelerator: Accelerator,
    image: SuiteImage,
    kind: SuiteKind,
    results: str,
    data: str,
    hostname: str,
    compile_max_python: str | None,
    gpu: GpuFlags,
    uid: int | str | None,
    gid: int | str | None,
    user_env: Mapping[str, str] | None = None,
    quick: bool = False,
    synthetic_cifar: bool = False,
    args: Sequence[str] = (),
    shm_size: str = SHM_SIZE,
    ipc_host: bool = False,
    network_mode: str | None = None,
    name: str | None = None,
) -> SuiteContainer:
    """The container of one suite run -- ``run-tasks``/``run-bench`` here, or a fleet node (``results``, ``data``,
    ``hostname``, ``uid``/``gid`` and the image id may be node-side placeholders)."""
    return container(
        env_id=env_id, accelerator=accelerator, image=image.ref, purpose=kind,
        command=suite_command(kind, quick=quick, synthetic_cifar=synthetic_cifar, args=args), uid=uid, gid=gid,
        gpu=gpu,
        mounts=(Mount(source=results, target=contract.RESULTS_IN), Mount(source=data, target=contract.DATA_IN)),
        environment=suite_environment(env_id=env_id, image=image, hostname=hostname,
                                      compile_max_python=compile_max_python, user_env=user_env),
        working_dir=CONTAINER_HOME, shm_size=shm_size, ipc_host=ipc_host, network_mode=network_mode, name=name,
    )


# ---------------------------------------------------------------------------------- docker / podman words


def _csv_field(text: str) -> str:
    # `--mount` is parsed as one CSV record: a path holding a comma or a quote must be quoted.
    if "," in text or '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def _oci_gpu_args(gpu: GpuFlags, runtime: OciRuntime) -> list[str]:
    args: list[str] = []
    if gpu.nvidia:
        # podman reaches NVIDIA GPUs through CDI only (nvidia-ctk cdi generate); it has no --gpus device request.
        args.append(f"--device={CDI_NVIDIA_ALL}" if runtime == "podman" else f"--gpus={gpu.nvidia_gpus}")
    args += [f"--device={d}" for d in (*gpu.cdi, *gpu.devices)]
    args += [f"--group-add={g}" for g in gpu.group_add]
    args += [f"--security-opt={s}" for s in gpu.security_opt]
    args += [f"--env={k}" for k in gpu.pass_env]
    return args


def oci_args(c: SuiteContainer, *, runtime: OciRuntime = "docker", remove: bool = True,
             image_and_command: bool = True, environment: bool = True) -> list[str]:
    """The ``docker run`` / ``podman run`` arguments (without ``docker run``) for ``c``.

    ``image_and_command=False`` gives only the options, and ``environment=False`` leaves the ``--env`` options out
    (``devcontainer.json`` carries them in ``runArgs`` and ``containerEnv``).
    """
    args: list[str] = []
    if remove:
        args.append("--rm")
    if c.interactive:
        args += ["--interactive", "--tty"]
    if c.init:
        args.append("--init")
    if c.name:
        args.append(f"--name={c.name}")
    if c.user:
        args.append(f"--user={c.user}")
    if c.working_dir:
        args.append(f"--workdir={c.working_dir}")
    args += [f"--env={k}={v}" for k, v in c.environment.items()] if environment else []
    args += [f"--label={k}={v}" for k, v in c.labels.items()]
    for m in c.mounts:
        fields = ["type=bind", f"source={m.source}", f"target={m.target}"] + (["readonly"] if m.read_only else [])
        args.append("--mount=" + ",".join(_csv_field(f) for f in fields))
    if c.shm_size:
        args.append(f"--shm-size={c.shm_size}")
    if c.ipc_host:
        args.append("--ipc=host")
    if c.network_mode:
        args.append(f"--network={c.network_mode}")
    args += _oci_gpu_args(c.gpu, runtime)
    if image_and_command:
        args += [c.image, *c.command]
    return args
