""".github/workflows/compat.yml: a valid workflow whose steps call the real CLI and open an issue only on a diff.

The steps' shell runs here as GitHub runs it (``bash -eo pipefail``), with stand-ins for ``python`` and ``gh`` on
PATH that record their arguments and answer as the real ones would.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from torchrig.cli import build_parser
from torchrig.matrix.compat_check import PYPI_INDEX, PYTORCH_INDEX

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "compat.yml"


@pytest.fixture(scope="module")
def wf() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def _step(wf: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in wf["jobs"]["compat-check"]["steps"] if s.get("name") == name)


def test_the_workflow_is_valid_against_the_github_workflow_schema() -> None:
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(WORKFLOW)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runs_weekly_and_may_open_issues(wf: dict[str, Any]) -> None:
    assert len(wf["on"]["schedule"]) == 1 and "workflow_dispatch" in wf["on"]
    assert wf["permissions"] == {}  # nothing at the top; the one job asks for what it needs
    assert wf["jobs"]["compat-check"]["permissions"] == {"contents": "read", "issues": "write"}


def test_the_check_step_is_a_command_the_cli_accepts(wf: dict[str, Any]) -> None:
    script = _step(wf, "torchrig compat-check")["run"].replace("\\\n", " ")
    line = next(ln for ln in script.splitlines() if "torchrig compat-check" in ln)
    words = shlex.split(line.split(">", 1)[0])
    assert words[:3] == ["python", "-m", "torchrig"]
    args = build_parser().parse_args(words[3:])
    assert args.command == "compat-check" and args.index == [PYTORCH_INDEX, PYPI_INDEX] and args.torch == []


def _bash(script: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", **env})


def _stub(tmp_path: Path, name: str, body: str) -> None:
    (tmp_path / "bin").mkdir(exist_ok=True)
    path = tmp_path / "bin" / name
    path.write_text(f"#!/bin/sh\necho \"{name} $*\" >> {tmp_path / 'calls'}\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize(("rc", "step_rc"), [(0, 0), (1, 0), (5, 5)])
def test_the_check_step_passes_a_diff_on_and_fails_on_an_unreadable_index(
        wf: dict[str, Any], tmp_path: Path, rc: int, step_rc: int) -> None:
    _stub(tmp_path, "python", f"echo 'report line'; exit {rc}")
    out = tmp_path / "github_output"
    proc = _bash(_step(wf, "torchrig compat-check")["run"], tmp_path, {"GITHUB_OUTPUT": str(out)})
    assert proc.returncode == step_rc
    assert out.read_text() == f"rc={rc}\n"
    assert (tmp_path / "compat-report.txt").read_text() == "report line\n"


@pytest.mark.parametrize(("open_issue", "expected"), [("", "gh issue create --title"), ("7", "gh issue comment 7")])
def test_a_diff_opens_one_issue_or_comments_on_the_open_one(wf: dict[str, Any], tmp_path: Path, open_issue: str,
                                                            expected: str) -> None:
    step = _step(wf, "open an issue when the indexes moved")
    assert step["if"] == "steps.check.outputs.rc == '1'"
    (tmp_path / "compat-report.txt").write_text("+ torch 2.15.1: on the index, not in compat.yaml\n")
    _stub(tmp_path, "gh", f'case "$2" in list) echo "{open_issue}";; esac')
    env = {**{k: str(v) for k, v in step["env"].items() if "${{" not in str(v)}, "GH_TOKEN": "x",
           "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "1"}
    proc = _bash(step["run"], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "calls").read_text()
    assert expected in calls and calls.count("gh issue") == 2
    body = (tmp_path / "body.md").read_text()
    assert "+ torch 2.15.1: on the index" in body and "actions/runs/1" in body
