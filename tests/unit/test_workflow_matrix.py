"""`nox -s matrix` -- the GitHub Actions matrix CI's environment jobs are made from -- matches matrix.yaml.

matrix.yaml is read here with plain YAML, not through torchrig.matrix, so the test checks the whole path
(file -> typed matrix -> ci.github_matrix -> CLI -> nox session) against the file a person edits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from torchrig.matrix.ci import RUNNER_LABELS

ROOT = Path(__file__).resolve().parents[2]


def nox_matrix(matrix: Path = ROOT / "matrix.yaml") -> dict[str, Any]:
    """What `nox -s matrix` prints on stdout (nox's own log goes to stderr), parsed as JSON."""
    env = {**os.environ, "TORCHRIG_MATRIX": str(matrix), "NOX_SCRIPT_MODE": "none"}
    proc = subprocess.run([sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "-s", "matrix"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)  # the whole stdout: the workflow stores it as-is
    return out


@pytest.fixture(scope="module")
def printed() -> dict[str, Any]:
    return nox_matrix()


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "matrix.yaml").read_text())
    return data


def test_every_environment_in_matrix_yaml_gets_a_job_in_file_order(printed: dict[str, Any],
                                                                   raw: dict[str, Any]) -> None:
    assert [e["env"] for e in printed["include"]] == [e["id"] for e in raw["environments"]]


def test_each_job_carries_its_environments_accelerator_torch_and_python(printed: dict[str, Any],
                                                                        raw: dict[str, Any]) -> None:
    jobs = {e["env"]: e for e in printed["include"]}
    default_python = raw["defaults"]["python"]
    for env in raw["environments"]:
        job = jobs[env["id"]]
        assert job["accelerator"] == env["accelerator"]
        assert job["torch"] == env["torch"]
        assert job["python"] == env.get("python", default_python)
        assert job["gpu"] is (env["accelerator"] != "cpu")
        assert f":{env['torch']}-" in job["image"], job["image"]  # the immutable tag names the torch


def test_gpu_jobs_go_to_self_hosted_runners_of_their_vendor(printed: dict[str, Any]) -> None:
    for job in printed["include"]:
        labels = job["runs-on"]
        match job["accelerator"]:
            case "cpu":
                assert labels == ["ubuntu-latest"]
            case "cuda":
                assert "self-hosted" in labels and "nvidia" in labels and "amd" not in labels
            case "rocm":
                assert "self-hosted" in labels and "amd" in labels and "nvidia" not in labels
            case other:
                pytest.fail(f"unknown accelerator {other!r}")
        assert labels == RUNNER_LABELS[job["accelerator"]]


def test_an_environment_added_to_matrix_yaml_appears_in_the_ci_matrix(tmp_path: Path) -> None:
    text = (ROOT / "matrix.yaml").read_text()
    text += '\n  - id: cuda124\n    accelerator: cuda\n    cuda: "12.4"\n    torch: "2.5.1"\n'
    (tmp_path / "matrix.yaml").write_text(text)
    (tmp_path / "images").symlink_to(ROOT / "images")
    jobs = {e["env"]: e for e in nox_matrix(tmp_path / "matrix.yaml")["include"]}
    assert jobs["cuda124"]["torch"] == "2.5.1" and "nvidia" in jobs["cuda124"]["runs-on"]
