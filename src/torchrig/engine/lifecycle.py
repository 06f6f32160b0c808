"""The one container lifecycle: every container torchrig starts is created, watched and removed here.

:func:`started` creates and starts a container from a :class:`~torchrig.engine.spec.ContainerSpec` and removes it
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

from torchrig.engine.spec import ContainerSpec, container_spec
from torchrig.errors import HostCheckError, RunError

__all__ = ["RunResult", "run", "started"]

_STOP_GRACE_S = 10


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
def started(client: docker.DockerClient, spec: ContainerSpec, *, keep: bool, out: TextIO | None = None,
            files: Mapping[str, bytes] | None = None) -> Iterator[Any]:
    """Create and start the container; on leaving -- for any reason -- stop and remove it.

    Removal goes by name, so a container created just before a Ctrl-C (before the SDK handed it back) is
    removed too. With ``keep`` (``TORCHRIG_KEEP_CONTAINERS=1``) it is stopped and kept, and its name is printed.
    ``files`` (absolute path -> content) are copied in before it starts: inputs for a throwaway container that
    work against a remote engine too, where a bind mount of a host folder would not.
    """
    out = out or sys.stdout
    kwargs = spec.docker_kwargs()
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


def run(
    client: docker.DockerClient,
    spec: ContainerSpec,
    *,
    keep: bool,
    timeout: float | None = None,
    prefix: str | None = None,
    check: bool = True,
    echo: bool = True,
    tail: int = 30,
    out: TextIO | None = None,
    status: TextIO | None = None,
    capture_stdout: bool = False,
    files: Mapping[str, bytes] | None = None,
    quiet: bool = False,
) -> RunResult:
    """Run ``spec`` to completion, streaming its output; the container is removed however the run ends (kept,
    stopped, with ``keep``).

    ``timeout`` (seconds of wall time from the start) stops a run that hangs: SIGTERM, then SIGKILL after a
    grace period. With ``check`` a non-zero exit or a timeout raises :class:`RunError` carrying the last lines;
    without, the :class:`RunResult` says how it ended. Ctrl-C (or SIGTERM) stops and removes the container and
    re-raises KeyboardInterrupt. The output goes to ``out`` (stdout), each line after ``[prefix]`` (``""``: as
    is); torchrig's own lines (starting, stopping, how it ended) go to ``status`` (default: ``out``), or only
    the warnings with ``quiet``. With ``capture_stdout`` the command's stdout is its answer (a JSON report): it
    is not streamed but returned in :attr:`RunResult.stdout`, and only stderr is shown. ``files`` are copied in
    before the start (:func:`started`).
    """
    out = out or sys.stdout
    status = status or out
    prefix = spec.name if prefix is None else prefix
    what = shlex.join(spec.command) or "the image's default command"
    if not quiet:
        _say(status, f"starting {spec.name} from {spec.image}: {what}")
    t0 = time.monotonic()
    timed_out = oom = False
    code: int | None = None
    last: tuple[str, ...] = ()
    captured: str | None = None
    with _sigterm_as_interrupt(), started(client, spec, keep=keep, out=status, files=files) as container:
        pump = _LogPump(container, prefix, out, tail, echo, stdout=not capture_stdout)
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
        if capture_stdout and code is not None:
            try:
                captured = bytes(container.logs(stdout=True, stderr=False)).decode(errors="replace")
            except docker.errors.DockerException as e:
                raise RunError(f"could not read the output of {spec.name}: {e}") from None
        if waiter.error is not None and code is None and not timed_out:
            raise RunError(f"lost track of {spec.name} while waiting for it: {waiter.error}")
    result = RunResult(
        name=spec.name, image=spec.image, command=spec.command, exit_code=code,
        duration_s=time.monotonic() - t0, last_lines=last, timed_out=timed_out,
        timeout_s=timeout, oom_killed=oom, stdout=captured,
    )
    if not quiet:
        ending = "timed out" if timed_out else f"exit {code}"
        _say(status, f"{spec.name}: {ending} after {result.duration_s:.1f} s")
    if check and not result.ok:
        raise RunError(result.describe())
    return result


def run_python(client: docker.DockerClient, image: str, script: str, *, env_id: str, purpose: str, keep: bool,
               timeout: float) -> str:
    """Run a standard-library ``script`` with the image's ``python`` (no network, no GPU, quiet) and return its
    standard output; raise RunError naming the image and how it failed. For reading facts out of an image."""
    spec = container_spec(env_id=env_id, accelerator="cpu", image=image, purpose=purpose,
                          command=["python", "-c", script], network_mode="none", shm_size=None)
    result = run(client, spec, keep=keep, timeout=timeout, check=False, echo=False, quiet=True,
                 capture_stdout=True, status=sys.stderr)
    if not result.ok:
        how = f"did not finish within {timeout:g} s" if result.timed_out else f"failed (exit {result.exit_code})"
        raise RunError(f"the {purpose} script in {image} {how} (does the image have `python` on its PATH?):\n"
                       + "\n".join(result.last_lines))
    return result.stdout or ""
