"""On the real engine: a torchrig container is always removed, and `dev ENV -- CMD` runs as the host user.

These use a small image built from the local base (seconds), not the big `cpu` image: the code paths are the same.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from torchrig.engine import LABEL, Mount, Output, container, run
from torchrig.errors import RunError

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
SMALL_TAG = "torchrig-test-run:small"
# The image's own user differs from the host's (root in CI): a run that forgot --user would print 4321.
IMAGE_UID = 4321


@pytest.fixture(scope="session")
def small_image(docker_client: docker.DockerClient, local_base: str) -> str:
    dockerfile = f"FROM {local_base}\nUSER {IMAGE_UID}:{IMAGE_UID}\nWORKDIR /\n"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=SMALL_TAG, rm=True, forcerm=True)
    return SMALL_TAG


def _ours(client: docker.DockerClient, purpose: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": f"{LABEL}={purpose}"}))


@pytest.fixture
def purpose(request: pytest.FixtureRequest, docker_client: docker.DockerClient) -> Iterator[str]:
    """A label value unique to the test, so its assertions see only its own containers."""
    value = f"test-{os.getpid()}-{request.node.name[:40]}".replace("[", "-").replace("]", "")
    yield value
    for c in _ours(docker_client, value):  # a failing test must not leave containers behind either
        c.remove(force=True)


def _spec(image: str, purpose: str, command: list[str], **kw: Any) -> Any:
    return container(env_id="t", accelerator="cpu", image=image, purpose=purpose, command=command,
                     uid=os.getuid(), gid=os.getgid(), **kw)


def test_a_successful_run_is_removed(docker_client: docker.DockerClient, small_image: str, purpose: str) -> None:
    out = io.StringIO()
    result = run(docker_client, _spec(small_image, purpose, ["sh", "-c", "id -u; echo done"]), keep=False,
                 output=Output.labelled("t", out=out))
    assert result.ok
    assert f"[t] {os.getuid()}\n[t] done\n" in out.getvalue()
    assert _ours(docker_client, purpose) == []


def test_a_failing_command_is_reported_and_removed(docker_client: docker.DockerClient, small_image: str,
                                                   purpose: str) -> None:
    with pytest.raises(RunError) as e:
        run(docker_client, _spec(small_image, purpose, ["sh", "-c", "echo about to fail; exit 3"]), keep=False,
            output=Output(out=io.StringIO())).check()
    assert "exited with status 3" in str(e.value) and "about to fail" in str(e.value)
    assert _ours(docker_client, purpose) == []


def test_a_timed_out_run_is_stopped_removed_and_keeps_what_it_wrote(
        docker_client: docker.DockerClient, small_image: str, purpose: str, tmp_path: Path) -> None:
    command = ["sh", "-c", "echo record > /results/first.json; echo written; sleep 300"]
    spec = _spec(small_image, purpose, command, mounts=[Mount(source=str(tmp_path), target="/results")])
    t0 = time.monotonic()
    with pytest.raises(RunError) as e:
        run(docker_client, spec, keep=False, timeout=3, output=Output(out=io.StringIO())).check()
    assert time.monotonic() - t0 < 30, "the timeout stopped the run"
    assert "timeout" in str(e.value) and "written" in str(e.value)
    assert _ours(docker_client, purpose) == []
    assert (tmp_path / "first.json").read_text() == "record\n"
    assert (tmp_path / "first.json").stat().st_uid == os.getuid()


def test_keep_containers_keeps_it_for_debugging(docker_client: docker.DockerClient, small_image: str,
                                                purpose: str) -> None:
    # keep=True is what TORCHRIG_KEEP_CONTAINERS=1 becomes (Settings.keep_containers)
    result = run(docker_client, _spec(small_image, purpose, ["sh", "-c", "exit 2"]), keep=True,
                 output=Output(out=io.StringIO()))
    (kept,) = _ours(docker_client, purpose)
    assert kept.name == result.name and kept.status == "exited"
    assert docker_client.containers.get(result.name).logs() == b""


def _torchrig(*args: str, **kw: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.Popen([sys.executable, "-m", "torchrig", "--matrix", str(ROOT / "matrix.yaml"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_dev_runs_a_command_as_the_host_user_with_the_workspace_mounted(
        docker_client: docker.DockerClient, small_image: str, tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("from the host\n")
    script = "id -u; id -g; cat /workspace/marker.txt; pwd; echo made > /workspace/made.txt; " \
             "df -k /dev/shm | tail -n 1; exit 7"
    proc = _torchrig("dev", "cpu", "--image", small_image, "--workspace", str(tmp_path), "--shm-size", "1g",
                     "--", "sh", "-c", script)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 7, err  # the command's own exit status
    lines = out.splitlines()
    assert lines[:4] == [str(os.getuid()), str(os.getgid()), "from the host", "/workspace"], (out, err)
    assert int(lines[4].split()[1]) == 1024 * 1024, "--shm-size reached the container"
    assert (tmp_path / "made.txt").stat().st_uid == os.getuid(), "files written in the workspace are the user's"
    assert "torchrig:" in err and "torchrig:" not in out, "status lines stay out of the command's output"


def test_ctrl_c_stops_and_removes_the_dev_container(docker_client: docker.DockerClient, small_image: str,
                                                     tmp_path: Path) -> None:
    before = {c.id for c in _ours(docker_client, "dev")}
    # SIGINT as a terminal's Ctrl-C delivers it: a shell starts background jobs (`.ci/run &`) with SIGINT ignored,
    # and an ignored SIGINT stays ignored in every child (torchrig, like any program, then keeps ignoring it)
    proc = _torchrig("dev", "cpu", "--image", small_image, "--workspace", str(tmp_path), "--",
                     "sh", "-c", "echo up; sleep 300", preexec_fn=_sigint_default)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "up"
    started = [c for c in _ours(docker_client, "dev") if c.id not in before]
    assert len(started) == 1
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()  # and read what it said: a process left running would also fail a later test at its gc
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"torchrig dev was still running 120 s after SIGINT; its stderr:\n{err}")
    assert proc.returncode == 130, err
    assert "interrupted" in err
    left = {c.id for c in _ours(docker_client, "dev")}
    assert started[0].id not in left


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux `script` to give dev a terminal")
def test_interactive_dev_opens_a_shell_through_the_docker_cli(docker_client: docker.DockerClient, small_image: str,
                                                              tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("from-the-host\n")
    before = {c.id for c in _ours(docker_client, "dev")}
    inner = " ".join([sys.executable, "-m", "torchrig", "--matrix", str(ROOT / "matrix.yaml"), "dev", "cpu",
                      "--image", small_image, "--workspace", str(tmp_path)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    # `script` gives the command a pseudo-terminal, as a user's shell would; the typed lines go to bash inside.
    typed = 'echo "uid=$(id -u) ws=$(cat /workspace/marker.txt) shell=$0"\nexit 5\n'
    proc = subprocess.run(["script", "-qec", inner, "/dev/null"], input=typed, capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert f"uid={os.getuid()} ws=from-the-host shell=bash" in proc.stdout, proc.stdout
    assert {c.id for c in _ours(docker_client, "dev")} <= before, "--rm removed it"
