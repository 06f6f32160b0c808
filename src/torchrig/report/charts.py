"""PNG charts of benchmark throughput: one image per machine, a panel per benchmark metric, a bar per environment.

Panels show the higher-is-better metrics (throughputs); a benchmark without any shows all its metrics.
Machines get separate images for the same reason they get separate tables: their numbers are not comparable.
Bars show the mean over runs with the spread as an error bar; with a baseline, a dashed line marks the baseline
mean and a regression is outlined in red. matplotlib is imported only here, only when charts are asked for, and
drawn through the Agg canvas directly (no pyplot, no global backend switch, no display needed).
"""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path
from typing import Any

from torchrig.errors import UsageError
from torchrig.report.model import MachineGroup, Report, RowKey, format_change, format_number

__all__ = ["require_matplotlib", "write_charts"]

_PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
_MAX_COLS = 3


def require_matplotlib() -> Any:
    """The matplotlib module, or a usage error that says how to get it (or how to do without charts)."""
    try:
        import matplotlib
        from matplotlib.backends import backend_agg  # noqa: F401 - fail here, not halfway through the charts
    except ImportError:
        raise UsageError(
            "PNG charts need matplotlib, which is not installed in this Python: "
            "pip install 'torchrig[report]' (or pip install matplotlib), "
            "or leave the charts out with --format md,html,csv"
        ) from None
    return matplotlib


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _chart_rows(report: Report, g: MachineGroup) -> list[RowKey]:
    """The throughputs (higher-is-better metrics) of each benchmark; all its metrics where it has none."""
    rows: dict[str, list[tuple[RowKey, bool]]] = {}
    for r in g.rows:
        samples = [s for e in g.envs if r.kind == "bench" and r.metric and (s := report.cell(r, g, e).sample)]
        if samples:
            rows.setdefault(r.name, []).append((r, any(s.higher_is_better for s in samples)))
    out = []
    for metrics in rows.values():
        rates = [r for r, higher in metrics if higher]
        out += rates or [r for r, _ in metrics]
    return out


_HEADROOM = 1.25  # the y axis ends this far above the highest bar (its label goes there)
# 1e308 is a valid record value, but matplotlib's transforms multiply coordinates and axis limits, overflowing
# near the float limit (an inf axis limit is a ValueError): a bar beyond this is named, not drawn.
_MAX_DRAWN = 1e300


def _panel(ax: Any, report: Report, g: MachineGroup, row: RowKey) -> None:
    unit, better = "", ""
    top = 0.0
    for i, env in enumerate(g.envs):
        cell = report.cell(row, g, env)
        s = cell.sample
        if s is None:
            ax.text(i, 0, f" {cell.missing or 'not run'}", rotation=90, ha="center", va="bottom", fontsize=8,
                    color="#818b98", style="italic")
            continue
        unit = s.unit
        better = "higher is better" if s.higher_is_better else "lower is better"
        cmp = cell.comparison
        regressed = cmp is not None and cmp.outcome == "regression"
        err = s.spread if s.spread is not None else 0.0
        if not all(abs(x) <= _MAX_DRAWN for x in (s.mean - err, s.mean + err, cmp.baseline if cmp else None) if x):
            ax.text(i, 0, f" {format_number(s.mean)}: too large to draw", rotation=90, ha="center", va="bottom",
                    fontsize=8, color="#818b98", style="italic")
            continue
        ax.bar(i, s.mean, width=0.7, color=_PALETTE[i % len(_PALETTE)], yerr=err, capsize=4,
               edgecolor="#d1242f" if regressed else "none", linewidth=2.5 if regressed else 0)
        top = max(top, s.mean + err)
        label = f"{format_number(s.mean)}\nn={s.n}" + (
            f" · {format_change(cmp.change)}" if cmp is not None and cmp.change is not None else "")
        ax.annotate(label, (i, s.mean + err), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                    fontsize=8, color="#d1242f" if regressed else "#1f2328")
        if cmp is not None and cmp.baseline is not None:
            ax.hlines(cmp.baseline, i - 0.42, i + 0.42, colors="#1f2328", linestyles="dashed", linewidth=1.2,
                      label="baseline")
            top = max(top, cmp.baseline)
    ax.set_xticks(range(len(g.envs)), g.envs, rotation=20, ha="right")
    ax.set_xlim(-0.6, len(g.envs) - 0.4)
    ax.set_ylim(0, top * _HEADROOM if top > 0 else 1)
    ax.set_title(f"{row.name}\n{row.metric}", fontsize=10)
    ax.set_ylabel(f"{unit} ({better})" if unit else better, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def write_charts(report: Report, out_dir: Path) -> list[Path]:
    """One PNG per machine that has benchmark results; returns their paths (none without benchmarks)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written = []
    for g in report.groups:
        rows = _chart_rows(report, g)
        if not rows:
            continue
        ncols = min(_MAX_COLS, len(rows))
        nrows = math.ceil(len(rows) / ncols)
        width = max(4.5, 1.0 + 0.75 * len(g.envs))
        fig = Figure(figsize=(width * ncols, 3.6 * nrows + 1.0), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for ax, row in zip(axes.flat, rows, strict=False):
            _panel(ax, report, g, row)
        for ax in list(axes.flat)[len(rows):]:
            ax.set_visible(False)
        # About 12 characters of a 10-point title per inch of figure: wrap rather than cut the machine off.
        chars = int(width * ncols * 12)
        legend = "bars: mean over n runs · error bar: spread"
        if report.n_baseline_records is not None:
            legend += " · dashed line: baseline mean · red outline: regression"
        title = textwrap.wrap(f"{g.label}: {g.description}", chars) + textwrap.wrap(legend, chars)
        fig.suptitle("\n".join(title), fontsize=10)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{_slug(g.label)}-{g.fingerprint}.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written
