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


class _Engine:
    """A client whose engine keeps its images at ``root``."""

    def __init__(self, root: str) -> None:
        self.root = root

    def info(self) -> dict[str, object]:
        return {"DockerRootDir": self.root, "Driver": "overlay2", "Runtimes": {"runc": {}}}

    def version(self) -> dict[str, str]:
        return {"Version": "27.3.1"}


def test_disk_is_read_at_the_engines_data_root(tmp_path: Path) -> None:
    facts = doctor.gather(lambda: _Engine(str(tmp_path)))
    assert facts.docker_root == str(tmp_path) and facts.disk_free_bytes is not None
    assert f"free at {tmp_path}" in _by_name(doctor.diagnose(CPU, facts))["disk space"].detail


def test_a_data_root_that_is_not_on_this_machine_is_not_measured_at_a_parent(tmp_path: Path) -> None:
    # Regression: /var/lib/docker did not exist and doctor reported the free space of the nearest parent.
    missing = tmp_path / "var" / "lib" / "docker"
    facts = doctor.gather(lambda: _Engine(str(missing)))
    disk = _by_name(doctor.diagnose(CPU, facts))["disk space"]
    assert facts.disk_free_bytes is None and disk.ok is None
    assert str(missing) in disk.detail and "not on this machine" in disk.detail


def test_no_engine_leaves_the_disk_unchecked_rather_than_guessing_a_path() -> None:
    disk = _by_name(doctor.diagnose(CPU, dataclasses.replace(GOOD_NVIDIA, docker_root=None,
                                                             disk_free_bytes=None)))["disk space"]
    assert disk.ok is None and "DockerRootDir" in disk.detail and "/var/lib/docker" not in disk.detail


def test_the_size_estimate_is_the_last_measured_build_then_the_budget(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "cpu-runtime.json").write_text(
        '{"env_id": "cpu", "size_bytes": 5246000000, "recorded_at": "2026-12-05T10:00:00+00:00"}')
    (tmp_path / "images" / "cuda118-runtime.json").write_text("{not json")  # a damaged record is no estimate
    measured = doctor.read_measured_sizes(tmp_path)
    assert set(measured) == {"cpu"}
    eight_gb = dataclasses.replace(GOOD_NVIDIA, disk_free_bytes=8 * doctor.GB, measured=measured)
    disk = _by_name(doctor.diagnose(CPU, eight_gb))["disk space"]
    # the budget (1,600 MB x 2 = 3.2 GB) would have let this through; the measured 5.2 GB image needs ~10.5 GB
    assert disk.ok is False and "~5.2 GB (last measured build, 2026-12-05)" in disk.detail and "~10.5 GB" in disk.detail
    budget = _by_name(doctor.diagnose(CUDA118, eight_gb))["disk space"]
    assert "size_budget_mb.runtime in matrix.yaml" in budget.detail and "~7.0 GB" in budget.detail
