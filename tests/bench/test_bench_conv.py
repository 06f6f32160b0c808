"""The converter from pytest-benchmark JSON to result records (no torch: synthetic JSON)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from torchrig.errors import ConfigurationError
from torchrig.results.benchconv import add_utilisation, convert, main, records_from_json
from torchrig.results.records import load_records, validate_record


def _metric(v: float, unit: str, repeats: int = 5, sd: float | None = None, hib: bool = True) -> dict[str, Any]:
    return {"value": v, "unit": unit, "higher_is_better": hib, "repeats": repeats, "stddev": sd}


def _bench(name: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "group": None, "name": f"test_x[{name}]", "fullname": f"bench/x.py::test_x[{name}]", "params": None,
        "param": name, "options": {},
        "stats": {"min": 0.1, "max": 0.12, "mean": 0.11, "stddev": 0.005, "rounds": 5, "median": 0.11,
                  "iqr": 0.01, "total": 0.55, "iterations": 1, "data": [0.1, 0.11, 0.11, 0.11, 0.12]},
        "extra_info": extra,
    }


def _doc(accelerator: str = "cuda", cv: float = 1.0, flagged: int = 0) -> dict[str, Any]:
    machine = {"hostname": "h", "os": "Linux", "cpu": "x", "cpu_count": 8, "accelerator": accelerator,
               "gpu_name": "NVIDIA H100 80GB HBM3" if accelerator != "cpu" else None,
               "gpu_count": 1 if accelerator != "cpu" else 0, "gpu_memory_gb": None, "driver": None,
               "fingerprint": "abc"}
    common = {"cv_pct": _metric(cv, "%", hib=False), "timer_flagged_rounds": _metric(flagged, "rounds", hib=False)}
    gemm = {"torchrig_bench": 1, "name": "gemm-bf16-n8192", "bench": "gemm", "case": {"n": 8192},
            "metrics": {"tflops": _metric(700.0, "TFLOP/s", sd=7.0), **common},
            "ceiling": {"key": "bf16", "tflops": 700.0}, "warnings": [], "wall_time_s": 3.0,
            "timing": {"self_check": {"ok": flagged == 0, "message": "m"}}}
    gemm_small = copy.deepcopy(gemm)
    gemm_small.update(name="gemm-bf16-n1024", ceiling={"key": "bf16", "tflops": 350.0})
    train = {"torchrig_bench": 1, "name": "train-resnet50", "bench": "train", "case": {"batch": 256},
             "metrics": {"throughput": _metric(2500.0, "images/s"), "tflops": _metric(280.0, "TFLOP/s", sd=2.8),
                         **common},
             "ceiling_key": "bf16", "loss": {"first": 7.0, "last": 6.5}, "warnings": ["UserWarning: w"],
             "wall_time_s": 40.0, "timing": {"self_check": {"ok": flagged == 0, "message": "round 1: ..."}}}
    return {
        "machine_info": {"node": "h", "torchrig": {
            "env_id": "cuda124", "machine": machine,
            "software": {"python": "3.11.7", "torch": "2.4.1", "cuda": "12.4", "future_field": 1},
            "container": None,
            "env_vars": {"TORCHRIG_IMAGE_ID": "sha256:img", "TORCHRIG_IMAGE_DIGEST": "sha256:dig"},
            "gpu": {"name": "NVIDIA H100 80GB HBM3"}}},
        "commit_info": {}, "datetime": "2026-01-02T03:04:05.678+00:00", "version": "5.1.0",
        "benchmarks": [_bench("a", gemm), _bench("b", gemm_small), _bench("c", train)],
    }


def test_mfu_against_best_gemm_of_the_same_precision() -> None:
    doc = _doc()
    add_utilisation(doc["benchmarks"])
    e = doc["benchmarks"][2]["extra_info"]
    assert e["metrics"]["mfu_pct"]["value"] == pytest.approx(40.0)
    assert e["metrics"]["mfu_pct"]["stddev"] == pytest.approx(0.4)
    assert e["mfu_ceiling"] == {"key": "bf16", "tflops": 700.0, "from": "gemm-bf16-n8192"}
    add_utilisation(doc["benchmarks"])  # idempotent
    assert e["metrics"]["mfu_pct"]["value"] == pytest.approx(40.0)


def test_no_mfu_without_a_matching_ceiling() -> None:
    doc = _doc()
    doc["benchmarks"][2]["extra_info"]["ceiling_key"] = "fp16"
    add_utilisation(doc["benchmarks"])
    assert "mfu_pct" not in doc["benchmarks"][2]["extra_info"]["metrics"]


def test_records_are_valid_and_carry_the_context() -> None:
    recs = records_from_json(_doc(), source="x.json")
    assert [r.name for r in recs] == ["gemm-bf16-n8192", "gemm-bf16-n1024", "train-resnet50"]
    for r in recs:
        assert validate_record(r.to_dict()) == []
        assert r.kind == "bench" and r.env_id == "cuda124" and r.verdict == "pass"
        assert r.container is not None and r.container.image_digest == "sha256:dig"
        assert r.software.torch == "2.4.1" and r.machine.fingerprint == "abc"
        assert r.created == "2026-01-02T03:04:05Z"
    train = recs[2]
    assert train.metrics["throughput"].unit == "images/s" and train.metrics["throughput"].repeats == 5
    assert train.metrics["mfu_pct"].value == pytest.approx(40.0)
    assert train.warnings == ("UserWarning: w",)
    assert train.config["pytest_benchmark"]["source"] == "x.json"
    assert {g.metric for g in train.gates} == {"timer_flagged_rounds", "cv_pct"}


def test_a_flagged_timer_fails_the_record() -> None:
    recs = records_from_json(_doc(flagged=2))
    assert all(r.verdict == "fail" for r in recs)
    assert any("timer self-check" in w for w in recs[2].warnings)


def test_cv_gate_applies_on_gpus_only() -> None:
    assert all(r.verdict == "fail" for r in records_from_json(_doc(cv=5.0)))
    cpu = records_from_json(_doc(accelerator="cpu", cv=50.0))
    assert all(r.verdict == "pass" for r in cpu)
    assert all(g.metric != "cv_pct" for r in cpu for g in r.gates)


def test_non_finite_loss_fails_the_record() -> None:
    doc = _doc()
    doc["benchmarks"][2]["extra_info"]["loss"]["last"] = None  # NaN is written as null
    rec = records_from_json(doc)[2]
    assert rec.verdict == "fail" and any("loss" in w for w in rec.warnings)


def test_foreign_benchmarks_become_records_too() -> None:
    doc = {"machine_info": {"node": "n", "python_version": "3.10.1", "system": "Linux", "release": "6",
                            "cpu": {"brand_raw": "cpu", "count": 4}},
           "benchmarks": [_bench("plain", {})], "datetime": "2026-01-01T00:00:00+00:00", "version": "4.0.0"}
    (rec,) = records_from_json(doc)
    assert validate_record(rec.to_dict()) == []
    assert rec.name == "test_x[plain]" and rec.metrics["time_s"].value == pytest.approx(0.11)
    assert rec.machine.cpu_count == 4 and rec.software.python == "3.10.1"
    assert any("no torchrig environment fingerprint" in w for w in rec.warnings)


def test_convert_writes_loadable_records(tmp_path: Path) -> None:
    src = tmp_path / "bench.json"
    src.write_text(json.dumps(_doc()), encoding="utf-8")
    written = convert([src], tmp_path / "results")
    assert len(written) == 3 and all(p.parent == tmp_path / "results" / "bench" for p in written)
    records, problems = load_records([tmp_path / "results"])
    assert problems == [] and len(records) == 3


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "bench.json"
    src.write_text(json.dumps(_doc()), encoding="utf-8")
    assert main([str(src), "--results", str(tmp_path / "r")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    bad = tmp_path / "bad.json"
    bad.write_text('{"benchmarks": 3}', encoding="utf-8")
    assert main([str(bad), "--results", str(tmp_path / "r")]) == ConfigurationError.return_code
    assert "no 'benchmarks' list" in capsys.readouterr().err
