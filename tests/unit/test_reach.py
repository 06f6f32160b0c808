"""A failed build names every source this machine cannot reach (registry, index, extra index) and the setup."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchrig.images import reach
from torchrig.images.plan import Plan
from torchrig.images.reach import MAX_SOURCES, Source, build_sources, explain_build_failure, unreachable


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def open_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _plan(base: str, index: str, extra: tuple[str, ...] = (), python: str = "3.11") -> Plan:
    return cast(Plan, SimpleNamespace(base=base, index_url=index, extra_index_urls=extra,
                                      env=SimpleNamespace(python=python)))


def test_a_closed_port_and_an_unresolvable_name_are_named_an_open_port_is_not(closed_port: int,
                                                                               open_port: int) -> None:
    sources = [Source(what="closed", host="127.0.0.1", port=closed_port),
               Source(what="nowhere", host="no-such-host.invalid", port=443),
               Source(what="open", host="127.0.0.1", port=open_port)]
    start = time.monotonic()
    down = dict((s.what, why) for s, why in unreachable(sources, timeout=2, bound=4))
    assert time.monotonic() - start < 5
    assert set(down) == {"closed", "nowhere"}
    assert f"127.0.0.1:{closed_port}" in down["closed"] and "refused" in down["closed"].lower()
    assert "no-such-host.invalid" in down["nowhere"]


def test_the_check_is_parallel_and_bounded(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """A resolver that hangs (getaddrinfo has no timeout) cannot hold the error back past the bound."""
    release = threading.Event()

    def hang(*_a: Any, **_k: Any) -> None:
        release.wait(30)
        raise TimeoutError("released")

    request.addfinalizer(release.set)  # the probe threads end with the test, not during a later one

    monkeypatch.setattr(socket, "create_connection", hang)
    sources = [Source(what=f"s{i}", host=f"h{i}.example", port=443) for i in range(MAX_SOURCES + 3)]
    start = time.monotonic()
    down = unreachable(sources, timeout=1, bound=1.5)
    assert time.monotonic() - start < 3  # eight hung probes in parallel, not 8 x 30 s
    assert len(down) == MAX_SOURCES and all("within 1.5 s" in why for _, why in down)


def test_the_cpu_row_on_a_machine_without_docker_hub_or_the_pytorch_index(monkeypatch: pytest.MonkeyPatch,
                                                                         closed_port: int) -> None:
    """The issue-21 example: the error names the registry and the index, and the one setup command."""
    real = reach._connect
    monkeypatch.setattr(reach, "_connect", lambda s, t: real(Source(what=s.what, host="127.0.0.1",
                                                                    port=closed_port), t))
    plan = _plan("python:3.11-slim-bookworm", "https://download.pytorch.org/whl/cpu")
    msg = explain_build_failure("pull access denied for python", plan, from_failed=True, offline=False)
    assert msg.startswith("pull access denied for python\nThe base image python:3.11-slim-bookworm could not be had")
    assert "the registry of the base image python:3.11-slim-bookworm" in msg
    assert "the package index https://download.pytorch.org/whl/cpu" in msg
    assert "nox -s base-local -- --suite bookworm --write-config" in msg
    assert 'base-image = "torchrig-base:bookworm"' in msg and 'index-url = "https://pypi.org/simple"' in msg
    assert "the package index is unreachable too" in msg


def test_a_failed_run_step_with_every_index_reachable_keeps_the_engine_message(open_port: int) -> None:
    plan = _plan("python:3.11-slim-bookworm", f"http://127.0.0.1:{open_port}/simple")
    assert explain_build_failure("gate failed", plan, from_failed=False, offline=False) == "gate failed"
    # and a wheelhouse build has no index to blame
    assert explain_build_failure("gate failed", _plan("b", "http://127.0.0.1:1/simple"), from_failed=False,
                                 offline=True) == "gate failed"


def test_an_unreachable_extra_index_is_named_and_python_without_a_debian_suite_gets_no_base_local(
        closed_port: int, open_port: int) -> None:
    extra = f"http://127.0.0.1:{closed_port}/extra"
    plan = _plan("python:3.12-slim", f"http://127.0.0.1:{open_port}/simple", (extra,), python="3.12")
    msg = explain_build_failure("pip failed", plan, from_failed=False, offline=False)
    assert f"the extra index {extra}" in msg and "/simple:" not in msg and "registry" not in msg
    assert "Point builds at an index" in msg and "base-image" not in msg  # the base was there
    msg = explain_build_failure("pull failed", plan, from_failed=True, offline=False)
    assert "no Debian suite ships Python 3.12" in msg and "base-local" not in msg
    assert "the package index is unreachable too" in msg  # the extra index is one of them


def test_the_index_is_checked_through_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch,
                                                                      closed_port: int) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("NO_PROXY", "mirror.internal")
    srcs = build_sources("python:3.11", "https://download.pytorch.org/whl/cpu", ("https://mirror.internal/simple",))
    index, extra = srcs[1], srcs[2]
    assert (index.host, index.port, index.via) == ("127.0.0.1", closed_port, f"http://127.0.0.1:{closed_port}")
    assert (extra.host, extra.port, extra.via) == ("mirror.internal", 443, "")
    down = reach.unreachable_report([index], timeout=1, bound=2)
    assert f"through the proxy http://127.0.0.1:{closed_port}" in down


_host = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){0,2}", fullmatch=True)
_port = st.one_of(st.none(), st.integers(min_value=0, max_value=99999))
_image = st.builds(lambda reg, port, repo, tag: (f"{reg}{'' if port is None else f':{port}'}/" if reg else "")
                   + f"{repo}:{tag}", st.one_of(st.none(), _host, st.just("localhost")), _port,
                   st.from_regex(r"[a-z0-9]{1,8}(/[a-z0-9]{1,8})?", fullmatch=True),
                   st.from_regex(r"[a-z0-9.]{1,8}", fullmatch=True))
_url = st.one_of(
    st.builds(lambda scheme, user, host, port, path: f"{scheme}://{user}{host}{'' if port is None else f':{port}'}"
              f"{path}", st.sampled_from(["http", "https", "file", "ftp", ""]),
              st.sampled_from(["", "u@", "u:p@"]), st.one_of(_host, st.just("[::1]"), st.just("")), _port,
              st.sampled_from(["", "/", "/simple", "/whl/cpu?x=1#y"])),
    st.text(max_size=30))


@given(image=_image, index=_url, extras=st.lists(_url, max_size=12))
def test_any_base_and_index_urls_give_bounded_connectable_sources(image: str, index: str,
                                                                  extras: list[str]) -> None:
    srcs = build_sources(image, index, tuple(extras))
    assert 1 <= len(srcs) <= MAX_SOURCES
    assert srcs[0].what.startswith("the registry of the base image")
    for s in srcs:
        assert s.host and 0 < s.port < 65536, s
    assert len(build_sources(image, None, tuple(extras))) == 1  # a wheelhouse build checks only the registry


def test_only_the_registry_down_asks_only_for_the_base(closed_port: int, open_port: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reach, "_DOCKER_HUB", "no-such-registry.invalid")
    plan = _plan("python:3.11-slim-bookworm", f"http://127.0.0.1:{open_port}/simple")
    msg = explain_build_failure("no such host", plan, from_failed=True, offline=False)
    assert "(1 of 2 sources checked)" in msg and "no-such-registry.invalid" in msg
    assert 'base-image = "torchrig-base:bookworm"' in msg and "index-url" not in msg
