"""`torchrig submit cpu --to slurm` + `torchrig fleet collect` end to end on a real (one-node) Slurm.

The cpu image's quick smoke + regression run as a 2-element job array through the docker runtime; the elements
reach dockerd from inside their jobs, publish their node folders, and the report is built from the job's folder.
A second job gives element 1 an impossible expectation (``--expect-torch 2.{index}.1``: torch 2.1.1 in a 2.0.1
image), so that element fails: its failure is named with its exit code, and element 0's records are kept.

Slurm must be up (tests/integration/slurm_local.sh; .ci/run starts it). Jobs run as root here, which reaches
dockerd; the elements share this one node, so the job folder holds ``0-<host>`` and ``1-<host>``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from torchrig.__main__ import main
from torchrig.results.records import load_records

pytestmark = [pytest.mark.slurm, pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MATRIX = str(ROOT / "matrix.yaml")
# A guard against a hung job, not a timing test: two quick smoke + regression runs share a loaded 2-core machine.
BUDGET_S = 1500


def submit(results: Path, image: str, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    rc = main(["--matrix", MATRIX, "submit", "cpu", "--to", "slurm", "--runtime", "docker", "--nodes", "2",
               "--quick", "--results", str(results), "--image", image, "--time", "30:00", *args])
    out = capsys.readouterr().out
    assert rc == 0, out
    m = re.search(r"submitted job (\d+)", out)
    assert m, out
    return m.group(1)


def collect(results: Path, job: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["--matrix", MATRIX, "fleet", "collect", job, "--results", str(results), "--interval", "3",
               "--timeout", str(BUDGET_S)])
    captured = capsys.readouterr()
    print(captured.out, captured.err)
    return rc, captured.out


def host() -> str:
    return subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()


def test_a_fleet_job_runs_collects_and_reports(cpu_image: Any, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "fleet"
    job = submit(results, cpu_image.ref.immutable, capsys, "--", "--only", "smoke,regression")
    rc, out = collect(results, job, capsys)
    assert rc == 0, out
    job_dir = results / job
    assert sorted(p.name for p in job_dir.iterdir() if p.is_dir()) == [f"0-{host()}", f"1-{host()}"]
    for index in (0, 1):
        folder = job_dir / f"{index}-{host()}"
        info = json.loads((folder / "exit.json").read_text())
        assert info["exit_code"] == 0 and info["job"] == job and info["index"] == index
        records, problems = load_records([folder])
        assert problems == [] and sorted(r.name for r in records) == ["regression", "smoke"]
        assert all(r.verdict == "pass" and r.container is not None for r in records)
        assert {r.container.image_id for r in records if r.container} == {cpu_image.image_id}
        assert {r.machine.hostname for r in records} == {socket.gethostname().split(".")[0]}
    assert re.search(rf"^\s+0\s+{host()}\s+COMPLETED\s+0\s", out, re.M), out
    assert re.search(rf"^\s+1\s+{host()}\s+COMPLETED\s+0\s", out, re.M), out
    assert f"4 record(s) from 2 node(s) in {job_dir}" in out
    fleet = json.loads((job_dir / "fleet.json").read_text())
    assert fleet["failed"] == 0 and [n["records"] for n in fleet["nodes"]] == [2, 2]

    rc = main(["--matrix", MATRIX, "report", str(job_dir), "--out", str(tmp_path / "report"), "--format", "md"])
    assert rc == 0
    report = next((tmp_path / "report").glob("*.md")).read_text()
    assert host() in report and "smoke" in report and "regression" in report


def test_a_failed_element_is_named_and_the_others_records_kept(cpu_image: Any, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "fleet"
    job = submit(results, cpu_image.ref.immutable, capsys,
                 "--", "--only", "smoke,regression", "--expect-torch", "2.{index}.1")
    rc, out = collect(results, job, capsys)
    assert rc == 1, out
    assert "1 of 2 node(s) failed:" in out
    assert f"element 1 on {host()}: FAILED, exit code 1; tasks exit 1" in out
    assert "last 15 lines of its log:" in out and "    | torchrig: exit 1 (tasks exit 1)" in out
    job_dir = results / job
    # the failed node's own log says why (torch 2.0.1 is PyPI's +cu117 build here, +cpu from the CPU index)
    assert re.search(r"FAIL: torch_version_matches: torch is 2\.0\.1\S*, this environment expects 2\.1\.1",
                     (job_dir / f"1-{host()}" / "node.log").read_text())
    kept, _ = load_records([job_dir / f"0-{host()}"])
    assert sorted((r.name, r.verdict) for r in kept) == [("regression", "pass"), ("smoke", "pass")]
    failed, _ = load_records([job_dir / f"1-{host()}"])
    assert ("smoke", "fail") in {(r.name, r.verdict) for r in failed}
    fleet = json.loads((job_dir / "fleet.json").read_text())
    assert fleet["failed"] == 1
    node1 = fleet["nodes"][1]
    assert node1["failed"] and node1["exit_code"] == 1 and node1["state"] == "FAILED" and node1["log_tail"]
    # status reads the same outcome without waiting
    assert main(["--matrix", MATRIX, "fleet", "status", job, "--results", str(results)]) == 1
