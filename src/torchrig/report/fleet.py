"""The fleet: nodes that ran one environment on one GPU model are compared with each other to find the odd one.

A **node** is a hostname (``Record.machine.hostname``). Nodes with the same GPU model (``Machine.gpu_name``; the CPU
model on machines without a GPU) that ran the same environment form a **group**. Within a group:

* **slow**: for every benchmark metric where higher is better (a throughput), each node's runs are one sample; a
  node whose mean is below the median of the group's node means by more than the group's measured run-to-run
  noise (:func:`torchrig.report.stats.against_median`: the pooled spread of each node's repeated runs around its
  own mean, Student-t corrected, the within-run spread, the noise floor, the largest range one node's runs
  showed) is an outlier. This needs **three or more nodes** with a value: with two, the median is their midpoint
  and cannot say which one is odd, so a difference beyond the noise is noted for the group and no node is
  flagged. Without repeated runs or a recorded spread the noise is unknown and nothing is judged (noted).
* **gate**: a node whose latest run of a task or benchmark failed (or errored) while more than half of the
  group's other nodes that ran it (and did not skip it) passed is an outlier. A gate is absolute, so this holds
  from two nodes on: one node fails where the other passes.

A group of one node has no outliers. A node **passed** when the latest run of every task and benchmark it ran
(in every environment) passed or was skipped.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

from torchrig.report.cells import gate_text, latest, metric_cell, why_no_value
from torchrig.report.model import HOST, Fleet, FleetGroup, Outlier, RowKey, format_number
from torchrig.report.stats import DEFAULT_K, DEFAULT_MIN_REL_NOISE, Sample, against_median, judge
from torchrig.results.records import Machine, Record

__all__ = ["MIN_NODES_FOR_SLOW", "build_fleet", "gpu_model"]

MIN_NODES_FOR_SLOW = 3
_FAILED = ("fail", "error")

_Nodes = Mapping[str, Sequence[Record]]  # hostname -> its records in one group


def gpu_model(m: Machine) -> str:
    """What makes nodes comparable: the GPU model, or the CPU model on a machine without a GPU."""
    if m.gpu_name:
        return m.gpu_name
    return m.cpu if m.accelerator == "cpu" else f"{m.accelerator} (GPU unknown)"


def _value(v: float, unit: str) -> str:
    return f"{format_number(v)} {'' if unit == '1' else unit}".strip()


def _latest_runs(recs: Iterable[Record]) -> dict[tuple[str, str], Record]:
    """(kind, name) -> the latest run of it."""
    by_name: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in recs:
        by_name[(r.kind, r.name)].append(r)
    return {kn: latest(rs) for kn, rs in by_name.items()}


def _failure(r: Record) -> str:
    """The figure of a failed run: the failing gates with their values, else its own reason."""
    failed = [g for g in r.gates if not g.passed]
    if failed:
        return "; ".join(f"{g.metric} {_value(r.metrics[g.metric].value, r.metrics[g.metric].unit)} against the "
                         f"gate {g.op} {g.threshold:g}" if g.metric in r.metrics else f"failed: {gate_text(g)}"
                         for g in failed)
    return why_no_value(r)


def _gate_outliers(label: str, nodes: _Nodes) -> list[Outlier]:
    runs = {node: _latest_runs(recs) for node, recs in nodes.items()}
    out = []
    for kind, name in sorted({kn for v in runs.values() for kn in v}):
        for node, mine in sorted(runs.items()):
            r = mine.get((kind, name))
            if r is None or r.verdict not in _FAILED:
                continue
            others = [v[(kind, name)].verdict for n, v in runs.items()
                      if n != node and (kind, name) in v and v[(kind, name)].verdict != "skip"]
            passing = others.count("pass")
            if others and 2 * passing > len(others):
                out.append(Outlier(
                    node=node, group=label, reason="gate", row=RowKey(kind=kind, name=name),
                    figure=f"{name} {r.verdict}s: {_failure(r)}, where {passing} of {len(others)} other "
                           + ("node passes" if len(others) == 1 else "nodes pass"),
                ))
    return out


def _samples(nodes: _Nodes, name: str, metric: str) -> dict[str, Sample]:
    out = {}
    for node, recs in nodes.items():
        s = metric_cell([r for r in recs if r.kind == "bench" and r.name == name], metric).sample
        if s is not None and s.higher_is_better and s.unit != "bool":
            out[node] = s
    return out


def _slow_outliers(label: str, nodes: _Nodes, *, k: float, min_rel_noise: float) -> tuple[list[Outlier], list[str]]:
    rows = sorted({(r.name, m) for recs in nodes.values() for r in recs if r.kind == "bench"
                   for m, v in r.metrics.items() if v.higher_is_better})
    outliers: list[Outlier] = []
    notes: list[str] = []
    for name, metric in rows:
        samples = _samples(nodes, name, metric)
        if not samples:
            continue
        # Nodes that measured it in another unit cannot share a median: the most common unit makes the group.
        unit = Counter(s.unit for s in samples.values()).most_common(1)[0][0]
        other = sorted(n for n, s in samples.items() if s.unit != unit)
        if other:
            notes.append(f"{name} · {metric}: {', '.join(other)} left out (measured in another unit than {unit})")
        samples = {n: s for n, s in samples.items() if s.unit == unit}
        if len(samples) == 2:
            (n1, s1), (n2, s2) = sorted(samples.items())
            j = judge(s1, s2, k=k, min_rel_noise=min_rel_noise)
            if j.outcome in ("regression", "improvement"):
                notes.append(f"{name} · {metric}: {n1} ({_value(s1.mean, unit)}) and {n2} ({_value(s2.mean, unit)}) "
                             f"differ beyond their noise ({j.basis}); {MIN_NODES_FOR_SLOW} or more nodes are "
                             "needed to say which one is odd")
            continue
        if len(samples) < MIN_NODES_FOR_SLOW:
            continue
        group = list(samples.values())
        unjudged = []
        for node, s in sorted(samples.items()):
            j = against_median(s, group, k=k, min_rel_noise=min_rel_noise)
            if j.outcome == "unjudged":
                unjudged.append(node)
            elif j.outcome == "regression":
                below = f"{-j.change:.1%} below" if j.change is not None else "below"
                outliers.append(Outlier(
                    node=node, group=label, reason="slow", row=RowKey(kind="bench", name=name, metric=metric),
                    figure=f"{name} · {metric} {_value(s.mean, unit)} is {below} the group median "
                           f"{_value(j.baseline, unit)} (noise threshold {_value(j.threshold or 0.0, unit)} from "
                           f"{j.basis})",
                    value=s.mean, median=j.baseline, threshold=j.threshold, unit=unit,
                ))
        if unjudged:
            notes.append(f"{name} · {metric}: not judged on {len(unjudged)} node(s): no repeated runs or recorded "
                         "spread, so the run-to-run noise is unknown")
    return outliers, notes


def _driver_note(nodes: _Nodes) -> list[str]:
    drivers: dict[str, set[str]] = defaultdict(set)
    for node, recs in nodes.items():
        for r in recs:
            drivers[r.machine.driver or "unknown"].add(node)
    if len(drivers) < 2:
        return []
    parts = [f"{d} on {', '.join(sorted(ns))}" for d, ns in sorted(drivers.items())]
    return [f"the nodes run different drivers ({'; '.join(parts)})"]


def build_fleet(records: Sequence[Record], *, k: float = DEFAULT_K,
                min_rel_noise: float = DEFAULT_MIN_REL_NOISE) -> Fleet:
    """The fleet summary of ``records`` under the rule in this module's docstring."""
    by_group: dict[tuple[str, str], dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    models: dict[str, set[str]] = defaultdict(set)
    for r in records:
        model = gpu_model(r.machine)
        by_group[(model, r.env_id or HOST)][r.machine.hostname].append(r)
        models[model].add(r.machine.hostname)

    groups: list[FleetGroup] = []
    outliers: list[Outlier] = []
    for model, env in sorted(by_group, key=lambda me: (me[1] == HOST, me)):
        nodes = by_group[(model, env)]
        label = f"{model} · {env}"
        failing = tuple(sorted(n for n, recs in nodes.items()
                               if any(r.verdict in _FAILED for r in _latest_runs(recs).values())))
        notes: list[str] = []
        if len(nodes) > 1:
            slow, notes = _slow_outliers(label, nodes, k=k, min_rel_noise=min_rel_noise)
            found = _gate_outliers(label, nodes) + slow
            outliers += sorted(found, key=lambda o: (o.node, o.reason, o.row))
            notes += _driver_note(nodes)
        groups.append(FleetGroup(model=model, env=env, nodes=tuple(sorted(nodes)), failing=failing,
                                 records={n: len(rs) for n, rs in sorted(nodes.items())}, notes=tuple(notes)))

    every = sorted({r.machine.hostname for r in records})
    failed = {n for g in groups for n in g.failing}
    return Fleet(nodes=tuple(every), models={m: tuple(sorted(ns)) for m, ns in sorted(models.items())},
                 passed=tuple(n for n in every if n not in failed), groups=tuple(groups), outliers=tuple(outliers))
