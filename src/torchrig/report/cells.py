"""The records of one cell -> the cell: a metric's runs as one sample, a verdict with its pass count, or why empty.

Several records for one cell (the same row, environment and machine -- or node, for the fleet) are runs of the
same thing: a metric cell holds all their values (the mean over the runs is what is shown), a verdict cell the
latest run's verdict (by ``created``) and how many of the runs passed. A missing value says why in a few words.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchrig.report.model import Cell
from torchrig.report.stats import Sample
from torchrig.results.records import Gate, Record

__all__ = ["gate_text", "latest", "metric_cell", "verdict_cell", "why_no_metric", "why_no_value"]


def latest(records: Sequence[Record]) -> Record:
    return max(records, key=lambda r: (r.created, r.run_id))


def gate_text(g: Gate) -> str:
    return f"{g.metric} {g.op} {g.threshold:g}"


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


def why_no_value(r: Record) -> str:
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
            detail = "; ".join(gate_text(g) for g in r.gates if not g.passed) or text
            return f"failed: {detail}" if detail else "failed"
        case "error":
            return f"error: {text}" if text else "error"
        case _:
            return "not measured"


def why_no_metric(r: Record, metric: str) -> str:
    """Why a record that ran has no ``metric``: the ``skip LABEL: reason`` it logged for that part (the export
    task skips an exporter a torch lacks, e.g. ``skip cnn/dynamo: ...`` for ``cnn_dynamo_size_mb``), else the
    verdict's own words."""
    if r.verdict == "pass":
        for w in r.warnings:
            label, sep, reason = w.partition(":")
            if sep and label.startswith("skip "):
                key = label[5:].strip().replace("/", "_").replace("-", "_")
                if key and metric.startswith(key):
                    return f"skipped: {reason.strip()}"
    return why_no_value(r)


def metric_cell(recs: Sequence[Record], metric: str) -> Cell:
    if not recs:
        return Cell(missing="not run")
    with_value = sorted((r for r in recs if metric in r.metrics), key=lambda r: (r.created, r.run_id))
    if not with_value:
        return Cell(runs=len(recs), missing=why_no_metric(latest(recs), metric))
    last = with_value[-1].metrics[metric]
    other_units = sorted({r.metrics[metric].unit for r in with_value} - {last.unit})
    # Averaging across a unit change would mix two scales: the runs in the latest unit make the cell.
    with_value = [r for r in with_value if r.metrics[metric].unit == last.unit]
    ms = [r.metrics[metric] for r in with_value]
    sample = Sample(values=tuple(m.value for m in ms), stddevs=tuple(m.stddev for m in ms),
                    repeats=tuple(m.repeats for m in ms), unit=last.unit, higher_is_better=last.higher_is_better)
    gates = [g for r in with_value for g in r.gates if g.metric == metric]
    latest_gate = next((g for g in reversed(with_value[-1].gates) if g.metric == metric), None)
    notes = []
    without = [r for r in recs if metric not in r.metrics]
    if without:
        notes.append(f"{len(without)} of {len(recs)} runs had no value (latest: {why_no_value(latest(without))})")
    if other_units:
        notes.append(f"runs in {', '.join(other_units)} left out (the latest runs are in {last.unit})")
    return Cell(runs=len(recs), sample=sample, gate=latest_gate, passed_runs=sum(g.passed for g in gates),
                gated_runs=len(gates), note="; ".join(notes) or None)


def verdict_cell(recs: Sequence[Record]) -> Cell:
    if not recs:
        return Cell(missing="not run")
    last = latest(recs)
    note = None if last.verdict == "pass" else why_no_value(last)
    return Cell(runs=len(recs), verdict=last.verdict, passed_runs=sum(r.verdict == "pass" for r in recs),
                gated_runs=len(recs), note=note)
