"""Host checks: a host that cannot run an image is refused before anything starts, with what to do about it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from torchrig.engine.hostcheck import HostFacts, check_host, gather_host_facts, parse_nvidia_proc_version
from torchrig.errors import HostCheckError
from torchrig.matrix import Environment, load_matrix

ROOT = Path(__file__).resolve().parents[2]
MATRIX = load_matrix(ROOT / "matrix.yaml")


def _env(accelerator: str, cuda: str | None = None) -> Environment:
    base = next(e for e in MATRIX.environments if e.accelerator == accelerator)
    if cuda is not None:
        base = dataclasses.replace(base, id=f"cuda{cuda.replace('.', '')}", cuda=cuda)
    return base


GOOD_NVIDIA = HostFacts(uid=1000, gid=1000, docker_runtimes=("nvidia", "runc"), nvidia_driver="535.104.05")
GOOD_AMD = HostFacts(uid=1000, gid=1000, docker_runtimes=("runc",), has_kfd=True, has_dri=True, render_gid=109)
BARE = HostFacts(uid=1000, gid=1000, docker_runtimes=("runc",))


def test_cpu_images_run_anywhere() -> None:
    result = check_host(_env("cpu"), BARE)
    assert not result.use_gpu and result.warnings == ()


def test_cuda_on_a_good_host_uses_the_gpu() -> None:
    result = check_host(_env("cuda", "11.8"), GOOD_NVIDIA)
    assert result.use_gpu and result.warnings == ()


def test_a_driver_older_than_the_cuda_needs_names_the_minimum_driver() -> None:
    old = dataclasses.replace(GOOD_NVIDIA, nvidia_driver="440.33.01")  # below 11.x's minor-version floor
    with pytest.raises(HostCheckError) as e:
        check_host(_env("cuda", "11.8"), old)
    msg = str(e.value)
    assert "520.61.05" in msg and "440.33.01" in msg and "450.80.02" in msg and "--no-gpu" in msg


def test_minor_version_compatibility_runs_with_a_warning() -> None:
    # 515 < 520.61.05 (11.8's full-feature minimum) but >= 450.80.02: CUDA 11.x runs, without PTX JIT.
    result = check_host(_env("cuda", "11.8"), dataclasses.replace(GOOD_NVIDIA, nvidia_driver="515.65.01"))
    assert result.use_gpu and any("minor-version compatibility" in w and "PTX" in w for w in result.warnings)
    with pytest.raises(HostCheckError, match="580"):
        check_host(_env("cuda", "13.0"), dataclasses.replace(GOOD_NVIDIA, nvidia_driver="575.51.03"))


def test_a_driver_too_old_is_answered_with_the_environments_it_can_run() -> None:
    with pytest.raises(HostCheckError) as e:
        check_host(_env("cuda", "12.1"), dataclasses.replace(GOOD_NVIDIA, nvidia_driver="520.61.05"),
                   others=MATRIX.environments)
    assert "530.30.02" in str(e.value)
    assert "cuda118" in str(e.value) and "cuda130" not in str(e.value)


def test_driver_versions_compare_as_numbers_not_strings() -> None:
    # As strings "580.100.01" < "580.65.06" (a good driver warned about) and "525.9" > "525.60.13" (12.x's
    # minor-version floor: a driver too old for any CUDA 12 let in).
    ok = check_host(_env("cuda", "13.0"), dataclasses.replace(GOOD_NVIDIA, nvidia_driver="580.100.01"))
    assert ok.use_gpu and ok.warnings == ()
    with pytest.raises(HostCheckError):
        check_host(_env("cuda", "12.4"), dataclasses.replace(GOOD_NVIDIA, nvidia_driver="525.9"))


def test_no_nvidia_driver_is_refused_before_pulling() -> None:
    with pytest.raises(HostCheckError, match=r"no NVIDIA driver.*520\.61\.05|520\.61\.05.*no NVIDIA driver"):
        check_host(_env("cuda", "11.8"), dataclasses.replace(BARE, nvidia_driver=None))


def test_no_nvidia_runtime_says_how_to_install_the_toolkit() -> None:
    no_runtime = dataclasses.replace(GOOD_NVIDIA, docker_runtimes=("runc",))
    with pytest.raises(HostCheckError) as e:
        check_host(_env("cuda", "11.8"), no_runtime)
    assert "NVIDIA Container Toolkit" in str(e.value) and "nvidia-ctk" in str(e.value)


@pytest.mark.parametrize("facts", [
    dataclasses.replace(GOOD_NVIDIA, docker_runtimes=("runc",), cdi_nvidia=True),
    dataclasses.replace(GOOD_NVIDIA, docker_runtimes=("runc",), nvidia_hook=True),
], ids=["cdi", "hook"])
def test_cdi_or_the_runtime_hook_count_as_an_nvidia_runtime(facts: HostFacts) -> None:
    assert check_host(_env("cuda", "11.8"), facts).use_gpu


def test_unknown_cuda_minimum_warns_instead_of_refusing() -> None:
    result = check_host(_env("cuda", "99.9"), GOOD_NVIDIA)
    assert result.use_gpu and any("no minimum driver is known" in w for w in result.warnings)


def test_no_gpu_runs_a_gpu_image_on_the_cpu_deliberately() -> None:
    result = check_host(_env("cuda", "11.8"), BARE, no_gpu=True)
    assert not result.use_gpu
    assert any("no GPU is visible" in w for w in result.warnings)
    assert not check_host(_env("rocm"), BARE, no_gpu=True).use_gpu


def test_rocm_without_kfd_is_refused_clearly() -> None:
    with pytest.raises(HostCheckError, match="/dev/kfd") as e:
        check_host(_env("rocm"), BARE)
    assert "amdgpu" in str(e.value)


def test_rocm_on_a_good_host_uses_the_gpu() -> None:
    assert check_host(_env("rocm"), GOOD_AMD).use_gpu


def test_rocm_without_a_render_group_warns() -> None:
    result = check_host(_env("rocm"), dataclasses.replace(GOOD_AMD, render_gid=None))
    assert result.use_gpu and any("render" in w for w in result.warnings)


def test_a_remote_daemon_skips_checks_of_the_wrong_machine() -> None:
    result = check_host(_env("cuda", "11.8"), dataclasses.replace(BARE, daemon_local=False))
    assert result.use_gpu and any("not on this machine" in w for w in result.warnings)


@pytest.mark.parametrize(("text", "version"), [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
     "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n", "535.104.05"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  Release Build  (dvs-builder@U16)\n",
     "550.54.14"),
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.26  Thu Jan 23 2025\n", "570.26"),
    ("garbage\n", None),
])
def test_driver_version_is_read_from_proc(text: str, version: str | None) -> None:
    assert parse_nvidia_proc_version(text) == version


def test_gathering_facts_on_this_machine_reads_the_docker_runtimes() -> None:
    facts = gather_host_facts({"Runtimes": {"runc": {}, "nvidia": {}}})
    assert facts.docker_runtimes == ("nvidia", "runc")
    assert facts.uid >= 0 and facts.gid >= 0


# ----------------------------------------------------------------------------- CDI-only hosts (issue 18)

CDI_YAML = """cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
"""


@pytest.mark.parametrize(("facts", "access"), [
    (GOOD_NVIDIA, "runtime"),
    (dataclasses.replace(GOOD_NVIDIA, docker_runtimes=("runc",), nvidia_hook=True), "runtime"),
    (dataclasses.replace(GOOD_NVIDIA, docker_runtimes=("runc",), cdi_nvidia=True), "cdi"),
    (dataclasses.replace(GOOD_NVIDIA, cdi_nvidia=True), "runtime"),  # both: the runtime, as before
], ids=["runtime", "hook", "cdi-only", "both"])
def test_a_host_with_only_a_cdi_spec_gets_the_cdi_device_request(facts: HostFacts, access: str) -> None:
    from torchrig.container import CDI_NVIDIA_ALL, container, gpu_flags, oci_args
    from torchrig.engine.spec import docker_kwargs

    verdict = check_host(_env("cuda", "11.8"), facts)
    assert verdict.use_gpu and verdict.gpu_access == access
    c = container(env_id="cuda", accelerator="cuda", image="i", purpose="bench",
                  gpu=gpu_flags("cuda", access=verdict.gpu_access))
    (request,) = docker_kwargs(c)["device_requests"]
    args = oci_args(c)
    if access == "cdi":
        assert request["Driver"] == "cdi" and request["DeviceIDs"] == [CDI_NVIDIA_ALL]
        assert f"--device={CDI_NVIDIA_ALL}" in args and not any(a.startswith("--gpus") for a in args)
    else:
        assert request["Capabilities"] == [["gpu"]] and request["Count"] == -1 and "--gpus=all" in args


@pytest.mark.parametrize(("files", "found"), [
    ({"nvidia.yaml": CDI_YAML}, True),
    ({"nvidia-gpus.json": '{"cdiVersion": "0.6.0", "kind": "nvidia.com/gpu", "devices": []}'}, True),
    ({"amd.yaml": "cdiVersion: 0.6.0\nkind: amd.com/gpu\n"}, False),  # a spec, but not NVIDIA's
    ({"nvidia.txt": CDI_YAML}, False),  # not a spec file name the daemon reads
    ({}, False),
], ids=["yaml", "json", "other-vendor", "not-a-spec", "empty"])
def test_a_cdi_spec_counts_when_it_names_nvidia_gpus(tmp_path: Path, files: dict[str, str], found: bool) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    facts = gather_host_facts({"Runtimes": {"runc": {}}, "CDISpecDirs": [str(tmp_path)]})
    assert facts.cdi_nvidia is found


def test_a_cdi_spec_that_is_a_fifo_is_skipped_not_waited_on(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "nvidia.yaml")
    facts = gather_host_facts({"Runtimes": {"runc": {}}, "CDISpecDirs": [str(tmp_path)]})
    assert facts.cdi_nvidia is False
