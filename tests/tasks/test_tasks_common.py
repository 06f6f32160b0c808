"""The shared plumbing: verdicts, exit codes, the error record, atomic records, the all-runner."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.tasks.tasks_support import run_module
from torchrig.results.records import validate_record

pytestmark = pytest.mark.torch


def _spec(run):
    from tasks._common import TaskSpec

    return TaskSpec(name="probe", description="a test task", run=run, training=False)


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "task").glob("*.json"))]


def test_an_unexpected_error_exits_3_with_an_error_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tasks import _common

    def run(ctx: _common.Context) -> None:
        ctx.metric("partial", 1.5, "s")
        raise RuntimeError("the GPU caught fire")

    rc = _common.main(_spec(run), ["--results", str(tmp_path), "--quiet", "--device", "cpu"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "unexpected error: RuntimeError: the GPU caught fire" in err
    (rec,) = _records(tmp_path)
    assert validate_record(rec) == []
    assert rec["verdict"] == "error"
    assert rec["metrics"]["partial"]["value"] == 1.5
    assert any("the GPU caught fire" in w for w in rec["warnings"])


def test_a_usage_error_exits_2_without_traceback_or_record(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from tasks import _common

    def run(ctx: _common.Context) -> None:
        raise _common.UsageError("--thing is wrong: do this instead")

    assert _common.main(_spec(run), ["--results", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "probe: error: --thing is wrong: do this instead"
    assert _records(tmp_path) == []


def test_a_non_finite_metric_fails_its_gate_and_the_record_stays_valid(tmp_path: Path) -> None:
    from tasks import _common

    def run(ctx: _common.Context) -> None:
        ctx.metric("loss", float("nan"), "nats", higher_is_better=False)
        ctx.gate("loss", "<", 1.0)

    assert _common.main(_spec(run), ["--results", str(tmp_path), "--quiet"]) == 1
    (rec,) = _records(tmp_path)
    assert validate_record(rec) == []
    assert rec["verdict"] == "fail"
    assert rec["gates"] == [{"metric": "loss", "op": "<", "threshold": 1.0, "passed": False}]
    assert "loss" not in rec["metrics"]
    assert any("not finite" in w for w in rec["warnings"])


def test_a_failing_write_leaves_no_partial_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import _common
    from torchrig.results import io

    def run(ctx: _common.Context) -> None:
        ctx.metric("x", 1.0, "1")
        ctx.gate("x", ">=", 1.0)

    def disk_full(fd: int) -> None:  # the record is in the temporary file, but it never reaches the disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", disk_full)
    assert _common.main(_spec(run), ["--results", str(tmp_path), "--quiet"]) == 3
    assert list((tmp_path / "task").iterdir()) == []  # neither the record nor its temporary file


def test_a_failed_gate_says_so_in_the_record_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tasks import _common

    def run(ctx: _common.Context) -> None:
        ctx.metric("accuracy", 41.5, "%")
        ctx.metric("loss", 0.1, "nats", higher_is_better=False)
        ctx.gate("accuracy", ">=", 60)
        ctx.gate("loss", "<", 1.0)

    assert _common.main(_spec(run), ["--results", str(tmp_path), "--quiet"]) == 1
    (rec,) = _records(tmp_path)
    assert rec["verdict"] == "fail"
    assert rec["warnings"] == ["FAIL: gate accuracy >= 60 not met: accuracy = 41.5 %"]  # the passed gate: nothing
    assert "FAIL: gate accuracy >= 60 not met" in capsys.readouterr().err


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_records_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    from tasks import _common

    def run(ctx: _common.Context) -> None:
        ctx.metric("x", 1.0, "1")
        ctx.gate("x", ">=", 1.0)

    old = os.umask(umask)
    try:
        assert _common.main(_spec(run), ["--results", str(tmp_path), "--quiet"]) == 0
    finally:
        os.umask(old)
    (path,) = (tmp_path / "task").glob("*.json")
    assert stat.S_IMODE(path.stat().st_mode) == mode  # a shared results folder must be readable by the group


def test_an_unwritable_results_directory_is_bad_input(tmp_path: Path) -> None:
    from tasks import _common

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert _common.main(_spec(lambda ctx: None), ["--results", str(blocker / "sub"), "--quiet"]) == 2


def test_all_runner_runs_tasks_in_order_and_reports_the_worst_exit(tmp_path: Path) -> None:
    results = tmp_path / "results"
    r = run_module("tasks", "--only", "regression,smoke", "--quick", "--quiet", "--device", "cpu",
                   "--expect-torch", "0.0.1", "--results", str(results), results=results)
    assert r.rc == 1, r.stdout + r.stderr  # smoke's version check fails: a gate, the worst code
    summary = r.stdout[r.stdout.index("summary:"):]
    assert summary.index("smoke            FAIL (gate)") < summary.index("regression       pass")  # matrix order
    assert "expects 0.0.1" in r.stderr
    recs = {x["name"]: x for x in r.records()}
    assert recs["regression"]["verdict"] == "pass" and recs["smoke"]["verdict"] == "fail"
    assert any(w.startswith("FAIL: torch_version_matches") for w in recs["smoke"]["warnings"])


def test_all_runner_rejects_an_unknown_task(tmp_path: Path) -> None:
    r = run_module("tasks.all", "--only", "smoke,regresion", results=tmp_path)
    assert r.rc == 2
    assert "unknown task(s) regresion" in r.stderr


def test_a_record_written_in_a_container_names_the_host_not_the_container(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchrig.results.records import collect_machine

    monkeypatch.delenv("TORCHRIG_HOSTNAME", raising=False)
    own = collect_machine()
    monkeypatch.setenv("TORCHRIG_HOSTNAME", "gpu-node-7")
    passed = collect_machine()
    assert passed.hostname == "gpu-node-7"
    assert passed.fingerprint == own.fingerprint, "the name is not part of what makes results comparable"
