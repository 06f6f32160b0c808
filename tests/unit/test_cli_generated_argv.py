"""Every subcommand with generated command lines (issue 17: every flag, any value): options drawn from the
command's own argparse definition, each given a value from a pool of good, bad and hostile ones, positionals
from the matrix's ids and junk.

Each command line runs as a real ``python -m torchrig`` in a sandbox where nothing can be reached or changed: a
copy of the checkout's matrix.yaml, locks/ and .devcontainer/ in a temporary folder, ``DOCKER_HOST`` at a socket
that does not exist, no Slurm, uv, debootstrap or kubectl on PATH, every proxy pointing at a closed port, HOME and
the results folder temporary, no stdin.

Property: it ends within 60 s with a documented exit code (0 and 1 verdicts, 2 usage/configuration, 3 no Docker,
4 build, 5 registry, 6 run, 7 host check, 8 scheduler) and never a traceback.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchrig.cli import build_parser
from torchrig.matrix import load_matrix

ROOT = Path(__file__).resolve().parents[2]
IDS = sorted(load_matrix(ROOT / "matrix.yaml").ids)
EXIT_CODES = {0, 1, 2, 3, 4, 5, 6, 7, 8}
_SKIP = {"dev"}  # an interactive container: covered by tests/unit/test_containers_cli.py
_HARMLESS = ("git", "sh", "bash", "uname", "id", "nproc", "cat", "env", "true")


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out: dict[str, argparse.ArgumentParser] = {}
    for name, sp in sub.choices.items():
        nested = [a for a in sp._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            out.update({f"{name} {n}": p for n, p in nested[0].choices.items()})
        elif name not in _SKIP:
            out[name] = sp
    return out


COMMANDS = _commands()
_VALUES = st.sampled_from(["0", "1", "-1", "3", "0.5", "1e999", "nan", "inf", "abc", "", " ", "cpu", "cuda121",
                           "/proc/self/mem", "/dev/null", "/nonexistent/x", "..", "~", "a" * 300, "x=1", "=",
                           "linux/arm64", "linux/amd64,linux/arm64", "8g", "1Ti", "-5m", "2.5G", "1:00:00",
                           "unix:///x.sock", "tcp://127.0.0.1:9", "md,csv", "sha256:" + "0" * 64, "\u00e9\u00df",
                           "--", "-h", "2.14.1", "torch==2.14.1"])


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    name = draw(st.sampled_from(sorted(COMMANDS)))
    parser = COMMANDS[name]
    argv = name.split()
    for action in parser._actions:
        if not action.option_strings:
            if action.nargs in ("*", "...", argparse.REMAINDER) and not draw(st.booleans()):
                continue
            if action.nargs == "?" and draw(st.booleans()):
                continue
            argv.append(draw(st.sampled_from(IDS) | _VALUES))
    for action in draw(st.lists(st.sampled_from([a for a in parser._actions if a.option_strings
                                                 and "-h" not in a.option_strings] or [None]), max_size=4)):
        if action is None:
            break
        argv.append(draw(st.sampled_from(action.option_strings)))
        if action.nargs != 0:
            choices = list(action.choices) if action.choices else []
            argv.append(draw(st.sampled_from([str(c) for c in choices]) | _VALUES if choices else _VALUES))
    if name.startswith("fleet collect") and "--timeout" not in argv:
        argv += ["--timeout", "2"]  # a job nobody knows: collect would wait for it
    return argv


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("sandbox")
    checkout = root / "checkout"
    checkout.mkdir()
    shutil.copy(ROOT / "matrix.yaml", checkout / "matrix.yaml")
    for folder in ("locks", ".devcontainer"):
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, checkout / folder)
    (checkout / "images").symlink_to(ROOT / "images")  # read only: nothing writes under images/
    bin_dir = root / "bin"  # the PATH: python and a few harmless tools; no docker, Slurm, uv, debootstrap, kubectl
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    for tool in _HARMLESS:
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    closed = "http://127.0.0.1:9"
    env = {"PATH": str(bin_dir), "HOME": str(root / "home"), "DOCKER_HOST": f"unix://{root}/no.sock",
           "TORCHRIG_RESULTS": str(root / "results"), "TORCHRIG_MATRIX": str(checkout / "matrix.yaml"),
           "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "http_proxy": closed, "https_proxy": closed,
           "NO_PROXY": "", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
           "KUBECONFIG": str(root / "no-kubeconfig"), "LANG": "C.UTF-8", "TORCHRIG_DOCKER_PING_TIMEOUT": "2"}
    (root / "home").mkdir()
    return checkout, env


# 120 in CI (~40 s); TORCHRIG_ARGV_EXAMPLES=1000 for a longer local hunt
@settings(max_examples=int(os.environ.get("TORCHRIG_ARGV_EXAMPLES", "120")),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argv=command_lines())
def test_any_command_line_ends_with_a_documented_exit_code_and_no_traceback(
        sandbox: tuple[Path, dict[str, str]], argv: list[str]) -> None:
    checkout, env = sandbox
    try:
        proc = subprocess.run([sys.executable, "-m", "torchrig", *argv], cwd=checkout, env=env, timeout=60,
                              capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrig {' '.join(argv)} did not end within 60 s")
    assert "Traceback (most recent call last)" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode in EXIT_CODES, (proc.returncode, proc.stderr[-2000:])
    if proc.returncode == 2:
        assert proc.stderr.strip(), "exit 2 says why"


def test_the_sandbox_reaches_nothing(sandbox: tuple[Path, dict[str, str]]) -> None:
    """None of the tools a command drives is on the sandbox's PATH, and Docker is exit 3 there."""
    checkout, env = sandbox
    for tool in ("docker", "sbatch", "scontrol", "sacct", "scancel", "uv", "debootstrap", "kubectl", "podman"):
        assert shutil.which(tool, path=env["PATH"]) is None, tool
    proc = subprocess.run([sys.executable, "-m", "torchrig", "pull", "cpu"], cwd=checkout, env=env, timeout=60,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 3, proc.stderr
