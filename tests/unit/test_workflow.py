""".github/workflows/ci.yml is a valid workflow, and it runs what the project says CI runs.

The schema check uses check-jsonschema's vendored copy of the GitHub workflow schema (offline). The schema cannot
see whether the nox sessions the steps call exist, or whether the jobs hand each other the right things, so the
rest of the file checks that against the noxfile and the matrix.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from torchrig.matrix import load_matrix
from torchrig.matrix.ci import github_matrix

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    try:
        import check_jsonschema  # noqa: F401
    except ImportError:
        pytest.fail("check-jsonschema is not installed: pip install -e '.[test]' (it validates the workflow)")
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture(scope="module")
def wf() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def _runs(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) for s in job["steps"])


def _step(job: dict[str, Any], uses: str) -> dict[str, Any]:
    return next(s for s in job["steps"] if str(s.get("uses", "")).startswith(uses))


def _nox_sessions() -> set[str]:
    env = {**os.environ, "NOX_SCRIPT_MODE": "none"}
    # `-k` with an always-true expression: --json lists only the selected sessions, and the default is `tests`.
    proc = subprocess.run([sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "-l", "--json", "-k",
                           "not zzz_none"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {s["name"] for s in json.loads(proc.stdout)}


def test_the_workflow_is_valid_against_the_github_workflow_schema() -> None:
    proc = _check_jsonschema(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "ci.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest", 1))
    proc = _check_jsonschema(broken)
    assert proc.returncode != 0
    assert "runs-on" in proc.stdout


def test_triggers_pull_requests_pushes_and_version_tags(wf: dict[str, Any]) -> None:
    assert "pull_request" in wf["on"]
    assert wf["on"]["push"]["tags"] == ["v*"]


def test_every_nox_session_the_workflow_calls_exists_for_every_environment(wf: dict[str, Any]) -> None:
    sessions = _nox_sessions()
    env_ids = load_matrix(ROOT / "matrix.yaml").ids
    called = set()
    for job in wf["jobs"].values():
        # the environment's id reaches `run:` as $ENV_ID (job env: ENV_ID: ${{ matrix.env }}), never expanded
        for name in re.findall(r"\bnox -s \"?((?:[\w.-]|\$ENV_ID)+)", _runs(job)):
            called |= {name.replace("$ENV_ID", e) for e in env_ids} if "$ENV_ID" in name else {name}
    assert called, "the workflow calls no nox session"
    assert called - sessions == set()
    assert {"lint", "matrix", "report", "tests"} <= called
    assert {f"{a}-{e}" for a in ("build", "tasks", "bench", "push") for e in env_ids} <= called


def test_the_matrix_job_exposes_nox_s_matrix_and_the_environment_jobs_use_it(wf: dict[str, Any]) -> None:
    jobs = wf["jobs"]
    matrix_job = jobs["matrix"]
    step = next(s for s in matrix_job["steps"] if "nox -s matrix" in str(s.get("run", "")))
    assert matrix_job["outputs"]["matrix"] == f"${{{{ steps.{step['id']}.outputs.matrix }}}}"
    assert 'echo "matrix=$(jq -c . matrix.json)" >> "$GITHUB_OUTPUT"' in step["run"]

    env_job = jobs["env"]
    assert "matrix" in env_job["needs"]
    assert env_job["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
    assert env_job["strategy"]["fail-fast"] is False
    assert env_job["runs-on"] == "${{ matrix.runs-on }}"  # GPU jobs go to the labelled self-hosted runners


def test_every_matrix_key_the_workflow_uses_is_in_every_matrix_entry(wf: dict[str, Any]) -> None:
    expressions = " ".join(re.findall(r"\$\{\{(.*?)\}\}", WORKFLOW.read_text()))
    used = set(re.findall(r"(?<![\w.])matrix\.([A-Za-z_][\w-]*)", expressions))
    assert used
    for entry in github_matrix(load_matrix(ROOT / "matrix.yaml"))["include"]:
        assert used <= entry.keys(), used - entry.keys()


def test_environment_jobs_upload_their_records_even_when_a_step_failed(wf: dict[str, Any]) -> None:
    env_job = wf["jobs"]["env"]
    upload = _step(env_job, "actions/upload-artifact@")
    assert upload["with"]["name"] == "records-${{ matrix.env }}"
    assert upload["with"]["path"] == "results/${{ matrix.env }}"
    assert env_job["env"]["TORCHRIG_RESULTS"] == "${{ github.workspace }}/results"  # run-tasks adds /<env>
    assert "always()" in upload["if"]


def test_the_report_job_merges_all_records_and_posts_the_job_summary(wf: dict[str, Any]) -> None:
    report = wf["jobs"]["report"]
    assert "env" in report["needs"] and "always()" in report["if"]  # a failed environment still gets reported
    download = _step(report, "actions/download-artifact@")
    assert download["with"]["pattern"] == "records-*"
    runs = _runs(report)
    assert "nox -s report -- " in runs and download["with"]["path"] in runs
    assert "$GITHUB_STEP_SUMMARY" in runs and "report/report.md" in runs


def test_images_are_pushed_only_on_a_version_tag_after_a_registry_login(wf: dict[str, Any]) -> None:
    steps = wf["jobs"]["env"]["steps"]
    login = next(i for i, s in enumerate(steps) if str(s.get("uses", "")).startswith("docker/login-action@"))
    push = next(i for i, s in enumerate(steps) if "nox -s \"push-" in str(s.get("run", "")))
    tasks = next(i for i, s in enumerate(steps) if "nox -s \"tasks-" in str(s.get("run", "")))
    assert tasks < login < push  # nothing is pushed unless its tasks passed
    for i in (login, push):
        assert "startsWith(github.ref, 'refs/tags/v')" in steps[i]["if"]
    assert wf["jobs"]["env"]["permissions"]["packages"] == "write"


def test_forks_do_not_reach_the_self_hosted_gpu_runners(wf: dict[str, Any]) -> None:
    step = next(s for s in wf["jobs"]["matrix"]["steps"] if s.get("id") == "matrix")
    assert "head.repo.full_name != github.repository" in step["env"]["FORK_PR"]
    assert "select(.gpu | not)" in step["run"]
