"""The whole benchmark suite, tiny size, on the CPU: the very code paths a GPU run takes, end to end.

Runs ``python -m bench --tiny`` once (about 1.5-2.5 minutes on 2 cores; most of it is one torch.compile), then checks
the pytest-benchmark JSON (fingerprint, derived metrics, self-check) and the records converted from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from torchrig.results.records import load_records, validate_record

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.torch, pytest.mark.slow]


def _installed_only() -> dict[str, str]:
    """This environment without PYTHONPATH: bench and torchrig must come from the install."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    results = tmp_path_factory.mktemp("results")
    raw = results / "raw.json"
    env = {
        **_installed_only(),
        "TORCHRIG_ENV_ID": "cpu-test",
        "TORCHRIG_IMAGE_ID": "sha256:0123",
        "TORCHRIG_IMAGE_DIGEST": "sha256:4567",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--device", "cpu", "--results", str(results), "--json", str(raw)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return {"results": results, "json": json.loads(raw.read_text()), "raw": raw, "out": proc.stdout}


def _by_bench(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [b for b in doc["benchmarks"] if b["extra_info"].get("bench") == kind]


def test_every_benchmark_ran_or_skipped_with_a_reason(run: dict[str, Any]) -> None:
    out = run["out"]  # the exit status was 0: nothing failed
    assert "TF32 is a GPU tensor-core mode" in out  # tf32 GEMM skipped on CPU, with the reason
    assert "DDP scaling needs >= 2 GPUs" in out
    kinds = {b["extra_info"]["bench"] for b in run["json"]["benchmarks"]}
    assert kinds == {"gemm", "copy", "train"}


def test_skipped_benchmarks_become_skip_records_with_their_reason(run: dict[str, Any]) -> None:
    """pytest-benchmark's JSON lists only what ran: the suite adds the skipped cases (bench/skips.py), and each
    becomes a ``skip`` record whose reason the report shows (not a missing row)."""
    skipped = {s["name"]: s["reason"] for s in run["json"]["torchrig_skipped"]}
    assert any(n.startswith("gemm-tf32-") and "TF32 is a GPU tensor-core mode" in r for n, r in skipped.items())
    assert any(n.startswith("ddp-") and "DDP scaling needs >= 2 GPUs" in r for n, r in skipped.items())
    records, problems = load_records([run["results"]])
    assert not problems
    skips = {r.name: r for r in records if r.verdict == "skip"}
    assert set(skips) == set(skipped)
    assert all(r.config["skip_reason"] == skipped[n] and r.env_id == "cpu-test" for n, r in skips.items())
    from torchrig.report import build_report

    (row,) = build_report(records).summary
    assert any(v.verdict == "skip" and "TF32" in v.reason for v in row.verdicts)


def test_fingerprint_is_in_the_json(run: dict[str, Any]) -> None:
    env = run["json"]["machine_info"]["torchrig"]
    import torch

    assert env["software"]["torch"] == torch.__version__
    assert env["software"]["torch_git"] == torch.version.git_version
    assert env["machine"]["accelerator"] == "cpu" and env["machine"]["fingerprint"]
    assert env["env_id"] == "cpu-test"
    assert env["env_vars"]["TORCHRIG_IMAGE_DIGEST"] == "sha256:4567"
    assert env["container"]["image_id"] == "sha256:0123"
    assert "tf32_matmul" in env["flags_at_start"] and "cudnn_benchmark" in env["flags_at_start"]
    assert env["suite"]["size"] == "tiny"


def test_gemm_and_copy_metrics(run: dict[str, Any]) -> None:
    gemms = _by_bench(run["json"], "gemm")
    assert {b["extra_info"]["case"]["dtype"] for b in gemms} >= {"fp32", "bf16"}
    for b in gemms:
        e = b["extra_info"]
        assert e["metrics"]["tflops"]["unit"] == "TFLOP/s" and e["metrics"]["tflops"]["value"] > 0
        assert e["flags"]["tf32_matmul"] is False
        assert e["ceiling"]["tflops"] == e["metrics"]["tflops"]["value"]
    (copy,) = _by_bench(run["json"], "copy")
    assert copy["extra_info"]["metrics"]["bandwidth_gbs"]["unit"] == "GB/s"


def test_training_metrics(run: dict[str, Any]) -> None:
    trains = _by_bench(run["json"], "train")
    models = {b["extra_info"]["case"]["model"] for b in trains}
    assert models == {"resnet50", "cifar_cnn", "bert"}
    assert any(b["extra_info"]["case"]["compile"] for b in trains), "the compiled path did not run"
    assert any(b["extra_info"]["workload"]["grad_scaler"] for b in trains), "the fp16 grad-scaler path did not run"
    for b in trains:
        e = b["extra_info"]
        unit = "sequences/s" if e["case"]["model"] == "bert" else "images/s"
        assert e["metrics"]["throughput"]["unit"] == unit and e["metrics"]["throughput"]["value"] > 0
        assert e["metrics"]["tflops"]["value"] > 0 and e["case"]["flops_per_step"] > 0
        assert "mfu_pct" in e["metrics"], e["name"]  # against the GEMM ceiling of the same run
        assert e["flags"]["cudnn_benchmark"] is True
        assert e["workload"]["lr"] > 0
        assert e["loss"]["first"] != e["loss"]["last"], "the optimizer did not change the model"
        t = e["timing"]
        assert t["self_check"]["ok"], t["self_check"]["message"]
        assert t["first_step_s"] > 0 and len(t["round_s"]) == b["stats"]["rounds"]
        assert b["stats"]["data"] == t["round_s"]
        busy = t["busy"]  # the profiled busy-check round (bench/busy.py): torch operator time on the CPU
        assert busy["method"].startswith("torch.profiler CPU:"), busy
        assert busy["pct"] is None or 0 < busy["pct"] <= 100
        assert not any("device busy only" in w for w in e["warnings"]), "a CPU case raised the GPU host-bound warning"


def test_records(run: dict[str, Any]) -> None:
    files = sorted((run["results"] / "bench").glob("*.json"))
    assert len(files) == len(run["json"]["benchmarks"]) + len(run["json"]["torchrig_skipped"])
    for f in files:
        d = json.loads(f.read_text())
        assert validate_record(d) == [], f
    records, problems = load_records([run["results"]])
    assert problems == []  # the raw JSON beside the records is ignored, not a problem
    assert {r.env_id for r in records} == {"cpu-test"}
    assert all(r.container and r.container.image_digest == "sha256:4567" for r in records)
    # the session's load verdict (bench/load.py) in every record, skip records included; busy -> the warning
    load = run["json"]["torchrig_load"]
    assert all(r.load is not None and r.load["busy"] == load["busy"] for r in records)
    assert all(any(w.startswith("busy machine: ") for w in r.warnings) == load["busy"] for r in records
               if r.verdict != "skip")
    assert run["json"]["machine_info"]["torchrig"]["rocm_env"]["applies"] is False  # a CPU torch
    for r in records:
        for name, m in r.metrics.items():
            assert m.unit, name
        if r.verdict != "skip":  # a skipped benchmark's record carries its reason, no figures and no gates
            assert "timer_flagged_rounds" in {g.metric for g in r.gates}


def test_converter_cli_on_the_same_json(run: dict[str, Any], tmp_path: Path) -> None:
    env = _installed_only()
    proc = subprocess.run([sys.executable, "-m", "torchrig.results.benchconv", str(run["raw"]),
                           "--results", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "bench").glob("*.json"))) == \
        len(run["json"]["benchmarks"]) + len(run["json"]["torchrig_skipped"])
