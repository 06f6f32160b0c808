"""``python -m bench``: its options, and everything else forwarded to pytest in order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.__main__ import pytest_args
from bench.storage import machine_id


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCHRIG_RESULTS", raising=False)
    args, raw, cmd = pytest_args([], "T")
    assert args.size == "auto" and raw.parent == Path("results/bench-raw") / machine_id()
    assert re.fullmatch(r"\d{4}_T-[0-9a-f]{6}\.json", raw.name)
    assert "--bench-size=auto" in cmd and f"--benchmark-json={raw}" in cmd
    assert cmd[1:3] == ["-c", str(Path(cmd[0]) / "pytest.ini")]


@pytest.mark.parametrize("argv", [
    ["--quick", "-k", "gemm and not fp16", "-x"],
    ["--quick", "--", "-k", "gemm and not fp16", "-x"],
    ["-k", "gemm and not fp16", "--quick", "-x"],
])
def test_pytest_arguments_are_forwarded_in_order(argv: list[str]) -> None:
    args, _, cmd = pytest_args(argv, "T")
    assert args.size == "quick"
    assert cmd[-3:] == ["-k", "gemm and not fp16", "-x"]


def test_results_json_and_batches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCHRIG_RESULTS", str(tmp_path))
    args, raw, cmd = pytest_args(["--tiny", "--batch", "resnet50=8", "--batch", "bert=4", "--device", "cpu"], "T")
    assert args.results == tmp_path and raw.parent == tmp_path / "bench-raw" / machine_id()
    assert {"--bench-batch=resnet50=8", "--bench-batch=bert=4", "--bench-device=cpu", "--bench-size=tiny"} <= set(cmd)
    _, raw2, _ = pytest_args(["--json", str(tmp_path / "x.json")], "T")
    assert raw2 == tmp_path / "x.json"


def test_sizes_are_exclusive() -> None:
    with pytest.raises(SystemExit):
        pytest_args(["--quick", "--full"], "T")
