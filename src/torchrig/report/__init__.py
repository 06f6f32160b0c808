"""Result records -> one comparison table (Markdown, HTML, CSV) and charts, optionally against a baseline.

Rows are what was measured: a task's verdict and its metrics (gated ones coloured by their gate), and each
benchmark metric. Columns are environments (``Record.env_id``; ``host`` for runs outside an image), grouped by
machine fingerprint (``Record.machine.fingerprint``: accelerator, GPU model/count, driver, CPU): records from
different machines land in separate tables and are never compared with each other.

Several records for one cell (the same row, environment and machine) are runs of the same thing:

* a metric cell shows the **mean over the runs**, the spread (run-to-run standard deviation where there are
  several runs, else the run's own spread over its repeats), the number of runs and of repeats per run;
* a verdict cell shows the **latest run's** verdict (by ``created``) and how many of the runs passed.

A missing cell says why: ``not run`` (no record), ``no GPU``, ``skipped: ...``, ``failed: ...``, ``error: ...``.
Files that are not valid records (corrupt, partial, a newer schema) are listed in the report and skipped.

With a baseline, each metric cell is compared with the baseline's runs of the same row, environment and machine
under the noise rule of :mod:`torchrig.report.stats`; a task that passed in the baseline and fails in every current
run is a regression too (when only some runs fail it is shown as flaky).
"""

from __future__ import annotations

import math
import statistics
import string
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from torchrig.errors import FatalError, UsageError
from torchrig.report.stats import DEFAULT_K, DEFAULT_MIN_REL_NOISE, Sample, judge
from torchrig.results.records import Gate, LoadProblem, Machine, Record, utc_now

__all__ = [
    "FORMATS",
    "HOST",
    "REGRESSION_EXIT_CODE",
    "Cell",
    "ColumnKey",
    "Comparison",
    "MachineGroup",
    "MetricStats",
    "Problem",
    "RegressionError",
    "Report",
    "RowKey",
    "build_report",
    "format_number",
    "parse_formats",
    "write_report",
]

HOST = "host"  # the column of records with no env_id: runs on the host, outside any image
FORMATS: tuple[str, ...] = ("md", "html", "csv", "png")
REGRESSION_EXIT_CODE = 10

Outcome = Literal["regression", "improvement", "within-noise", "unjudged", "unchanged", "flaky", "not-compared"]


class RegressionError(FatalError):
    """``--fail-on-regression`` and at least one metric got worse beyond its noise (or a gate started failing)."""

    return_code = REGRESSION_EXIT_CODE


# --------------------------------------------------------------------------------------------------- model


@dataclass(frozen=True, kw_only=True, order=True)
class RowKey:
    """One row: a task or benchmark ``name`` and one of its metrics (``metric == ""``: the verdict row)."""

    kind: str
    name: str
    metric: str = ""

    @property
    def is_verdict(self) -> bool:
        return not self.metric

    @property
    def label(self) -> str:
        return f"{self.name} · {self.metric or 'verdict'}"


@dataclass(frozen=True, kw_only=True, order=True)
class ColumnKey:
    fingerprint: str
    env: str


@dataclass(frozen=True, kw_only=True)
class MetricStats:
    """One metric over the runs of a cell: one value (and within-run spread) per run."""

    unit: str
    higher_is_better: bool
    values: tuple[float, ...]
    stddevs: tuple[float | None, ...]
    repeats: tuple[int, ...]

    @property
    def runs(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / len(self.values)

    @property
    def spread(self) -> float | None:
        """Run-to-run standard deviation with several runs; else the single run's own stddev (or None)."""
        if len(self.values) >= 2:
            return statistics.stdev(self.values)
        return self.stddevs[0]

    @property
    def repeats_text(self) -> str:
        lo, hi = min(self.repeats), max(self.repeats)
        return str(lo) if lo == hi else f"{lo}–{hi}"

    def sample(self) -> Sample:
        return Sample(values=self.values, stddevs=self.stddevs, repeats=self.repeats)


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """A cell against the baseline: ``change`` relative to the baseline mean; ``detail`` explains the call."""

    outcome: Outcome
    detail: str
    baseline: float | None = None
    change: float | None = None
    threshold: float | None = None
    baseline_text: str | None = None  # for verdict rows: the baseline's latest verdict


@dataclass(frozen=True, kw_only=True)
class Cell:
    """What one column says about one row.

    ``stats`` is set for metric rows that have a value; ``verdict`` (the latest run's) for verdict rows;
    ``missing`` says why there is nothing to show; ``gate`` is the latest run's gate on this metric.
    """

    runs: int = 0
    stats: MetricStats | None = None
    verdict: str | None = None
    passed_runs: int = 0
    gated_runs: int = 0
    gate: Gate | None = None
    missing: str | None = None
    note: str | None = None
    comparison: Comparison | None = None

    @property
    def status(self) -> Literal["pass", "fail", "skip", "value", "missing"]:
        """How the cell is coloured: gate/verdict outcome, a plain value, or missing."""
        if self.verdict is not None:
            if self.verdict == "pass":
                return "pass"
            return "skip" if self.verdict == "skip" else "fail"
        if self.stats is None:
            return "missing"
        if self.gate is not None:
            return "pass" if self.gate.passed else "fail"
        return "value"


@dataclass(frozen=True, kw_only=True)
class MachineGroup:
    """The columns that ran on machines with one fingerprint: one table of comparable numbers."""

    fingerprint: str
    label: str  # "Machine A"
    description: str  # GPU, driver, CPU, OS
    hostnames: tuple[str, ...]
    envs: tuple[str, ...]
    rows: tuple[RowKey, ...]
    software: Mapping[str, str]  # env -> "torch 2.0.1" (all versions seen, when they differ)

    def column(self, env: str) -> ColumnKey:
        return ColumnKey(fingerprint=self.fingerprint, env=env)


@dataclass(frozen=True, kw_only=True)
class Problem:
    """A file that is not a usable record; ``source`` is "results" or "baseline"."""

    source: str
    path: Path
    reason: str


@dataclass(frozen=True, kw_only=True)
class Report:
    groups: tuple[MachineGroup, ...]
    cells: Mapping[tuple[RowKey, ColumnKey], Cell]
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()
    n_records: int = 0
    n_baseline_records: int | None = None  # None: no baseline given
    k: float = DEFAULT_K
    min_rel_noise: float = DEFAULT_MIN_REL_NOISE
    created: str = field(default_factory=utc_now)

    def cell(self, row: RowKey, group: MachineGroup, env: str) -> Cell:
        return self.cells.get((row, group.column(env)), Cell(missing="not run"))

    def flagged(self, outcome: Outcome = "regression") -> list[tuple[MachineGroup, RowKey, str, Cell]]:
        """Every (group, row, env, cell) whose comparison came out as ``outcome``."""
        out = []
        for g in self.groups:
            for row in g.rows:
                for env in g.envs:
                    c = self.cell(row, g, env)
                    if c.comparison is not None and c.comparison.outcome == outcome:
                        out.append((g, row, env, c))
        return out

    @property
    def regressions(self) -> list[tuple[MachineGroup, RowKey, str, Cell]]:
        return self.flagged("regression")


# ------------------------------------------------------------------------------------------------ building


def _env(r: Record) -> str:
    return r.env_id or HOST


def _describe(m: Machine) -> str:
    parts = []
    if m.gpu_name:
        parts.append(f"{m.gpu_count}× {m.gpu_name}" + (f" ({m.gpu_memory_gb:g} GB)" if m.gpu_memory_gb else ""))
        parts.append(f"{m.accelerator.upper()} driver {m.driver or 'unknown'}")
    else:
        parts.append("no GPU" if m.accelerator == "cpu" else f"{m.accelerator} (GPU unknown)")
    parts.append(f"{m.cpu} ({m.cpu_count} CPUs)")
    parts.append(m.os)
    return " · ".join(parts)


def _own_words(r: Record) -> str:
    """The record's own explanation: a ``skip_reason``-like config entry, else the warning that carries its
    verdict (the tasks write ``FAIL: ...`` / ``error: ...``), else its first warning."""
    for key in ("skip_reason", "reason", "error"):
        v = r.config.get(key)
        if isinstance(v, str) and v:
            return v
    texts = [w for w in r.warnings if w]
    prefix = {"fail": "FAIL:", "error": "error:"}.get(r.verdict)
    if prefix:
        marked = [w[len(prefix):].strip() for w in texts if w.startswith(prefix)]
        if marked:
            return marked[0]
    return texts[0] if texts else ""


def _skip_reason(r: Record) -> str:
    """Why a record has no value (or failed), in a few words: no GPU, skipped, failed, error."""
    text = _own_words(r)
    no_gpu = "no gpu" in text.lower()
    match r.verdict:
        case "skip":
            if no_gpu or (not text and r.machine.accelerator == "cpu"):
                return "no GPU" + (f": {text}" if text else "")
            return f"skipped: {text}" if text else "skipped"
        case "fail":
            if no_gpu:
                return f"no GPU: {text}"
            detail = "; ".join(_gate_text(g) for g in r.gates if not g.passed) or text
            return f"failed: {detail}" if detail else "failed"
        case "error":
            return f"error: {text}" if text else "error"
        case _:
            return "not measured"


def _gate_text(g: Gate) -> str:
    return f"{g.metric} {g.op} {g.threshold:g}"


def _latest(records: Sequence[Record]) -> Record:
    return max(records, key=lambda r: (r.created, r.run_id))


def _metric_cell(recs: Sequence[Record], metric: str) -> Cell:
    if not recs:
        return Cell(missing="not run")
    with_value = sorted((r for r in recs if metric in r.metrics), key=lambda r: (r.created, r.run_id))
    if not with_value:
        return Cell(runs=len(recs), missing=_skip_reason(_latest(recs)))
    latest = with_value[-1].metrics[metric]
    other_units = sorted({r.metrics[metric].unit for r in with_value} - {latest.unit})
    # Averaging across a unit change would mix two scales: the runs in the latest unit make the cell.
    with_value = [r for r in with_value if r.metrics[metric].unit == latest.unit]
    ms = [r.metrics[metric] for r in with_value]
    stats = MetricStats(unit=latest.unit, higher_is_better=latest.higher_is_better,
                        values=tuple(m.value for m in ms), stddevs=tuple(m.stddev for m in ms),
                        repeats=tuple(m.repeats for m in ms))
    gates = [g for r in with_value for g in r.gates if g.metric == metric]
    latest_gate = next((g for g in reversed(with_value[-1].gates) if g.metric == metric), None)
    notes = []
    without = [r for r in recs if metric not in r.metrics]
    if without:
        notes.append(f"{len(without)} of {len(recs)} runs had no value (latest: {_skip_reason(_latest(without))})")
    if other_units:
        notes.append(f"runs in {', '.join(other_units)} left out (the latest runs are in {latest.unit})")
    return Cell(runs=len(recs), stats=stats, gate=latest_gate, passed_runs=sum(g.passed for g in gates),
                gated_runs=len(gates), note="; ".join(notes) or None)


def _verdict_cell(recs: Sequence[Record]) -> Cell:
    if not recs:
        return Cell(missing="not run")
    latest = _latest(recs)
    note = None if latest.verdict == "pass" else _skip_reason(latest)
    return Cell(runs=len(recs), verdict=latest.verdict, passed_runs=sum(r.verdict == "pass" for r in recs),
                gated_runs=len(recs), note=note)


def _index(records: Iterable[Record]) -> dict[ColumnKey, dict[tuple[str, str], list[Record]]]:
    idx: dict[ColumnKey, dict[tuple[str, str], list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        idx[ColumnKey(fingerprint=r.machine.fingerprint, env=_env(r))][(r.kind, r.name)].append(r)
    return idx


def _rows(columns: Iterable[Mapping[tuple[str, str], list[Record]]]) -> tuple[RowKey, ...]:
    # (kind, name) -> metric -> is it a headline: a gated task metric, a higher-is-better benchmark metric
    metrics: dict[tuple[str, str], dict[str, bool]] = defaultdict(dict)
    for col in columns:
        for (kind, name), recs in col.items():
            seen = metrics[(kind, name)]  # a benchmark that never produced a metric still gets its row
            for r in recs:
                gated = {g.metric for g in r.gates}
                for m, v in r.metrics.items():
                    headline = m in gated if kind == "task" else v.higher_is_better
                    seen[m] = seen.get(m, False) or headline
    rows: list[RowKey] = []
    # Tasks first (is the environment correct?), then benchmarks (how fast is it?); within one, the headline
    # metrics (gated results, throughputs) before the diagnostics (times, spreads, counters).
    for kind, name in sorted(metrics, key=lambda kn: (kn[0] != "task", kn[1])):
        if kind == "task" or not metrics[(kind, name)]:
            rows.append(RowKey(kind=kind, name=name))
        order = sorted(metrics[(kind, name)].items(), key=lambda mh: (not mh[1], mh[0]))
        rows.extend(RowKey(kind=kind, name=name, metric=m) for m, _ in order)
    return tuple(rows)


def _env_order(envs: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(envs), key=lambda e: (e == HOST, e)))


def _software(recs: Iterable[Record]) -> str:
    torches = sorted({r.software.torch or "no torch" for r in recs})
    return "torch " + ", ".join(torches) if torches != ["no torch"] else "no torch"


def _compare(row: RowKey, cell: Cell, col: ColumnKey, *,
             base_idx: Mapping[ColumnKey, Mapping[tuple[str, str], list[Record]]],
             base_envs: Mapping[str, set[str]], k: float, min_rel_noise: float) -> Comparison | None:
    base_recs = base_idx.get(col, {}).get((row.kind, row.name), [])
    if not base_recs:
        others = base_envs.get(col.env, set()) - {col.fingerprint}
        if any((row.kind, row.name) in base_idx.get(ColumnKey(fingerprint=fp, env=col.env), {}) for fp in others):
            return Comparison(outcome="not-compared", detail="the baseline ran on a different machine")
        return Comparison(outcome="not-compared", detail="not in the baseline")
    if row.is_verdict:
        if cell.verdict is None:
            return None
        before = _latest(base_recs).verdict
        if before == "pass" and cell.verdict in ("fail", "error"):
            if cell.passed_runs:  # some runs still pass: a flaky gate, shown but not a regression
                return Comparison(outcome="flaky", baseline_text=before,
                                  detail=f"passed in the baseline; {cell.passed_runs} of {cell.runs} runs pass now")
            return Comparison(outcome="regression", baseline_text=before,
                              detail=f"passed in the baseline, {cell.verdict}s now"
                                     + (f" (all {cell.runs} runs)" if cell.runs > 1 else ""))
        if before in ("fail", "error") and cell.verdict == "pass":
            return Comparison(outcome="improvement", detail=f"{before} in the baseline, passes now",
                              baseline_text=before)
        return Comparison(outcome="unchanged", detail=f"{before} in the baseline", baseline_text=before)
    base = _metric_cell(base_recs, row.metric).stats
    if base is None:
        return Comparison(outcome="not-compared", detail="no value in the baseline")
    if cell.stats is None:
        return Comparison(outcome="not-compared", detail="no value now", baseline=base.mean)
    if base.unit != cell.stats.unit:
        return Comparison(outcome="not-compared", detail=f"unit changed ({base.unit} → {cell.stats.unit})",
                          baseline=base.mean)
    j = judge(base.sample(), cell.stats.sample(), higher_is_better=cell.stats.higher_is_better, k=k,
              min_rel_noise=min_rel_noise)
    if j.outcome == "unjudged" and j.delta == 0:  # the same number (a seeded task): no noise model needed
        return Comparison(outcome="unchanged", detail="the same value as the baseline", baseline=j.baseline,
                          change=0.0)
    return Comparison(outcome=j.outcome, detail=j.basis, baseline=j.baseline, change=j.change, threshold=j.threshold)


def build_report(
    records: Sequence[Record],
    problems: Sequence[LoadProblem] = (),
    *,
    baseline: tuple[Sequence[Record], Sequence[LoadProblem]] | None = None,
    k: float = DEFAULT_K,
    min_rel_noise: float = DEFAULT_MIN_REL_NOISE,
) -> Report:
    """The comparison table of ``records`` (and, with ``baseline``, the change against it)."""
    idx = _index(records)
    base_idx = _index(baseline[0]) if baseline else {}
    base_envs: dict[str, set[str]] = defaultdict(set)
    for bcol in base_idx:
        base_envs[bcol.env].add(bcol.fingerprint)

    by_fp: dict[str, list[ColumnKey]] = defaultdict(list)
    machines: dict[str, Machine] = {}
    hosts: dict[str, set[str]] = defaultdict(set)
    for r in records:
        machines.setdefault(r.machine.fingerprint, r.machine)
        hosts[r.machine.fingerprint].add(r.machine.hostname)
    for col in idx:
        by_fp[col.fingerprint].append(col)

    # Machines with a GPU first, then by description: a stable order that does not depend on file names.
    order = sorted(by_fp, key=lambda fp: (machines[fp].gpu_name is None, _describe(machines[fp]), fp))
    letters = string.ascii_uppercase
    groups: list[MachineGroup] = []
    cells: dict[tuple[RowKey, ColumnKey], Cell] = {}
    for i, fp in enumerate(order):
        envs = _env_order(c.env for c in by_fp[fp])
        cols = [ColumnKey(fingerprint=fp, env=e) for e in envs]
        rows = _rows(idx[c] for c in cols)
        label = f"Machine {letters[i]}" if i < len(letters) else f"Machine {i + 1}"
        groups.append(MachineGroup(
            fingerprint=fp, label=label, description=_describe(machines[fp]), hostnames=tuple(sorted(hosts[fp])),
            envs=envs, rows=rows,
            software={c.env: _software(r for rs in idx[c].values() for r in rs) for c in cols},
        ))
        for row in rows:
            for col in cols:
                recs = idx[col].get((row.kind, row.name), [])
                cell = _verdict_cell(recs) if row.is_verdict else _metric_cell(recs, row.metric)
                if baseline is not None and (cell.runs or cell.stats):
                    cmp = _compare(row, cell, col, base_idx=base_idx, base_envs=base_envs, k=k,
                                   min_rel_noise=min_rel_noise)
                    cell = replace(cell, comparison=cmp)
                cells[(row, col)] = cell

    notes = _notes(groups, idx, base_idx, baseline is not None)
    all_problems = [Problem(source="results", path=p.path, reason=p.reason) for p in problems]
    if baseline is not None:
        all_problems += [Problem(source="baseline", path=p.path, reason=p.reason) for p in baseline[1]]
    return Report(groups=tuple(groups), cells=cells, problems=tuple(all_problems), notes=tuple(notes),
                  n_records=len(records), n_baseline_records=len(baseline[0]) if baseline else None,
                  k=k, min_rel_noise=min_rel_noise)


def _notes(groups: Sequence[MachineGroup], idx: Mapping[ColumnKey, object],
           base_idx: Mapping[ColumnKey, object], with_baseline: bool) -> list[str]:
    notes = []
    if len(groups) > 1:
        notes.append(
            f"These results come from {len(groups)} machines with different fingerprints (GPU, driver, CPU): "
            "each has its own table, and numbers from different machines are never compared with each other."
        )
    for g in groups:
        mixed = [e for e, sw in g.software.items() if "," in sw]
        if mixed:
            notes.append(f"{g.label}: runs of {', '.join(mixed)} used different torch versions "
                         f"({'; '.join(f'{e}: {g.software[e]}' for e in mixed)}).")
    if with_baseline:
        gone = sorted({c.fingerprint for c in base_idx} - {c.fingerprint for c in idx})
        if gone:
            notes.append(f"The baseline holds records from {len(gone)} machine(s) absent from these results "
                         f"(fingerprint {', '.join(gone)}): not compared.")
        if not base_idx:
            notes.append("The baseline holds no valid records: nothing was compared.")
    return notes


# ------------------------------------------------------------------------------------------------ formatting


def format_number(v: float, digits: int = 4) -> str:
    """``v`` with ``digits`` significant digits and thousands separators: 2,616 · 93.41 · 0.9531 · 1.2e-06."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    mag = math.floor(math.log10(abs(v)))
    if mag >= digits - 1:
        return f"{v:,.0f}"
    if mag < -4:
        return f"{v:.{digits - 1}e}"
    return f"{v:,.{digits - 1 - mag}f}"


# -------------------------------------------------------------------------------------------------- output


def parse_formats(text: str) -> tuple[str, ...]:
    """``"md,html"`` -> ("md", "html"), in the canonical order; unknown names are a usage error."""
    wanted = {f.strip().lower() for f in text.split(",") if f.strip()}
    unknown = sorted(wanted - set(FORMATS))
    if unknown or not wanted:
        raise UsageError(f"--format takes a comma-separated list of {', '.join(FORMATS)}; got {text!r}")
    return tuple(f for f in FORMATS if f in wanted)


def write_report(report: Report, out_dir: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write the requested outputs into ``out_dir``; returns the files written.

    PNG charts come first so the HTML page can embed them (it stays a single self-contained file).
    """
    # Imported here: the renderers import this module's model, and matplotlib should load only when needed.
    from torchrig.report.charts import write_charts
    from torchrig.report.html import render_html
    from torchrig.report.text import render_csv, render_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    charts: list[Path] = []
    if "png" in formats:
        charts = write_charts(report, out_dir / "charts")
        written += charts
    outputs: dict[str, tuple[str, Callable[[], str]]] = {
        "md": ("report.md", lambda: render_markdown(report, charts=[c.relative_to(out_dir) for c in charts])),
        "html": ("report.html", lambda: render_html(report, charts=charts)),
        "csv": ("report.csv", lambda: render_csv(report)),
    }
    for fmt, (name, render) in outputs.items():
        if fmt in formats:
            path = out_dir / name
            path.write_text(render(), encoding="utf-8", newline="" if fmt == "csv" else None)
            written.append(path)
    return written
