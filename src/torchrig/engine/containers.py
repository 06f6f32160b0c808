"""Run a command in an image: one function decides the container's options, one context manager cleans up.

:func:`container_spec` is the single place that turns an environment, the host facts and a purpose into a
:class:`ContainerSpec` (user, mounts, shared memory, IPC, GPU devices, groups, security options). The spec renders
both as Docker SDK keyword arguments (:meth:`ContainerSpec.docker_kwargs`, for ``run-tasks``/``run-bench`` and the
non-interactive ``dev``) and as a ``docker run`` command line (:meth:`ContainerSpec.cli_args`, for the interactive
``dev`` that needs a real TTY, and for ``devcontainer.json``), so the paths cannot drift apart.

:func:`started` creates and starts a container and removes it in ``finally`` -- after success, failure, timeout or
Ctrl-C -- unless ``TORCHRIG_KEEP_CONTAINERS=1`` asks to keep it for debugging. :func:`run` adds what docker-py
lacks: a wall-clock timeout around the run, the log streamed live with a prefix, and a result that carries the
exit code, the last lines and whether the kernel's OOM killer or the timeout stopped it.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import os
import secrets
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO

import docker
import docker.errors
import docker.types

from torchrig.errors import HostCheckError, RunError
from torchrig.matrix import Accelerator

__all__ = [
    "DEFAULT_SHM_SIZE",
    "ENV_LABEL",
    "KEEP_ENV",
    "LABEL",
    "ContainerSpec",
    "GpuFlags",
    "Mount",
    "RunResult",
    "container_name",
    "container_spec",
    "gpu_flags",
    "keep_containers",
    "run",
    "started",
]

KEEP_ENV = "TORCHRIG_KEEP_CONTAINERS"
LABEL = "torchrig.container"  # value: the purpose (tasks, bench, dev); every container torchrig starts has it
ENV_LABEL = "torchrig.env"
# Docker's default /dev/shm is 64 MB, too small for DataLoader workers (pytorch/pytorch#5040).
DEFAULT_SHM_SIZE = "8g"
# HOME for a UID the image may not know: Docker sets HOME=/ then, which nothing can write to.
CONTAINER_HOME = "/tmp"
_STOP_GRACE_S = 10


# --------------------------------------------------------------------------------------------- the options


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
    """The one function that decides a torchrig container's options (run-tasks, run-bench, dev, devcontainer).

    With ``uid``/``gid`` the container runs as that user (the host's, so files written to mounts belong to the
    user, not root) with ``HOME`` set to a writable directory; without, as the image's default user.
    """
    gpu = gpu_flags(accelerator, use_gpu=use_gpu, render_group=render_group)
    env: dict[str, str] = dict(gpu.environment)
    user = None
    if uid is not None:
        user = f"{uid}:{gid if gid is not None else uid}"
        env["HOME"] = CONTAINER_HOME
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


# ----------------------------------------------------------------------------------------------- running


def keep_containers() -> bool:
    """``TORCHRIG_KEEP_CONTAINERS=1``: leave containers behind (stopped) for ``docker logs`` / ``docker inspect``."""
    return os.environ.get(KEEP_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _say(out: TextIO, text: str) -> None:
    print(f"torchrig: {text}", file=out, flush=True)


def _start_error(spec: ContainerSpec, e: docker.errors.APIError) -> Exception:
    text = str(e.explanation or e)
    if spec.gpu.nvidia and ("could not select device driver" in text or "nvidia-container-cli" in text):
        return HostCheckError(
            f"Docker could not give {spec.name} the NVIDIA GPUs ({text}). Install the NVIDIA Container Toolkit "
            "(`sudo nvidia-ctk runtime configure --runtime=docker`, then restart Docker), or pass --no-gpu.")
    if spec.gpu.devices and ("no such file or directory" in text.lower() or "error gathering device" in text):
        return HostCheckError(f"Docker could not pass the GPU devices {', '.join(spec.gpu.devices)} to "
                              f"{spec.name} ({text}): is the amdgpu driver loaded? Or pass --no-gpu.")
    return RunError(f"Docker could not start a container from {spec.image}: {text}")


@contextlib.contextmanager
def started(client: docker.DockerClient, spec: ContainerSpec, *, out: TextIO | None = None) -> Iterator[Any]:
    """Create and start the container; on leaving -- for any reason -- stop and remove it.

    Removal goes by name, so a container created just before a Ctrl-C (before the SDK handed it back) is
    removed too. With ``TORCHRIG_KEEP_CONTAINERS=1`` it is stopped and kept, and its name is printed.
    """
    out = out or sys.stdout
    kwargs = spec.docker_kwargs()
    container = None
    try:
        try:
            container = client.containers.create(**kwargs)
            container.start()
        except docker.errors.ImageNotFound:
            raise RunError(f"image {spec.image} is not on this Docker engine: build or pull it first "
                           "(`torchrig build ENV` / `torchrig pull ENV`)") from None
        except docker.errors.APIError as e:
            raise _start_error(spec, e) from None
        yield container
    finally:
        _cleanup(client, spec.name, container, out)


def _cleanup(client: docker.DockerClient, name: str, container: Any, out: TextIO) -> None:
    if keep_containers():
        if container is not None:
            with contextlib.suppress(docker.errors.DockerException):
                container.stop(timeout=_STOP_GRACE_S)
        _say(out, f"kept container {name} ({KEEP_ENV}=1); remove it with `docker rm -f {name}`")
        return
    try:
        client.api.remove_container(name, force=True, v=True)
    except docker.errors.NotFound:
        pass  # never created, or already gone
    except Exception as e:  # noqa: BLE001 - cleanup must not hide the error that brought us here
        if "already in progress" not in str(e):
            _say(out, f"warning: could not remove container {name} ({e}); remove it with `docker rm -f {name}`")


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """How a run ended. ``exit_code`` is None when it could not be read (the daemon went away)."""

    name: str
    image: str
    command: tuple[str, ...]
    exit_code: int | None
    duration_s: float
    last_lines: tuple[str, ...] = ()
    timed_out: bool = False
    timeout_s: float | None = None
    oom_killed: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """One paragraph for the user: what ran, how it ended, and what to try."""
        what = f"`{shlex.join(self.command)}` in {self.image} (container {self.name})"
        if self.timed_out:
            head = (f"{what} did not finish within the {self.timeout_s:g} s timeout and was stopped after "
                    f"{self.duration_s:.0f} s; raise --timeout, or run with --quick")
        elif self.oom_killed:
            head = (f"{what} was killed by the kernel's out-of-memory killer (exit {self.exit_code}) after "
                    f"{self.duration_s:.0f} s; give Docker more memory or use a smaller batch size")
        elif self.exit_code is None:
            head = f"{what} ended after {self.duration_s:.0f} s, but its exit status could not be read"
        elif self.exit_code > 128:
            sig = self.exit_code - 128
            try:
                signame = signal.Signals(sig).name
            except ValueError:
                signame = f"signal {sig}"
            head = f"{what} was killed by {signame} (exit {self.exit_code}) after {self.duration_s:.0f} s"
        else:
            head = f"{what} exited with status {self.exit_code} after {self.duration_s:.0f} s"
        if self.last_lines:
            head += f"\nlast {len(self.last_lines)} lines of its output:\n" + "\n".join(
                f"  | {line}" for line in self.last_lines)
        return head


class _LogPump(threading.Thread):
    """Copy the container's output to ``out`` line by line with a prefix, keeping the last lines for errors."""

    def __init__(self, container: Any, prefix: str, out: TextIO, tail: int, echo: bool) -> None:
        super().__init__(daemon=True, name=f"logs-{prefix}")
        self.container = container
        self.prefix = prefix
        self.out = out
        self.echo = echo
        self.last: collections.deque[str] = collections.deque(maxlen=tail)

    def _line(self, line: str) -> None:
        line = line.rstrip("\r")
        if "\r" in line:  # a progress bar redrawn in place: keep its final state
            line = line.rsplit("\r", 1)[1]
        self.last.append(line)
        if self.echo:
            print(f"[{self.prefix}] {line}" if self.prefix else line, file=self.out, flush=True)

    def run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        try:
            for chunk in self.container.logs(stream=True, follow=True, stdout=True, stderr=True):
                pending += decoder.decode(chunk)
                *lines, pending = pending.split("\n")
                for line in lines:
                    self._line(line)
        except Exception:  # noqa: BLE001 - the container went away mid-stream; what was read is kept
            pass
        pending += decoder.decode(b"", final=True)
        if pending:
            self._line(pending)


class _Waiter(threading.Thread):
    """``container.wait()`` in a thread, so the caller can give up at a deadline (docker-py has no timeout)."""

    def __init__(self, container: Any) -> None:
        super().__init__(daemon=True, name="wait")
        self.container = container
        self.done = threading.Event()
        self.status: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.status = int(self.container.wait()["StatusCode"])
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.error = e
        finally:
            self.done.set()

    def wait_until(self, deadline: float | None) -> bool:
        # Short slices keep the main thread responsive to Ctrl-C while it waits.
        while not self.done.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self.done.wait(0.2 if left is None else min(0.2, left))
        return True


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (CI cancelling a job, ``kill``) like Ctrl-C so the container is removed on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(
    client: docker.DockerClient,
    spec: ContainerSpec,
    *,
    timeout: float | None = None,
    prefix: str | None = None,
    check: bool = True,
    echo: bool = True,
    tail: int = 30,
    out: TextIO | None = None,
    status: TextIO | None = None,
) -> RunResult:
    """Run ``spec`` to completion, streaming its output; the container is removed however the run ends.

    ``timeout`` (seconds of wall time from the start) stops a run that hangs: SIGTERM, then SIGKILL after a
    grace period. With ``check`` a non-zero exit or a timeout raises :class:`RunError` carrying the last lines;
    without, the :class:`RunResult` says how it ended. Ctrl-C (or SIGTERM) stops and removes the container and
    re-raises KeyboardInterrupt. The output goes to ``out`` (stdout), each line after ``[prefix]`` (``""``: as
    is); torchrig's own lines (starting, stopping, how it ended) go to ``status`` (default: ``out``).
    """
    out = out or sys.stdout
    status = status or out
    prefix = spec.name if prefix is None else prefix
    what = shlex.join(spec.command) or "the image's default command"
    _say(status, f"starting {spec.name} from {spec.image}: {what}")
    t0 = time.monotonic()
    timed_out = oom = False
    code: int | None = None
    last: tuple[str, ...] = ()
    with _sigterm_as_interrupt(), started(client, spec, out=status) as container:
        pump = _LogPump(container, prefix, out, tail, echo)
        pump.start()
        waiter = _Waiter(container)
        waiter.start()
        try:
            finished = waiter.wait_until(None if timeout is None else t0 + timeout)
            if not finished:
                timed_out = True
                _say(status, f"{spec.name}: timeout of {timeout:g} s reached, stopping it")
                with contextlib.suppress(docker.errors.DockerException):
                    container.stop(timeout=_STOP_GRACE_S)
                waiter.wait_until(time.monotonic() + _STOP_GRACE_S + 10)
        except KeyboardInterrupt:
            _say(status, f"interrupted: stopping and removing {spec.name}")
            raise
        code = waiter.status
        pump.join(timeout=5)
        last = tuple(pump.last)
        with contextlib.suppress(docker.errors.DockerException):
            container.reload()
            oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        if waiter.error is not None and code is None and not timed_out:
            raise RunError(f"lost track of {spec.name} while waiting for it: {waiter.error}")
    result = RunResult(
        name=spec.name, image=spec.image, command=spec.command, exit_code=code,
        duration_s=time.monotonic() - t0, last_lines=last, timed_out=timed_out,
        timeout_s=timeout, oom_killed=oom,
    )
    ending = "timed out" if timed_out else f"exit {code}"
    _say(status, f"{spec.name}: {ending} after {result.duration_s:.1f} s")
    if check and not result.ok:
        raise RunError(result.describe())
    return result
