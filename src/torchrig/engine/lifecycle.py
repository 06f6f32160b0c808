"""The one container lifecycle: every container torchrig starts is created, watched and removed here.

:func:`started` creates and starts a container from a :class:`~torchrig.container.SuiteContainer` and removes it
in ``finally`` -- after success, failure, timeout or Ctrl-C -- unless the caller keeps it for debugging
(``keep=True``, from ``TORCHRIG_KEEP_CONTAINERS=1`` through :class:`~torchrig.settings.Settings`). :func:`run` adds
what docker-py lacks: a wall-clock timeout around the run, SIGTERM treated like Ctrl-C, the log streamed live
with a prefix, and a result that carries the exit code, the last lines, what the command printed on stdout when
asked to keep it apart, and whether the kernel's OOM killer or the timeout stopped it.

Users: ``run-tasks``/``run-bench``/``dev`` (:mod:`torchrig.cli.run`) and the site-packages measurement
(:mod:`torchrig.images.measure`).
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import io
import shlex
import signal
import sys
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, TextIO

import docker
import docker.errors

from torchrig.container import SuiteContainer, container
from torchrig.engine.spec import docker_kwargs
from torchrig.errors import HostCheckError, RunError

__all__ = ["Output", "RunResult", "read_output", "run", "run_python", "started"]

_STOP_GRACE_S = 10


def _say(out: TextIO, text: str) -> None:
    print(f"torchrig: {text}", file=out, flush=True)


def _start_error(spec: SuiteContainer, e: docker.errors.APIError) -> Exception:
    text = str(e.explanation or e)
    if spec.gpu.nvidia and ("could not select device driver" in text or "nvidia-container-cli" in text):
        return HostCheckError(
            f"Docker could not give {spec.name} the NVIDIA GPUs ({text}). Install the NVIDIA Container Toolkit "
            "(`sudo nvidia-ctk runtime configure --runtime=docker`, then restart Docker), or pass --no-gpu.")
    if spec.gpu.cdi and ("unresolvable CDI devices" in text or "CDI" in text):
        return HostCheckError(
            f"Docker could not give {spec.name} the CDI devices {', '.join(spec.gpu.cdi)} ({text}). Regenerate the "
            "spec (`sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`), check that Docker >= 25 has CDI "
            "enabled (`docker info` lists CDISpecDirs), or pass --no-gpu.")
    if spec.gpu.devices and ("no such file or directory" in text.lower() or "error gathering device" in text):
        return HostCheckError(f"Docker could not pass the GPU devices {', '.join(spec.gpu.devices)} to "
                              f"{spec.name} ({text}): is the amdgpu driver loaded? Or pass --no-gpu.")
    return RunError(f"Docker could not start a container from {spec.image}: {text}")


def _archive(files: Mapping[str, bytes]) -> bytes:
    """A tar of ``files`` (absolute paths in the container -> content), to unpack at ``/``; executable, root's."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for path, content in sorted(files.items()):
            if not path.startswith("/"):
                raise ValueError(f"container file paths are absolute: {path!r}")
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(content), 0o755
            tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


@contextlib.contextmanager
def started(client: docker.DockerClient, spec: SuiteContainer, *, keep: bool, out: TextIO | None = None,
            files: Mapping[str, bytes] | None = None) -> Iterator[Any]:
    """Create and start the container; on leaving -- for any reason -- stop and remove it.

    Removal goes by name, so a container created just before a Ctrl-C (before the SDK handed it back) is
    removed too. With ``keep`` (``TORCHRIG_KEEP_CONTAINERS=1``) it is stopped and kept, and its name is printed.
    ``files`` (absolute path -> content) are copied in before it starts: inputs for a throwaway container that
    work against a remote engine too, where a bind mount of a host folder would not.
    """
    out = out or sys.stdout
    kwargs = docker_kwargs(spec)
    container = None
    try:
        try:
            container = client.containers.create(**kwargs)
            if files:
                container.put_archive("/", _archive(files))
            container.start()
        except docker.errors.ImageNotFound:
            raise RunError(f"image {spec.image} is not on this Docker engine: build or pull it first "
                           "(`torchrig build ENV` / `torchrig pull ENV`)") from None
        except docker.errors.APIError as e:
            raise _start_error(spec, e) from None
        yield container
    finally:
        _cleanup(client, spec.name, container, out, keep=keep)


def _cleanup(client: docker.DockerClient, name: str, container: Any, out: TextIO, *, keep: bool) -> None:
    if keep:
        if container is not None:
            with contextlib.suppress(docker.errors.DockerException):
                container.stop(timeout=_STOP_GRACE_S)
        _say(out, f"kept container {name} (TORCHRIG_KEEP_CONTAINERS=1); remove it with `docker rm -f {name}`")
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
    stdout: str | None = None  # what the command printed on stdout, with ``capture_stdout``

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def check(self) -> RunResult:
        """This result when the run succeeded; RunError with :meth:`describe` when not."""
        if not self.ok:
            raise RunError(self.describe())
        return self

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

    def __init__(self, container: Any, prefix: str, out: TextIO, tail: int, echo: bool, *, stdout: bool) -> None:
        super().__init__(daemon=True, name=f"logs-{prefix}")
        self.container = container
        self.stdout = stdout
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
            for chunk in self.container.logs(stream=True, follow=True, stdout=self.stdout, stderr=True):
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


@dataclass(frozen=True, kw_only=True)
class Output:
    """Where a run's output goes: the command's lines to ``out`` (stdout), each after ``[prefix]`` when one is
    given; torchrig's own lines (starting, stopping, how it ended) to ``status`` (default: ``out``)."""

    prefix: str = ""
    out: TextIO | None = None
    status: TextIO | None = None
    tail: int = 30  # how many last lines a result keeps for its message

    @classmethod
    def labelled(cls, prefix: str, **fields: Any) -> Output:
        """Each line after ``[prefix]`` (an environment id): several runs' output stays readable side by side."""
        return cls(prefix=prefix, **fields)

    @classmethod
    def as_is(cls, **fields: Any) -> Output:
        """The command's output unchanged and torchrig's lines on stderr, so the run pipes like the command."""
        return cls(status=fields.pop("status", sys.stderr), **fields)


@dataclass(frozen=True, kw_only=True)
class _Mode:
    echo: bool  # stream the command's output
    capture_stdout: bool  # keep stdout apart as the answer (not streamed)
    quiet: bool  # no starting/ending lines, only warnings


def run(client: docker.DockerClient, spec: SuiteContainer, *, keep: bool, timeout: float | None = None,
        output: Output | None = None, files: Mapping[str, bytes] | None = None) -> RunResult:
    """Run ``spec`` to completion, streaming its output (:class:`Output`); the container is removed however the
    run ends (kept, stopped, with ``keep``). The result says how it ended: ``run(...).check()`` raises
    :class:`RunError` with the last lines when it failed.

    ``timeout`` (seconds of wall time from the start) stops a run that hangs: SIGTERM, then SIGKILL after a grace
    period. Ctrl-C (or SIGTERM) stops and removes the container and re-raises KeyboardInterrupt. ``files`` are
    copied in before the start (:func:`started`).
    """
    return _run(client, spec, keep=keep, timeout=timeout, output=output or Output(), files=files,
                mode=_Mode(echo=True, capture_stdout=False, quiet=False))


def read_output(client: docker.DockerClient, spec: SuiteContainer, *, keep: bool, timeout: float,
                files: Mapping[str, bytes] | None = None) -> RunResult:
    """Run ``spec`` for its answer: nothing is streamed, its stdout is :attr:`RunResult.stdout`, its stderr only
    the last lines of the result; only warnings are printed (on stderr)."""
    return _run(client, spec, keep=keep, timeout=timeout, output=Output(status=sys.stderr), files=files,
                mode=_Mode(echo=False, capture_stdout=True, quiet=True))


def _run(client: docker.DockerClient, spec: SuiteContainer, *, keep: bool, timeout: float | None, output: Output,
         files: Mapping[str, bytes] | None, mode: _Mode) -> RunResult:
    out = output.out or sys.stdout
    status = output.status or out
    what = shlex.join(spec.command) or "the image's default command"
    if not mode.quiet:
        _say(status, f"starting {spec.name} from {spec.image}: {what}")
    t0 = time.monotonic()
    timed_out = oom = False
    captured: str | None = None
    with _sigterm_as_interrupt(), started(client, spec, keep=keep, out=status, files=files) as container:
        pump = _LogPump(container, output.prefix, out, output.tail, mode.echo, stdout=not mode.capture_stdout)
        pump.start()
        waiter = _Waiter(container)
        waiter.start()
        try:
            if not waiter.wait_until(None if timeout is None else t0 + timeout):
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
        with contextlib.suppress(docker.errors.DockerException):
            container.reload()
            oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        if mode.capture_stdout and code is not None:
            try:
                captured = bytes(container.logs(stdout=True, stderr=False)).decode(errors="replace")
            except docker.errors.DockerException as e:
                raise RunError(f"could not read the output of {spec.name}: {e}") from None
        if waiter.error is not None and code is None and not timed_out:
            raise RunError(f"lost track of {spec.name} while waiting for it: {waiter.error}")
    result = RunResult(
        name=spec.name, image=spec.image, command=spec.command, exit_code=code,
        duration_s=time.monotonic() - t0, last_lines=tuple(pump.last), timed_out=timed_out,
        timeout_s=timeout, oom_killed=oom, stdout=captured,
    )
    if not mode.quiet:
        ending = "timed out" if timed_out else f"exit {code}"
        _say(status, f"{spec.name}: {ending} after {result.duration_s:.1f} s")
    return result


def run_python(client: docker.DockerClient, image: str, script: str, *, env_id: str, purpose: str, keep: bool,
               timeout: float) -> str:
    """Run a standard-library ``script`` with the image's ``python`` (no network, no GPU, quiet) and return its
    standard output; raise RunError naming the image and how it failed. For reading facts out of an image."""
    spec = container(env_id=env_id, accelerator="cpu", image=image, purpose=purpose,
                     command=["python", "-c", script], network_mode="none", shm_size=None)
    result = read_output(client, spec, keep=keep, timeout=timeout)
    if not result.ok:
        how = f"did not finish within {timeout:g} s" if result.timed_out else f"failed (exit {result.exit_code})"
        raise RunError(f"the {purpose} script in {image} {how} (does the image have `python` on its PATH?):\n"
                       + "\n".join(result.last_lines))
    return result.stdout or ""
