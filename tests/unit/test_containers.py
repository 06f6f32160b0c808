"""Container options per accelerator, and the one lifecycle's cleanup/timeout/failure handling against a fake
engine -- including the helper container that measures an image, which goes through it too."""

from __future__ import annotations

import io
import signal
import tarfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker.errors
import docker.types
import pytest

from torchrig.container import oci_args
from torchrig.engine import (
    ENV_LABEL,
    LABEL,
    Mount,
    Output,
    SuiteContainer,
    container,
    docker_kwargs,
    gpu_flags,
    read_output,
    run,
    started,
)
from torchrig.errors import BuildError, HostCheckError, RunError


def _spec(accelerator: str = "cpu", **kw: Any) -> SuiteContainer:
    args: dict[str, Any] = {
        "env_id": "e", "accelerator": accelerator, "image": "img:1", "purpose": "tasks",
        "command": ["python", "-m", "tasks"], "uid": 1234, "gid": 5678,
        "mounts": [Mount(source="/host/results", target="/results")],
    }
    args.update(kw)
    return container(**args)


# ------------------------------------------------------------------------------------------------- options


def test_cpu_gets_no_gpu_flags_but_host_user_shm_mounts_and_labels() -> None:
    kw = docker_kwargs(_spec("cpu"))
    for key in ("device_requests", "devices", "group_add", "security_opt", "ipc_mode"):
        assert key not in kw
    assert kw["user"] == "1234:5678"
    assert kw["environment"]["HOME"] == "/tmp"
    assert kw["shm_size"] == "8g"
    assert kw["labels"] == {LABEL: "tasks", "torchrig.env": "e"}
    assert kw["init"] is True
    (mount,) = kw["mounts"]
    assert (mount["Source"], mount["Target"], mount["Type"], mount["ReadOnly"]) == (
        "/host/results", "/results", "bind", False)


def test_cuda_requests_every_nvidia_gpu() -> None:
    kw = docker_kwargs(_spec("cuda"))
    (req,) = kw["device_requests"]
    assert isinstance(req, docker.types.DeviceRequest)
    assert req["Count"] == -1 and req["Capabilities"] == [["gpu"]]
    assert "devices" not in kw and "security_opt" not in kw


def test_rocm_gets_kfd_dri_video_and_the_hosts_render_gid_unconfined() -> None:
    kw = docker_kwargs(_spec("rocm", render_group="109"))
    assert kw["devices"] == ["/dev/kfd:/dev/kfd:rwm", "/dev/dri:/dev/dri:rwm"]
    assert kw["group_add"] == ["video", "109"]
    assert kw["security_opt"] == ["seccomp=unconfined"]
    assert "device_requests" not in kw


@pytest.mark.parametrize("accelerator", ["cuda", "rocm"])
def test_no_gpu_drops_every_gpu_flag(accelerator: str) -> None:
    kw = docker_kwargs(_spec(accelerator, use_gpu=False, render_group="109"))
    assert not {"device_requests", "devices", "group_add", "security_opt"} & kw.keys()


@pytest.mark.parametrize(("accelerator", "use_gpu", "hidden"), [
    ("cpu", True, True), ("cuda", False, True), ("rocm", True, True), ("cuda", True, False)])
def test_containers_without_nvidia_gpus_hide_them_from_a_default_nvidia_runtime(
        accelerator: str, use_gpu: bool, hidden: bool) -> None:
    # The images set NVIDIA_VISIBLE_DEVICES=all; where nvidia is Docker's default runtime that alone exposes GPUs.
    env = docker_kwargs(_spec(accelerator, use_gpu=use_gpu))["environment"]
    assert (env.get("NVIDIA_VISIBLE_DEVICES") == "void") is hidden


def test_ipc_host_shm_size_network_and_read_only_mounts() -> None:
    spec = _spec("cpu", ipc_host=True, shm_size="16g", network_mode="host",
                 mounts=[Mount(source="/src", target="/workspace", read_only=True)])
    kw = docker_kwargs(spec)
    assert kw["ipc_mode"] == "host" and kw["shm_size"] == "16g" and kw["network_mode"] == "host"
    assert kw["mounts"][0]["ReadOnly"] is True


def test_without_a_uid_the_image_default_user_is_kept() -> None:
    kw = docker_kwargs(_spec("cpu", uid=None, gid=None))
    assert "user" not in kw and "HOME" not in kw["environment"]


def test_names_are_unique_and_say_what_the_container_is_for() -> None:
    names = {_spec().name for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith("torchrig-e-tasks-") for n in names)


@pytest.mark.parametrize("accelerator", ["cpu", "cuda", "rocm"])
def test_the_cli_form_carries_the_same_options_as_the_sdk_form(accelerator: str) -> None:
    spec = _spec(accelerator, render_group="109", ipc_host=True, interactive=True,
                 environment={"TORCHRIG_IMAGE": "img:1"})
    kw = docker_kwargs(spec)
    args = oci_args(spec)
    assert args[-4:] == ["img:1", "python", "-m", "tasks"]
    assert f"--user={kw['user']}" in args and f"--name={spec.name}" in args
    assert "--interactive" in args and "--tty" in args and "--rm" in args and "--init" in args
    assert f"--shm-size={kw['shm_size']}" in args and "--ipc=host" in args
    assert ("--gpus=all" in args) == ("device_requests" in kw)
    assert [a for a in args if a.startswith("--device=")] == [f"--device={d.split(':')[0]}"
                                                              for d in kw.get("devices", [])]
    assert [a.split("=", 1)[1] for a in args if a.startswith("--group-add=")] == kw.get("group_add", [])
    assert [a.split("=", 1)[1] for a in args if a.startswith("--security-opt=")] == kw.get("security_opt", [])
    assert [a for a in args if a.startswith("--env=")] == [f"--env={k}={v}" for k, v in kw["environment"].items()]
    assert [a for a in args if a.startswith("--label=")] == [f"--label={k}={v}" for k, v in kw["labels"].items()]
    assert "--mount=type=bind,source=/host/results,target=/results" in args


def test_cli_mount_quotes_paths_with_commas() -> None:
    args = oci_args(_spec(mounts=[Mount(source="/a,b", target="/w", read_only=True)]))
    assert '--mount=type=bind,"source=/a,b",target=/w,readonly' in args


def test_gpu_flags_for_devcontainer_placeholders() -> None:
    flags = gpu_flags("rocm", render_group="${localEnv:TORCHRIG_RENDER_GID:video}")
    assert flags.group_add == ("video", "${localEnv:TORCHRIG_RENDER_GID:video}")


# ---------------------------------------------------------------------------------------------- fake engine


class FakeContainer:
    def __init__(self, engine: FakeEngine, kwargs: dict[str, Any]) -> None:
        self.engine = engine
        self.kwargs = kwargs
        self.name = kwargs["name"]
        self.exited = threading.Event()
        self.code: int | None = None
        self.stopped_with: list[int] = []
        self.attrs: dict[str, Any] = {"State": {"OOMKilled": engine.oom}}
        self.archives: list[tuple[str, bytes]] = []
        self.started = False

    def put_archive(self, path: str, data: bytes) -> bool:
        assert not self.started, "files are copied in before the start"
        self.archives.append((path, data))
        return True

    def files(self) -> dict[str, str]:
        out = {}
        for path, data in self.archives:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for m in tar.getmembers():
                    out[path.rstrip("/") + "/" + m.name] = tar.extractfile(m).read().decode()  # type: ignore[union-attr]
        return out

    def start(self) -> None:
        if self.engine.start_error is not None:
            raise self.engine.start_error
        self.started = True
        if self.engine.behaviour == "exit":
            self.code = self.engine.exit_code
            self.exited.set()

    def logs(self, **kw: Any) -> Any:
        if not kw.get("stream"):
            assert kw.get("stdout") and not kw.get("stderr"), "only stdout is read apart"
            return self.engine.stdout
        self.engine.streamed_with.append((bool(kw.get("stdout")), bool(kw.get("stderr"))))
        return self._stream()

    def _stream(self) -> Iterator[bytes]:
        yield from self.engine.output
        self.exited.wait(30)

    def wait(self) -> dict[str, Any]:
        if not self.exited.wait(30):
            raise AssertionError("the fake container was never stopped")
        return {"StatusCode": self.code}

    def stop(self, timeout: int = 10) -> None:
        self.stopped_with.append(timeout)
        self.code = 143
        self.exited.set()

    def reload(self) -> None:
        pass


class FakeEngine:
    """Just enough of docker.DockerClient for containers.run; remembers what is still 'on the engine'."""

    def __init__(self, behaviour: str = "exit", exit_code: int = 0, output: tuple[bytes, ...] = (),
                 stdout: bytes = b"") -> None:
        self.behaviour = behaviour  # "exit": finishes at once; "hang": runs until stopped
        self.exit_code = exit_code
        self.output = output  # what the log stream yields
        self.stdout = stdout  # what reading stdout alone returns after the exit
        self.streamed_with: list[tuple[bool, bool]] = []
        self.images_here: set[str] = {"img:1", "base:1"}
        self.oom = False
        self.start_error: Exception | None = None
        self.create_error: BaseException | None = None
        self.existing: dict[str, FakeContainer] = {}
        self.created: list[FakeContainer] = []
        self.containers = self
        self.api = self
        self.images = self

    def get(self, name: str) -> object:  # client.images.get
        if name not in self.images_here:
            raise docker.errors.ImageNotFound(name)
        return object()

    def create(self, **kwargs: Any) -> FakeContainer:
        c = FakeContainer(self, kwargs)
        self.existing[c.name] = c
        self.created.append(c)
        if self.create_error is not None:
            raise self.create_error  # e.g. Ctrl-C after the engine made it, before the SDK returned it
        return c

    def remove_container(self, name: str, force: bool = False, v: bool = False) -> None:
        if name not in self.existing:
            raise docker.errors.NotFound(f"No such container: {name}")
        assert force
        c = self.existing.pop(name)
        c.code = c.code if c.code is not None else 137
        c.exited.set()


def _run(engine: FakeEngine, *, check: bool = True, tail: int = 30, keep: bool = False, **kw: Any) -> tuple[Any, str]:
    out = io.StringIO()
    result = run(engine, _spec(), keep=keep, output=Output.labelled("cpu", out=out, tail=tail), **kw)  # type: ignore[arg-type]
    if check:
        result.check()
    return result, out.getvalue()


def test_a_successful_run_streams_prefixed_lines_and_removes_the_container() -> None:
    engine = FakeEngine(output=(b"hello\nwor", b"ld\n", b"caf\xc3", b"\xa9\n"))
    result, out = _run(engine)
    assert result.ok and result.exit_code == 0
    assert "[cpu] hello\n[cpu] world\n[cpu] café\n" in out
    assert engine.existing == {}


def test_a_failing_command_raises_run_error_with_the_last_lines_and_is_removed() -> None:
    lines = tuple(f"line {i}\n".encode() for i in range(100))
    engine = FakeEngine(exit_code=3, output=(*lines, b"Traceback: boom\n"))
    with pytest.raises(RunError) as e:
        _run(engine, tail=5)
    msg = str(e.value)
    assert "exited with status 3" in msg and "Traceback: boom" in msg and "line 96" in msg
    assert "line 94" not in msg
    assert engine.existing == {}


def test_check_false_returns_the_exit_code() -> None:
    result, _ = _run(FakeEngine(exit_code=1), check=False)
    assert result.exit_code == 1 and not result.ok


def test_a_hung_run_is_stopped_at_the_timeout_reported_and_removed() -> None:
    engine = FakeEngine(behaviour="hang", output=(b"epoch 1\n",))
    t0 = time.monotonic()
    with pytest.raises(RunError) as e:
        _run(engine, timeout=0.3)
    assert time.monotonic() - t0 < 5
    assert "timeout" in str(e.value) and "0.3 s" in str(e.value) and "epoch 1" in str(e.value)
    assert engine.created[0].stopped_with, "the container was stopped, not left running"
    assert engine.existing == {}


def test_a_timed_out_run_without_check_says_so() -> None:
    result, out = _run(FakeEngine(behaviour="hang"), timeout=0.2, check=False)
    assert result.timed_out and not result.ok and "timed out" in out


def test_oom_kill_is_named() -> None:
    engine = FakeEngine(exit_code=137)
    engine.oom = True
    with pytest.raises(RunError, match="out-of-memory killer"):
        _run(engine)


def test_a_signal_death_is_named() -> None:
    with pytest.raises(RunError, match="SIGSEGV"):
        _run(FakeEngine(exit_code=139))


def test_ctrl_c_while_waiting_removes_the_container_and_propagates() -> None:
    """A real SIGINT to the main thread (what a terminal's Ctrl-C is), sent once the container runs; sent again
    only if the first was not acted on within 2 s (a loaded CI machine can take that long to schedule the main
    thread), never once the stop has begun, so the cleanup itself is not interrupted."""
    engine = FakeEngine(behaviour="hang")
    finished = threading.Event()

    def interrupt_while_running() -> None:
        while not finished.is_set() and not (engine.created and engine.created[0].started):
            time.sleep(0.05)
        while not finished.is_set() and not engine.created[0].stopped_with and engine.existing:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            finished.wait(2)

    # Python's own handler, whatever this process inherited: a shell starts background jobs (`.ci/run &`) with
    # SIGINT ignored, and pytest then ignores it too
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt_while_running, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(engine, timeout=30)
    finally:
        finished.set()
        signal.signal(signal.SIGINT, previous)
    assert engine.existing == {}


def test_a_container_created_just_before_ctrl_c_is_removed_by_name() -> None:
    engine = FakeEngine()
    engine.create_error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        _run(engine)
    assert engine.created and engine.existing == {}


def test_keep_containers_leaves_it_behind_and_says_how_to_remove_it() -> None:
    engine = FakeEngine(exit_code=2)
    result, out = _run(engine, check=False, keep=True)
    assert list(engine.existing) == [result.name]
    assert f"docker rm -f {result.name}" in out and "TORCHRIG_KEEP_CONTAINERS=1" in out


def test_missing_image_says_to_build_it() -> None:
    engine = FakeEngine()
    engine.create_error = docker.errors.ImageNotFound("no such image")
    with pytest.raises(RunError, match="torchrig build"):
        _run(engine)


def test_missing_nvidia_toolkit_at_start_is_a_host_check_error() -> None:
    engine = FakeEngine()
    engine.start_error = docker.errors.APIError(
        "500", explanation='could not select device driver "" with capabilities: [[gpu]]')
    with pytest.raises(HostCheckError, match="NVIDIA Container Toolkit"), \
            started(engine, _spec("cuda"), keep=False, out=io.StringIO()):  # type: ignore[arg-type]
        pass
    assert engine.existing == {}, "a container that failed to start is removed too"


def test_a_cdi_device_docker_cannot_resolve_is_a_host_check_error() -> None:
    engine = FakeEngine()
    engine.start_error = docker.errors.APIError(
        "500", explanation="could not add CDI devices: unresolvable CDI devices nvidia.com/gpu=all")
    spec = _spec("cuda", gpu=gpu_flags("cuda", access="cdi"))
    with pytest.raises(HostCheckError, match="nvidia-ctk cdi generate"), \
            started(engine, spec, keep=False, out=io.StringIO()):  # type: ignore[arg-type]
        pass
    assert engine.existing == {}


def test_a_failed_removal_warns_with_the_command_and_does_not_hide_the_run_error() -> None:
    engine = FakeEngine(exit_code=4)

    def broken(name: str, **kw: Any) -> None:
        raise ConnectionError("daemon went away")

    engine.remove_container = broken  # type: ignore[method-assign]
    out = io.StringIO()
    with pytest.raises(RunError, match="exited with status 4"):
        run(engine, _spec(), keep=False, output=Output(out=out)).check()  # type: ignore[arg-type]
    assert "could not remove container" in out.getvalue() and "docker rm -f torchrig-e-tasks-" in out.getvalue()


def test_files_are_copied_in_before_the_start() -> None:
    engine = FakeEngine()
    _run(engine, files={"/tmp/torchrig/run.sh": b"echo hi\n", "/etc/x.conf": b"k=v\n"})
    assert engine.created[0].files() == {"/tmp/torchrig/run.sh": "echo hi\n", "/etc/x.conf": "k=v\n"}


def test_reading_a_fact_returns_stdout_and_keeps_stderr_for_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    engine = FakeEngine(output=(b"progress\n",), stdout=b'{"answer": 42}\n')
    result = read_output(engine, _spec(), keep=False, timeout=30)  # type: ignore[arg-type]
    assert result.stdout == '{"answer": 42}\n'
    assert engine.streamed_with == [(False, True)], "the live stream leaves stdout out"
    assert result.last_lines == ("progress",)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "", "reading a fact prints nothing, not even its start"


# ------------------------------------------------------------------- helper containers: measure and lock


def test_measuring_site_packages_goes_through_the_lifecycle() -> None:
    from torchrig.images.measure import measure_site_packages

    engine = FakeEngine(stdout=b'{"bytes": 123456, "paths": ["/opt/venv/lib/python3.11/site-packages"]}\n')
    assert measure_site_packages(engine, "img:1", env_id="cpu") == 123456  # type: ignore[arg-type]
    (c,) = engine.created
    assert c.kwargs["labels"] == {LABEL: "measure", ENV_LABEL: "cpu"}
    assert c.name.startswith("torchrig-cpu-measure-") and c.kwargs["network_mode"] == "none"
    assert engine.existing == {}, "removed after the measurement"


def test_a_failed_measurement_is_a_build_error_and_the_container_is_removed() -> None:
    from torchrig.images.measure import measure_site_packages

    engine = FakeEngine(exit_code=1, output=(b"python: not found\n",))
    with pytest.raises(BuildError, match=r"measuring site-packages: the measure script in img:1 failed \(exit 1\)"
                                          r"[^\n]*:\npython: not found"):
        measure_site_packages(engine, "img:1", env_id="cpu")  # type: ignore[arg-type]
    assert engine.created and engine.existing == {}


def test_a_hung_measurement_is_stopped_at_its_timeout() -> None:
    from torchrig.images.measure import measure_site_packages

    engine = FakeEngine(behaviour="hang")
    with pytest.raises(BuildError, match=r"did not finish within 0\.2 s"):
        measure_site_packages(engine, "img:1", env_id="cpu", timeout=0.2)  # type: ignore[arg-type]
    assert engine.created[0].stopped_with and engine.existing == {}


def test_kept_helper_containers_stay_for_debugging() -> None:
    from torchrig.images.measure import measure_site_packages

    engine = FakeEngine(stdout=b'{"bytes": 1}\n')
    measure_site_packages(engine, "img:1", env_id="cpu", keep=True)  # type: ignore[arg-type]
    assert len(engine.existing) == 1
