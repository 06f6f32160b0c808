"""The fleet summary: nodes of one GPU model and environment compared with each other, the odd ones flagged.

Records of several fake machines, built through the real schema: some nodes slower than their group's run-to-run
noise, some within it, one failing a gate the others pass; groups of one and two nodes; a group without noise
evidence. The tests assert exactly which nodes are flagged, for what, and that every output says so.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.unit.test_report import GPU_BOX, bench, task
from torchrig.__main__ import main
from torchrig.report import Report, build_fleet, build_report, write_report
from torchrig.results.records import Machine, Metric, Record, write_record

H100, MI300 = "NVIDIA H100 80GB HBM3", "AMD Instinct MI300X"


def _node(host: str, gpu: str = H100, driver: str = "550.54.14") -> Machine:
    accelerator = "rocm" if gpu == MI300 else "cuda"
    return Machine(**{**GPU_BOX.__dict__, "hostname": host, "gpu_name": gpu, "driver": driver,
                      "accelerator": accelerator}).with_fingerprint()


def _runs(env: str, machine: Machine, level: float, *, runs: int = 3, accuracy: float = 0.95,
          stddev: float | None = None) -> list[Record]:
    """``runs`` benchmark runs around ``level`` (1% apart: the run-to-run noise) and as many task runs."""
    out = []
    for i in range(runs):
        value = level * (1 + 0.01 * (i - (runs - 1) / 2))
        created = f"2025-01-01T00:00:{i:02d}Z"
        r = bench(env, value, machine=machine, created=created, stddev=stddev)
        # A lower-is-better diagnostic moves with the throughput: it must not make outliers of its own.
        step = {"step_time_s": Metric(value=1 / value, unit="s", higher_is_better=False, repeats=10)}
        out.append(Record(**{**r.__dict__, "metrics": {**r.metrics, **step}}))
        out.append(task(env, accuracy, machine=machine, created=created))
    return out


def _fleet_records() -> list[Record]:
    records: list[Record] = []
    # Five H100 nodes on cuda121: gpu-4 7.7% slow (beyond ~3% of noise), gpu-5 1.5% slow (within it), gpu-2
    # fails the accuracy gate every other node passes, gpu-3 runs another driver (noted, compared all the same).
    records += _runs("cuda121", _node("gpu-1"), 2600)
    records += _runs("cuda121", _node("gpu-2"), 2600, accuracy=0.5)
    records += _runs("cuda121", _node("gpu-3", driver="535.104.05"), 2620)
    records += _runs("cuda121", _node("gpu-4"), 2400)
    records += _runs("cuda121", _node("gpu-5"), 2560)
    # One A100 node, far slower than the H100s: a group of its own, nothing to compare with.
    records += _runs("cuda121", _node("a100-1", gpu="NVIDIA A100-SXM4-80GB"), 1200, accuracy=0.5)
    # Two MI300X nodes: 25% apart, beyond noise, but two cannot say which is odd; mi-2 fails where mi-1 passes.
    records += _runs("rocm", _node("mi-1", gpu=MI300), 2000)
    records += _runs("rocm", _node("mi-2", gpu=MI300), 1500, accuracy=0.5)
    return records


def _flagged(report: Report) -> set[tuple[str, str, str]]:
    return {(o.node, o.reason, o.row.label) for o in report.fleet.outliers}


def test_exactly_the_slow_node_and_the_failing_nodes_are_flagged() -> None:
    report = build_report(_fleet_records())
    assert _flagged(report) == {
        ("gpu-4", "slow", "resnet50 · throughput"),
        ("gpu-2", "gate", "cifar_cnn · verdict"),
        ("mi-2", "gate", "cifar_cnn · verdict"),
    }
    fleet = report.fleet
    assert fleet.nodes == ("a100-1", "gpu-1", "gpu-2", "gpu-3", "gpu-4", "gpu-5", "mi-1", "mi-2")
    assert dict(fleet.models) == {MI300: ("mi-1", "mi-2"), "NVIDIA A100-SXM4-80GB": ("a100-1",),
                                  H100: ("gpu-1", "gpu-2", "gpu-3", "gpu-4", "gpu-5")}
    assert fleet.passed == ("gpu-1", "gpu-3", "gpu-4", "gpu-5", "mi-1")  # slow is not failing


def test_the_figure_that_made_the_outlier_is_given() -> None:
    by = {(o.node, o.reason): o for o in build_report(_fleet_records()).fleet.outliers}
    slow = by[("gpu-4", "slow")]
    assert slow.median == pytest.approx(2600) and slow.value == pytest.approx(2400)
    assert slow.threshold is not None and 0.01 * 2600 < slow.threshold < 200
    assert slow.figure.startswith("resnet50 · throughput 2,400 img/s is 7.7% below the group median 2,600 img/s")
    assert "A/A spread, 5 nodes, 15 runs" in slow.figure
    gate = by[("gpu-2", "gate")]
    assert gate.figure == "cifar_cnn fails: accuracy 0.5000 against the gate >= 0.9, where 4 of 4 other nodes pass"
    assert by[("mi-2", "gate")].figure.endswith(", where 1 of 1 other node passes")


def test_small_groups_say_what_the_rule_could_not_decide() -> None:
    groups = {g.label: g for g in build_report(_fleet_records()).fleet.groups}
    assert set(groups) == {f"{H100} · cuda121", "NVIDIA A100-SXM4-80GB · cuda121", f"{MI300} · rocm"}
    assert groups["NVIDIA A100-SXM4-80GB · cuda121"].notes == ()  # one node: nothing to compare, nothing to say
    (two,) = [n for n in groups[f"{MI300} · rocm"].notes if "throughput" in n]
    assert "mi-1 (2,000 img/s) and mi-2 (1,500 img/s) differ beyond their noise" in two
    assert "3 or more nodes are needed to say which one is odd" in two
    (driver,) = groups[f"{H100} · cuda121"].notes
    assert driver == "the nodes run different drivers (535.104.05 on gpu-3; 550.54.14 on gpu-1, gpu-2, gpu-4, gpu-5)"


def test_nodes_slower_than_the_noise_are_flagged_and_those_within_it_are_not() -> None:
    # Median 2,587 and about 3% of noise: n4 (-0.5%) and n3 are within it, n6 (-9.5%) and n7 (-5.5%) are not.
    levels = {"n1": 2600, "n2": 2610, "n3": 2590, "n4": 2574, "n5": 2587, "n6": 2340, "n7": 2444}
    records = [r for n, v in levels.items() for r in _runs("cuda121", _node(n), v)]
    fleet = build_fleet(records)
    assert {(o.node, o.reason) for o in fleet.outliers} == {("n6", "slow"), ("n7", "slow")}
    assert [f"{(o.median or 0) - (o.value or 0):.0f}" for o in fleet.outliers] == ["247", "143"]


def test_a_group_of_one_node_has_no_outliers_however_it_compares() -> None:
    fleet = build_fleet(_runs("cuda121", _node("solo"), 10.0, accuracy=0.1))
    assert fleet.outliers == () and fleet.passed == () and fleet.groups[0].failing == ("solo",)


def test_a_gate_every_node_fails_is_the_environment_not_a_node() -> None:
    records = [r for i in range(1, 5) for r in _runs("cuda121", _node(f"gpu-{i}"), 2600, accuracy=0.5)]
    fleet = build_fleet(records)
    assert fleet.outliers == () and fleet.passed == ()


def test_a_node_failing_with_most_others_passing_is_flagged_and_skips_do_not_count() -> None:
    records = [r for i in range(1, 6) for r in _runs("cuda121", _node(f"gpu-{i}"), 2600,
                                                        accuracy=0.5 if i in (1, 2) else 0.95)]
    records.append(task("cuda121", None, machine=_node("gpu-6"), verdict="skip"))
    fleet = build_fleet(records)
    assert {(o.node, o.figure.split(" where ")[1]) for o in fleet.outliers} == {
        ("gpu-1", "3 of 4 other nodes pass"), ("gpu-2", "3 of 4 other nodes pass")}


def test_without_repeated_runs_or_spread_nobody_is_judged_slow_and_the_summary_says_so() -> None:
    records = [bench("cuda121", v, machine=_node(f"gpu-{i}")) for i, v in enumerate((2600, 2600, 1000), 1)]
    records = [Record(**{**r.__dict__, "metrics": {"throughput": Metric(value=r.metrics["throughput"].value,
                                                                        unit="img/s", repeats=1)}})
               for r in records]
    (group,) = build_fleet(records).groups
    assert not build_fleet(records).outliers
    assert group.notes == ("resnet50 · throughput: not judged on 3 node(s): no repeated runs or recorded spread, so "
                           "the run-to-run noise is unknown",)


def test_single_runs_with_a_recorded_spread_are_judged_by_it() -> None:
    # One run of 10 repeats per node, 2% spread within the run: 3% below is noise, 30% below is not.
    records = [bench("cuda121", v, machine=_node(f"gpu-{i}")) for i, v in enumerate((2600, 2610, 2590, 2520, 1820))]
    assert {(o.node, o.reason) for o in build_fleet(records).outliers} == {("gpu-4", "slow")}


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_the_summary_opens_every_output(tmp_path: Path) -> None:
    written = write_report(build_report(_fleet_records()), tmp_path, ("md", "html", "csv"))
    assert {p.name for p in written} == {"report.md", "report.html", "report.csv", "fleet.csv"}

    md = (tmp_path / "report.md").read_text()
    head = md.split("## Machine A", 1)[0]
    assert ("**Fleet:** 8 nodes · GPU models: AMD Instinct MI300X (2 nodes), NVIDIA A100-SXM4-80GB (1 node), "
            "NVIDIA H100 80GB HBM3 (5 nodes) · 5 of 8 passed · 3 outliers: gpu-2, gpu-4, mi-2") in head
    assert "- gpu-4 (NVIDIA H100 80GB HBM3 · cuda121): slow: resnet50 · throughput 2,400 img/s is 7.7% below" in head
    assert "- gpu-2 (NVIDIA H100 80GB HBM3 · cuda121): cifar_cnn fails: accuracy 0.5000 against the gate" in head
    assert "did not pass everything they ran: a100-1, gpu-2, mi-2" in head

    html = (tmp_path / "report.html").read_text()
    assert html.index('id="fleet"') < html.index("<section>")  # before the first table
    assert "3 outliers: gpu-2, gpu-4, mi-2" in html

    rows = _csv(tmp_path / "fleet.csv")
    assert [(r["node"], r["env"]) for r in rows if r["outlier"] == "True"] == [
        ("mi-2", "rocm"), ("gpu-2", "cuda121"), ("gpu-4", "cuda121")]
    assert {r["node"]: r["passed"] for r in rows} == {
        "mi-1": "True", "mi-2": "False", "a100-1": "False", "gpu-1": "True", "gpu-2": "False", "gpu-3": "True",
        "gpu-4": "True", "gpu-5": "True"}
    assert all(r["records"] == "6" for r in rows)
    assert next(r for r in rows if r["node"] == "gpu-4")["why"].startswith("resnet50 · throughput 2,400 img/s")
    assert _csv(tmp_path / "report.csv")[0].keys() >= {"machine", "value"}  # the cell table keeps its header first


def test_one_node_gets_a_one_line_summary(tmp_path: Path) -> None:
    write_report(build_report(_runs("cuda121", _node("gpu-1"), 2600)), tmp_path, ("md",))
    md = (tmp_path / "report.md").read_text()
    assert f"**Fleet:** 1 node · GPU models: {H100} (1 node) · 1 of 1 passed · no outliers" in md
    assert "there is no other node to compare with" in md


def test_the_cli_names_the_outliers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for r in _fleet_records():
        write_record(r, tmp_path / "results" / r.machine.hostname)
    assert main(["report", str(tmp_path / "results"), "--format", "md,csv"]) == 0
    err = capsys.readouterr().err
    assert "fleet: 8 nodes, 5 passed, 3 outlier finding(s)" in err
    assert "  gpu-4 (NVIDIA H100 80GB HBM3 · cuda121): resnet50 · throughput 2,400 img/s is 7.7% below" in err
