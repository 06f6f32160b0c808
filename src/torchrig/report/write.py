"""Write a report: the formats a user can ask for, and the files each one becomes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from torchrig.errors import UsageError
from torchrig.report.charts import write_charts
from torchrig.report.html import render_html
from torchrig.report.model import Report
from torchrig.report.text import render_csv, render_fleet_csv, render_markdown

__all__ = ["FORMATS", "parse_formats", "write_report"]

FORMATS: tuple[str, ...] = ("md", "html", "csv", "png")


def parse_formats(text: str) -> tuple[str, ...]:
    """``"md,html"`` -> ("md", "html"), in the canonical order; unknown names are a usage error."""
    wanted = {f.strip().lower() for f in text.split(",") if f.strip()}
    unknown = sorted(wanted - set(FORMATS))
    if unknown or not wanted:
        raise UsageError(f"--format takes a comma-separated list of {', '.join(FORMATS)}; got {text!r}")
    return tuple(f for f in FORMATS if f in wanted)


def write_report(report: Report, out_dir: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write the requested outputs into ``out_dir``; returns the files written.

    PNG charts come first so the HTML page can embed them (it stays a single self-contained file). ``csv`` is two
    files: ``report.csv`` (one line per cell) and ``fleet.csv`` (one line per node and group: the fleet summary),
    each a plain table with its header first, as spreadsheets and pandas expect.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    charts: list[Path] = []
    if "png" in formats:
        charts = write_charts(report, out_dir / "charts")
        written += charts
    outputs: list[tuple[str, str, Callable[[], str]]] = [
        ("md", "report.md", lambda: render_markdown(report, charts=[c.relative_to(out_dir) for c in charts])),
        ("html", "report.html", lambda: render_html(report, charts=charts)),
        ("csv", "fleet.csv", lambda: render_fleet_csv(report)),
        ("csv", "report.csv", lambda: render_csv(report)),
    ]
    for fmt, name, render in outputs:
        if fmt in formats:
            path = out_dir / name
            path.write_text(render(), encoding="utf-8", newline="" if fmt == "csv" else None)
            written.append(path)
    return written
