"""Generated and mutated result records and pytest-benchmark JSON through load_records, benchconv and the report:
a bad file is skipped with a warning naming it, the rest still loads and renders; never a crash."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrig.errors import ConfigurationError
from torchrig.report import build_report
from torchrig.report.text import render_csv, render_markdown
from torchrig.results.benchconv import convert, load_bench_json, records_from_json
from torchrig.results.records import Machine, Metric, Record, Software, load_records, write_record

MACHINE = Machine(hostname="gpu-1", os="Linux 6.1", cpu="Xeon", cpu_count=32, accelerator="cuda",
                  gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1, gpu_memory_gb=79.6, driver="550.54.14")


def _record(value: float = 2600.0, env: str = "cuda121") -> Record:
    return Record(kind="bench", name="resnet50", env_id=env, machine=MACHINE.with_fingerprint(),
                  software=Software(python="3.11.9", torch="2.1.0"), verdict="pass", wall_time_s=1.0,
                  metrics={"throughput": Metric(value=value, unit="img/s", repeats=10, stddev=value * 0.02)},
                  created="2025-01-01T00:00:00Z")


GOOD = _record().to_dict()


def _bench_doc() -> dict[str, Any]:
    metric = {"value": 700.0, "unit": "TFLOP/s", "higher_is_better": True, "repeats": 5, "stddev": 7.0}
    extra = {"torchrig_bench": 1, "name": "gemm-bf16", "bench": "gemm", "metrics": {"tflops": metric,
             "cv_pct": {"value": 1.0, "unit": "%", "higher_is_better": False}}, "ceiling": {"key": "bf16",
             "tflops": 700.0}, "warnings": [], "wall_time_s": 3.0, "timing": {"self_check": {"ok": True}}}
    return {"machine_info": {"node": "h", "torchrig": {"env_id": "cuda124", "machine": MACHINE.with_fingerprint()
                                                       .__dict__, "software": {"python": "3.11.7"}}},
            "datetime": "2026-01-02T03:04:05+00:00", "version": "5.1.0",
            "benchmarks": [{"name": "a", "stats": {"mean": 0.1, "rounds": 5}, "extra_info": extra},
                           {"name": "b", "stats": {"mean": 0.2, "rounds": 5}, "extra_info": copy.deepcopy(extra)}]}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),  # floats: NaN and Infinity too
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=10)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, data: st.DataObject) -> Any:
    """``doc`` with one value replaced by generated JSON, a key deleted, or nesting 10,000 deep."""
    doc = copy.deepcopy(doc)
    path = data.draw(st.sampled_from(_paths(doc)[1:]))
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    how = data.draw(st.sampled_from(["replace", "delete", "deep", "huge"]))
    if how == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif how == "deep":
        parent[path[-1]] = json.loads("[" * 60 + "]" * 60)  # deeper than records nest, within what JSON reads
    elif how == "huge":
        parent[path[-1]] = "x" * 100_000
    else:
        parent[path[-1]] = data.draw(json_values)
    return doc


def _as_bytes(doc: Any, data: st.DataObject) -> bytes:
    """JSON text of ``doc``, sometimes cut, flipped, given a BOM, a NUL, invalid UTF-8 or 5,000 brackets."""
    text = json.dumps(doc).encode()  # allow_nan: NaN/Infinity go into the file as a careless writer would
    how = data.draw(st.sampled_from(["as-is", "truncate", "flip", "bom", "nul", "latin1", "brackets"]))
    i = data.draw(st.integers(0, len(text)))
    if how == "truncate":
        return text[:i]
    if how == "flip":
        return text[:i] + bytes([data.draw(st.integers(0, 255))]) + text[i + 1:]
    if how == "bom":
        return b"\xef\xbb\xbf" + text
    if how in ("nul", "latin1"):
        return text[:i] + (b"\x00" if how == "nul" else b"\xe9") + text[i:]
    if how == "brackets":
        return b"[" * 5000 + text + b"]" * 5000
    return text


@given(st.data())
@settings(max_examples=80)
def test_a_mutated_record_is_skipped_with_a_warning_and_the_rest_renders(
        tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    d = tmp_path_factory.mktemp("results")
    kept = _record(value=1.0)
    good = write_record(kept, d)
    bad = d / "bench" / "mutated.json"
    bad.write_bytes(_as_bytes(_mutate(GOOD, data), data))
    before = bad.read_bytes()
    records, problems = load_records([d])
    assert kept.run_id in {r.run_id for r in records}, "the good record is still loaded"
    assert all(p.path == bad for p in problems) and len(problems) <= 1
    assert len(records) + len(problems) in (1, 2)  # mutated: a record, a problem or not a record at all
    for p in problems:
        assert p.reason.startswith("skipped") and len(p.reason) < 600
    report = build_report(records, problems)
    render_markdown(report)
    render_csv(report)
    assert bad.read_bytes() == before and good.is_file()  # inputs are never modified


@pytest.mark.parametrize("what", ["fifo", "dir", "loop", "devnull"])
def test_a_special_file_among_records_is_named_and_skipped(tmp_path: Path, what: str) -> None:
    d = tmp_path / "results"
    write_record(_record(), d)
    odd = d / "bench" / "odd.json"
    if what == "fifo":
        os.mkfifo(odd)
    elif what == "dir":
        odd.mkdir()
        (odd / "inner.txt").write_text("x")
    elif what == "loop":
        odd.symlink_to(odd)
    else:
        odd.symlink_to(os.devnull)
    records, problems = load_records([d])
    assert len(records) == 1
    if what != "dir":  # a folder named *.json is walked into, not read
        assert [p.path for p in problems] == [odd]
        assert {"fifo": "FIFO", "loop": "symbolic link loop", "devnull": "character device"}[what] in problems[0].reason


@given(st.data())
@settings(max_examples=80)
def test_mutated_benchmark_json_converts_what_it_can_or_is_exit_2(
        tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    d = tmp_path_factory.mktemp("bench")
    src = d / "bench.json"
    src.write_bytes(_as_bytes(_mutate(_bench_doc(), data), data))
    warnings: list[str] = []
    try:
        written = convert([src], d / "results", warn=warnings.append)
    except ConfigurationError as e:
        assert str(src) in str(e) and e.return_code == 2
        return
    records, problems = load_records([d / "results"]) if written else ([], [])
    assert len(records) == len(written) and not problems  # what benchconv writes, the report reads
    assert len(written) + len(warnings) >= 1 or not load_bench_json(src)["benchmarks"]


def test_a_benchmark_entry_that_is_not_an_object_is_skipped_with_a_warning() -> None:
    doc = _bench_doc()
    doc["benchmarks"].append("not an object")
    doc["benchmarks"][0]["extra_info"] = ["a list"]
    warnings: list[str] = []
    recs = records_from_json(doc, source="x.json", warn=warnings.append)
    assert [r.name for r in recs] == ["gemm-bf16"] and all("x.json" in w for w in warnings)
    assert any("not objects" in w for w in warnings) and any("benchmark 'a' skipped" in w for w in warnings)
