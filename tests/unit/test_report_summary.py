"""The report answers first: the Summary (one row per environment x machine: every gate's verdict with its reason,
the headline figures, the warnings that change how they read), each run counted once, a NaN baseline named and
left out, skipped parts shown with their reason, and an output location torchrig can write."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchrig.errors import UsageError
from torchrig.report import build_report, write_report
from torchrig.report.summary import CV_WARN_PCT
from torchrig.results.records import Gate, Machine, Metric, Record, Software, load_records, write_record

CPU = Machine(hostname="ci-1", os="Linux 6.1", cpu="AMD EPYC 7763", cpu_count=2, accelerator="cpu").with_fingerprint()
GPU = Machine(hostname="gpu-1", os="Linux 6.1", cpu="Xeon", cpu_count=32, accelerator="cuda",
              gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1, driver="580.65.06").with_fingerprint()
SW = Software(python="3.12.3", torch="2.14.1")


def _bench(name: str, env: str, metrics: dict[str, Metric], *, machine: Machine = GPU, verdict: str = "pass",
           warnings: tuple[str, ...] = (), config: dict[str, object] | None = None) -> Record:
    return Record(kind="bench", name=name, env_id=env, machine=machine, software=SW, verdict=verdict,  # type: ignore[arg-type]
                  wall_time_s=1.0, metrics=metrics, warnings=warnings, config=config or {})


def _task(name: str, env: str, verdict: str, *, machine: Machine = GPU, warnings: tuple[str, ...] = (),
          resolved: dict[str, object] | None = None, metrics: dict[str, Metric] | None = None) -> Record:
    gates = (Gate.check("accuracy", ">=", 50, 80 if verdict == "pass" else 10),) if verdict in ("pass", "fail") else ()
    return Record(kind="task", name=name, env_id=env, machine=machine, software=SW, verdict=verdict,  # type: ignore[arg-type]
                  wall_time_s=1.0, metrics=metrics or {}, gates=gates, warnings=warnings,
                  config={"resolved": resolved or {}})


def _m(v: float, unit: str, **kw: object) -> Metric:
    return Metric(value=v, unit=unit, **kw)  # type: ignore[arg-type]


GPU_RUN = [
    _task("smoke", "cuda130", "pass"),
    _task("cifar_cnn", "cuda130", "fail", warnings=("FAIL: accuracy 10 % < 50 %",), resolved={"data": "synthetic"}),
    _bench("gemm-bf16-n8192", "cuda130", {"tflops": _m(700.0, "TFLOP/s"), "pct_of_spec_peak": _m(70.4, "%")}),
    _bench("gemm-fp32-n8192", "cuda130", {"tflops": _m(50.0, "TFLOP/s")}),
    _bench("train-resnet50-b256-224px-amp_bf16", "cuda130",
           {"throughput": _m(2700.0, "img/s"), "mfu_pct": _m(41.0, "%"), "cv_pct": _m(1.0, "%")}),
    _bench("train-bert-b32-seq128-amp_bf16", "cuda130",
           {"throughput": _m(800.0, "seq/s"), "cv_pct": _m(CV_WARN_PCT * 25, "%")}),
    _bench("gemm-tf32-n8192", "cuda130", {}, verdict="skip", warnings=("TF32 needs compute capability >= 8.0",),
           config={"skip_reason": "TF32 needs compute capability >= 8.0"}),
]


def test_the_summary_has_one_row_per_environment_and_machine_with_verdicts_figures_and_warnings() -> None:
    cpu_run = [_task("smoke", "cuda130", "pass", machine=CPU,
                     warnings=("machine was busy: load average 3.9 on 2 CPUs",)),
               _task("smoke", "cpu", "pass", machine=CPU)]
    report = build_report(GPU_RUN + cpu_run)
    rows = {(r.machine, r.env): r for r in report.summary}
    assert set(rows) == {("Machine A", "cuda130"), ("Machine B", "cpu"), ("Machine B", "cuda130")}
    gpu = rows[("Machine A", "cuda130")]
    verdicts = {v.name: v for v in gpu.verdicts}
    assert verdicts["cifar_cnn"].verdict == "fail" and "accuracy" in verdicts["cifar_cnn"].reason
    assert verdicts["gemm-tf32-n8192"].verdict == "skip"
    assert "TF32 needs compute capability" in verdicts["gemm-tf32-n8192"].reason
    figures = {f.label: f for f in gpu.figures}
    assert figures["GEMM ceiling"].value == 700.0 and "70.4 % of spec peak" in figures["GEMM ceiling"].detail
    assert figures["ResNet-50 training"].value == 2700.0 and "41.0 % MFU" in figures["ResNet-50 training"].detail
    assert figures["BERT training"].unit == "seq/s"
    warns = " | ".join(gpu.warnings)
    assert "CV above" in warns and "BERT training" in warns and "ResNet-50" not in warns.split("CV above")[1]
    assert "synthetic data" in warns and "cifar_cnn" in warns
    assert "skipped" in warns
    cpu_gpu_env = " | ".join(rows[("Machine B", "cuda130")].warnings)
    assert "GPU environment ran on the CPU" in cpu_gpu_env and "busy machine" in cpu_gpu_env
    assert rows[("Machine B", "cpu")].warnings == ()


def test_markdown_and_html_open_with_the_summary(tmp_path: Path) -> None:
    report = build_report(GPU_RUN)
    md, html = (p.read_text() for p in write_report(report, tmp_path, ("md", "html")))
    assert md.index("## Summary") < md.index("## Machine A")
    assert "GEMM ceiling: 700.0 TFLOP/s" in md and "✓ 4 benchmarks" in md and "✗ cifar_cnn" in md
    assert "– gemm-tf32-n8192 (skipped: TF32" in md
    assert html.index('id="summary"') < html.index("<h2>Machine A")
    assert "1 of 4 failed" in html or "1 of" in html


def test_a_results_folder_copied_twice_is_counted_once(tmp_path: Path) -> None:
    d = tmp_path / "results"
    for r in GPU_RUN:
        write_record(r, d / "a")
        write_record(r, d / "b")  # the same records (same run id, same content) in a second copy
    records, problems = load_records([d])
    assert len(records) == 2 * len(GPU_RUN) and not problems
    report = build_report(records, problems)
    assert report.n_records == len(GPU_RUN)
    assert any("duplicate record" in n for n in report.notes)
    once = build_report(GPU_RUN)
    assert report.cells == once.cells


@given(st.lists(st.integers(0, len(GPU_RUN) - 1), max_size=20))
def test_duplicates_never_change_a_figure(extra: list[int]) -> None:
    """Any number of exact copies of any records: every cell and the summary equal the report without them."""
    once = build_report(GPU_RUN)
    more = build_report(GPU_RUN + [GPU_RUN[i] for i in extra])
    assert more.cells == once.cells and more.summary == once.summary and more.n_records == len(GPU_RUN)


def test_a_record_with_the_same_run_id_but_other_content_is_kept() -> None:
    r = GPU_RUN[2]
    changed = dataclasses.replace(r, metrics={"tflops": _m(10.0, "TFLOP/s")})
    report = build_report([r, changed])
    assert report.n_records == 2


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_baseline_with_a_non_finite_figure_is_named_and_left_out(bad: float) -> None:
    good = GPU_RUN[2]
    broken = dataclasses.replace(good, metrics={"tflops": Metric(value=bad, unit="TFLOP/s")})
    report = build_report([good], baseline=([broken], []))
    assert any(p.source == "baseline" and "not finite" in p.reason for p in report.problems)
    assert report.n_baseline_records == 0
    assert not report.regressions


def test_a_skipped_part_of_a_passing_task_shows_its_reason_not_not_measured() -> None:
    ran = _task("export", "cpu", "pass", metrics={"cnn_legacy_size_mb": _m(1.0, "MB")},
                warnings=("skip cnn/dynamo: torch.onnx.export(dynamo=True) needs onnxscript",))
    other = dataclasses.replace(ran, metrics={"cnn_legacy_size_mb": _m(1.0, "MB"), "cnn_dynamo_size_mb":
                                              _m(1.0, "MB")}, env_id="cuda130")
    report = build_report([ran, other])
    g = report.groups[0]
    row = next(r for r in g.rows if r.metric == "cnn_dynamo_size_mb")
    cell = report.cell(row, g, "cpu")
    assert cell.missing is not None and cell.missing.startswith("skipped: torch.onnx.export(dynamo=True)")


@pytest.mark.parametrize("where", ["file", "proc", "dev"])
def test_the_output_location_must_be_a_directory_torchrig_can_write(tmp_path: Path, where: str) -> None:
    out = {"file": tmp_path / "a-file", "proc": Path("/proc/torchrig-report"), "dev": Path("/dev/null/report")}[where]
    if where == "file":
        out.write_text("x")
    with pytest.raises(UsageError, match="--out"):
        write_report(build_report(GPU_RUN), out, ("md",))


@pytest.mark.parametrize("where", ["file", "under-file", "proc"])
def test_the_cli_refuses_an_unwritable_out_before_reading_a_record(tmp_path: Path, where: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from torchrig.__main__ import main

    results = tmp_path / "results"
    for r in GPU_RUN:
        write_record(r, results)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = {"file": blocker, "under-file": blocker / "sub", "proc": Path("/proc/self/report")}[where]
    assert main(["report", str(results), "--out", str(out), "--format", "md"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "records" not in err.split("--out")[0]
    assert blocker.read_text() == "x"
