"""``torchrig report [DIR...] [--out DIR] [--baseline DIR] [--fail-on-regression] [--format md,html,csv,png]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchrig.cli import types
from torchrig.cli.context import settings as resolve_settings
from torchrig.errors import ConfigurationError, UsageError
from torchrig.report import (
    FORMATS,
    REGRESSION_EXIT_CODE,
    RegressionError,
    Report,
    build_report,
    check_out_dir,
    parse_formats,
    write_report,
)
from torchrig.report.charts import require_matplotlib
from torchrig.report.stats import DEFAULT_K, DEFAULT_MIN_REL_NOISE
from torchrig.results.records import LoadProblem, Record, load_records

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="merge result records into one comparison table (Markdown, HTML, CSV, PNG charts)",
        description=(
            "Read every result record under the DIRs (recursively: copy the results directories of several "
            "machines together and pass the parent), and write the comparison table. Files that are not valid "
            "records are listed and skipped."
        ),
        epilog=f"exit codes: 0 written; 2 bad arguments or no valid records; {REGRESSION_EXIT_CODE} a regression "
               "beyond noise with --fail-on-regression. See docs/report.md.",
    )
    p.add_argument("dirs", nargs="*", metavar="DIR",
                   help="results directories, searched recursively (default: $TORCHRIG_RESULTS, else results/ "
                        "beside matrix.yaml, where run-tasks and run-bench write)")
    p.add_argument("--out", metavar="DIR", type=Path, default=None,
                   help="output directory (default: report/ inside the first DIR)")
    p.add_argument("--baseline", metavar="DIR", action="append", default=None,
                   help="results to compare against (repeatable); shows the change of every metric")
    p.add_argument("--fail-on-regression", action="store_true",
                   help=f"exit {REGRESSION_EXIT_CODE} when a metric got worse beyond its noise or a task that passed "
                        "in the baseline fails (the outputs are written first)")
    p.add_argument("--format", default=",".join(FORMATS), metavar="LIST",
                   help=f"comma-separated outputs among {','.join(FORMATS)} (default: all)")
    p.add_argument("--noise-k", type=types.finite_positive, default=DEFAULT_K, metavar="K",
                   help=f"how many standard errors a change must exceed to be flagged (default: {DEFAULT_K:g})")
    p.add_argument("--min-noise", type=types.fraction, default=DEFAULT_MIN_REL_NOISE, metavar="FRACTION",
                   help=f"relative noise floor, e.g. 0.005 = 0.5%% (default: {DEFAULT_MIN_REL_NOISE:g})")
    p.set_defaults(func=_report)


def _log(msg: str) -> None:
    print(f"report: {msg}", file=sys.stderr, flush=True)


def _load(dirs: list[str], what: str) -> tuple[list[Record], list[LoadProblem]]:
    for d in dirs:
        if not Path(d).is_dir():
            raise UsageError(
                f"{what} directory {d!r} does not exist: pass the directory the records were written to "
                "(by default $TORCHRIG_RESULTS, else results/ beside matrix.yaml; `nox -s tasks-cpu` or "
                "`nox -s bench` write there)"
            )
    records, problems = load_records(dirs)
    _log(f"{what}: {len(records)} records from {', '.join(dirs)}"
         + (f", {len(problems)} file(s) skipped" if problems else ""))
    for p in problems:
        _log(f"  skipped {p.path}: {p.reason}")
    return records, problems


def _log_fleet(report: Report) -> None:
    fleet = report.fleet
    if len(fleet.nodes) < 2:
        return
    _log(f"fleet: {len(fleet.nodes)} nodes, {len(fleet.passed)} passed, {len(fleet.outliers)} outlier finding(s)")
    for o in fleet.outliers:
        _log(f"  {o.node} ({o.group}): {o.figure}")


def _report(args: argparse.Namespace) -> int:
    if not args.dirs:  # the one default, shared with run-tasks and run-bench
        args.dirs = [str(resolve_settings(args).results_dir)]
    formats = parse_formats(args.format)
    if args.noise_k <= 0 or not 0 <= args.min_noise < 1:
        raise UsageError("--noise-k must be > 0 and --min-noise between 0 and 1 (a fraction, 0.005 = 0.5%)")
    if args.fail_on_regression and not args.baseline:
        raise UsageError("--fail-on-regression needs --baseline DIR: there is nothing to regress against")
    if "png" in formats:
        require_matplotlib()  # before reading anything: a missing dependency is cheap to report early

    out = args.out if args.out is not None else Path(args.dirs[0]) / "report"
    check_out_dir(out, create=False)  # a place the report cannot go is said before any record is read
    records, problems = _load(args.dirs, "results")
    baseline = _load(args.baseline, "baseline") if args.baseline else None
    if not records and not problems:
        raise UsageError(f"no result records under {', '.join(args.dirs)}: run the tasks or benchmarks first "
                         "(e.g. `nox -s tasks-cpu`), or point at the directory holding their records")

    report = build_report(records, problems, baseline=baseline, k=args.noise_k, min_rel_noise=args.min_noise)
    written = write_report(report, out, formats)
    for path in written:
        print(path)
    if "png" in formats and not any(p.suffix == ".png" for p in written):
        _log("no benchmark records: no charts")

    _log_fleet(report)
    if not records:
        raise ConfigurationError([f"{p.path}: {p.reason}" for p in problems],
                                 source=f"no valid records under {', '.join(args.dirs)}")
    regs = report.regressions
    if baseline is not None:
        _log(f"{len(regs)} regression(s) beyond noise against the baseline")
        for g, row, env, cell in regs:
            detail = cell.comparison.detail if cell.comparison else ""
            change = cell.comparison.change if cell.comparison else None
            _log(f"  {g.label} · {env} · {row.label}: {'' if change is None else f'{change:+.1%}, '}{detail}")
    if regs and args.fail_on_regression:
        raise RegressionError(f"{len(regs)} regression(s) beyond run-to-run noise against the baseline "
                              f"(listed above and in {out / 'report.md'})")
    return 0
