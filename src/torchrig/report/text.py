"""The report as text: Markdown (README, PR comment, GitHub job summary) and CSV (one line per cell, and one per
node for the fleet summary, for analysis).

The wording of cells and of the fleet summary lives here once (:func:`cell_text`, :func:`fleet_lines`) and the
HTML page reuses it, so the outputs agree.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torchrig.report.model import (
    Cell,
    Comparison,
    Fleet,
    MachineGroup,
    Report,
    RowKey,
    SummaryFigure,
    SummaryVerdict,
    format_change,
    format_number,
)

__all__ = [
    "CellText",
    "cell_text",
    "change_text",
    "figure_text",
    "fleet_headline",
    "fleet_lines",
    "legend",
    "render_csv",
    "render_fleet_csv",
    "render_markdown",
    "row_label",
    "shown_verdicts",
    "verdict_text",
]

_VERDICT_MARK = {"pass": "✓", "fail": "✗", "error": "⚠", "skip": "–"}
_OUTCOME_TEXT = {
    "regression": "REGRESSION",
    "improvement": "improvement",
    "within-noise": "within noise",
    "unjudged": "not judged",
    "unchanged": "unchanged",
    "flaky": "FLAKY",
    "not-compared": "not compared",
}


@dataclass(frozen=True, kw_only=True)
class CellText:
    """A cell in words: ``main`` (value or verdict), ``detail`` (spread, runs, notes), ``change`` (vs baseline)."""

    main: str
    detail: str
    change: str
    mark: str  # ✓ ✗ ⚠ – or ""


def _value(v: float, unit: str) -> str:
    if unit == "bool":
        return "yes" if v >= 1 else "no"
    if unit == "1":  # dimensionless
        unit = ""
    return f"{format_number(v)} {unit}".strip()


def change_text(cmp: Comparison | None, unit: str = "") -> str:
    if cmp is None:
        return ""
    word = _OUTCOME_TEXT[cmp.outcome]
    if cmp.baseline_text is not None:  # a verdict row
        return f"{word} (baseline: {cmp.baseline_text})"
    if cmp.change is not None:
        return f"{format_change(cmp.change)} {word}"
    if cmp.baseline is not None and cmp.outcome not in ("not-compared",):
        return f"{word} (baseline {_value(cmp.baseline, unit)})"
    return f"{word}: {cmp.detail}" if cmp.outcome in ("not-compared", "unjudged") else word


def _repeats(repeats: tuple[int, ...]) -> str:
    lo, hi = min(repeats), max(repeats)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def cell_text(cell: Cell) -> CellText:
    cmp_unit = cell.sample.unit if cell.sample else ""
    change = change_text(cell.comparison, cmp_unit)
    if cell.verdict is not None:
        runs = f"{cell.passed_runs}/{cell.runs} runs passed" if cell.runs > 1 else "1 run"
        detail = "; ".join(x for x in (runs, cell.note) if x)
        return CellText(main=cell.verdict, detail=detail, change=change, mark=_VERDICT_MARK.get(cell.verdict, ""))
    if cell.sample is None:
        return CellText(main=cell.missing or "not run", detail=cell.note or "", change=change, mark="")
    s = cell.sample
    parts = []
    spread = s.spread
    if spread is not None and s.unit != "bool":
        parts.append(f"±{spread / abs(s.mean):.1%}" if s.mean else f"±{format_number(spread)}")
    runs = f"{s.n} run{'s' if s.n != 1 else ''}"
    parts.append(f"{runs} × {_repeats(s.repeats)}" if max(s.repeats) > 1 else runs)
    if cell.gate is not None and cell.gated_runs > 1:
        parts.append(f"gate passed {cell.passed_runs}/{cell.gated_runs}")
    if cell.note:
        parts.append(cell.note)
    mark = "" if cell.gate is None else ("✓" if cell.gate.passed else "✗")
    return CellText(main=_value(s.mean, s.unit), detail=" · ".join(parts), change=change, mark=mark)


def row_label(report: Report, group: MachineGroup, row: RowKey) -> str:
    """``name · metric`` with the gate (for gated task metrics) or the better direction (benchmarks)."""
    if row.is_verdict:
        return f"{row.name} · verdict"
    extra = ""
    for env in group.envs:
        c = report.cell(row, group, env)
        if c.gate is not None:
            extra = f" (gate {c.gate.op} {c.gate.threshold:g})"
            break
        if c.sample is not None and row.kind == "bench" and not extra:
            extra = " (higher is better)" if c.sample.higher_is_better else " (lower is better)"
    return f"{row.name} · {row.metric}{extra}"


def legend(report: Report) -> list[str]:
    lines = [
        "Metric cells: the mean over the runs; ± is the run-to-run standard deviation (with one run: that run's own "
        "spread over its repeats); \"3 runs × 10\" means 3 runs of 10 repeats each.",
        "Verdict cells: the latest run's verdict, and how many of the runs passed.",
        "Missing cells say why: not run, no GPU, skipped, failed, error.",
    ]
    if report.n_baseline_records is not None:
        lines.append(
            f"Against the baseline, a change is flagged only beyond its noise: beyond k × the pooled run-to-run "
            f"spread (Student-t corrected for the number of runs; k = {report.k:g}), the within-run spread, a "
            f"floor of {report.min_rel_noise:.1%}, and the largest difference repeated runs already showed. "
            "\"not judged\" means no repeated runs or recorded spread, so noise could not be measured: run each "
            "benchmark at least 3 times (5 to reliably see a 20% change on a noisy machine)."
        )
    return lines


# ------------------------------------------------------------------------------------------------ the fleet


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def fleet_headline(fleet: Fleet) -> str:
    """N nodes, the GPU models, how many passed, how many outliers: the first line of every report."""
    models = ", ".join(f"{m} ({_plural(len(ns), 'node')})" for m, ns in fleet.models.items())
    odd = sorted({o.node for o in fleet.outliers})
    return (f"{_plural(len(fleet.nodes), 'node')} · GPU models: {models or 'none'} · "
            f"{len(fleet.passed)} of {len(fleet.nodes)} passed · "
            + (f"{_plural(len(odd), 'outlier')}: {', '.join(odd)}" if odd else "no outliers"))


def fleet_lines(fleet: Fleet) -> list[str]:
    """The outliers with the figure that made each one, then what the rule could not decide, one line each."""
    lines = [f"{o.node} ({o.group}): {'slow: ' if o.reason == 'slow' else ''}{o.figure}" for o in fleet.outliers]
    failing = [n for n in fleet.nodes if n not in fleet.passed]
    if failing:
        lines.append(f"did not pass everything they ran: {', '.join(failing)}")
    lines += [f"{g.label}: {note}" for g in fleet.groups for note in g.notes]
    if fleet.nodes and not any(len(g.nodes) > 1 for g in fleet.groups):
        lines.append("every group (GPU model and environment) has one node: there is no other node to compare with")
    return lines


# ---------------------------------------------------------------------------------------------- the summary


def verdict_text(v: SummaryVerdict) -> str:
    """``✓ smoke`` · ``✗ cifar_cnn (failed: accuracy >= 60)`` · ``– train-… (skipped: TF32 needs …)``."""
    runs = f" {v.passed}/{v.runs} runs" if v.runs > 1 and v.verdict == "pass" and v.passed < v.runs else ""
    why = f" ({v.reason})" if v.reason else ""
    return f"{_VERDICT_MARK.get(v.verdict, '?')} {v.name}{runs}{why}"


def shown_verdicts(verdicts: Sequence[SummaryVerdict]) -> list[SummaryVerdict]:
    """Every task's verdict; of the benchmarks only those that did not pass (the passing ones are counted)."""
    shown = [v for v in verdicts if v.kind == "task" or v.verdict != "pass"]
    passed = len(verdicts) - len(shown)
    if passed:
        shown.append(SummaryVerdict(kind="bench", name=f"{passed} benchmark{'s' if passed != 1 else ''}",
                                    verdict="pass"))
    return shown


def figure_text(f: SummaryFigure) -> str:
    cv = f" · CV {f.cv_pct:.1f} %" if f.cv_pct is not None else ""
    return f"{f.label}: {_value(f.value, f.unit)} ({f.detail}{cv})"


def _md_summary(report: Report) -> list[str]:
    if not report.summary:
        return []
    lines = ["## Summary", "", "| environment | machine | gates | headline figures | warnings |",
             "|---|---|---|---|---|"]
    for row in report.summary:
        failed = sum(v.verdict in ("fail", "error") for v in row.verdicts)
        head = f"**{_md(row.env)}**<br><sub>{_md(row.software)}</sub>"
        count = (f"**{failed} of {len(row.verdicts)} failed**" if failed
                 else f"all {len(row.verdicts) - sum(v.verdict == 'skip' for v in row.verdicts)} passed")
        gates = "<br>".join([count, *(_md(verdict_text(v)) for v in shown_verdicts(row.verdicts))])
        figures = "<br>".join(_md(figure_text(f)) for f in row.figures) or "*no throughput measured*"
        warns = "<br>".join(f"⚠ {_md(w)}" for w in row.warnings) or "none"
        lines.append(f"| {head} | {row.machine}<br><sub>{_md(row.description)}</sub> | {gates} | {figures} "
                     f"| {warns} |")
    lines.append("")
    return lines


# ------------------------------------------------------------------------------------------------- Markdown


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_cell(cell: Cell) -> str:
    t = cell_text(cell)
    missing = cell.sample is None and cell.verdict is None
    parts = [f"*{_md(t.main)}*" if missing else f"{t.mark} **{_md(t.main)}**".strip()]
    if t.detail:
        parts.append(f"<sub>{_md(t.detail)}</sub>")
    if t.change:
        outcome = cell.comparison.outcome if cell.comparison else ""
        parts.append(f"**{_md(t.change)}**" if outcome == "regression" else _md(t.change))
    return "<br>".join(parts)


def _md_group(report: Report, g: MachineGroup) -> list[str]:
    lines = [f"## {g.label}: {_md(g.description)}", ""]
    lines.append(f"Fingerprint `{g.fingerprint}` · hosts: {', '.join(g.hostnames)}")
    lines.append("")
    header = ["result"] + [f"{e}<br><sub>{_md(g.software.get(e, ''))}</sub>" for e in g.envs]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in g.rows:
        label = _md(row_label(report, g, row))
        label = f"**{label}**" if row.is_verdict else label
        lines.append("| " + " | ".join([f"{row.kind}: {label}"] + [_md_cell(report.cell(row, g, e)) for e in g.envs])
                     + " |")
    lines.append("")
    return lines


def _md_regressions(report: Report) -> list[str]:
    regs = report.regressions
    if not regs:
        return [f"**No regressions** beyond run-to-run noise against the baseline ({report.n_baseline_records} "
                "records).", ""]
    lines = [f"### {len(regs)} regression{'s' if len(regs) != 1 else ''} beyond noise", ""]
    for g, row, env, cell in regs:
        cmp = cell.comparison
        assert cmp is not None
        if cell.sample is not None and cmp.baseline is not None:
            unit = cell.sample.unit
            what = (f"{_value(cmp.baseline, unit)} → {_value(cell.sample.mean, unit)} "
                    f"({format_change(cmp.change)}); threshold {_value(cmp.threshold or 0, unit)} from {cmp.detail}"
                    if cmp.change is not None else cmp.detail)
        else:
            what = cmp.detail
        lines.append(f"- **{g.label} · {env} · {_md(row.label)}**: {_md(what)}")
    lines.append("")
    return lines


def render_markdown(report: Report, *, charts: Sequence[Path] = ()) -> str:
    n_machines = len(report.groups)
    lines = ["# torchrig results", ""]
    summary = (f"{report.n_records} records · {n_machines} machine{'s' if n_machines != 1 else ''} · "
               f"generated {report.created}")
    if report.n_baseline_records is not None:
        summary += f" · baseline: {report.n_baseline_records} records"
    lines += [summary, ""]
    lines += _md_summary(report)
    if report.fleet.nodes:
        lines += [f"**Fleet:** {_md(fleet_headline(report.fleet))}", ""]
        extra = fleet_lines(report.fleet)
        lines += [f"- {_md(x)}" for x in extra] + ([""] if extra else [])
    for note in report.notes:
        lines += [f"> **Note:** {_md(note)}", ""]
    if report.problems:
        lines += [f"> **Warning:** {len(report.problems)} file(s) skipped: not valid records (listed below).", ""]
    if report.n_baseline_records is not None:
        lines += _md_regressions(report)
    if not report.groups:
        lines += ["*No valid records found.*", ""]
    for g in report.groups:
        lines += _md_group(report, g)
    if charts:
        lines += ["## Charts", ""] + [f"![{c.stem}]({c.as_posix()})" for c in charts] + [""]
    if report.problems:
        lines += ["## Skipped files", "", "| file | from | why |", "|---|---|---|"]
        lines += [f"| `{_md(str(p.path))}` | {p.source} | {_md(p.reason)} |" for p in report.problems]
        lines.append("")
    lines += ["## How to read this", ""] + [f"- {x}" for x in legend(report)] + [""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ CSV

CSV_COLUMNS = (
    "machine", "fingerprint", "machine_description", "env", "software", "kind", "name", "metric", "status",
    "value", "unit", "higher_is_better", "spread", "runs", "repeats", "verdict", "passed_runs", "gate", "why_missing",
    "note", "baseline", "change", "outcome", "comparison_detail",
)


def render_csv(report: Report) -> str:
    """One line per (machine, environment, row) -- the long format spreadsheets and pandas pivot easily."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for g in report.groups:
        for row in g.rows:
            for env in g.envs:
                c = report.cell(row, g, env)
                s, cmp = c.sample, c.comparison
                base = "" if cmp is None else (repr(cmp.baseline) if cmp.baseline is not None else cmp.baseline_text)
                w.writerow([
                    g.label, g.fingerprint, g.description, env, g.software.get(env, ""), row.kind, row.name,
                    row.metric, c.status,
                    repr(s.mean) if s else "", s.unit if s else "", s.higher_is_better if s else "",
                    repr(s.spread) if s and s.spread is not None else "", c.runs,
                    _repeats(s.repeats) if s else "", c.verdict or "", c.passed_runs if c.runs else "",
                    f"{c.gate.op} {c.gate.threshold:g}" if c.gate else "", c.missing or "", c.note or "",
                    base or "",
                    f"{cmp.change:.6f}" if cmp and cmp.change is not None else "",
                    cmp.outcome if cmp else "", cmp.detail if cmp else "",
                ])
    return buf.getvalue()


FLEET_CSV_COLUMNS = ("node", "gpu_model", "env", "records", "passed", "outlier", "why")


def render_fleet_csv(report: Report) -> str:
    """The fleet summary, one line per (node, group): its records, whether it passed, whether and why it is an
    outlier."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FLEET_CSV_COLUMNS)
    fleet = report.fleet
    for g in fleet.groups:
        for node in g.nodes:
            odd = fleet.outliers_of(node, g)
            w.writerow([node, g.model, g.env, g.records[node],
                        node not in g.failing, bool(odd), "; ".join(o.figure for o in odd)])
    return buf.getvalue()
