"""``torchrig report`` as a user runs it: outputs, exit codes, and messages that say what to do."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.unit.test_report import bench, task
from torchrig.__main__ import main
from torchrig.report import REGRESSION_EXIT_CODE
from torchrig.results.records import write_record


def _runs(d: Path, env: str, values: list[float], *, day: int) -> None:
    for i, v in enumerate(values):
        write_record(bench(env, v, created=f"2025-01-0{day}T00:00:{i:02d}Z", stddev=v * 0.04, repeats=20), d)
        write_record(task(env, 0.95, created=f"2025-01-0{day}T00:00:{i:02d}Z"), d)


# Five runs a side with ~2-3% run-to-run noise, as a GPU benchmark shows between invocations.
BASE = [2600.0, 2655.0, 2540.0, 2610.0, 2580.0]
NOISE = [2570.0, 2630.0, 2615.0, 2550.0, 2660.0]  # another A/A draw: no code change


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    d = {k: tmp_path / k for k in ("base", "noise", "slow")}
    _runs(d["base"], "cuda118", BASE, day=1)
    _runs(d["noise"], "cuda118", NOISE, day=2)
    _runs(d["slow"], "cuda118", [v * 0.8 for v in NOISE], day=2)  # the injected 20% regression
    return d


def test_report_writes_all_outputs_into_report_dir_by_default(dirs: dict[str, Path],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(dirs["base"])]) == 0
    out = dirs["base"] / "report"
    assert {p.name for p in out.iterdir()} == {"report.md", "report.html", "report.csv", "fleet.csv", "charts"}
    printed = capsys.readouterr()
    assert str(out / "report.md") in printed.out
    assert "results: 10 records" in printed.err


def test_without_dir_the_report_reads_torchrig_results(dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHRIG_RESULTS", str(dirs["base"]))
    assert main(["report", "--format", "md"]) == 0
    assert "2,597 img/s" in (dirs["base"] / "report" / "report.md").read_text()  # the mean of BASE


def test_without_dir_the_report_reads_results_beside_matrix_yaml_from_any_subfolder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # run-tasks writes <matrix root>/results/<env>: the report, run from deeper in the project, must read there.
    project = tmp_path / "project"
    (project / "docs" / "deep").mkdir(parents=True)
    (project / "matrix.yaml").write_text("environments: []\n")
    _runs(project / "results" / "cuda118", "cuda118", BASE[:2], day=1)
    monkeypatch.delenv("TORCHRIG_RESULTS", raising=False)
    monkeypatch.delenv("TORCHRIG_MATRIX", raising=False)
    monkeypatch.chdir(project / "docs" / "deep")
    assert main(["report", "--format", "md"]) == 0
    assert "results: 4 records" in capsys.readouterr().err
    assert "2,628 img/s" in (project / "results" / "report" / "report.md").read_text()  # the mean of BASE[:2]
    assert not (project / "docs" / "deep" / "results").exists()


def test_run_to_run_noise_is_not_a_regression(dirs: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["report", str(dirs["noise"]), "--baseline", str(dirs["base"]), "--out", str(tmp_path / "o"),
               "--fail-on-regression", "--format", "md"])
    assert rc == 0
    assert "0 regression(s)" in capsys.readouterr().err
    assert "**No regressions**" in (tmp_path / "o" / "report.md").read_text()


def test_an_injected_20_percent_regression_is_flagged_and_fails_when_asked(
        dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["report", str(dirs["slow"]), "--baseline", str(dirs["base"]), "--out", str(tmp_path / "o")]
    assert main(args) == 0  # shown, but not fatal unless asked
    assert main([*args, "--fail-on-regression"]) == REGRESSION_EXIT_CODE == 10
    err = capsys.readouterr().err
    assert "1 regression(s) beyond run-to-run noise" in err
    assert "cuda118 · resnet50 · throughput: -" in err
    md = (tmp_path / "o" / "report.md").read_text()  # written before failing
    assert "1 regression beyond noise" in md and "REGRESSION" in md


def test_only_bad_records_exit_2_after_listing_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r" / "task").mkdir(parents=True)
    (tmp_path / "r" / "task" / "x.json").write_text('{"schema": "torchrig.record", "schema_version": 7}')
    assert main(["report", str(tmp_path / "r"), "--format", "md"]) == 2
    err = capsys.readouterr().err
    assert "no valid records" in err and "upgrade torchrig" in err
    assert "x.json" in (tmp_path / "r" / "report" / "report.md").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["report", "/nonexistent/results"], "does not exist"),
    (["report", "{empty}"], "no result records"),
    (["report", "{empty}", "--fail-on-regression"], "needs --baseline"),
    (["report", "{empty}", "--format", "md,docx"], "--format takes"),
    (["report", "{empty}", "--noise-k", "0"], "--noise-k: '0': must be a finite number above 0"),
])
def test_usage_errors_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     args: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    assert main([a.replace("{empty}", str(tmp_path / "empty")) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_missing_matplotlib_is_a_clear_message_and_other_formats_still_work(
        dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(["report", str(dirs["base"])]) == 2
    err = capsys.readouterr().err
    assert "pip install 'torchrig[report]'" in err and "--format md,html,csv" in err
    assert main(["report", str(dirs["base"]), "--format", "md,html,csv"]) == 0
