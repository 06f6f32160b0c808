"""Skipped benchmarks keep their name and reason from pytest's report to the record (bench/skips.py ->
torchrig.results.benchconv): names as the benchmarks record them, and any malformed ``torchrig_skipped`` entry in a
hand-edited JSON ignored with a warning, never a crash."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bench.skips import benchmark_name
from torchrig.results.benchconv import records_from_json
from torchrig.results.records import validate_record


def test_names_are_the_ones_the_benchmarks_record() -> None:
    assert benchmark_name("bench_calibration.py::test_gemm[tf32-n8192]") == "gemm-tf32-n8192"
    assert benchmark_name("bench/bench_calibration.py::test_copy_bandwidth[256MiB]") == "copy-256MiB"
    assert benchmark_name("bench_models.py::test_train[bert-b32-seq128-amp_bf16]") == "train-bert-b32-seq128-amp_bf16"
    assert benchmark_name("bench_ddp.py::test_ddp_scaling[resnet50-b64]") == "ddp-resnet50-b64"
    assert benchmark_name("bench_x.py::test_other") == "other"
    assert benchmark_name("not a node id") == "not a node id"


_JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                        max_leaves=12)


@given(st.one_of(_JSONISH, st.lists(st.one_of(_JSONISH, st.fixed_dictionaries(
    {"name": st.text(max_size=300), "reason": st.text(max_size=300)})), max_size=6)))
def test_any_torchrig_skipped_value_converts_or_is_ignored_with_a_warning(value: Any) -> None:
    warnings: list[str] = []
    recs = records_from_json({"benchmarks": [], "torchrig_skipped": value}, warn=warnings.append)
    for r in recs:
        assert r.verdict == "skip" and r.name and not validate_record(r.to_dict())
    good = sum(1 for e in value if isinstance(e, dict) and isinstance(e.get("name"), str) and e["name"]
               and isinstance(e.get("reason"), str)) if isinstance(value, list) else 0
    assert len(recs) == good
    if value is not None and (not isinstance(value, list) or good < len(value)):
        assert warnings
