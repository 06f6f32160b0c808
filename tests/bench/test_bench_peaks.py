"""The spec-peak table: well-formed, sourced, and matched to the names torch reports."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.peaks import PEAKS_FILE, lookup

_NAMES = [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H100 NVL", "h100-nvl"),
    ("NVIDIA H200", "h200-sxm"),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb"),
    ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
    ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb"),
    ("NVIDIA L4", "l4"),
    ("AMD Instinct MI300X", "mi300x"),
    ("AMD Instinct MI300A", "mi300a"),
    ("AMD Instinct MI250X", "mi250x"),
    ("AMD Instinct MI250X/MI250", "mi250"),
    ("AMD Instinct MI250", "mi250"),
    # added with issue 18; GH200 once matched the H200 pattern (4.8 TB/s instead of 4.0)
    ("NVIDIA GH200 480GB", "gh200"),
    ("NVIDIA GH200 144G HBM3e", "gh200-144g"),
    ("NVIDIA H200 NVL", None),
    ("NVIDIA B200", "b200"),
    ("NVIDIA GB200", "gb200"),
    ("NVIDIA H20", "h20"),
    ("NVIDIA L40S", "l40s"),
    ("AMD Instinct MI325X", "mi325x"),
    ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "h100-sxm"),
]


@pytest.mark.parametrize(("name", "gpu_id"), _NAMES)
def test_known_gpus(name: str, gpu_id: str | None) -> None:
    peak = lookup(name)
    assert (peak.id if peak else None) == gpu_id


@pytest.mark.parametrize("name", [None, "", "NVIDIA L40", "NVIDIA GeForce RTX 4090", "Tesla V100-SXM2-16GB"])
def test_unknown_gpus_have_no_peak(name: str | None) -> None:
    assert lookup(name) is None


def test_values_are_per_torch_device() -> None:
    """An MI250X card is two torch devices (GCDs): each gets half the card's figures."""
    mi250x = lookup("AMD Instinct MI250X")
    assert mi250x is not None
    assert mi250x.tflops["bf16"] == pytest.approx(383.0 / 2)
    assert mi250x.bandwidth_gbs == pytest.approx(3276.8 / 2)
    h100 = lookup("NVIDIA H100 80GB HBM3")
    assert h100 is not None and h100.tflops["bf16"] == pytest.approx(989.5) and h100.bandwidth_gbs == 3350


def test_table_is_complete_and_sourced() -> None:
    data = json.loads(PEAKS_FILE.read_text(encoding="utf-8"))
    ids = [g["id"] for g in data["gpus"]]
    assert len(ids) == len(set(ids))
    for needed in ("h100-sxm", "h100-pcie", "a100-sxm4-80gb", "l4", "mi250x", "mi300x"):
        assert needed in ids
    for needed in ("b200", "gb200", "gh200", "h20", "l40s", "mi325x"):
        assert needed in ids
    for g in data["gpus"]:
        assert g["source"].startswith("https://"), g["id"]
        assert g["multiprocessors"] is None or g["multiprocessors"] > 0, g["id"]
        assert set(g["tflops"]) == {"fp32", "tf32", "fp16", "bf16"}, g["id"]
        assert g["bandwidth_gbs"] > 0 and g["match"], g["id"]
        # dense tensor-core rates sit well above plain fp32 on every listed GPU
        assert g["tflops"]["bf16"] > g["tflops"]["fp32"], g["id"]


def _entries() -> list[dict[str, object]]:
    return json.loads(PEAKS_FILE.read_text(encoding="utf-8"))["gpus"]  # type: ignore[no-any-return]


@given(data=st.data())
def test_partitions_are_scaled_to_their_share(data: st.DataObject) -> None:
    """Any entry with an SM/CU count, seen with fewer multiprocessors (MIG, CPX): every peak scales by the share;
    with the full count (or more, or unknown) the peaks are the whole device's."""
    counts = {g["id"]: g["multiprocessors"] for g in _entries()}
    name, gpu_id = data.draw(st.sampled_from([(n, i) for n, i in _NAMES if i and counts[i]]))
    full = int(counts[gpu_id])  # type: ignore[call-overload]
    whole = lookup(name)
    assert whole is not None and whole.id == gpu_id and whole.partition is None
    mp = data.draw(st.integers(1, full - 1))
    part = lookup(name, mp)
    assert part is not None and part.partition and f"{mp} of {full}" in part.partition
    assert part.bandwidth_gbs == pytest.approx(whole.bandwidth_gbs * mp / full)
    for k, v in whole.tflops.items():
        assert part.tflops[k] == (None if v is None else pytest.approx(v * mp / full))
    for more in (None, full, full + data.draw(st.integers(0, 64))):
        assert lookup(name, more) == whole


def test_mig_slice_regression() -> None:
    """H100 SXM MIG 1g.10gb shows 16 of 132 SMs: its bf16 peak is ~120 TFLOP/s, not 989."""
    part = lookup("NVIDIA H100 80GB HBM3 MIG 1g.10gb", 16)
    assert part is not None and part.tflops["bf16"] == pytest.approx(989.5 * 16 / 132)
