"""docs/fleet.md shows what `--dry-run` really prints: its examples are compared with the commands' output."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from torchrig.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "fleet.md").read_text()
BASE = ["--matrix", str(ROOT / "matrix.yaml"), "submit"]


def _dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    env, *rest = args
    assert main([*BASE, env, "--dry-run", *rest]) == 0  # before any `--`: after it, it would go to the suite
    return capsys.readouterr().out


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)


def test_the_docker_example_is_the_whole_script(capsys: pytest.CaptureFixture[str]) -> None:
    out = _dry_run(capsys, "cpu", "--nodes", "2", "--quick", "--partition", "debug", "--time", "30:00",
                   "--results", "/shared/torchrig", "--", "--only", "smoke,regression")
    assert out in _blocks("bash")


def _section(heading: str) -> str:
    return re.split(r"\n#{2,3} ", DOC.split(f"### {heading}", 1)[1], maxsplit=1)[0]


@pytest.mark.parametrize(("heading", "args"), [
    ("`--runtime docker`", ["cuda121", "--nodes", "2", "--gpus-per-node", "4", "--results", "/shared/torchrig"]),
    ("`--runtime podman`", ["cuda121", "--nodes", "2", "--gpus-per-node", "1", "--runtime", "podman", "--results",
                            "/shared/torchrig"]),
    ("`--runtime pyxis`", ["cuda121", "--nodes", "8", "--gpus-per-node", "8", "--exclusive", "--partition", "gpu",
                           "--account", "ml", "--time", "1:00:00", "--suite", "bench", "--runtime", "pyxis",
                           "--results", "/shared/torchrig"]),
    ("`--runtime apptainer`", ["rocm", "--nodes", "4", "--gres", "gpu:mi250:8", "--exclusive", "--suite", "bench",
                               "--runtime", "apptainer", "--results", "/shared/torchrig"]),
])
def test_each_runtime_example_is_in_the_script(capsys: pytest.CaptureFixture[str], heading: str,
                                               args: list[str]) -> None:
    lines = set(_dry_run(capsys, *args).splitlines())
    example = re.findall(r"```bash\n(.*?)```", _section(heading), re.S)[-1]
    missing = [line for line in example.splitlines() if line.strip() and line not in lines]
    assert not missing, missing


def test_the_kubernetes_example_is_the_whole_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    out = _dry_run(capsys, "cuda121", "--to", "kubernetes", "--nodes", "16", "--gpus-per-node", "8", "--gpu-product",
                   "NVIDIA-H100-80GB-HBM3", "--queue", "team-a", "--namespace", "ml", "--name", "torchrig-h100-bench",
                   "--suite", "bench", "--pvc", "torchrig-results")
    assert out in _blocks("yaml")


def test_the_accepted_checkov_findings_are_the_documented_ones() -> None:
    from torchrig.fleet.kubernetes import CHECKOV_ACCEPTED

    table = DOC.split("### Policy scan (checkov)", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| (CKV2?_K8S_\d+) \|", table, re.M)
    assert sorted(documented) == sorted(CHECKOV_ACCEPTED)


def test_checkov_finds_only_the_documented_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs checkov when it is installed: $TORCHRIG_CHECKOV, or `checkov` on PATH (`nox -s checkov` installs it)."""
    from torchrig.fleet.kubernetes import CHECKOV_ACCEPTED

    checkov = os.environ.get("TORCHRIG_CHECKOV") or shutil.which("checkov")
    if not checkov:
        if "checkov" in {x.strip() for x in os.environ.get("TORCHRIG_REQUIRE", "").split(",")}:
            pytest.fail("TORCHRIG_REQUIRE names 'checkov' but it is not installed (`nox -s tests` installs it into "
                        ".nox/_checkov; else set TORCHRIG_CHECKOV)", pytrace=False)
        pytest.skip("checkov is not installed (its own venv: python -m venv /tmp/checkov-venv && "
                    "/tmp/checkov-venv/bin/pip install checkov; then TORCHRIG_CHECKOV=/tmp/checkov-venv/bin/checkov)")
    for env in ("cpu", "cuda121", "rocm"):
        assert main([*BASE, env, "--to", "kubernetes", "--pvc", "results", "--nodes", "2", "--name", f"job-{env}",
                     "--dry-run", "--output", str(tmp_path / f"{env}.yaml")]) == 0
    proc = subprocess.run([checkov, "--directory", str(tmp_path), "--framework", "kubernetes", "--compact",
                           "--quiet", "--skip-download", "--output", "json"], capture_output=True, text=True,
                          timeout=600)
    report = json.loads(proc.stdout)
    failed = {c["check_id"] for r in (report if isinstance(report, list) else [report])
              for c in r["results"]["failed_checks"]}
    assert failed, "checkov found nothing at all: is it scanning the manifests?"
    assert failed <= set(CHECKOV_ACCEPTED), failed - set(CHECKOV_ACCEPTED)
