"""The report over generated runs (issue 17, class 8): any finite figures (0, subnormal, near the float limit,
negative), any number of exact copies of any run, NaN and infinite figures in the baseline, and any output target.

Properties: the report builds and every format renders without an exception; copies never change a figure and are
named once; a non-finite baseline record is named and never compared; a finite figure is never judged against an
overflowing difference; a target that is not a writable directory is exit 2 before any record is read, and the
inputs are left as they were.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchrig.__main__ import main
from torchrig.report import build_report, write_report
from torchrig.results.records import Metric, Record, write_record

from .test_report_summary import CPU, GPU, _bench

_finite = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([0.0, 5e-324, 1e-300, 1e300, 1.7976931348623157e308, -1.7976931348623157e308]))
_stddev = st.none() | st.floats(min_value=0, allow_nan=False, allow_infinity=False)
_NAMES = ("gemm-fp32-n128", "copy-4mib", "train-cifar-b4")


@st.composite
def runs(draw: st.DrawFn, *, side: str) -> list[Record]:
    """1-3 runs of 1-3 benchmarks on one or two machines, each a fresh run id."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        for name in draw(st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3, unique=True)):
            metric = Metric(value=draw(_finite), unit="x/s", higher_is_better=draw(st.booleans()),
                            repeats=draw(st.integers(1, 20)), stddev=draw(_stddev))
            out.append(_bench(name, "cpu", {"throughput": metric}, machine=draw(st.sampled_from([CPU, GPU]))))
    return out


_SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(current=runs(side="current"), baseline=runs(side="baseline"), copies=st.lists(st.integers(0, 50), max_size=6))
def test_any_finite_figures_build_and_render_in_every_text_format(tmp_path: Path, current: list[Record],
                                                                 baseline: list[Record], copies: list[int]) -> None:
    dup = [current[i % len(current)] for i in copies]
    report = build_report(current + dup, baseline=(baseline, []))
    assert report.n_records == len(current)
    assert (not dup) or any("duplicate record" in n for n in report.notes)
    for _, _, _, cell in report.regressions:  # judged only where the figures and their difference are finite
        assert cell.comparison and cell.comparison.baseline is not None and cell.sample is not None
        assert math.isfinite(cell.sample.mean - cell.comparison.baseline)
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"  # one tmp_path for all examples
    written = write_report(report, out, ("md", "csv", "html"))
    assert {p.name for p in written} == {"report.md", "report.csv", "fleet.csv", "report.html"}
    for p in written:
        assert p.stat().st_size > 0


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


@pytest.mark.skipif(not _has_matplotlib(), reason="the charts need matplotlib: pip install 'torchrig[report]'")
@settings(_SETTINGS, max_examples=15)  # a chart is ~0.3 s to draw
@given(current=runs(side="current"), baseline=runs(side="baseline"))
def test_any_finite_figures_draw_as_charts(tmp_path: Path, current: list[Record], baseline: list[Record]) -> None:
    report = build_report(current, baseline=(baseline, []))
    written = write_report(report, tmp_path / f"out{len(list(tmp_path.iterdir()))}", ("png",))
    assert written and all(p.suffix == ".png" and p.stat().st_size > 0 for p in written)


@given(runs(side="current"), st.lists(st.sampled_from([math.nan, math.inf, -math.inf]), min_size=1, max_size=4))
def test_non_finite_baseline_records_are_named_and_never_compared(current: list[Record], bad: list[float]) -> None:
    good = list(current)
    broken = [dataclasses.replace(current[i % len(current)], run_id=f"broken{i}",
                                  metrics={"throughput": Metric(value=v, unit="x/s")}) for i, v in enumerate(bad)]
    report = build_report(current, baseline=(good + broken, []))
    named = [p for p in report.problems if p.source == "baseline" and "not finite" in p.reason]
    assert len(named) == len(broken)
    assert report.n_baseline_records == len(good)
    with_broken_only = build_report(current, baseline=(broken, []))
    assert not with_broken_only.regressions and with_broken_only.n_baseline_records == 0


_TARGETS = ("file", "under-file", "proc", "dev", "sys", "fifo", "devnull", "loop", "under-loop", "long")


@settings(_SETTINGS, max_examples=len(_TARGETS) * 3)
@given(where=st.sampled_from(_TARGETS), formats=st.sampled_from(["md", "csv", "html", "md,csv", "md,csv,html"]))
def test_an_out_that_is_not_a_writable_directory_is_exit_2_and_touches_nothing(
        tmp_path_factory: pytest.TempPathFactory, where: str, formats: str) -> None:
    import io
    import os
    from contextlib import redirect_stderr

    tmp = tmp_path_factory.mktemp("out")
    results = tmp / "results"
    for r in [_bench(n, "cpu", {"throughput": Metric(value=1.0, unit="x/s")}) for n in _NAMES]:
        write_record(r, results)
    before = sorted((p.name, p.read_bytes()) for p in results.rglob("*") if p.is_file())
    blocker = tmp / "blocker"
    blocker.write_text("x")
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    (tmp / "loop").symlink_to(tmp / "loop")
    out = {"file": blocker, "under-file": blocker / "sub" / "deeper", "proc": Path("/proc/self/torchrig"),
           "dev": Path("/dev/torchrig-report"), "sys": Path("/sys/torchrig-report"), "fifo": fifo,
           "devnull": Path(os.devnull) / "report", "loop": tmp / "loop", "under-loop": tmp / "loop" / "sub",
           "long": tmp / ("x" * 300) / "report"}[where]
    err = io.StringIO()
    with redirect_stderr(err):
        rc = main(["report", str(results), "--out", str(out), "--format", formats])
    assert rc == 2, err.getvalue()
    assert "--out" in err.getvalue() and "Traceback" not in err.getvalue()
    assert blocker.read_text() == "x"
    assert sorted((p.name, p.read_bytes()) for p in results.rglob("*") if p.is_file()) == before


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EDQUOT", "EROFS", "EIO"])
def test_a_write_that_fails_is_a_message_and_the_earlier_report_stays_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], errno_name: str) -> None:
    import errno
    import os

    results, out = tmp_path / "results", tmp_path / "out"
    write_record(_bench("gemm-fp32-n128", "cpu", {"throughput": Metric(value=1.0, unit="x/s")}), results)
    assert main(["report", str(results), "--out", str(out), "--format", "md,csv"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    def full(fd: int) -> None:  # the temporary file beside the output has "half a report" in it, then the disk fills
        code = getattr(errno, errno_name)
        raise OSError(code, os.strerror(code), str(out / "report.md"))

    monkeypatch.setattr(os, "fsync", full)
    assert main(["report", str(results), "--out", str(out), "--format", "md,csv"]) == 1
    err = capsys.readouterr().err
    code = getattr(errno, errno_name)
    assert os.strerror(code) in err and "choose another --out" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no .part left, the old files whole
