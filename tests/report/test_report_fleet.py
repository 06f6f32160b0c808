"""The report over records the real tasks and benchmarks wrote (three environments, two machines; conftest.py), and
over a fleet of nodes made of this machine's repeated real runs."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tests.report.fleet import AA_RUNS, Fleet
from torchrig.__main__ import main
from torchrig.report import REGRESSION_EXIT_CODE, build_report
from torchrig.results.records import Metric, Record, load_records, new_run_id, write_record

pytestmark = [pytest.mark.torch, pytest.mark.slow]


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_the_report_of_three_environments_on_two_machines(fleet: Fleet, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["report", str(fleet.root), "--out", str(out)]) == 0
    rows = _csv(out / "report.csv")

    machines: dict[str, set[str]] = {}
    for r in rows:
        machines.setdefault(r["machine_description"], set()).add(r["env"])
    assert len(machines) == 2
    gpu = next(d for d in machines if "NVIDIA H100" in d)
    here = next(d for d in machines if d != gpu)
    assert machines[gpu] == {"cuda118", "cuda121"} and machines[here] == {"cpu"}

    cell = {(r["machine_description"], r["env"], r["name"], r["metric"]): r for r in rows}
    for machine, env in ((here, "cpu"), (gpu, "cuda118"), (gpu, "cuda121")):
        assert cell[(machine, env, "regression", "")]["verdict"] == "pass"
        tflops = cell[(machine, env, "gemm-fp32-n256", "tflops")]
        assert float(tflops["value"]) > 0 and tflops["unit"] == "TFLOP/s" and tflops["repeats"]
    assert cell[(here, "cpu", "gemm-fp32-n256", "tflops")]["runs"] == str(AA_RUNS)  # the mean over the runs
    assert cell[(here, "cpu", "smoke", "")]["verdict"] == "pass"
    assert not any(k[1] != "cpu" and k[2] == "smoke" for k in cell)  # smoke ran on one machine only

    md = (out / "report.md").read_text()
    assert "2 machines with different fingerprints" in md
    # Two nodes, but each group (GPU model and environment) has one: nothing to compare, no outliers. (The "GPU"
    # node's benchmarks may fail their GPU-strict spread gate on this CPU: that is counted, not an outlier.)
    assert re.search(r"\*\*Fleet:\*\* 2 nodes · GPU models: .*NVIDIA H100 80GB HBM3 \(1 node\).* · "
                     r"[0-2] of 2 passed · no outliers", md), md[:1000]
    fleet_rows = _csv(out / "fleet.csv")
    assert sorted(r["env"] for r in fleet_rows) == ["cpu", "cuda118", "cuda121"]
    assert {r["outlier"] for r in fleet_rows} == {"False"}
    assert re.search(r"\| task: \*\*smoke · verdict\*\* \| ✓ \*\*pass\*\*", md)
    html = (out / "report.html").read_text()
    assert html.count('<table class="sortable">') == 2 and html.count("data:image/png;base64,") == 2
    charts = sorted((out / "charts").iterdir())
    assert len(charts) == 2 and all(p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 10_000 for p in charts)


def test_repeated_real_runs_are_not_flagged_as_regressions(fleet: Fleet, tmp_path: Path) -> None:
    # Odd runs against even runs of the same code: an A/A comparison with this machine's real noise (a shared
    # machine's load included). Interleaving keeps a change of load from landing on one side only.
    for i, run in enumerate(fleet.aa_runs):
        shutil.copytree(run, tmp_path / ("base" if i % 2 == 0 else "current") / run.name)
    out = tmp_path / "report"
    rc = main(["report", str(tmp_path / "current"), "--baseline", str(tmp_path / "base"), "--out", str(out),
               "--format", "md,csv", "--fail-on-regression"])
    rows = [r for r in _csv(out / "report.csv") if r["metric"]]
    headline = [r for r in rows if r["higher_is_better"] == "True"]
    assert headline and all(r["outcome"] == "within-noise" for r in headline), [
        (r["name"], r["metric"], r["change"], r["comparison_detail"]) for r in headline]
    assert rc == 0, (out / "report.md").read_text()


def _replay(template: list[Record], runs: int, *, day: int, slower: float, rng: random.Random) -> list[Record]:
    """``runs`` new runs of the real records in ``template`` with realistic, seeded noise: each run's numbers drift
    by 3% and scatter 5% over their repeats (a quiet machine; this shared one under load can be far noisier, and
    the rule rightly flags nothing then). With ``slower`` > 1 throughputs divide and step times multiply by it."""
    out = []
    for i in range(runs):
        drift = 1 + rng.gauss(0, 0.03)
        for r in template:
            metrics = {}
            for name, m in r.metrics.items():
                f = drift
                if m.higher_is_better:
                    f /= slower
                elif name == "step_time_s":
                    f *= slower
                metrics[name] = Metric(value=m.value * f, unit=m.unit, higher_is_better=m.higher_is_better,
                                       repeats=m.repeats, stddev=None if m.stddev is None else 0.05 * m.value * f)
            out.append(replace(r, metrics=metrics, run_id=new_run_id(), created=f"2030-01-0{day}T00:00:{i:02d}Z"))
    return out


@pytest.mark.parametrize("slower", [1.0, 1.25])  # 1.25x the step time = 20% less throughput
def test_an_injected_20_percent_regression_in_real_records_is_flagged_and_noise_is_not(
        fleet: Fleet, tmp_path: Path, slower: float) -> None:
    template, problems = load_records([fleet.aa_runs[0]])
    assert template and not problems
    rng = random.Random(20)
    for r in _replay(template, 5, day=1, slower=1.0, rng=rng):
        write_record(r, tmp_path / "base")
    for r in _replay(template, 5, day=2, slower=slower, rng=rng):
        write_record(r, tmp_path / "current")

    out = tmp_path / "report"
    rc = main(["report", str(tmp_path / "current"), "--baseline", str(tmp_path / "base"), "--out", str(out),
               "--format", "md,csv", "--fail-on-regression"])
    flagged = {(r["name"], r["metric"]) for r in _csv(out / "report.csv") if r["outcome"] == "regression"}
    injected = {(r.name, m) for r in template for m, v in r.metrics.items()
                if v.higher_is_better or m == "step_time_s"} if slower > 1 else set()
    assert flagged == injected
    assert rc == (REGRESSION_EXIT_CODE if injected else 0)
    if injected:
        assert re.search(r"-[12]\d\.\d% REGRESSION", (out / "report.md").read_text())


def test_bad_files_among_real_records_are_listed_and_skipped(fleet: Fleet, tmp_path: Path) -> None:
    d = tmp_path / "results"
    shutil.copytree(fleet.root / "this-machine", d)
    victims = sorted((d / "cpu" / "bench-1" / "bench").glob("*.json"))[:3]
    victims[0].write_text(victims[0].read_text()[:200])  # a copy cut short
    future = json.loads(victims[1].read_text())
    victims[1].write_text(json.dumps({**future, "schema_version": future["schema_version"] + 1}))
    partial = json.loads(victims[2].read_text())
    del partial["metrics"]
    victims[2].write_text(json.dumps(partial))

    assert main(["report", str(d), "--out", str(tmp_path / "out"), "--format", "md"]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    skipped = md.split("## Skipped files", 1)[1]
    for path, why in zip(victims, ("not readable JSON", "newer than this torchrig", "metrics: missing"), strict=True):
        assert re.search(rf"{re.escape(path.name)}` \| results \| [^\n]*{why}", skipped), (path.name, why)
    assert "tflops" in md  # the rest of the table is there


def _as_node(records: list[Record], node: str) -> list[Record]:
    """The records as if written on ``node``: the same hardware, another hostname."""
    return [replace(r, machine=replace(r.machine, hostname=node), run_id=new_run_id()) for r in records]


def _fleet_report(results: Path, out: Path) -> tuple[list[dict[str, str]], str]:
    assert main(["report", str(results), "--out", str(out), "--format", "md,csv"]) == 0
    return _csv(out / "fleet.csv"), (out / "report.md").read_text()


def test_nodes_made_of_real_repeated_runs_are_not_flagged_as_slow(fleet: Fleet, tmp_path: Path) -> None:
    # Three nodes of two real benchmark runs each (this machine's A/A runs, interleaved so that a change of load
    # does not land on one node only): their differences are real run-to-run noise, a shared machine's included.
    # (A run that really failed a gate -- the timer self-check under load -- is rightly named: the gate rule is
    # the unit tests' business; here the question is whether real noise passes for a slow node.)
    runs = [load_records([run])[0] for run in fleet.aa_runs]
    for i in range(3):
        for r in _as_node(runs[i] + runs[i + 3], f"node-{i + 1}"):
            write_record(r, tmp_path / "results" / f"node-{i + 1}")
    rows, md = _fleet_report(tmp_path / "results", tmp_path / "report")
    assert [r["node"] for r in rows] == ["node-1", "node-2", "node-3"]
    assert "): slow: " not in md
    records, _ = load_records([tmp_path / "results"])
    report = build_report(records)
    assert [o.figure for o in report.fleet.outliers if o.reason == "slow"] == []
    assert {o.reason for o in report.fleet.outliers} <= {"gate"}
    assert re.search(r"\*\*Fleet:\*\* 3 nodes · GPU models: .+ \(3 nodes\) · \d of 3 passed", md)


def test_a_node_20_percent_slow_among_replayed_real_records_is_flagged_and_only_it(
        fleet: Fleet, tmp_path: Path) -> None:
    # The real records of one run, replayed with seeded noise (3% drift between runs, 5% within a run): five
    # nodes of three runs, one 1.25x slower. Every throughput of that node -- and nothing else -- is flagged.
    template, problems = load_records([fleet.aa_runs[0]])
    assert template and not problems
    rng = random.Random(12)
    for i in range(1, 6):
        node = f"node-{i}"
        for r in _as_node(_replay(template, 3, day=1, slower=1.25 if i == 4 else 1.0, rng=rng), node):
            write_record(r, tmp_path / "results" / node)
    rows, md = _fleet_report(tmp_path / "results", tmp_path / "report")
    assert {r["node"]: r["outlier"] for r in rows} == {
        "node-1": "False", "node-2": "False", "node-3": "False", "node-4": "True", "node-5": "False"}
    why = next(r["why"] for r in rows if r["node"] == "node-4")
    assert re.search(r"gemm-fp32-n256 · tflops [\d.,]+ TFLOP/s is [12]\d\.\d% below the group median", why), why
    records, _ = load_records([tmp_path / "results"])
    assert {(o.node, o.row.label) for o in build_report(records).fleet.outliers} == {
        ("node-4", f"{r.name} · {m}") for r in template for m, v in r.metrics.items() if v.higher_is_better}
    assert re.search(r"\*\*Fleet:\*\* 5 nodes · GPU models: .+ \(5 nodes\) · 5 of 5 passed · 1 outlier: node-4", md)
