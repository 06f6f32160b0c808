"""Platforms without a daemon: --platform parsing, the row's platforms, per-platform names and locks."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchrig.errors import BuildError, UsageError
from torchrig.images import BuildOptions
from torchrig.images.lock import lock_path
from torchrig.images.plan import plan_build
from torchrig.images.platforms import (
    PLATFORM_ARCH,
    check_lock_platform,
    lock_machine,
    parse_platform,
    platform_ref,
)
from torchrig.images.uvlock import target_platform
from torchrig.matrix import Environment, ImageRef, load_matrix

ROOT = Path(__file__).resolve().parents[2]
_KNOWN = {"linux/amd64", "linux/x86_64", "amd64", "x86_64", "linux/arm64", "linux/arm64/v8", "linux/aarch64",
          "arm64", "aarch64"}


class _Images:
    def get(self, name: str) -> Any:
        raise docker.errors.ImageNotFound(name)


class _Client:
    images = _Images()


@pytest.fixture(scope="module")
def env() -> Environment:
    return load_matrix(ROOT / "matrix.yaml").get("cpu")


@pytest.mark.parametrize(("text", "want"), [
    ("linux/arm64", "linux/arm64"), ("linux/arm64/v8", "linux/arm64"), ("aarch64", "linux/arm64"),
    (" Linux/ARM64 ", "linux/arm64"), ("linux/amd64", "linux/amd64"), ("x86_64", "linux/amd64"),
])
def test_the_usual_spellings_of_a_platform_parse(text: str, want: str) -> None:
    assert parse_platform(text) == want


@given(st.text(max_size=80))
def test_any_other_platform_string_is_exit_2_naming_the_choices(text: str) -> None:
    if text.strip().lower() in _KNOWN:
        assert parse_platform(text) in PLATFORM_ARCH
        return
    with pytest.raises(UsageError) as e:
        parse_platform(text)
    assert e.value.return_code == 2
    assert "linux/amd64, linux/arm64" in str(e.value)
    assert len(str(e.value)) < 400  # a generated 80-character string is quoted, not echoed into a wall of text


@given(st.sampled_from(["linux/riscv64", "linux/arm/v7", "windows/amd64", "darwin/arm64", "linux/", "/arm64",
                        "linux/arm64/v9", "linux//arm64"]))
def test_near_misses_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="unknown platform"):
        parse_platform(text)


def test_an_arm64_image_gets_its_own_local_names_and_amd64_keeps_its_own() -> None:
    ref = ImageRef(immutable="r/x:2.0.1-cpu-py3.11", alias="r/x:cpu")
    assert platform_ref(ref, "linux/amd64") == ref
    assert platform_ref(ref, "linux/arm64") == ImageRef(immutable="r/x:2.0.1-cpu-py3.11-arm64", alias="r/x:cpu-arm64")


def test_locks_are_per_platform_and_resolved_for_its_wheels(env: Environment, tmp_path: Path) -> None:
    amd = lock_path(tmp_path, env, index_url=env.index, extra_index_urls=env.extra_index)
    arm = lock_path(tmp_path, env, index_url=env.index, extra_index_urls=env.extra_index, platform="linux/arm64")
    assert amd.name == "cpu.txt" and arm.name == "cpu~arm64.txt"
    assert target_platform(env).startswith("x86_64-manylinux_")
    assert target_platform(env, "linux/arm64") == "aarch64" + target_platform(env).removeprefix("x86_64")


@pytest.mark.parametrize(("lock_platform", "machine"), [
    ("x86_64-manylinux_2_36", "x86_64"), ("aarch64-manylinux_2_17", "aarch64"), ("", "x86_64"),
])
def test_the_machine_of_a_lock_header(lock_platform: str, machine: str) -> None:
    assert lock_machine(lock_platform) == machine


def test_an_amd64_lock_is_refused_for_an_arm64_build_and_back() -> None:
    with pytest.raises(BuildError, match=r"resolved for x86_64-manylinux_2_36.*--platform linux/arm64") as e:
        check_lock_platform(lock_name="locks/cpu.txt", lock_platform="x86_64-manylinux_2_36",
                            platform="linux/arm64", env_id="cpu")
    assert e.value.return_code == 4
    with pytest.raises(BuildError, match="aarch64"):
        check_lock_platform(lock_name="locks/cpu~arm64.txt", lock_platform="aarch64-manylinux_2_36",
                            platform="linux/amd64", env_id="cpu")
    check_lock_platform(lock_name="l", lock_platform="aarch64-manylinux_2_36", platform="linux/arm64", env_id="cpu")


def _root(tmp_path: Path) -> Path:
    for d in ("images", "src/torchrig", "tasks", "bench"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "locks", tmp_path / "locks")
    return tmp_path


def test_a_build_for_a_platform_the_row_does_not_list_is_exit_2_naming_its_platforms(env: Environment,
                                                                                      tmp_path: Path) -> None:
    only_amd = dataclasses.replace(env, platforms=("linux/amd64",))
    with pytest.raises(UsageError, match=r"cpu does not build for linux/arm64: its platforms are linux/amd64"):
        plan_build(only_amd, "runtime", BuildOptions(platform="linux/arm64", root=_root(tmp_path)), _Client())


def test_an_arm64_plan_is_labelled_tagged_and_keyed_apart_and_refuses_the_amd64_lock(env: Environment,
                                                                                     tmp_path: Path) -> None:
    both = dataclasses.replace(env, platforms=("linux/amd64", "linux/arm64"))
    root = _root(tmp_path)
    amd = plan_build(both, "runtime", BuildOptions(root=root), _Client())
    arm = plan_build(both, "runtime", BuildOptions(root=root, platform="linux/arm64"), _Client())
    assert amd.labels["io.torchrig.platform"] == "linux/amd64" and amd.platform == "linux/amd64"
    assert arm.labels["io.torchrig.platform"] == "linux/arm64" and arm.platform == "linux/arm64"
    assert arm.inputs != amd.inputs
    assert arm.ref.immutable == amd.ref.immutable + "-arm64"
    assert arm.lock.lock is None  # no locks/cpu~arm64.txt: no x86_64 lock is taken for it
    with pytest.raises(BuildError, match="resolved for x86_64"):
        plan_build(both, "runtime", BuildOptions(root=root, platform="linux/arm64",
                                                 lock_file=root / "locks" / "cpu@pypi.org-simple.txt"), _Client())


def test_a_stale_arm64_lock_is_refreshed_for_arm64() -> None:
    from torchrig.images.lock import lock_oci_platform

    # `torchrig lock --stale` rewrites each lock for the platform its header names, not the default amd64
    assert lock_oci_platform("aarch64-manylinux_2_36") == "linux/arm64"
    assert lock_oci_platform("x86_64-manylinux_2_17") == "linux/amd64"
