"""Write a report: the formats a user can ask for, and the files each one becomes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from torchrig.errors import FatalError, UsageError
from torchrig.report.charts import write_charts
from torchrig.report.html import render_html
from torchrig.report.model import Report
from torchrig.report.text import render_csv, render_fleet_csv, render_markdown
from torchrig.results.io import atomic_write_text

__all__ = ["FORMATS", "check_out_dir", "parse_formats", "write_report"]

FORMATS: tuple[str, ...] = ("md", "html", "csv", "png")


def parse_formats(text: str) -> tuple[str, ...]:
    """``"md,html"`` -> ("md", "html"), in the canonical order; unknown names are a usage error."""
    wanted = {f.strip().lower() for f in text.split(",") if f.strip()}
    unknown = sorted(wanted - set(FORMATS))
    if unknown or not wanted:
        raise UsageError(f"--format takes a comma-separated list of {', '.join(FORMATS)}; got {text!r}")
    return tuple(f for f in FORMATS if f in wanted)


_SYSTEM = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_out_dir(out_dir: Path, *, create: bool = True) -> None:
    """``out_dir`` is (or can become) a folder this process can write, not a file or a system folder; with
    ``create=False`` nothing is made (the CLI checks before it reads a record) and the nearest existing parent
    must be writable. A path the system refuses to look at (a name too long, a symbolic link loop) is a UsageError
    too."""
    try:
        _check_out_dir(out_dir, create=create)
    except (RuntimeError, OSError) as e:  # a symlink loop is a RuntimeError before Python 3.13, an OSError after
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise UsageError(f"--out {out_dir}: cannot be used ({why}): choose another --out") from None


def _check_out_dir(out_dir: Path, *, create: bool) -> None:
    resolved = out_dir.expanduser().resolve()
    if any(resolved == s or s in resolved.parents for s in _SYSTEM):
        raise UsageError(f"--out {out_dir}: a report cannot be written under /{resolved.parts[1]}; "
                         "choose a folder of your own (e.g. --out results/report)")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file, not a folder: remove it or choose another --out")
    if not create:
        existing = next(d for d in (resolved, *resolved.parents) if d.exists())
        if not existing.is_dir():
            raise UsageError(f"--out {out_dir}: {existing} is a file, so no folder can be made below it: "
                             "choose another --out")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(f"--out {out_dir}: this user cannot write in {existing}: choose another --out")
        return
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out_dir}: cannot create the folder ({e.strerror or e}): "
                         "choose another --out") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out_dir}: this user cannot write there: choose another --out or fix its permissions")


def write_report(report: Report, out_dir: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write the requested outputs into ``out_dir``; returns the files written.

    PNG charts come first so the HTML page can embed them (it stays a single self-contained file). ``csv`` is two
    files: ``report.csv`` (one line per cell) and ``fleet.csv`` (one line per node and group: the fleet summary),
    each a plain table with its header first, as spreadsheets and pandas expect.
    """
    check_out_dir(out_dir)
    try:
        return _write(report, out_dir, formats)
    except OSError as e:  # a full disk, a quota, a folder removed meanwhile: said, and nothing the user gave touched
        raise FatalError(f"writing the report into {out_dir} failed ({e.strerror or e}"
                         f"{': ' + str(e.filename) if e.filename else ''}): free space or choose another --out; "
                         "the records were only read") from None


def _write(report: Report, out_dir: Path, formats: Sequence[str]) -> list[Path]:
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
            atomic_write_text(path, render())  # a report of an earlier run is replaced whole or not at all
            written.append(path)
    return written
