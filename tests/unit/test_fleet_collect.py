"""`torchrig fleet status|collect`: the scheduler's states joined with the node folders; failed nodes named with the
reason and their log; records of the nodes that succeeded kept and counted; fleet.json for the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from torchrig.__main__ import main
from torchrig.fleet import ElementState, gather, render, slurm, wait, write_fleet_file, write_job_file
from torchrig.results.records import Machine, Metric, Record, Software, write_record

ROOT = Path(__file__).resolve().parents[2]


def record(name: str, verdict: str = "pass") -> Record:
    return Record(kind="task", name=name, env_id="cpu", verdict=verdict, wall_time_s=1.0,  # type: ignore[arg-type]
                  machine=Machine(hostname="n", os="Linux", cpu="x", cpu_count=2,
                                  accelerator="cpu").with_fingerprint(),
                  software=Software(python="3.11", torch="2.0.1"), metrics={"loss": Metric(value=0.1, unit="")})


def node(job_dir: Path, index: int, host: str, code: int, records: list[Record], *, why: str = "") -> Path:
    folder = job_dir / f"{index}-{host}"
    folder.mkdir(parents=True)
    for r in records:
        write_record(r, folder)
    (folder / "exit.json").write_text(json.dumps({"schema": "torchrig.fleet-node", "version": 1, "index": index,
                                                  "host": host, "exit_code": code, "why": why, "elapsed_s": 61}))
    (folder / "node.log").write_text("".join(f"line {i}\n" for i in range(40)) + f"tasks exited {code}\n")
    return folder


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    d = tmp_path / "results" / "42"
    d.mkdir(parents=True)
    write_job_file(d, {"scheduler": "slurm", "job": "42", "env": "cpu", "suite": "tasks", "nodes": 4,
                       "runtime": "docker", "image": "img"})
    node(d, 0, "n0", 0, [record("smoke"), record("regression")])
    node(d, 1, "n1", 1, [record("smoke", "fail"), record("regression")], why="tasks exit 1")
    (d / "slurm-2.out").write_text("starting\nKilled\n")  # element 2 died before publishing anything
    (d / ".3-n3.tmp").mkdir()  # a publish that was cut short is not a node folder
    return d


STATES = [
    ElementState(index=0, state="COMPLETED", exit_code=0, signal=0, elapsed_s=61, node="n0"),
    ElementState(index=1, state="FAILED", exit_code=1, signal=0, elapsed_s=60, node="n1", reason="NonZeroExitCode"),
    ElementState(index=2, state="OUT_OF_MEMORY", exit_code=0, signal=125, elapsed_s=30, node="n2",
                 reason="OutOfMemory"),
    ElementState(index=3, state="TIMEOUT", exit_code=0, signal=0, elapsed_s=3600, node="n3", reason="TimeLimit"),
]


def test_gather_joins_states_and_folders(job_dir: Path) -> None:
    reports = gather(job_dir, STATES, 4)
    assert [(r.index, r.host, r.state, r.records, r.failed) for r in reports] == [
        (0, "n0", "COMPLETED", 2, False), (1, "n1", "FAILED", 2, True), (2, "n2", "OUT_OF_MEMORY", 0, True),
        (3, "n3", "TIMEOUT", 0, True)]
    assert reports[1].verdicts == {"fail": 1, "pass": 1}
    assert reports[1].log_tail[-1] == "tasks exited 1" and len(reports[1].log_tail) == 15
    assert reports[2].log_tail == ("starting", "Killed")  # Slurm's own log of an element that left no folder
    assert "published no folder" in reports[2].why() and "OUT_OF_MEMORY" in reports[2].why()


def test_render_lists_failed_nodes_with_reason_and_log(job_dir: Path) -> None:
    text = "\n".join(render("42", json.loads((job_dir / "job.json").read_text()), gather(job_dir, STATES, 4),
                            job_dir))
    assert "job 42 (slurm): tasks of cpu on 4 node(s) through docker" in text
    assert "3 of 4 node(s) failed:" in text
    assert "element 1 on n1: FAILED, exit code 1; tasks exit 1" in text
    assert "element 2 on n2: OUT_OF_MEMORY, exit code 0, signal 125, reason OutOfMemory" in text
    assert "element 3 on n3: TIMEOUT, exit code 0, reason TimeLimit" in text
    assert "    | Killed" in text
    assert f"4 record(s) from 2 node(s) in {job_dir}: torchrig report {job_dir}" in text


def test_without_the_scheduler_the_folders_tell(job_dir: Path) -> None:
    reports = gather(job_dir, [], 4)  # Slurm forgot the job (no accounting, MinJobAge passed)
    assert [(r.state, r.exit_code, r.failed) for r in reports] == [
        ("COMPLETED", 0, False), ("FAILED", 1, True), ("UNKNOWN", None, True), ("UNKNOWN", None, True)]


def test_fleet_file(job_dir: Path) -> None:
    path = write_fleet_file(job_dir, "42", {"env": "cpu"}, gather(job_dir, STATES, 4))
    data = json.loads(path.read_text())
    assert data["schema"] == "torchrig.fleet" and data["failed"] == 3
    n0, n1 = data["nodes"][:2]
    assert n0["records"] == 2 and n0["failed"] is False and n0["log_tail"] == [] and n0["folder"] == "0-n0"
    assert n1["exit_code"] == 1 and n1["why"].startswith("FAILED, exit code 1") and n1["log_tail"]


def test_wait_polls_until_every_element_ended() -> None:
    rounds = [
        [ElementState(index=0, state="PENDING"), ElementState(index=1, state="PENDING")],
        [ElementState(index=0, state="RUNNING"), ElementState(index=1, state="PENDING")],
        [ElementState(index=0, state="RUNNING"), ElementState(index=1, state="PENDING")],
        [ElementState(index=0, state="COMPLETED", exit_code=0), ElementState(index=1, state="FAILED", exit_code=2)],
    ]
    lines: list[str] = []
    sleeps: list[float] = []
    states = wait(lambda: rounds.pop(0), nodes=2, interval_s=5, timeout_s=None, log=lines.append,
                  sleep=sleeps.append)
    assert [s.state for s in states] == ["COMPLETED", "FAILED"] and sleeps == [5, 5, 5]
    assert [line.split(" (")[0] for line in lines] == [  # a line when the counts change, not every poll
        "torchrig: 2 pending", "torchrig: 1 pending, 1 running", "torchrig: 1 completed, 1 failed"]


def test_wait_gives_up_at_the_timeout() -> None:
    lines: list[str] = []
    states = wait(lambda: [ElementState(index=0, state="RUNNING")], nodes=1, interval_s=0, timeout_s=0,
                  log=lines.append, sleep=lambda s: None)
    assert not states[0].done and "stopped waiting" in lines[-1]


def test_wait_stops_when_slurm_does_not_know_the_job() -> None:
    calls: list[int] = []

    def poll() -> list[ElementState]:
        calls.append(1)
        return []

    assert wait(poll, nodes=2, interval_s=0, timeout_s=None, log=print, sleep=lambda s: None,
                unknown_is_final=True) == []
    assert len(calls) == 1


def test_collect_of_a_forgotten_job_shows_the_folders(job_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(slurm, "query", lambda job: [])
    assert _cli(job_dir, "collect", "--interval", "0.01") == 1
    captured = capsys.readouterr()
    assert "does not know job 42" in captured.err and "element 1 on n1: FAILED, exit code 1" in captured.out


def _cli(job_dir: Path, action: str, *extra: str) -> int:
    return main(["--matrix", str(ROOT / "matrix.yaml"), "fleet", action, "42", "--results", str(job_dir.parent),
                 *extra])


def test_collect_cli_exits_1_when_a_node_failed_and_writes_fleet_json(
        job_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(slurm, "query", lambda job: STATES if job == "42" else [])
    assert _cli(job_dir, "collect", "--interval", "0.01") == 1
    out = capsys.readouterr().out
    assert "3 of 4 node(s) failed" in out and (job_dir / "fleet.json").is_file()


def test_status_cli_all_passed(job_dir: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    states = [ElementState(index=0, state="COMPLETED", exit_code=0, node="n0")]
    info: dict[str, Any] = json.loads((job_dir / "job.json").read_text())
    write_job_file(job_dir, {**info, "nodes": 1})
    shutil.rmtree(job_dir / "1-n1")
    (job_dir / "slurm-2.out").unlink()
    monkeypatch.setattr(slurm, "query", lambda job: states)
    assert _cli(job_dir, "status") == 0
    assert "2 record(s) from 1 node(s)" in capsys.readouterr().out
    assert not (job_dir / "fleet.json").exists()  # status only reads


def test_an_unknown_job_folder_says_what_to_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--matrix", str(ROOT / "matrix.yaml"), "fleet", "status", "7", "--results", str(tmp_path)])
    assert rc == 2 and "holds no job.json" in capsys.readouterr().err
