"""The Summary a report opens with: one row per environment x machine that answers "does it work, how fast, and
can I trust the figure" before any detail table.

Each row holds
* the verdict of every task and benchmark gate that ran there (pass / fail / skipped, with the reason);
* the headline figures: the GEMM ceiling (the best TFLOP/s of any GEMM case, with its % of the GPU's spec peak),
  copy bandwidth, and ResNet-50 and BERT training throughput (the best case of each, with its FLOPS utilisation);
* the warnings that change how a figure reads: a busy machine, run-to-run CV above the noise threshold, synthetic
  data, a GPU environment that ran on the CPU, benchmarks that were skipped.

Built from the same records and cells as the detail tables (:mod:`torchrig.report.build` calls
:func:`build_summary`), so the two never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from torchrig.report.cells import latest, why_no_value
from torchrig.report.model import ColumnKey, MachineGroup, SummaryFigure, SummaryRow, SummaryVerdict, format_number
from torchrig.results.records import Record

__all__ = ["CV_WARN_PCT", "HEADLINES", "build_summary"]

CV_WARN_PCT = 5.0  # a run-to-run CV above this makes a throughput figure read as "noisy" (GPU gate: 2 %)

# (label, record-name pattern, metric, detail metrics): the best value of ``metric`` over the matching records
HEADLINES: tuple[tuple[str, re.Pattern[str], str, tuple[str, ...]], ...] = (
    ("GEMM ceiling", re.compile(r"^gemm-"), "tflops", ("pct_of_spec_peak",)),
    ("copy bandwidth", re.compile(r"^copy-"), "bandwidth_gbs", ("pct_of_spec_peak",)),
    ("ResNet-50 training", re.compile(r"^train-resnet50"), "throughput", ("mfu_pct", "mfu_spec_pct")),
    ("BERT training", re.compile(r"^train-bert"), "throughput", ("mfu_pct", "mfu_spec_pct")),
)

# a busy-machine warning in the record's text (older records); "device busy only 60 %" is the busy check, not this
_BUSY = re.compile(r"(?<!device )\bbusy\b|\bloaded\b|other (GPU )?(compute )?process", re.IGNORECASE)
_GPU_ENV = re.compile(r"(^|[-_])(cuda|cu\d+|rocm)", re.IGNORECASE)


def _mean(recs: Sequence[Record], metric: str) -> float | None:
    vals = [r.metrics[metric].value for r in recs if metric in r.metrics]
    return sum(vals) / len(vals) if vals else None


def _figure(label: str, by_name: Mapping[str, Sequence[Record]], metric: str, details: tuple[str, ...]
            ) -> SummaryFigure | None:
    best: tuple[float, str, Sequence[Record]] | None = None
    for name, recs in by_name.items():
        v = _mean(recs, metric)
        if v is not None and (best is None or v > best[0]):
            best = (v, name, recs)
    if best is None:
        return None
    value, name, recs = best
    unit = next(r.metrics[metric].unit for r in recs if metric in r.metrics)
    parts = [name]
    for d in details:
        dv = _mean(recs, d)
        if dv is not None:
            parts.append(f"{format_number(dv, 3)} % {'of spec peak' if d.endswith('peak') else 'MFU'}"
                         + (" (spec)" if d == "mfu_spec_pct" else ""))
    cv = _mean(recs, "cv_pct")
    return SummaryFigure(label=label, value=value, unit=unit, detail=" · ".join(parts), cv_pct=cv)


def _verdicts(by_key: Mapping[tuple[str, str], Sequence[Record]]) -> tuple[SummaryVerdict, ...]:
    out = []
    for (kind, name), recs in sorted(by_key.items(), key=lambda kv: (kv[0][0] != "task", kv[0][1])):
        last = latest(recs)
        reason = "" if last.verdict == "pass" else why_no_value(last)
        out.append(SummaryVerdict(kind=kind, name=name, verdict=last.verdict, reason=reason,
                                  runs=len(recs), passed=sum(r.verdict == "pass" for r in recs)))
    return tuple(out)


def _is_gpu_env(env: str, recs: Iterable[Record]) -> bool:
    if _GPU_ENV.search(env):
        return True
    return any(r.container is not None and r.container.image and _GPU_ENV.search(r.container.image.rsplit(":", 1)[-1])
               for r in recs)


def _warnings(env: str, recs: Sequence[Record], figures: Sequence[SummaryFigure],
              verdicts: Sequence[SummaryVerdict]) -> tuple[str, ...]:
    out: list[str] = []
    busy = _busy_reasons(recs)
    if busy:
        out.append(f"busy machine: {busy[0]}" + (f" (+{len(busy) - 1} more)" if len(busy) > 1 else ""))
    bound = sorted({r.name for r in recs if _host_bound(r)})
    if bound:
        out.append(f"launch-/host-bound (device busy < 90 % of the round): {', '.join(bound[:4])}"
                   + (f" (+{len(bound) - 4} more)" if len(bound) > 4 else ""))
    noisy = [f"{f.label} CV {f.cv_pct:.0f} %" for f in figures if f.cv_pct is not None and f.cv_pct > CV_WARN_PCT]
    if noisy:
        out.append(f"run-to-run CV above {CV_WARN_PCT:g} %: {', '.join(noisy)}")
    synthetic = sorted({r.name for r in recs if isinstance(r.config.get("resolved"), Mapping)
                        and r.config["resolved"].get("data") == "synthetic"})
    if synthetic:
        out.append(f"synthetic data (not the real data set): {', '.join(synthetic)}")
    if _is_gpu_env(env, recs) and any(r.machine.accelerator == "cpu" for r in recs):
        out.append("a GPU environment ran on the CPU: its figures are not GPU figures")
    skipped = [v.name for v in verdicts if v.verdict == "skip"]
    if skipped:
        out.append(f"{len(skipped)} skipped (reasons in the gates column)")
    return tuple(out)


def _busy_reasons(recs: Sequence[Record]) -> list[str]:
    """Why the machine was busy: the records' ``load`` verdicts (bench/load.py), else their warning texts."""
    reasons = sorted({str(x) for r in recs if r.load and r.load.get("busy") is True
                      for x in r.load.get("reasons") or []})
    if reasons:
        return reasons
    return sorted({w.removeprefix("busy machine: ") for r in recs for w in r.warnings if _BUSY.search(w)})


def _host_bound(r: Record) -> bool:
    """A GPU benchmark the busy check flagged (bench/busy.py): its figure measures launch/host overhead too."""
    timing = r.config.get("timing")
    busy = timing.get("busy") if isinstance(timing, Mapping) else None
    return r.machine.accelerator != "cpu" and isinstance(busy, Mapping) and busy.get("flagged") is True


def build_summary(groups: Sequence[MachineGroup],
                  idx: Mapping[ColumnKey, Mapping[tuple[str, str], Sequence[Record]]]) -> tuple[SummaryRow, ...]:
    """One :class:`SummaryRow` per (machine group, environment), in the order of the detail tables."""
    rows = []
    for g in groups:
        for env in g.envs:
            col = idx.get(g.column(env), {})
            recs = [r for rs in col.values() for r in rs]
            bench = {name: rs for (kind, name), rs in col.items() if kind == "bench"}
            figures = tuple(f for label, pat, metric, details in HEADLINES
                            if (f := _figure(label, {n: rs for n, rs in bench.items() if pat.search(n)},
                                             metric, details)) is not None)
            verdicts = _verdicts(col)
            rows.append(SummaryRow(env=env, machine=g.label, description=g.description,
                                   software=g.software.get(env, ""), verdicts=verdicts, figures=figures,
                                   warnings=_warnings(env, recs, figures, verdicts)))
    return tuple(rows)
