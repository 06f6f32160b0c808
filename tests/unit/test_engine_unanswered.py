"""An engine that does not answer: a socket that accepts and never replies ends in seconds, naming the endpoint;
a DOCKER_HOST docker-py cannot use is exit 2 before any connection; a stalled transfer stream is a RegistryError."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import urllib3.exceptions
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrig.engine import client as engine_client
from torchrig.engine.client import PING_TIMEOUT_ENV, check_docker_host, connect, ping_timeout
from torchrig.engine.registry import pull_image, push_image, waiting
from torchrig.errors import ConfigurationError, DockerUnavailableError, RegistryError
from torchrig.matrix import ImageRef

ROOT = Path(__file__).resolve().parents[2]


class _Silent:
    """A listener that accepts every connection and never sends a byte (a stalled daemon or registry)."""

    def __init__(self, family: int, address: Any) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(16)
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        for c in self.accepted:
            c.close()
        self.sock.close()


@pytest.fixture
def silent_unix(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "docker.sock"
    s = _Silent(socket.AF_UNIX, str(path))
    yield f"unix://{path}"
    s.close()


@pytest.fixture
def silent_tcp() -> Iterator[str]:
    s = _Silent(socket.AF_INET, ("127.0.0.1", 0))
    yield f"tcp://127.0.0.1:{s.sock.getsockname()[1]}"
    s.close()


@pytest.mark.parametrize("listener", ["silent_unix", "silent_tcp"])
def test_a_socket_that_never_answers_ends_within_the_ping_timeout(
        listener: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    address = request.getfixturevalue(listener)
    monkeypatch.setenv("DOCKER_HOST", address)
    t0 = time.monotonic()
    with pytest.raises(DockerUnavailableError) as e:
        connect(ping_timeout_s=0.5)
    took = time.monotonic() - t0
    assert took < 5, f"connect waited {took:.1f} s on a silent socket"
    message = str(e.value)
    assert f"DOCKER_HOST={address}" in message and "did not answer within 0.5 s" in message
    assert PING_TIMEOUT_ENV in message and e.value.return_code == 3


def test_the_long_timeout_is_given_back_after_the_ping(monkeypatch: pytest.MonkeyPatch) -> None:
    """The short timeout bounds only the first answer: builds and pulls read with the long one."""
    seen: dict[str, Any] = {}

    class FakeClient:
        def __init__(self, timeout: float) -> None:
            self.api = type("Api", (), {"timeout": timeout})()
            seen["first"] = timeout

        def ping(self) -> bool:
            seen["ping"] = self.api.timeout
            return True

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(docker, "from_env", lambda timeout, version: FakeClient(timeout))
    client: Any = connect(600, ping_timeout_s=2.5)
    assert seen == {"first": 2.5, "ping": 2.5} and client.api.timeout == 600


def test_torchrig_pull_against_a_hung_daemon_ends_in_seconds_with_exit_3(silent_unix: str) -> None:
    env = {**os.environ, "DOCKER_HOST": silent_unix, PING_TIMEOUT_ENV: "1"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "torchrig", "--matrix", str(ROOT / "matrix.yaml"), "pull", "cpu"],
                          capture_output=True, text=True, timeout=60, env=env)
    took = time.monotonic() - t0
    assert proc.returncode == 3, proc.stderr
    assert took < 30 and "Traceback" not in proc.stderr
    assert silent_unix in proc.stderr and "did not answer within 1 s" in proc.stderr


# ------------------------------------------------------------------------------------- DOCKER_HOST schemes

_ACCEPTED = ("unix", "tcp", "ssh", "npipe", "http", "https", "http+unix")


@pytest.mark.parametrize("address", ["fd://", "docker://localhost:2375", "tcp://", "tcp://host", "unix:/x?a=1",
                                     "tcp://127.0.0.1:2375/?x=1", "ssh://host/path"])
def test_an_unusable_docker_host_is_exit_2_before_any_connection(address: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", address)
    monkeypatch.setattr(docker, "from_env", _no_connection)
    with pytest.raises(ConfigurationError) as e:
        connect()
    assert e.value.return_code == 2 and str(e.value).startswith("DOCKER_HOST: ")
    assert repr(address) in str(e.value) and "unix:///" in str(e.value)


@pytest.mark.parametrize("address", ["unix:///var/run/docker.sock", "unix://relative.sock", "tcp://127.0.0.1:2375",
                                     "http://localhost:2375", "https://docker.example:2376", "ssh://me@host",
                                     "ssh://host:2222", "npipe:////./pipe/docker_engine", "127.0.0.1:2375"])
def test_the_schemes_docker_py_accepts_pass_the_check(address: str) -> None:
    check_docker_host(address)


def _no_connection(*_: object, **__: object) -> None:
    raise AssertionError("connect() tried to connect with a DOCKER_HOST it should have refused")


@settings(max_examples=80)
@given(scheme=st.text(alphabet="abcdefghijklmnopqrstuvwxyz+", min_size=1, max_size=10),
       rest=st.sampled_from(["localhost:2375", "/var/run/docker.sock", "host", ""]))
def test_every_other_scheme_is_refused_with_exit_2(scheme: str, rest: str) -> None:
    address = f"{scheme}://{rest}"
    try:
        check_docker_host(address)
    except ConfigurationError as e:
        assert repr(address) in str(e)
        return
    assert scheme in _ACCEPTED, f"{address} passed the check but docker-py has no transport for {scheme}"


@settings(max_examples=60)
@given(st.text(max_size=30))
def test_any_docker_host_text_is_accepted_or_refused_never_a_traceback(address: str) -> None:
    try:
        check_docker_host(address)
    except ConfigurationError as e:
        assert e.return_code == 2


# ------------------------------------------------------------------------------------- the ping timeout setting

@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf", "five", "1e999", " "])
def test_a_bad_ping_timeout_names_the_variable(raw: str) -> None:
    if not raw.strip():
        assert ping_timeout({PING_TIMEOUT_ENV: raw}) == engine_client.PING_TIMEOUT_S
        return
    with pytest.raises(ConfigurationError) as e:
        ping_timeout({PING_TIMEOUT_ENV: raw})
    assert PING_TIMEOUT_ENV in str(e.value) and "> 0" in str(e.value)


@given(st.floats(min_value=1e-3, max_value=1e6))
def test_a_positive_ping_timeout_is_taken(value: float) -> None:
    assert ping_timeout({PING_TIMEOUT_ENV: repr(value)}) == value


# ------------------------------------------------------------------------------------- transfers that stall

def test_waiting_says_it_is_still_waiting_while_the_stream_is_silent() -> None:
    def slow() -> Iterator[dict[str, str]]:
        yield {"status": "a"}
        time.sleep(0.35)
        yield {"status": "b"}

    lines: list[str] = []
    got = list(waiting(slow(), log=lines.append, what="pull x from reg:5000", every_s=0.1))
    assert got == [{"status": "a"}, {"status": "b"}]
    assert lines and all(line.startswith("[pull x from reg:5000] still waiting for the engine") for line in lines)


def test_waiting_raises_the_readers_error_in_the_callers_thread() -> None:
    def broken() -> Iterator[dict[str, str]]:
        yield {"status": "a"}
        raise urllib3.exceptions.ReadTimeoutError(None, "/images/create", "Read timed out.")  # type: ignore[arg-type]

    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        list(waiting(broken(), log=lambda _: None, what="pull"))


class _StalledApi:
    timeout = 600

    def _stall(self, *_: object, **__: object) -> Iterator[dict[str, str]]:
        yield {"status": "Pulling from torchrig"}
        raise urllib3.exceptions.ReadTimeoutError(None, "/x", "Read timed out. (read timeout=600)")  # type: ignore[arg-type]

    pull = push = _stall


class _StalledClient:
    api = _StalledApi()
    images = type("Images", (), {"get": staticmethod(lambda name: object())})()


@pytest.mark.parametrize("action", ["pull", "push"])
def test_a_stalled_registry_is_a_registry_error_naming_it(action: str) -> None:
    ref = ImageRef(immutable="reg.example:5000/torchrig:2.0.1-cpu", alias="reg.example:5000/torchrig:cpu")
    fn = pull_image if action == "pull" else push_image
    with pytest.raises(RegistryError) as e:
        fn(ref, client=_StalledClient(), log=lambda _: None)  # type: ignore[arg-type]
    message = str(e.value)
    assert message.startswith(f"{action} reg.example:5000/torchrig:") and "registry reg.example:5000" in message
    assert "within 600 s" in message and "stalled" in message
