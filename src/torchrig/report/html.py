"""The report as one self-contained HTML page: inline CSS, a few lines of inline JS to sort, charts as data URIs.

Nothing is fetched from anywhere: the page opens the same from a CI artifact, a laptop or an air-gapped machine.
Click a column header to sort the rows by that environment's value (click again to reverse).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path

from torchrig.report.model import Cell, MachineGroup, Report
from torchrig.report.text import (
    cell_text,
    figure_text,
    fleet_headline,
    fleet_lines,
    legend,
    row_label,
    shown_verdicts,
    verdict_text,
)

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 4px}
.meta{color:#59636e;margin:0 0 12px}
.note{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 12px;margin:8px 0}
.warn{background:#ffebe9;border:1px solid #ff8182;border-radius:6px;padding:8px 12px;margin:8px 0}
.ok{background:#dafbe1;border:1px solid #4ac26b;border-radius:6px;padding:8px 12px;margin:8px 0}
table{border-collapse:collapse;margin:8px 0 4px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d1d9e0;padding:5px 9px;vertical-align:top;text-align:left}
thead th{background:#f6f8fa;cursor:pointer;user-select:none;white-space:nowrap}
thead th small{display:block;font-weight:normal;color:#59636e}
thead th[data-dir=asc]::after{content:" ▲"} thead th[data-dir=desc]::after{content:" ▼"}
td.label{white-space:nowrap} td.label .kind{color:#59636e;font-size:12px}
td.cell{min-width:130px} .main{font-weight:600} .detail{color:#59636e;font-size:12px}
.change{font-size:12px;margin-top:2px}
.s-pass{background:#dafbe1} .s-fail{background:#ffebe9} .s-skip{background:#f6f8fa}
.s-missing{color:#818b98;font-style:italic}
.o-regression .change{color:#d1242f;font-weight:700} .o-improvement .change{color:#1a7f37;font-weight:600}
.o-regression{outline:2px solid #d1242f;outline-offset:-2px} .o-flaky .change{color:#9a6700;font-weight:600}
.charts img{max-width:100%;border:1px solid #d1d9e0;margin:8px 0}
code{background:#f6f8fa;padding:1px 4px;border-radius:4px}
table.summary td{font-size:13px} table.summary ul{margin:0;padding-left:16px}
table.summary small{display:block;color:#59636e}
.v-pass{color:#1a7f37} .v-fail,.v-error{color:#d1242f;font-weight:600} .v-skip{color:#59636e}
.w{color:#9a6700}
"""

# Sort by the clicked column: numbers (data-sort) first in the chosen order, then text; missing cells last.
_JS = """
document.querySelectorAll("table.sortable thead th").forEach((th, i) => th.addEventListener("click", () => {
  const table = th.closest("table"), body = table.tBodies[0], asc = th.dataset.dir !== "asc";
  table.querySelectorAll("thead th").forEach(h => delete h.dataset.dir);
  th.dataset.dir = asc ? "asc" : "desc";
  const key = td => { const v = td.dataset.sort ?? td.textContent, n = parseFloat(v);
                      return v === "" ? null : (isNaN(n) ? v : n); };
  Array.from(body.rows).sort((a, b) => {
    const x = key(a.cells[i]), y = key(b.cells[i]);
    if (x === null || y === null) return (x === null) - (y === null);
    if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
  }).forEach(r => body.appendChild(r));
}));
"""


def _td(cell: Cell) -> str:
    t = cell_text(cell)
    classes = ["cell", f"s-{cell.status}"]
    if cell.comparison is not None:
        classes.append(f"o-{cell.comparison.outcome}")
    sort = repr(cell.sample.mean) if cell.sample is not None else (cell.verdict or "")
    title = cell.comparison.detail if cell.comparison is not None else ""
    html = f'<td class="{" ".join(classes)}" data-sort="{escape(sort)}" title="{escape(title)}">'
    html += f'<div class="main">{escape((t.mark + " " + t.main).strip())}</div>'
    if t.detail:
        html += f'<div class="detail">{escape(t.detail)}</div>'
    if t.change:
        html += f'<div class="change">{escape(t.change)}</div>'
    return html + "</td>"


def _group(report: Report, g: MachineGroup) -> str:
    parts = [f"<section><h2>{escape(g.label)}: {escape(g.description)}</h2>",
             f'<p class="meta">fingerprint <code>{escape(g.fingerprint)}</code> · hosts: '
             f"{escape(', '.join(g.hostnames))}</p>",
             '<table class="sortable"><thead><tr><th>result</th>']
    parts += [f"<th>{escape(e)}<small>{escape(g.software.get(e, ''))}</small></th>" for e in g.envs]
    parts.append("</tr></thead><tbody>")
    for row in g.rows:
        label = row_label(report, g, row)
        parts.append(f'<tr><td class="label" data-sort="{escape(label)}"><span class="kind">{escape(row.kind)}</span> '
                     + (f"<b>{escape(label)}</b>" if row.is_verdict else escape(label)) + "</td>")
        parts += [_td(report.cell(row, g, e)) for e in g.envs]
        parts.append("</tr>")
    parts.append("</tbody></table></section>")
    return "\n".join(parts)


def _regressions(report: Report) -> str:
    regs = report.regressions
    if not regs:
        return (f'<div class="ok">No regressions beyond run-to-run noise against the baseline '
                f"({report.n_baseline_records} records).</div>")
    items = []
    for g, row, env, cell in regs:
        t = cell_text(cell)
        detail = cell.comparison.detail if cell.comparison else ""
        items.append(f"<li><b>{escape(g.label)} · {escape(env)} · {escape(row.label)}</b>: {escape(t.main)} "
                     f"({escape(t.change)}; {escape(detail)})</li>")
    return f'<div class="warn"><b>{len(regs)} regression(s) beyond noise</b><ul>{"".join(items)}</ul></div>'


def _fleet(report: Report) -> str:
    fleet = report.fleet
    box = "warn" if fleet.outliers or len(fleet.passed) < len(fleet.nodes) else "ok"
    items = "".join(f"<li>{escape(x)}</li>" for x in fleet_lines(fleet))
    return (f'<div class="{box}" id="fleet"><b>Fleet:</b> {escape(fleet_headline(fleet))}'
            + (f"<ul>{items}</ul>" if items else "") + "</div>")


def _summary(report: Report) -> str:
    if not report.summary:
        return ""
    parts = ['<section id="summary"><h2>Summary</h2><table class="summary"><thead><tr><th>environment</th>'
             "<th>machine</th><th>gates</th><th>headline figures</th><th>warnings</th></tr></thead><tbody>"]
    for row in report.summary:
        failed = sum(v.verdict in ("fail", "error") for v in row.verdicts)
        count = (f'<b class="v-fail">{failed} of {len(row.verdicts)} failed</b>' if failed
                 else f"all {len(row.verdicts) - sum(v.verdict == 'skip' for v in row.verdicts)} passed")
        gates = "".join(f'<li class="v-{escape(v.verdict)}">{escape(verdict_text(v))}</li>'
                        for v in shown_verdicts(row.verdicts))
        figures = "".join(f"<li>{escape(figure_text(f))}</li>" for f in row.figures)
        warns = "".join(f'<li class="w">⚠ {escape(w)}</li>' for w in row.warnings)
        parts.append(f"<tr><td><b>{escape(row.env)}</b><small>{escape(row.software)}</small></td>"
                     f"<td>{escape(row.machine)}<br><small>{escape(row.description)}</small></td>"
                     f"<td>{count}<ul>{gates}</ul></td>"
                     f"<td>{f'<ul>{figures}</ul>' if figures else '<i>no throughput measured</i>'}</td>"
                     f"<td>{f'<ul>{warns}</ul>' if warns else 'none'}</td></tr>")
    parts.append("</tbody></table></section>")
    return "\n".join(parts)


def render_html(report: Report, *, charts: Sequence[Path] = ()) -> str:
    n = len(report.groups)
    meta = f"{report.n_records} records · {n} machine{'s' if n != 1 else ''} · generated {report.created}"
    if report.n_baseline_records is not None:
        meta += f" · baseline: {report.n_baseline_records} records"
    body = ["<h1>torchrig results</h1>", f'<p class="meta">{escape(meta)}</p>', _summary(report)]
    if report.fleet.nodes:
        body.append(_fleet(report))
    body += [f'<div class="note"><b>Note:</b> {escape(x)}</div>' for x in report.notes]
    if report.problems:
        body.append(f'<div class="warn"><b>{len(report.problems)} file(s) skipped</b>: not valid records '
                    "(listed at the end).</div>")
    if report.n_baseline_records is not None:
        body.append(_regressions(report))
    if not report.groups:
        body.append("<p><i>No valid records found.</i></p>")
    body += [_group(report, g) for g in report.groups]
    if charts:
        body.append('<section class="charts"><h2>Charts</h2>')
        for c in charts:
            data = base64.b64encode(c.read_bytes()).decode("ascii")
            body.append(f'<img alt="{escape(c.stem)}" src="data:image/png;base64,{data}">')
        body.append("</section>")
    if report.problems:
        body.append('<section><h2>Skipped files</h2><table><thead><tr><th>file</th><th>from</th><th>why</th></tr>'
                    "</thead><tbody>")
        body += [f"<tr><td><code>{escape(str(p.path))}</code></td><td>{escape(p.source)}</td>"
                 f"<td>{escape(p.reason)}</td></tr>" for p in report.problems]
        body.append("</tbody></table></section>")
    body.append("<section><h2>How to read this</h2><ul>" + "".join(f"<li>{escape(x)}</li>" for x in legend(report))
                + "</ul></section>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>torchrig results</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + f"\n<script>{_JS}</script>\n</body></html>\n")
