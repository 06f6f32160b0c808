"""Every renderer carries the whole container description: generated descriptions, rendered, parsed back, compared.

A :class:`~torchrig.container.SuiteContainer` with odd environment values (spaces, quotes, ``=``, ``$``, commas,
backslashes, non-ASCII), several mounts (paths with commas and quotes where the target syntax can carry them), with
or without an NVIDIA, CDI or ROCm device request, is rendered as Docker SDK keyword arguments, ``docker run`` and
``podman run`` words (through a shell and back), Pyxis and apptainer words and exports, a Kubernetes container (read
by the official client's ``V1Container`` model) and ``devcontainer.json``; each is parsed back and must name the
same variables, mounts and devices. A renderer that drops one fails here.
"""

from __future__ import annotations

import csv
import functools
import json
import shlex
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrig.container import (
    CDI_NVIDIA_ALL,
    Mount,
    SuiteContainer,
    SuiteImage,
    container,
    gpu_flags,
    oci_args,
    parse_user_env,
    suite_container,
)
from torchrig.engine.spec import docker_kwargs
from torchrig.errors import UsageError
from torchrig.fleet.plan import sh_words
from torchrig.fleet.pod import pod_container
from torchrig.fleet.runtimes import apptainer_words, pyxis_words
from torchrig.matrix.devcontainer import devcontainer_json
from torchrig.results.contract import CONTAINER_ENV_VARS, USER_ENV_ENV

_NAME = st.from_regex(r"[A-Z_][A-Z0-9_]{0,11}", fullmatch=True).filter(lambda n: not n.startswith("TORCHRIG_"))
# No NUL and no newline: no runtime passes those on (parse_user_env refuses them).
_VALUE = st.text(alphabet=st.characters(blacklist_characters="\x00\n\r", blacklist_categories=["Cs"]), max_size=24)
_ODD = st.sampled_from(["a b", "it's", 'say "hi"', "k=v=w", "$HOME", "a,b", "back\\slash", "café", ""])
_SEGMENT = st.from_regex(r"[a-z0-9][a-z0-9 ._'\"=,-]{0,10}", fullmatch=True)
_PLAIN_SEGMENT = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}", fullmatch=True)
_GPU = st.sampled_from(["none", "nvidia", "cdi", "rocm"])


def _gpu(kind: str) -> Any:
    accelerator = {"none": "cpu", "nvidia": "cuda", "cdi": "cuda", "rocm": "rocm"}[kind]
    return accelerator, gpu_flags(accelerator, access="cdi" if kind == "cdi" else "runtime", render_group="109")  # type: ignore[arg-type]


@st.composite
def descriptions(draw: st.DrawFn, *, segment: st.SearchStrategy[str] = _SEGMENT) -> SuiteContainer:
    env = draw(st.dictionaries(_NAME, _ODD | _VALUE, max_size=6))
    targets = draw(st.lists(st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True), min_size=1, max_size=4,
                            unique=True))
    mounts = [Mount(source="/" + "/".join(draw(st.lists(segment, min_size=1, max_size=3))), target=f"/{t}",
                    read_only=draw(st.booleans())) for t in targets]
    accelerator, gpu = _gpu(draw(_GPU))
    uid = draw(st.none() | st.integers(0, 2**31 - 1))
    return container(env_id="e", accelerator=accelerator, image="reg.example/torchrig:1", purpose="tasks",
                     command=["python", "-m", "tasks", "--note", draw(_ODD)], uid=uid, gid=uid, gpu=gpu,
                     mounts=mounts, environment=env, working_dir="/tmp", network_mode="none")


# ------------------------------------------------------------------------------------------- parse back


def _docker_cli(args: list[str]) -> dict[str, Any]:
    """What ``docker run`` reads from these words: environment, mounts, devices, GPUs, user (a small parser for
    the forms oci_args writes; --mount is a CSV record, as in docker's own parser)."""
    env: dict[str, str] = {}
    mounts: list[tuple[str, str, bool]] = []
    devices: list[str] = []
    gpus = user = None
    for a in args:
        if a.startswith("--env="):
            name, _, value = a[len("--env="):].partition("=")
            env[name] = value
        elif a.startswith("--mount="):
            fields = next(csv.reader([a[len("--mount="):]]))
            kv = {k: v for f in fields for k, _, v in [f.partition("=") if "=" in f else (f, "", "true")]}
            mounts.append((kv["source"], kv["target"], kv.get("readonly") == "true"))
        elif a.startswith("--device="):
            devices.append(a[len("--device="):])
        elif a.startswith("--gpus="):
            gpus = a[len("--gpus="):]
        elif a.startswith("--user="):
            user = a[len("--user="):]
    return {"env": env, "mounts": sorted(mounts), "devices": devices, "gpus": gpus, "user": user}


def _mounts(c: SuiteContainer) -> list[tuple[str, str, bool]]:
    return sorted((m.source, m.target, m.read_only) for m in c.mounts)


def _expected_devices(c: SuiteContainer, *, podman: bool = False) -> list[str]:
    nvidia = [CDI_NVIDIA_ALL] if podman and c.gpu.nvidia else []
    return [*nvidia, *c.gpu.cdi, *c.gpu.devices]


# ------------------------------------------------------------------------------------------------ tests


@functools.cache
def _k8s_api() -> Any:
    kubernetes = pytest.importorskip("kubernetes")  # torchrig[fleet]; the dev environment has it
    return kubernetes.client.ApiClient()


@given(descriptions())
def test_docker_sdk_kwargs_carry_the_description(c: SuiteContainer) -> None:
    kw = docker_kwargs(c)
    assert kw["environment"] == dict(c.environment)
    assert sorted((m["Source"], m["Target"], m["ReadOnly"]) for m in kw["mounts"]) == _mounts(c)
    assert kw.get("user") == c.user and kw["working_dir"] == c.working_dir and kw["shm_size"] == c.shm_size
    requests = kw.get("device_requests", [])
    assert any(r["Capabilities"] == [["gpu"]] for r in requests) == c.gpu.nvidia
    assert [i for r in requests if r["Driver"] == "cdi" for i in r["DeviceIDs"]] == list(c.gpu.cdi)
    assert [d.split(":")[0] for d in kw.get("devices", [])] == list(c.gpu.devices)


@pytest.mark.parametrize("runtime", ["docker", "podman"])
@given(c=descriptions())
def test_docker_and_podman_words_survive_the_shell_and_carry_the_description(runtime: str,
                                                                             c: SuiteContainer) -> None:
    args = oci_args(c, runtime=runtime)  # type: ignore[arg-type]
    assert shlex.split(sh_words(args)) == args == shlex.split(shlex.join(args)), "quoted once, read back the same"
    back = _docker_cli(args)
    assert back["env"] == dict(c.environment)
    assert back["mounts"] == _mounts(c)
    assert back["user"] == c.user
    assert back["devices"] == _expected_devices(c, podman=runtime == "podman")
    assert back["gpus"] == ("all" if c.gpu.nvidia and runtime == "docker" else None)
    assert args[-len(c.command) - 1:] == [c.image, *c.command]


def _exports(exports: list[tuple[str, str]]) -> dict[str, str]:
    """The variables as a POSIX shell sets them from the rendered ``export NAME=WORD`` lines."""
    out = {}
    for name, value in exports:
        (word,) = shlex.split(f"{name}={sh_words([value])}")
        out[name] = word.split("=", 1)[1]
    return out


def _binds(text: str) -> list[tuple[str, str, bool]]:
    out = []
    for item in text.split(","):
        src, dst, *opts = item.split(":")
        out.append((src, dst, opts == ["ro"]))
    return sorted(out)


@given(descriptions(segment=_PLAIN_SEGMENT))
def test_pyxis_exports_names_and_mounts_carry_the_description(c: SuiteContainer) -> None:
    exports, words = pyxis_words(c)
    assert _exports(exports) == dict(c.environment)
    (names,) = [w.split("=", 1)[1] for w in words if w.startswith("--container-env=")]
    assert set(filter(None, names.split(","))) == set(c.environment)
    (mounts,) = [w.split("=", 1)[1] for w in words if w.startswith("--container-mounts=")]
    devices = [(d, d, False) for d in c.gpu.devices]
    assert _binds(mounts) == sorted([*_mounts(c), *devices])
    assert words[-len(c.command):] == list(c.command)


@given(descriptions(segment=_PLAIN_SEGMENT))
def test_apptainer_exports_binds_and_gpu_flag_carry_the_description(c: SuiteContainer) -> None:
    exports, words = apptainer_words(c)
    env = {k.removeprefix("APPTAINERENV_"): v for k, v in _exports(exports).items()}
    assert env == dict(c.environment)
    assert _binds(words[words.index("--bind") + 1]) == _mounts(c)
    assert ("--nv" in words) == (c.gpu.nvidia or bool(c.gpu.cdi))
    assert ("--rocm" in words) == bool(c.gpu.devices)


@given(descriptions())
def test_pyxis_and_apptainer_refuse_a_path_they_cannot_mount(c: SuiteContainer) -> None:
    """Their SRC:DST,... syntax has no quoting: a comma or colon must be refused, never split into two mounts."""
    unmountable = any("," in m.source or ":" in m.source for m in c.mounts)
    for render in (pyxis_words, apptainer_words):
        if unmountable:
            with pytest.raises(UsageError, match="comma or colon"):
                render(c)
        else:
            render(c)


@settings(max_examples=25)  # the client's pydantic models take ~0.1 s per container on these cores
@given(descriptions())
def test_the_kubernetes_container_carries_the_description(c: SuiteContainer) -> None:
    rendered = pod_container(c, script="true", job="j")
    model = _k8s_api().deserialize(json.dumps(rendered), "V1Container", "application/json")  # the client reads it
    env = {e.name: e.value for e in model.env if e.value_from is None}
    assert {k: v for k, v in env.items() if k not in ("TORCHRIG_FLEET_JOB",)} == dict(c.environment)
    mounts = {m.mount_path: bool(m.read_only) for m in model.volume_mounts}
    assert all(mounts.get(m.target) == m.read_only for m in c.mounts)
    assert model.working_dir == c.working_dir and model.image == c.image
    if c.user:
        assert f"{model.security_context.run_as_user}:{model.security_context.run_as_group}" == c.user


@given(descriptions())
def test_devcontainer_json_carries_the_description(c: SuiteContainer) -> None:
    doc = json.loads(json.dumps(devcontainer_json(c)))
    back = _docker_cli(doc["runArgs"])
    assert doc["containerEnv"] == dict(c.environment) and back["env"] == {}, "the variables once, in containerEnv"
    assert back["mounts"] == _mounts(c)
    assert back["devices"] == _expected_devices(c)
    assert back["gpus"] == ("all" if c.gpu.nvidia else None)
    assert doc["image"] == c.image


# ------------------------------------------------------------------------------------ the suite's contract


def _suite(**kw: Any) -> SuiteContainer:
    args: dict[str, Any] = {
        "env_id": "cpu", "accelerator": "cpu", "image": SuiteImage(ref="r:1"), "kind": "bench", "results": "/r",
        "data": "/d", "hostname": "h", "compile_max_python": None, "gpu": gpu_flags("cpu"), "uid": 4242,
        "gid": 4242}
    args.update(kw)
    return suite_container(**args)


@given(user_env=st.dictionaries(_NAME, _ODD | _VALUE, max_size=4),
       digest=st.none() | st.just("reg.example/torchrig@sha256:" + "a" * 64))
def test_every_contract_variable_is_set_by_the_suite_description(user_env: dict[str, str], digest: str | None) -> None:
    """The regression: fleet containers had no TORCHRIG_IMAGE_DIGEST and no TORCHRIG_COMPILE_MAX_PYTHON."""
    c = _suite(image=SuiteImage(ref="r:1", digest=digest), user_env=user_env)
    assert set(CONTAINER_ENV_VARS) <= set(c.environment)
    assert c.environment[USER_ENV_ENV] == ",".join(sorted(user_env))
    assert {k: c.environment[k] for k in user_env} == user_env


@pytest.mark.parametrize("item", ["TORCHRIG_IMAGE=x", "TORCHRIG_USER_ENV=a", "HOME=/root", "1X=y", "A-B=c", "NOEQ",
                                  "A=b\nc"])
def test_bad_env_items_are_usage_errors_naming_them(item: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_user_env([item])
    assert e.value.return_code == 2 and item.split("=", 1)[0].split("\n", maxsplit=1)[0] in str(e.value)


def test_the_fleet_description_of_a_pinned_image_carries_its_registry_digest() -> None:
    from pathlib import Path

    from torchrig.fleet.plan import FleetPlan, NodeFacts
    from torchrig.matrix import load_matrix

    root = Path(__file__).resolve().parents[2]
    env = load_matrix(root / "matrix.yaml").get("cpu")
    pinned = "ghcr.io/torchrig/torchrig@sha256:" + "b" * 64
    c = FleetPlan(env=env, image=pinned, results=Path("/r")).container("tasks", NodeFacts())
    assert c.environment["TORCHRIG_IMAGE_DIGEST"] == pinned
    node = NodeFacts(image_digest="\x00image_digest\x00")
    tagged = FleetPlan(env=env, image="ghcr.io/torchrig/torchrig:1", results=Path("/r")).container("tasks", node)
    assert tagged.environment["TORCHRIG_IMAGE_DIGEST"] == node.image_digest


@given(user_env=st.dictionaries(_NAME | st.sampled_from(["HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD",
                                                         "api_key", "NCCL_DEBUG"]), _ODD | _VALUE, max_size=5))
def test_the_fingerprint_records_the_users_variables_and_never_a_secret_value(user_env: dict[str, str]) -> None:
    """What bench/fingerprint.py records from the container's environment: every --env name; a secret-looking
    name's value as <set>, never the value itself."""
    from torchrig.results.contract import SECRET_VALUE, is_secret_name, recorded_user_env

    c = _suite(user_env=user_env)
    recorded = recorded_user_env(dict(c.environment))
    assert set(recorded) == set(user_env)
    for name, value in user_env.items():
        secret = any(p in name.upper() for p in ("TOKEN", "SECRET", "PASSWORD", "KEY"))
        assert is_secret_name(name) or not secret
        assert recorded[name] == (SECRET_VALUE if secret else value)
