"""`torchrig doctor`: every verdict with made-up hosts, and the real one on this machine."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from torchrig import doctor
from torchrig.__main__ import main
from torchrig.engine.hostcheck import HostFacts
from torchrig.errors import DockerUnavailableError
from torchrig.matrix import load_matrix

ROOT = Path(__file__).resolve().parents[2]
MATRIX = load_matrix(ROOT / "matrix.yaml")
CPU, CUDA118, ROCM = MATRIX.get("cpu"), MATRIX.get("cuda118"), MATRIX.get("rocm")

GOOD_NVIDIA = doctor.DoctorFacts(
    engine_version="27.3.1", storage_driver="overlay2", docker_root="/var/lib/docker", disk_free_bytes=500 * doctor.GB,
    memory_bytes=64 * 2**30,
    nvidia_gpus=8, host=HostFacts(uid=1000, gid=1000, docker_runtimes=("nvidia", "runc"),
                                  nvidia_driver="550.54.14"))
GOOD_AMD = dataclasses.replace(GOOD_NVIDIA, nvidia_gpus=0, amd_render_nodes=2, host=HostFacts(
    uid=1000, gid=1000, has_kfd=True, has_dri=True, render_gid=109))


def _by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def test_a_good_nvidia_host_runs_a_cuda_environment() -> None:
    checks = doctor.diagnose(CUDA118, GOOD_NVIDIA)
    assert doctor.can_run(checks)
    assert _by_name(checks)["NVIDIA driver"].detail == "550.54.14 >= 520.61.05 for CUDA 11.8"
    assert "cuda118 can run here" in doctor.render(CUDA118, checks)


@pytest.mark.parametrize(("change", "name", "fix"), [
    ({"host": HostFacts(uid=1, gid=1, docker_runtimes=("nvidia",))}, "NVIDIA driver", "install the NVIDIA driver"),
    ({"host": HostFacts(uid=1, gid=1, docker_runtimes=("nvidia",), nvidia_driver="440.33.01")}, "NVIDIA driver",
     "upgrade the driver to 520.61.05"),
    ({"host": HostFacts(uid=1, gid=1, docker_runtimes=("runc",), nvidia_driver="550.54.14")},
     "NVIDIA Container Toolkit", "nvidia-ctk runtime configure"),
    ({"nvidia_gpus": 0}, "GPUs visible", "nvidia-smi"),
    ({"engine_version": None, "engine_error": "cannot reach a Docker engine"}, "Docker engine", "systemctl start"),
    ({"disk_free_bytes": 3 * doctor.GB}, "disk space", "docker system prune"),
    ({"memory_bytes": 4 * 2**30}, "shared memory", "--shm-size 2g"),
])
def test_each_missing_piece_is_a_cross_with_its_fix(change: dict[str, object], name: str, fix: str) -> None:
    checks = doctor.diagnose(CUDA118, dataclasses.replace(GOOD_NVIDIA, **change))  # type: ignore[arg-type]
    bad = _by_name(checks)[name]
    assert bad.ok is False and fix in bad.fix
    assert not doctor.can_run(checks)
    text = doctor.render(CUDA118, checks)
    assert f"✗ {name}" in text and f"fix: {bad.fix}" in text and "cannot run here" in text


def test_cdi_or_the_hook_count_as_the_toolkit() -> None:
    for host in (HostFacts(uid=1, gid=1, cdi_nvidia=True, nvidia_driver="550.54.14"),
                 HostFacts(uid=1, gid=1, nvidia_hook=True, nvidia_driver="550.54.14")):
        assert doctor.can_run(doctor.diagnose(CUDA118, dataclasses.replace(GOOD_NVIDIA, host=host)))


def test_rocm_needs_kfd_dri_and_a_render_group() -> None:
    assert doctor.can_run(doctor.diagnose(ROCM, GOOD_AMD))
    no_kfd = doctor.diagnose(ROCM, dataclasses.replace(GOOD_AMD, host=HostFacts(uid=1, gid=1, has_dri=True,
                                                                                 render_gid=109)))
    assert _by_name(no_kfd)["/dev/kfd"].ok is False and not doctor.can_run(no_kfd)
    no_render = doctor.diagnose(ROCM, dataclasses.replace(GOOD_AMD, host=HostFacts(uid=1, gid=1, has_kfd=True,
                                                                                    has_dri=True)))
    assert _by_name(no_render)["render group"].ok is False


def test_a_cpu_environment_needs_no_gpu() -> None:
    bare = dataclasses.replace(GOOD_NVIDIA, nvidia_gpus=0, host=HostFacts(uid=1, gid=1))
    checks = doctor.diagnose(CPU, bare)
    assert doctor.can_run(checks) and _by_name(checks)["GPU"].ok is None


def test_no_engine_is_a_fact_not_a_traceback() -> None:
    def refuse() -> object:
        raise DockerUnavailableError("cannot reach a Docker engine at DOCKER_HOST=unix:///nope (refused).")

    facts = doctor.gather(refuse)
    assert facts.engine_version is None and "cannot reach" in (facts.engine_error or "")
    assert not doctor.can_run(doctor.diagnose(CPU, facts))


@pytest.mark.docker
def test_on_this_machine_the_cpu_environment_can_run_and_cuda_cannot(capsys: pytest.CaptureFixture[str]) -> None:
    """This machine has a Docker engine and no GPU."""
    assert main(["--matrix", str(ROOT / "matrix.yaml"), "doctor", "cpu"]) == 0
    assert "✓ Docker engine" in capsys.readouterr().out
    assert main(["--matrix", str(ROOT / "matrix.yaml"), "doctor", "cuda118"]) == 1
    out = capsys.readouterr().out
    assert "✗ NVIDIA driver" in out and "cuda118 cannot run here" in out
    assert main(["--matrix", str(ROOT / "matrix.yaml"), "doctor"]) == 0
    assert "can run here: cpu" in capsys.readouterr().out
