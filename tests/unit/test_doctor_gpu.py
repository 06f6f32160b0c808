"""doctor for a machine you are on and for one you are not: GPU architecture and driver against each row's wheel."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrig import doctor, doctor_gpu
from torchrig.__main__ import main
from torchrig.doctor_gpu import described_checks, env_runs_on
from torchrig.engine.hostcheck import HostFacts
from torchrig.matrix import load_matrix
from torchrig.matrix.archs import Gpu, load_arch_data
from torchrig.matrix.compat import parse_version

ROOT = Path(__file__).resolve().parents[2]
MATRIX_PATH = ROOT / "matrix.yaml"
MATRIX = load_matrix(MATRIX_PATH)
DATA = load_arch_data()


def _doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["--matrix", str(MATRIX_PATH), "doctor", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_v100_on_cuda130_is_refused_and_pointed_to_cu126(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _doctor(capsys, "cuda130", "--gpu", "Tesla V100-SXM2-32GB")
    assert code == 1
    assert "this image's torch has no kernels for sm_70 (Tesla V100-SXM2-32GB)" in out
    assert "environments that support it: cuda118, cuda121, cuda126" in out  # cuda126: torch 2.14's pre-Turing row
    assert "which no row in matrix.yaml uses" not in out


def test_b200_on_cuda121_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _doctor(capsys, "cuda121", "--gpu", "NVIDIA B200", "--driver", "580.65.06")
    assert code == 1 and "no kernels for sm_100 (NVIDIA B200)" in out and "support it: cuda130" in out


def test_h100_with_driver_550_on_cuda130_is_refused_for_the_driver(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _doctor(capsys, "cuda130", "--gpu", "NVIDIA H100 80GB HBM3", "--driver", "550.54.15")
    assert code == 1
    assert "✗ NVIDIA driver     550.54.15 < 580.65.06" in out and "✓ GPU architecture" in out
    assert "this driver can run (cuda118, cuda121, cuda126)" in out  # 12.x on >= 525 (minor-version compatibility)


def test_mi300x_on_rocm_is_refused_for_gfx942(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _doctor(capsys, "rocm", "--gpu", "AMD Instinct MI300X")
    assert code == 1 and "no kernels for gfx942 (AMD Instinct MI300X)" in out
    assert "torch 2.0.1 rocm5.4.2 carries gfx900, gfx906, gfx908, gfx90a, gfx1030" in out


@pytest.mark.parametrize("driver", ["580", "580.65.06", "590.44.01"])
def test_h100_with_driver_580_on_cuda130_can_run(capsys: pytest.CaptureFixture[str], driver: str) -> None:
    code, out = _doctor(capsys, "cuda130", "--gpu", "NVIDIA H100 80GB HBM3", "--driver", driver)
    assert code == 0 and "=> cuda130 can run on sm_90 (NVIDIA H100 80GB HBM3)" in out
    assert "not checked" in out  # the described machine's engine, disk and toolkit


def test_gpu_arch_describes_a_machine_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert _doctor(capsys, "cuda130", "--gpu-arch", "sm_90", "--driver", "580.65.06")[0] == 0
    assert _doctor(capsys, "rocm", "--gpu-arch", "gfx90a")[0] == 0
    code, out = _doctor(capsys, "rocm", "--gpu-arch", "gfx942")
    assert code == 1 and "gfx942" in out


def test_all_lists_what_each_described_machine_can_run(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _doctor(capsys, "--all", "--gpu", "Tesla V100-SXM2-16GB", "--gpu-arch", "gfx942",
                        "--driver", "580.65.06")
    assert code == 0
    v100, mi300 = out.split("\ngfx942 ")
    assert "✓ cuda118" in v100 and "✗ cuda130" in v100 and "✗ rocm:" in v100
    assert "✗ rocm:" in mi300 and "✗ cuda118" in mi300 and "✓ rocm64\n" in mi300 and "✓ rocm72\n" in mi300


@pytest.mark.parametrize(("argv", "says"), [
    (["--gpu", "NVIDIA H10O"], "close matches: NVIDIA H100"),
    (["--gpu-arch", "sm_9x"], "--gpu-arch: 'sm_9x' is not a GPU architecture"),
    (["--gpu-arch", "sm_90", "--driver", "550.x"], "--driver: '550.x' is not an NVIDIA driver version"),
    (["--driver", "580.65.06"], "give its GPU too"),
    (["cuda130", "--all", "--gpu-arch", "sm_90"], "--all lists every environment"),
])
def test_bad_flags_exit_2_with_what_to_write(capsys: pytest.CaptureFixture[str], argv: list[str], says: str) -> None:
    code, out = _doctor(capsys, *argv)
    assert code == 2 and says in out and "Traceback" not in out


def _expected(env_id: str, arch: str, driver: str | None) -> bool | None:
    """The compatibility rule written out independently of torchrig.doctor_gpu."""
    env = MATRIX.get(env_id)
    if env.accelerator == "cpu":
        return True
    if (env.accelerator == "rocm") != arch.startswith("gfx"):
        return False
    wheel = DATA.wheel(env.torch, env.flavour)
    jit = True
    if env.accelerator == "cuda" and driver is not None:
        full, floor = env.min_driver(), DATA.cuda_floor(env.cuda or "")
        assert full and floor
        if parse_version(driver) < parse_version(floor):
            return False
        jit = parse_version(driver) >= parse_version(full)
    if wheel is None:
        return None
    if arch.startswith("gfx"):
        return arch in wheel.cubins
    major, minor = int(arch[3:-1]), int(arch[-1])
    cubin = any(int(c[3:-1]) == major and int(c[-1]) <= minor for c in wheel.cubins)
    ptx = any((int(p[8:-1]), int(p[-1])) <= (major, minor) for p in wheel.ptx)
    return cubin or (jit and ptx)


ARCHS = st.one_of(st.builds(lambda a, b: f"sm_{a}{b}", st.integers(3, 13), st.integers(0, 9)),
                  st.sampled_from(["gfx900", "gfx906", "gfx908", "gfx90a", "gfx942", "gfx950", "gfx1030", "gfx1100"]))
DRIVERS = st.one_of(st.none(), st.builds(lambda a, b, c: f"{a}.{b}.{c:02d}", st.integers(440, 620),
                                         st.integers(0, 120), st.integers(0, 99)), st.integers(440, 620).map(str))


@given(env_id=st.sampled_from(MATRIX.ids), arch=ARCHS, driver=DRIVERS)
def test_doctor_agrees_with_the_compatibility_rule(env_id: str, arch: str, driver: str | None) -> None:
    env = MATRIX.get(env_id)
    gpu = Gpu(name=None, arch=arch)
    expected = _expected(env_id, arch, driver)
    assert env_runs_on(env, gpu, driver) is expected
    checks = described_checks(env, gpu, driver, MATRIX.environments)
    # undecided (no arch list for the wheel) is "not checked", which does not refuse
    assert doctor.can_run(checks) is (expected is not False)
    assert all(c.fix for c in checks if c.ok is False)


@settings(max_examples=30)
@given(gpu=st.text(max_size=30), arch=st.text(max_size=12), driver=st.text(max_size=14))
def test_generated_flags_give_a_verdict_or_exit_2_never_a_traceback(gpu: str, arch: str, driver: str) -> None:
    for argv in (["--gpu", gpu], ["--gpu-arch", arch, "--driver", driver]):
        if any(a.startswith("-") for a in argv[1::2]):
            continue  # argparse reads those as flags
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(["--matrix", str(MATRIX_PATH), "doctor", "cuda130", *argv])
        assert code in (0, 1, 2) and "Traceback" not in out.getvalue()


GOOD = doctor.DoctorFacts(
    engine_version="27.3.1", storage_driver="overlay2", docker_root="/var/lib/docker", disk_free_bytes=500 * doctor.GB,
    memory_bytes=64 * 2**30, nvidia_gpus=1, gpus=(Gpu(name="Tesla V100-SXM2-16GB", arch="sm_70"),),
    host=HostFacts(uid=1000, gid=1000, docker_runtimes=("nvidia", "runc"), nvidia_driver="580.65.06"))


def test_on_a_gpu_host_the_local_gpu_is_checked_against_the_wheel() -> None:
    checks = {c.name: c for c in doctor.diagnose(MATRIX.get("cuda130"), GOOD, MATRIX.environments)}
    assert checks["GPU architecture"].ok is False and "no kernels for sm_70" in checks["GPU architecture"].detail
    assert doctor.can_run(doctor.diagnose(MATRIX.get("cuda121"), GOOD, MATRIX.environments))
    amd = dataclasses.replace(GOOD, gpus=(Gpu(name="AMD Instinct MI300X", arch="gfx942"),), host=HostFacts(
        uid=1, gid=1, has_kfd=True, has_dri=True, render_gid=109))
    rocm = {c.name: c for c in doctor.diagnose(MATRIX.get("rocm"), amd, MATRIX.environments)}
    assert rocm["GPU architecture"].ok is False and "gfx942" in rocm["GPU architecture"].detail


def test_doctor_says_which_gpus_each_row_serves(capsys: pytest.CaptureFixture[str]) -> None:
    """The GPU rows of torch 2.14 split by generation: cu126 has Volta/Pascal and no Blackwell, cu130/cu132 the
    reverse; a row whose wheel has no arch list says so instead of guessing."""
    served = {e.id: doctor_gpu.gpus_served(e) or "" for e in MATRIX.environments}
    assert served["cpu"] == ""
    assert "Tesla V100" in served["cuda126"] and "Tesla P100" in served["cuda126"] and "B200" not in served["cuda126"]
    for row in ("cuda130", "cuda132"):
        assert "NVIDIA B200" in served[row] and "NVIDIA H100" in served[row] and "V100" not in served[row]
    assert "MI300" not in served["rocm"] and "MI210 / MI250" in served["rocm"]
    for row in ("rocm64", "rocm72"):
        assert "MI300X" in served[row] and "MI210 / MI250" in served[row] and "not verified" in served[row]
    unknown = dataclasses.replace(MATRIX.get("rocm64"), torch="2.5.1", rocm="6.2")  # a wheel with no list
    assert doctor_gpu.gpus_served(unknown) == ("not known: compat.yaml has no architecture list for torch 2.5.1 "
                                               "rocm6.2 (wheel_archs), so doctor cannot check a GPU against it")
    code, out = _doctor(capsys, "cuda126", "--gpu", "Tesla V100-SXM2-32GB", "--driver", "560.28.03")
    assert code == 0 and "  serves: " in out and "Tesla V100 (Volta)" in out.splitlines()[1]
