"""What a report is: rows, columns, cells, machine groups, the fleet summary, and how numbers are written.

Plain frozen data, built by :mod:`torchrig.report.build` and read by the renderers (:mod:`~torchrig.report.text`,
:mod:`~torchrig.report.html`, :mod:`~torchrig.report.charts`), which import this module and nothing that builds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from torchrig.errors import FatalError
from torchrig.report.stats import DEFAULT_K, DEFAULT_MIN_REL_NOISE, JudgementOutcome, Sample
from torchrig.results.records import Gate, utc_now

__all__ = [
    "HOST",
    "REGRESSION_EXIT_CODE",
    "Cell",
    "ColumnKey",
    "Comparison",
    "ComparisonOutcome",
    "Fleet",
    "FleetGroup",
    "MachineGroup",
    "Outlier",
    "Problem",
    "RegressionError",
    "Report",
    "RowKey",
    "SummaryFigure",
    "SummaryRow",
    "SummaryVerdict",
    "format_change",
    "format_number",
]

HOST = "host"  # the column of records with no env_id: runs on the host, outside any image
REGRESSION_EXIT_CODE = 10

# A cell against the baseline: the noise rule's judgement, or what the report says without one (the same value,
# a gate that fails in only some runs, nothing to compare with).
ComparisonOutcome = Literal[JudgementOutcome, "unchanged", "flaky", "not-compared"]


class RegressionError(FatalError):
    """``--fail-on-regression`` and at least one metric got worse beyond its noise (or a gate started failing)."""

    return_code = REGRESSION_EXIT_CODE


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
class Comparison:
    """A cell against the baseline: ``change`` relative to the baseline mean; ``detail`` explains the call."""

    outcome: ComparisonOutcome
    detail: str
    baseline: float | None = None
    change: float | None = None
    threshold: float | None = None
    baseline_text: str | None = None  # for verdict rows: the baseline's latest verdict


@dataclass(frozen=True, kw_only=True)
class Cell:
    """What one column says about one row.

    ``sample`` (the runs of the metric) is set for metric rows that have a value; ``verdict`` (the latest run's)
    for verdict rows; ``missing`` says why there is nothing to show; ``gate`` is the latest run's gate on this
    metric.
    """

    runs: int = 0
    sample: Sample | None = None
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
        if self.sample is None:
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


# ------------------------------------------------------------------------------------------------- the fleet


@dataclass(frozen=True, kw_only=True)
class Outlier:
    """A node that stands out from the other nodes of its fleet group, and the figure that made it so.

    ``reason`` "slow": a throughput below the group's median beyond the group's run-to-run noise (``value``,
    ``median``, ``threshold`` in ``unit``); "gate": a task or benchmark that fails on this node where most of the
    group's other nodes pass it.
    """

    node: str
    group: str  # FleetGroup.label
    reason: Literal["slow", "gate"]
    row: RowKey
    figure: str
    value: float | None = None
    median: float | None = None
    threshold: float | None = None
    unit: str = ""


@dataclass(frozen=True, kw_only=True)
class FleetGroup:
    """The nodes (hostnames) that ran one environment on one GPU model (the CPU model on machines without one)."""

    model: str
    env: str
    nodes: tuple[str, ...]
    records: Mapping[str, int]  # node -> how many records it wrote here
    failing: tuple[str, ...]  # nodes whose latest run of a task or benchmark failed or errored here
    notes: tuple[str, ...] = ()  # what the outlier rule could not decide here, and why

    @property
    def label(self) -> str:
        return f"{self.model} · {self.env}"


@dataclass(frozen=True, kw_only=True)
class Fleet:
    """The summary across nodes: how many, which GPU models, how many passed everything they ran, the outliers."""

    nodes: tuple[str, ...]
    models: Mapping[str, tuple[str, ...]]  # model -> its nodes
    passed: tuple[str, ...]  # nodes whose latest run of every task and benchmark passed (or was skipped)
    groups: tuple[FleetGroup, ...]
    outliers: tuple[Outlier, ...]

    def outliers_of(self, node: str, group: FleetGroup | None = None) -> list[Outlier]:
        return [o for o in self.outliers if o.node == node and (group is None or o.group == group.label)]


EMPTY_FLEET = Fleet(nodes=(), models={}, passed=(), groups=(), outliers=())


# ------------------------------------------------------------------------------------------------ the summary


@dataclass(frozen=True, kw_only=True)
class SummaryVerdict:
    """A task's or benchmark's latest verdict in one column, with the reason when it did not pass."""

    kind: str
    name: str
    verdict: str  # pass, fail, skip, error
    reason: str = ""
    runs: int = 1
    passed: int = 0


@dataclass(frozen=True, kw_only=True)
class SummaryFigure:
    """A headline figure: the best value of one metric over the matching benchmarks (``detail``: which case, and
    its % of spec peak or MFU); ``cv_pct`` its run-to-run coefficient of variation when recorded."""

    label: str
    value: float
    unit: str
    detail: str = ""
    cv_pct: float | None = None


@dataclass(frozen=True, kw_only=True)
class SummaryRow:
    """One environment on one machine: verdicts, headline figures and the warnings that change how they read."""

    env: str
    machine: str  # MachineGroup.label
    description: str
    software: str
    verdicts: tuple[SummaryVerdict, ...]
    figures: tuple[SummaryFigure, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Report:
    groups: tuple[MachineGroup, ...]
    cells: Mapping[tuple[RowKey, ColumnKey], Cell]
    fleet: Fleet = EMPTY_FLEET
    summary: tuple[SummaryRow, ...] = ()
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()
    n_records: int = 0
    n_baseline_records: int | None = None  # None: no baseline given
    k: float = DEFAULT_K
    min_rel_noise: float = DEFAULT_MIN_REL_NOISE
    created: str = field(default_factory=utc_now)

    def cell(self, row: RowKey, group: MachineGroup, env: str) -> Cell:
        return self.cells.get((row, group.column(env)), Cell(missing="not run"))

    def flagged(self, outcome: ComparisonOutcome = "regression") -> list[tuple[MachineGroup, RowKey, str, Cell]]:
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


def format_change(change: float) -> str:
    """A relative change as a signed percentage (+12.5%, -3.0%), in exponent form from +-10^6 % on (a figure near
    the float limit against a baseline of 1 is a change of 10^310 %, which would print three hundred digits)."""
    if not math.isfinite(change):
        return f"{change:+}"
    if abs(change) >= 1e4:
        return f"{100 * change:+.2e}%"
    return f"{change:+.1%}"


def format_number(v: float, digits: int = 4) -> str:
    """``v`` with ``digits`` significant digits and thousands separators: 2,616 · 93.41 · 0.9531 · 1.2e-06;
    from 10^15 on in exponent form (1.000e+100), not a hundred digits that push a table or chart apart."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    mag = math.floor(math.log10(abs(v)))
    if mag >= 15:
        return f"{v:.{digits - 1}e}"
    if mag >= digits - 1:
        return f"{v:,.0f}"
    if mag < -4:
        return f"{v:.{digits - 1}e}"
    return f"{v:,.{digits - 1 - mag}f}"
