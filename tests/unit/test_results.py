"""torchrig.results: standard library only (it ships into every image), the driver it records, its atomic writes."""

from __future__ import annotations

import os
import pkgutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import torchrig.results
from torchrig.results import io, probe
from torchrig.results.records import Machine

PROPRIETARY = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
               "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
OPEN = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  Release Build  "
        "(dvs-builder@U16-I3-B03-4-3)  Thu Feb 22 01:25:25 UTC 2024\n"
        "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n")

# Every module of the package is imported in a fresh interpreter; anything outside the standard library that it
# pulls in (torch is only imported lazily, by the probes of a GPU run) fails the test.
_GUARD = """
import importlib, pkgutil, sys
before = set(sys.modules)  # what the interpreter and its site hooks loaded already
import torchrig.results as pkg
names = [m.name for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    importlib.import_module(name)
loaded = {m.split(".")[0] for m in set(sys.modules) - before}
print(len(names), " ".join(sorted(loaded - set(sys.stdlib_module_names) - {"torchrig"})))
"""


def test_the_results_package_imports_only_the_standard_library() -> None:
    proc = subprocess.run([sys.executable, "-c", _GUARD], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "PYTHONPATH": str(Path(torchrig.__file__).parents[1])})
    assert proc.returncode == 0, proc.stderr
    count, _, outside = proc.stdout.strip().partition(" ")
    modules = list(pkgutil.iter_modules(torchrig.results.__path__))
    assert int(count) == len(modules) >= 6  # contract, schema, probe, io, records, benchconv
    assert outside == "", f"torchrig.results imports modules outside the standard library: {outside}"


def test_the_guard_would_see_a_third_party_import(tmp_path: Path) -> None:
    (tmp_path / "torchrig" / "results").mkdir(parents=True)
    (tmp_path / "torchrig" / "__init__.py").write_text("")
    (tmp_path / "torchrig" / "results" / "__init__.py").write_text("")
    (tmp_path / "torchrig" / "results" / "leaky.py").write_text("import pytest\n")
    proc = subprocess.run([sys.executable, "-c", _GUARD], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "pytest" in proc.stdout.split()


@pytest.mark.parametrize(("text", "version"), [
    (PROPRIETARY, "535.104.05"),
    (OPEN, "550.54.14"),
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.26  Thu Jan 23 2025\n", "570.26"),
    ("garbage\n", None),
])
def test_the_recorded_nvidia_driver_is_read_from_proc(tmp_path: Path, text: str, version: str | None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    proc_file = tmp_path / "version"
    proc_file.write_text(text)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi to fall back on
    assert probe.parse_nvidia_proc_version(text) == version
    assert probe.gpu_driver("cuda", nvidia_proc=proc_file) == version


def test_open_and_proprietary_modules_of_one_driver_make_the_same_fingerprint(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text(PROPRIETARY.replace("535.104.05", "550.54.14"))
    b.write_text(OPEN)
    base = {"hostname": "h", "os": "Linux", "cpu": "x", "cpu_count": 8, "accelerator": "cuda", "gpu_name": "H100",
            "gpu_count": 1}
    ma = Machine(**base, driver=probe.gpu_driver("cuda", nvidia_proc=a)).with_fingerprint()
    mb = Machine(**base, driver=probe.gpu_driver("cuda", nvidia_proc=b)).with_fingerprint()
    assert ma.driver == mb.driver == "550.54.14"
    assert ma.fingerprint == mb.fingerprint


def test_the_host_check_uses_the_same_parser() -> None:
    from torchrig.engine import hostcheck

    assert hostcheck.parse_nvidia_proc_version is probe.parse_nvidia_proc_version


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        path = io.atomic_write_text(tmp_path / "x.json", "{}\n")
        assert io.current_umask() == umask
    finally:
        os.umask(old)
    assert path.read_text() == "{}\n"
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_an_atomic_write_that_fails_keeps_the_old_file_and_leaves_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "lock.txt"
    target.write_text("old\n")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        io.atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["lock.txt"]


def test_hidden_folders_below_a_results_dir_are_not_read(tmp_path: Path) -> None:
    """A fleet node's folder is written as `.N-host.tmp` and renamed into place: half of it is not a problem."""
    from torchrig.results.io import load_records

    hidden = tmp_path / "42" / ".0-node1.tmp" / "task"
    hidden.mkdir(parents=True)
    (hidden / "smoke-x.json").write_text('{"schema": "torchrig.record", "trunc')
    records, problems = load_records([tmp_path])
    assert records == [] and problems == []
