"""Result records -> one comparison table (Markdown, HTML, CSV) and charts, optionally against a baseline, with a
summary of the fleet of nodes the records came from.

One job per module, and the imports run one way (no circle): :mod:`~torchrig.report.stats` (the noise rule) <-
:mod:`~torchrig.report.model` (what a report is) <- :mod:`~torchrig.report.cells` (records -> one cell) <-
:mod:`~torchrig.report.fleet` (nodes compared within their group) <- :mod:`~torchrig.report.build` (records ->
report); the renderers :mod:`~torchrig.report.text`, :mod:`~torchrig.report.html` and
:mod:`~torchrig.report.charts` read the model only; :mod:`~torchrig.report.write` turns formats into files.
This module only re-exports.
"""

from __future__ import annotations

from torchrig.report.build import build_report
from torchrig.report.fleet import build_fleet
from torchrig.report.model import (
    HOST,
    REGRESSION_EXIT_CODE,
    Cell,
    ColumnKey,
    Comparison,
    ComparisonOutcome,
    Fleet,
    FleetGroup,
    MachineGroup,
    Outlier,
    Problem,
    RegressionError,
    Report,
    RowKey,
    format_number,
)
from torchrig.report.stats import Sample
from torchrig.report.write import FORMATS, check_out_dir, parse_formats, write_report

__all__ = [
    "FORMATS",
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
    "Sample",
    "build_fleet",
    "build_report",
    "check_out_dir",
    "format_number",
    "parse_formats",
    "write_report",
]
