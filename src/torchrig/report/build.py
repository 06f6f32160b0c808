"""Result records -> a :class:`~torchrig.report.model.Report`: the comparison table, the baseline comparison, the
fleet summary.

Rows are what was measured: a task's verdict and its metrics (gated ones coloured by their gate), and each
benchmark metric. Columns are environments (``Record.env_id``; ``host`` for runs outside an image), grouped by
machine fingerprint (``Record.machine.fingerprint``: accelerator, GPU model/count, driver, CPU): records from
different machines land in separate tables and are never compared with each other. Several records for one cell
are runs of the same thing (:mod:`torchrig.report.cells`).

With a baseline, each metric cell is compared with the baseline's runs of the same row, environment and machine
under the noise rule of :mod:`torchrig.report.stats`; a task that passed in the baseline and fails in every current
run is a regression too (when only some runs fail it is shown as flaky). Across nodes, :mod:`torchrig.report.fleet`
finds the odd node out.
"""

from __future__ import annotations

import json
import math
import string
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from torchrig.report.cells import latest, metric_cell, verdict_cell
from torchrig.report.fleet import build_fleet
from torchrig.report.model import HOST, Cell, ColumnKey, Comparison, MachineGroup, Problem, Report, RowKey
from torchrig.report.stats import DEFAULT_K, DEFAULT_MIN_REL_NOISE, judge
from torchrig.report.summary import build_summary
from torchrig.results.records import LoadProblem, Machine, Record

__all__ = ["build_report"]

_Index = Mapping[ColumnKey, Mapping[tuple[str, str], list[Record]]]


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


def dedupe(records: Iterable[Record]) -> tuple[list[Record], list[str]]:
    """Each run counted once: records with the same run id and the same content (a results folder copied twice,
    or merged from two places) are kept once; a note says how many were dropped and from which runs."""
    seen: set[tuple[str, str]] = set()
    out: list[Record] = []
    dropped: dict[str, int] = defaultdict(int)
    for r in records:
        key = (r.run_id, json.dumps(r.to_dict(), sort_keys=True, default=str))
        if key in seen:
            dropped[r.run_id] += 1
            continue
        seen.add(key)
        out.append(r)
    notes = []
    if dropped:
        n = sum(dropped.values())
        runs = sorted(dropped)
        notes.append(f"{n} duplicate record{'s' if n != 1 else ''} (the same run id and content, e.g. a results "
                     f"folder copied twice) counted once: run{'s' if len(runs) != 1 else ''} "
                     + ", ".join(runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else ""))
    return out, notes


def _finite_baseline(records: Iterable[Record]) -> tuple[list[Record], list[LoadProblem]]:
    """A baseline record with a NaN or infinite metric is named and left out of the comparison."""
    keep: list[Record] = []
    bad: list[LoadProblem] = []
    for r in records:
        odd = sorted(m for m, v in r.metrics.items() if not math.isfinite(v.value)
                     or (v.stddev is not None and not math.isfinite(v.stddev)))
        if odd:
            bad.append(LoadProblem(path=Path(f"run {r.run_id}"), reason=f"{r.kind} {r.name}: metric(s) "
                                   f"{', '.join(odd)} not finite (NaN or infinity): left out of the comparison"))
        else:
            keep.append(r)
    return keep, bad


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


def _compare_verdict(cell: Cell, base_recs: Sequence[Record]) -> Comparison | None:
    if cell.verdict is None:
        return None
    before = latest(base_recs).verdict
    if before == "pass" and cell.verdict in ("fail", "error"):
        if cell.passed_runs:  # some runs still pass: a flaky gate, shown but not a regression
            return Comparison(outcome="flaky", baseline_text=before,
                              detail=f"passed in the baseline; {cell.passed_runs} of {cell.runs} runs pass now")
        return Comparison(outcome="regression", baseline_text=before,
                          detail=f"passed in the baseline, {cell.verdict}s now"
                                 + (f" (all {cell.runs} runs)" if cell.runs > 1 else ""))
    if before in ("fail", "error") and cell.verdict == "pass":
        return Comparison(outcome="improvement", detail=f"{before} in the baseline, passes now", baseline_text=before)
    return Comparison(outcome="unchanged", detail=f"{before} in the baseline", baseline_text=before)


def _compare(row: RowKey, cell: Cell, col: ColumnKey, *, base_idx: _Index, base_envs: Mapping[str, set[str]],
             k: float, min_rel_noise: float) -> Comparison | None:
    base_recs = base_idx.get(col, {}).get((row.kind, row.name), [])
    if not base_recs:
        others = base_envs.get(col.env, set()) - {col.fingerprint}
        if any((row.kind, row.name) in base_idx.get(ColumnKey(fingerprint=fp, env=col.env), {}) for fp in others):
            return Comparison(outcome="not-compared", detail="the baseline ran on a different machine")
        return Comparison(outcome="not-compared", detail="not in the baseline")
    if row.is_verdict:
        return _compare_verdict(cell, base_recs)
    base = metric_cell(base_recs, row.metric).sample
    if base is None:
        return Comparison(outcome="not-compared", detail="no value in the baseline")
    if cell.sample is None:
        return Comparison(outcome="not-compared", detail="no value now", baseline=base.mean)
    if base.unit != cell.sample.unit:
        return Comparison(outcome="not-compared", detail=f"unit changed ({base.unit} → {cell.sample.unit})",
                          baseline=base.mean)
    j = judge(base, cell.sample, k=k, min_rel_noise=min_rel_noise)
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
    records, dup_notes = dedupe(records)
    if baseline is not None:
        base_recs, base_dups = dedupe(baseline[0])
        base_recs, odd = _finite_baseline(base_recs)
        baseline = (base_recs, [*baseline[1], *odd])
        dup_notes += [f"baseline: {n}" for n in base_dups]
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
                cell = verdict_cell(recs) if row.is_verdict else metric_cell(recs, row.metric)
                if baseline is not None and (cell.runs or cell.sample):
                    cmp = _compare(row, cell, col, base_idx=base_idx, base_envs=base_envs, k=k,
                                   min_rel_noise=min_rel_noise)
                    cell = replace(cell, comparison=cmp)
                cells[(row, col)] = cell

    notes = dup_notes + _notes(groups, idx, base_idx, baseline is not None)
    all_problems = [Problem(source="results", path=p.path, reason=p.reason) for p in problems]
    if baseline is not None:
        all_problems += [Problem(source="baseline", path=p.path, reason=p.reason) for p in baseline[1]]
    return Report(groups=tuple(groups), cells=cells, fleet=build_fleet(records, k=k, min_rel_noise=min_rel_noise),
                  summary=build_summary(groups, idx), problems=tuple(all_problems), notes=tuple(notes),
                  n_records=len(records),
                  n_baseline_records=len(baseline[0]) if baseline else None, k=k, min_rel_noise=min_rel_noise)


def _notes(groups: Sequence[MachineGroup], idx: Mapping[ColumnKey, object],
           base_idx: Mapping[ColumnKey, object], with_baseline: bool) -> list[str]:
    notes = []
    if len(groups) > 1:
        notes.append(
            f"These results come from {len(groups)} machines with different fingerprints (GPU, driver, CPU): "
            "each has its own table, and numbers from different machines are never compared with each other "
            "(the fleet summary compares nodes of one GPU model that ran one environment)."
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
