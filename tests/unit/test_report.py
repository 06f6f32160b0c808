"""The comparison table: grouping by machine, cell aggregation, missing-cell reasons, bad files, all four outputs.

Records here are built by hand through the real schema (write_record/load_records) so these tests need no
torch; tests/report/ builds them through the real task and benchmark code.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from torchrig.errors import UsageError
from torchrig.report import HOST, RowKey, build_report, format_number, parse_formats, write_report
from torchrig.results.records import Gate, Machine, Metric, Record, Software, load_records, write_record

CPU_BOX = Machine(hostname="ci-1", os="Linux 6.1", cpu="AMD EPYC 7763", cpu_count=4, accelerator="cpu")
GPU_BOX = Machine(hostname="gpu-1", os="Linux 6.1", cpu="Intel Xeon 8480", cpu_count=32, accelerator="cuda",
                  gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1, gpu_memory_gb=79.6, driver="550.54.14")
SW = Software(python="3.11.9", torch="2.1.0")

THROUGHPUT = RowKey(kind="bench", name="resnet50", metric="throughput")
ACCURACY = RowKey(kind="task", name="cifar_cnn", metric="accuracy")
CNN_VERDICT = RowKey(kind="task", name="cifar_cnn")


def _machine(m: Machine, **changes: object) -> Machine:
    return Machine(**{**m.__dict__, **changes}).with_fingerprint()


def bench(env: str | None, value: float, *, machine: Machine = GPU_BOX, created: str = "2025-01-01T00:00:00Z",
          name: str = "resnet50", stddev: float | None = None, repeats: int = 10, verdict: str = "pass") -> Record:
    metrics = {} if verdict != "pass" else {
        "throughput": Metric(value=value, unit="img/s", repeats=repeats, stddev=stddev if stddev else value * 0.02)}
    return Record(kind="bench", name=name, env_id=env, machine=machine.with_fingerprint(), software=SW,
                  verdict=verdict, wall_time_s=1.0, metrics=metrics, created=created)  # type: ignore[arg-type]


def task(env: str | None, accuracy: float | None, *, machine: Machine = GPU_BOX, created: str = "2025-01-01T00:00:00Z",
         verdict: str | None = None, warnings: tuple[str, ...] = ()) -> Record:
    metrics, gates = {}, ()
    if accuracy is not None:
        metrics = {"accuracy": Metric(value=accuracy, unit="")}
        gates = (Gate.check("accuracy", ">=", 0.9, accuracy),)
    v = verdict or ("pass" if all(g.passed for g in gates) else "fail")
    return Record(kind="task", name="cifar_cnn", env_id=env, machine=machine.with_fingerprint(), software=SW,
                  verdict=v, wall_time_s=5.0, metrics=metrics, gates=gates, created=created,  # type: ignore[arg-type]
                  warnings=warnings)


def _written(tmp_path: Path, records: list[Record], sub: str = "results") -> Path:
    d = tmp_path / sub
    for r in records:
        write_record(r, d)
    return d


def test_columns_are_grouped_by_machine_and_machines_are_never_mixed(tmp_path: Path) -> None:
    d = _written(tmp_path, [bench("cuda118", 2600), bench("cuda121", 2700), bench("cpu", 90, machine=CPU_BOX),
                            bench("cuda118", 1200, machine=_machine(GPU_BOX, gpu_name="NVIDIA A100", driver="535"))])
    records, problems = load_records([d])
    report = build_report(records, problems)
    assert not problems
    assert [g.envs for g in report.groups] == [("cuda118",), ("cuda118", "cuda121"), ("cpu",)]
    a100, h100, cpu = report.groups
    assert "A100" in a100.description and "H100" in h100.description and "no GPU" in cpu.description
    assert report.cell(THROUGHPUT, h100, "cuda118").sample.mean == 2600  # type: ignore[union-attr]
    assert report.cell(THROUGHPUT, a100, "cuda118").sample.mean == 1200  # type: ignore[union-attr]
    assert any("3 machines" in n and "never compared" in n for n in report.notes)


def test_one_machine_gets_no_mixed_machines_note() -> None:
    report = build_report([bench("cuda118", 1.0), bench("cuda121", 2.0)])
    assert len(report.groups) == 1
    assert not report.notes


def test_several_runs_show_the_mean_with_the_count_and_the_latest_verdict() -> None:
    report = build_report([
        bench("cuda118", 100, created="2025-01-01T00:00:01Z"),
        bench("cuda118", 110, created="2025-01-01T00:00:02Z"),
        bench("cuda118", 120, created="2025-01-01T00:00:03Z"),
        task("cuda118", 0.95, created="2025-01-01T00:00:01Z"),
        task("cuda118", 0.96, created="2025-01-01T00:00:02Z"),
        task("cuda118", 0.50, created="2025-01-01T00:00:03Z"),  # the latest run fails its gate
    ])
    g = report.groups[0]
    tp = report.cell(THROUGHPUT, g, "cuda118")
    assert tp.sample is not None
    assert (tp.sample.mean, tp.sample.n, tp.sample.spread) == (110, 3, pytest.approx(10.0))
    verdict = report.cell(CNN_VERDICT, g, "cuda118")
    assert (verdict.verdict, verdict.passed_runs, verdict.runs, verdict.status) == ("fail", 2, 3, "fail")
    assert "accuracy >= 0.9" in (verdict.note or "")
    acc = report.cell(ACCURACY, g, "cuda118")
    assert acc.gate is not None and not acc.gate.passed and acc.status == "fail"
    assert (acc.passed_runs, acc.gated_runs) == (2, 3)


def test_missing_cells_say_why() -> None:
    cpu = _machine(GPU_BOX, accelerator="cpu", gpu_name=None, gpu_count=0, driver=None, gpu_memory_gb=None)
    report = build_report([
        bench("cuda118", 2600), task("cuda118", 0.95),
        bench("cuda121", 0, verdict="error"),
        task("cuda121", None, verdict="error", warnings=("RuntimeError: CUDA out of memory",)),
        task("rocm", 0.42),
        bench(None, 0, machine=cpu, verdict="skip"),
    ])
    gpu = report.groups[0]
    assert gpu.envs == ("cuda118", "cuda121", "rocm")
    assert report.cell(THROUGHPUT, gpu, "rocm").missing == "not run"
    assert report.cell(THROUGHPUT, gpu, "cuda121").missing == "error"
    assert report.cell(ACCURACY, gpu, "cuda121").missing == "error: RuntimeError: CUDA out of memory"
    assert report.cell(ACCURACY, gpu, "rocm").sample is not None  # a failing gate still shows its value
    host = report.groups[1]
    assert host.envs == (HOST,)
    assert report.cell(RowKey(kind="bench", name="resnet50"), host, HOST).note == "no GPU"


def test_the_reason_comes_from_the_warning_that_carries_the_verdict() -> None:
    warnings = ("no expected torch version: version not checked",
                "FAIL: this is a CUDA image but no GPU is visible: run with --gpus all")
    report = build_report([task("cuda118", None, verdict="fail", warnings=warnings),
                           task("cuda121", None, verdict="error", warnings=(*warnings[:1], "error: ValueError: x"))])
    g = report.groups[0]
    assert ACCURACY not in g.rows  # nothing was measured: the verdict row says why
    assert report.cell(CNN_VERDICT, g, "cuda118").note == "no GPU: " + warnings[1][len("FAIL: "):]
    assert report.cell(CNN_VERDICT, g, "cuda121").note == "error: ValueError: x"


def test_runs_in_an_older_unit_are_not_averaged_with_the_latest() -> None:
    old = bench("cuda118", 5.0, created="2025-01-01T00:00:01Z")
    old = Record(**{**old.__dict__, "metrics": {"throughput": Metric(value=5.0, unit="kimg/s")}})
    report = build_report([old, bench("cuda118", 2000.0, created="2025-01-01T00:00:02Z")])
    c = report.cell(THROUGHPUT, report.groups[0], "cuda118")
    assert c.sample is not None and (c.sample.mean, c.sample.unit, c.sample.n) == (2000.0, "img/s", 1)
    assert c.note == "runs in kimg/s left out (the latest runs are in img/s)"


def test_a_run_without_a_value_is_counted_but_not_averaged() -> None:
    report = build_report([bench("cuda118", 100, created="2025-01-01T00:00:01Z"),
                           bench("cuda118", 0, verdict="error", created="2025-01-01T00:00:02Z")])
    c = report.cell(THROUGHPUT, report.groups[0], "cuda118")
    assert c.sample is not None and c.sample.mean == 100 and c.runs == 2
    assert c.note == "1 of 2 runs had no value (latest: error)"


def _bad_files(d: Path) -> dict[str, str]:
    """Files that are not valid records, each with a word its reason must contain."""
    good = bench("cuda118", 1.0).to_dict()
    future = {**good, "schema_version": 99}
    partial = {k: v for k, v in good.items() if k not in ("metrics", "machine")}
    wrong_type = {**good, "wall_time_s": "fast"}
    files = {
        "truncated.json": (json.dumps(good)[:150], "not readable JSON"),
        "future.json": (json.dumps(future), "newer"),
        "partial.json": (json.dumps(partial), "machine: missing"),
        "wrong-type.json": (json.dumps(wrong_type), "wall_time_s"),
        "empty.json": ("", "not readable JSON"),
    }
    (d / "bench").mkdir(parents=True, exist_ok=True)
    for name, (text, _) in files.items():
        (d / "bench" / name).write_text(text)
    (d / "bench" / "latin1.json").write_bytes(b'{"schema": "torchrig.record", "name": "\xe9"}')
    # Neither a record nor a problem: other JSON beside the records (raw pytest-benchmark output) is ignored.
    (d / "bench-raw").mkdir()
    (d / "bench-raw" / "bench-1.json").write_text('{"benchmarks": []}')
    return {name: why for name, (_, why) in files.items()} | {"latin1.json": "not readable JSON"}


def test_corrupt_partial_and_future_records_are_listed_with_the_reason_and_skipped(tmp_path: Path) -> None:
    d = _written(tmp_path, [bench("cuda118", 2600), bench("cuda121", 2700)])
    expected = _bad_files(d)
    records, problems = load_records([d])
    report = build_report(records, problems)
    assert report.n_records == 2
    assert {p.path.name: p.reason for p in report.problems}.keys() == expected.keys()
    for p in report.problems:
        assert expected[p.path.name] in p.reason, (p.path.name, p.reason)

    write_report(report, tmp_path / "out", ("md", "html", "csv"))
    md = (tmp_path / "out" / "report.md").read_text()
    html = (tmp_path / "out" / "report.html").read_text()
    for name in expected:
        assert re.search(rf"`[^`]*{re.escape(name)}` \| results \| .+ \|", md), name
        assert name in html
    assert "6 file(s) skipped" in md and "newer than this torchrig understands" in md
    assert "bench-1.json" not in md
    # The good records still made the table.
    assert "2,600 img/s" in md and "2,700 img/s" in md


def test_all_four_outputs_are_written_and_agree(tmp_path: Path) -> None:
    records = [bench("cuda118", v, created=f"2025-01-01T00:00:0{i}Z") for i, v in enumerate((2600, 2650, 2550))]
    records += [bench("cuda121", 2700), task("cuda118", 0.95), task("cuda121", 0.5),
                bench("cpu", 90, machine=CPU_BOX), task("cpu", 0.93, machine=CPU_BOX)]
    report = build_report(records)
    written = write_report(report, tmp_path / "out")
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in written)
    assert names == sorted(["report.md", "report.html", "report.csv", "fleet.csv",
                            *(f"charts/machine-{x}-{g.fingerprint}.png" for x, g in zip("ab", report.groups,
                                                                                          strict=True))])
    for png in (tmp_path / "out" / "charts").iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md = (tmp_path / "out" / "report.md").read_text()
    assert "2,600 img/s" in md and "3 runs × 10" in md  # mean of three runs, with the counts
    assert "accuracy (gate >= 0.9)" in md and "✗ **0.5000**" in md

    html = (tmp_path / "out" / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "<script>" in html and 'class="sortable"' in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the page must not load anything"
    assert html.count("data:image/png;base64,") == 2  # charts embedded, not linked
    assert 'class="cell s-fail"' in html and 'class="cell s-pass"' in html

    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text())))
    by_key = {(r["machine"], r["env"], r["name"], r["metric"]): r for r in rows}
    h100 = report.groups[0].label
    r = by_key[(h100, "cuda118", "resnet50", "throughput")]
    assert (float(r["value"]), r["unit"], r["runs"], r["repeats"]) == (2600.0, "img/s", "3", "10")
    assert by_key[(h100, "cuda121", "cifar_cnn", "")]["verdict"] == "fail"
    assert len(rows) == sum(len(g.rows) * len(g.envs) for g in report.groups)


def test_formats_can_be_chosen(tmp_path: Path) -> None:
    written = write_report(build_report([bench("cuda118", 1.0)]), tmp_path, parse_formats("csv,md"))
    assert sorted(p.name for p in written) == ["fleet.csv", "report.csv", "report.md"]
    with pytest.raises(UsageError, match="md, html, csv, png"):
        parse_formats("md,pdf")


def test_the_baseline_is_compared_only_on_the_same_machine() -> None:
    other = _machine(GPU_BOX, driver="535.00")
    current = [bench("cuda118", 2000 + i, created=f"2025-01-02T00:00:0{i}Z") for i in range(3)]
    base = [bench("cuda118", 2600 + i, machine=other, created=f"2025-01-01T00:00:0{i}Z") for i in range(3)]
    report = build_report(current, baseline=(base, []))
    c = report.cell(THROUGHPUT, report.groups[0], "cuda118")
    assert c.comparison is not None and c.comparison.outcome == "not-compared"
    assert "different machine" in c.comparison.detail
    assert not report.regressions
    assert any("absent from these results" in n for n in report.notes)


def test_a_task_that_passed_in_the_baseline_and_fails_now_is_a_regression() -> None:
    report = build_report([task("cuda118", 0.5)], baseline=([task("cuda118", 0.95)], []))
    assert [(row, env) for _, row, env, _ in report.regressions] == [(CNN_VERDICT, "cuda118")]


def test_a_gate_that_fails_in_only_some_runs_is_flaky_not_a_regression() -> None:
    current = [task("cuda118", 0.5, created="2025-01-02T00:00:02Z"),
               task("cuda118", 0.95, created="2025-01-02T00:00:01Z")]
    report = build_report(current, baseline=([task("cuda118", 0.95)], []))
    assert not report.regressions
    cell = report.cell(CNN_VERDICT, report.groups[0], "cuda118")
    assert cell.comparison is not None and cell.comparison.outcome == "flaky"
    assert "1 of 2 runs pass now" in cell.comparison.detail


def test_a_single_run_is_not_judged_unless_the_value_is_identical() -> None:
    report = build_report([task("cuda118", 0.95), bench("cuda118", 100.0, stddev=None, repeats=1)],
                          baseline=([task("cuda118", 0.95), bench("cuda118", 90.0, stddev=None, repeats=1)], []))
    g = report.groups[0]
    acc, tp = report.cell(ACCURACY, g, "cuda118").comparison, report.cell(THROUGHPUT, g, "cuda118").comparison
    assert acc is not None and acc.outcome == "unchanged"
    assert tp is not None and tp.outcome == "unjudged" and tp.change == pytest.approx(1 / 9)


def test_headline_metrics_come_first() -> None:
    r = bench("cuda118", 100.0)
    r = Record(**{**r.__dict__, "metrics": {**r.metrics, "cv_pct": Metric(value=1.0, unit="%", higher_is_better=False),
                                            "a_time_s": Metric(value=1.0, unit="s", higher_is_better=False)}})
    rows = build_report([r, task("cuda118", 0.95)]).groups[0].rows
    assert [(x.name, x.metric) for x in rows] == [
        ("cifar_cnn", ""), ("cifar_cnn", "accuracy"), ("resnet50", "throughput"), ("resnet50", "a_time_s"),
        ("resnet50", "cv_pct")]


def test_format_number() -> None:
    assert [format_number(x) for x in (2616.4, 93.4123, 0.95312, 1.5e-6, 0.0, 123456.0)] == [
        "2,616", "93.41", "0.9531", "1.500e-06", "0", "123,456"]
