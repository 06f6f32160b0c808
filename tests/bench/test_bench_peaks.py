"""The spec-peak table: well-formed, sourced, and matched to the names torch reports."""

from __future__ import annotations

import json

import pytest

from bench.peaks import PEAKS_FILE, lookup


@pytest.mark.parametrize(("name", "gpu_id"), [
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
])
def test_known_gpus(name: str, gpu_id: str) -> None:
    peak = lookup(name)
    assert peak is not None and peak.id == gpu_id


@pytest.mark.parametrize("name", [None, "", "NVIDIA L40S", "NVIDIA GeForce RTX 4090", "Tesla V100-SXM2-16GB"])
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
    for g in data["gpus"]:
        assert g["source"].startswith("https://"), g["id"]
        assert set(g["tflops"]) == {"fp32", "tf32", "fp16", "bf16"}, g["id"]
        assert g["bandwidth_gbs"] > 0 and g["match"], g["id"]
        # dense tensor-core rates sit well above plain fp32 on every listed GPU
        assert g["tflops"]["bf16"] > g["tflops"]["fp32"], g["id"]
