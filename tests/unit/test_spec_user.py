"""A container run as any host UID gets a user name, a HOME and per-UID compiler caches through its environment:
getpass.getuser() (inductor's cache directory, pytorch#140765) raises for a UID with no passwd entry otherwise."""

from __future__ import annotations

import getpass
import pwd

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchrig.container import CONTAINER_HOME, container, oci_args, user_environment
from torchrig.engine.spec import docker_kwargs


@given(uid=st.integers(0, 2**31 - 1), gid=st.none() | st.integers(0, 2**31 - 1))
def test_any_uid_gets_a_name_home_and_own_caches(uid: int, gid: int | None) -> None:
    spec = container(env_id="cpu", accelerator="cpu", image="i", purpose="bench", uid=uid, gid=gid)
    env = docker_kwargs(spec)["environment"]
    assert env["USER"] and env["LOGNAME"] and env["HOME"] == CONTAINER_HOME
    for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        assert env[key].startswith(CONTAINER_HOME + "/") and env[key].endswith(f"_{uid}")
    cli = oci_args(spec)
    assert f"--env=USER={env['USER']}" in cli
    assert f"--env=TORCHINDUCTOR_CACHE_DIR={env['TORCHINDUCTOR_CACHE_DIR']}" in cli


def test_caller_environment_wins_and_no_uid_keeps_the_image_user() -> None:
    spec = container(env_id="cpu", accelerator="cpu", image="i", purpose="bench", uid=4242,
                     environment={"TORCHINDUCTOR_CACHE_DIR": "/cache"})
    assert spec.environment["TORCHINDUCTOR_CACHE_DIR"] == "/cache"
    plain = container(env_id="cpu", accelerator="cpu", image="i", purpose="bench")
    assert not {"USER", "LOGNAME", "TORCHINDUCTOR_CACHE_DIR"} & set(plain.environment)


def test_getpass_finds_the_name_without_a_passwd_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The regression: UID 4242 in the cpu image made getpass.getuser() raise KeyError (getpwuid)."""
    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(KeyError):
        getpass.getuser()
    for k, v in user_environment(4242).items():
        monkeypatch.setenv(k, v)
    assert getpass.getuser() == user_environment(4242)["LOGNAME"]
