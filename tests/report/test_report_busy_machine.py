"""A busy machine and a host-bound benchmark show in the report's Summary (md and html), from the record's ``load``
field (bench/load.py) and the busy check (bench/busy.py); records without ``load`` still load and report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from torchrig.report import build_report, write_report
from torchrig.results.records import Machine, Metric, Record, Software, load_records, write_record
from torchrig.results.schema import record_from_dict, validate_record

GPU = Machine(hostname="gpu-1", os="Linux 6.1", cpu="Xeon", cpu_count=32, accelerator="cuda",
              gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1, driver="580.65.06").with_fingerprint()
SW = Software(python="3.12.3", torch="2.14.1")
BUSY = {"busy": True, "reasons": ["load average after is 6.46 per core beyond this process (> 0.5)"],
        "other_cpu_share": 0.9}


def _rec(name: str, *, load: dict[str, Any] | None = None, warnings: tuple[str, ...] = (),
         busy_check: dict[str, Any] | None = None) -> Record:
    return Record(kind="bench", name=name, env_id="cuda130", machine=GPU, software=SW, verdict="pass",
                  wall_time_s=1.0, metrics={"throughput": Metric(value=800.0, unit="seq/s")}, warnings=warnings,
                  config={"timing": {"busy": busy_check}} if busy_check else {}, load=load)


def test_a_busy_machine_shows_in_the_summary_in_md_and_html(tmp_path: Path) -> None:
    report = build_report([_rec("train-bert-b32-seq128-amp_bf16", load=BUSY)])
    (row,) = report.summary
    assert any(w.startswith("busy machine: load average after is 6.46") for w in row.warnings), row.warnings
    md, html = (p.read_text() for p in write_report(report, tmp_path, ("md", "html")))
    summary_md = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "busy machine: load average after is 6.46" in summary_md
    summary_html = html.split('id="summary"', 1)[1]
    assert "busy machine: load average after is 6.46" in summary_html.split("</table>", 1)[0]


def test_a_quiet_machine_and_the_busy_check_are_not_a_busy_machine() -> None:
    quiet = {"busy": False, "reasons": []}
    flagged = {"pct": 61.0, "flagged": True, "method": "fake", "message": "device busy only 61.0 % of the round"}
    report = build_report([_rec("train-bert-b32-seq128-amp_bf16", load=quiet, busy_check=flagged,
                                warnings=("BenchTimingWarning: x: device busy only 61.0 % of the round",))])
    (row,) = report.summary
    assert not any(w.startswith("busy machine") for w in row.warnings), row.warnings
    assert any("launch-/host-bound" in w and "train-bert-b32-seq128" in w for w in row.warnings), row.warnings


def test_records_with_and_without_load_round_trip(tmp_path: Path) -> None:
    old = _rec("gemm-bf16-n8192").to_dict()
    del old["load"]  # written before the field existed
    assert validate_record(old) == [] and record_from_dict(old).load is None
    new = _rec("gemm-bf16-n8192", load=BUSY)
    write_record(new, tmp_path)
    (back,), problems = load_records([tmp_path])
    assert problems == []
    assert back.load is not None and back.load["busy"] is True


@given(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.sampled_from(["busy", "reasons", "x"]),
                                 st.one_of(st.booleans(), st.integers(), st.text(max_size=5),
                                           st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3)),
                                 max_size=3)))
def test_a_malformed_load_is_named_never_a_traceback(load: Any) -> None:
    d = _rec("gemm-bf16-n8192").to_dict()
    d["load"] = load
    errs = validate_record(json.loads(json.dumps(d)))
    ok = load is None or (isinstance(load, dict) and isinstance(load.get("busy"), bool)
                          and isinstance(load.get("reasons"), list)
                          and all(isinstance(r, str) for r in load["reasons"]))
    assert (errs == []) == ok, (load, errs)
    assert all(e.startswith("load") for e in errs)
