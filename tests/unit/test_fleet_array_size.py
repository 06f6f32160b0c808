"""``--nodes`` against the cluster's own MaxArraySize (``scontrol show config``), asked before sbatch.

The static bound (4,000,001, slurm.conf's largest) is checked before any scheduler is contacted
(test_fleet_nodes_limit.py); this is the cluster's own setting, usually the default 1001. Where it cannot be learnt
(scontrol fails, hangs, or answers without it) the submission goes on and sbatch's own refusal stands.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchrig.__main__ import main
from torchrig.errors import UsageError
from torchrig.fleet import slurm

ROOT = Path(__file__).resolve().parents[2]


@given(st.integers(0, 4_000_001))
def test_the_setting_is_read_from_scontrols_answer(value: int) -> None:
    text = f"Configuration data as of 2026-12-07T10:00:00\nMaxArraySize            = {value}\nMaxJobCount = 10000\n"
    assert slurm.parse_max_array_size(text) == value


@given(st.text(max_size=400))
def test_any_answer_is_a_number_in_range_or_none(text: str) -> None:
    value = slurm.parse_max_array_size(text)
    assert value is None or 0 <= value <= 4_000_001


@pytest.mark.parametrize("text", ["", "MaxArraySize = 4000002", "MaxArraySize = -1", "MaxArraySize = 1e3",
                                  "MaxArraySize = (null)", "MaxArraySize = 99999999999999999999", "MaxArraySize"])
def test_an_answer_without_a_usable_setting_is_none(text: str) -> None:
    assert slurm.parse_max_array_size(text) is None


@given(st.integers(1, 4_000_001), st.integers(0, 4_000_001))
def test_nodes_are_refused_exactly_past_the_clusters_setting(nodes: int, limit: int) -> None:
    if nodes <= limit:
        slurm.check_array_size(nodes, limit)
        return
    with pytest.raises(UsageError, match="MaxArraySize") as e:
        slurm.check_array_size(nodes, limit)
    assert ("turned off" in str(e.value)) == (limit == 0)
    if limit:
        assert f"--nodes {limit:,} or fewer" in str(e.value)


@given(st.integers(1, 4_000_001))
def test_an_unknown_setting_leaves_it_to_sbatch(nodes: int) -> None:
    slurm.check_array_size(nodes, None)


def _fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scontrol: str) -> Path:
    calls, bin_dir = tmp_path / "calls", tmp_path / "bin"
    calls.mkdir()
    bin_dir.mkdir()
    scripts = {"scontrol": scontrol,
               "sbatch": '#!/bin/bash\ncat >/dev/null; echo "sbatch $*" >>"$CALLS/log"; echo 4242\n',
               "scancel": '#!/bin/bash\necho "scancel $*" >>"$CALLS/log"\n'}
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("CALLS", str(calls))
    return calls / "log"


CONFIG = '#!/bin/bash\necho "scontrol $*" >>"$CALLS/log"\n[[ $1 == show ]] && printf "MaxArraySize = 8\\n"; exit 0\n'


def _submit(tmp_path: Path, nodes: int) -> int:
    return main(["--matrix", str(ROOT / "matrix.yaml"), "submit", "cpu", "--nodes", str(nodes),
                 "--results", str(tmp_path / "shared")])


def test_more_nodes_than_the_cluster_takes_is_exit_2_and_nothing_submitted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    log = _fake(tmp_path, monkeypatch, CONFIG)
    assert _submit(tmp_path, 9) == 2
    err = capsys.readouterr().err
    assert "MaxArraySize = 8" in err and "--nodes 8 or fewer" in err and "Traceback" not in err
    assert log.read_text().splitlines() == ["scontrol show config"]  # asked, nothing submitted


def test_as_many_nodes_as_the_cluster_takes_is_submitted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _fake(tmp_path, monkeypatch, CONFIG)
    assert _submit(tmp_path, 8) == 0
    assert log.read_text().splitlines() == ["scontrol show config", "sbatch --parsable --hold",
                                            "scontrol release 4242"]


@pytest.mark.parametrize("scontrol", [
    '#!/bin/bash\n[[ $1 == show ]] && { echo "slurm_load_ctl_conf error" >&2; exit 1; }; exit 0\n',
    '#!/bin/bash\n[[ $1 == show ]] && { printf "MaxArraySize = lots\\n"; }; exit 0\n',
    '#!/bin/bash\n[[ $1 == show ]] && exec sleep 60; exit 0\n',
], ids=["fails", "garbage", "hangs"])
def test_a_setting_that_cannot_be_learnt_leaves_it_to_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            scontrol: str) -> None:
    monkeypatch.setattr(slurm, "CONFIG_TIMEOUT_S", 0.5)
    log = _fake(tmp_path, monkeypatch, scontrol)
    assert _submit(tmp_path, 2000) == 0
    assert log.read_text().splitlines() == ["sbatch --parsable --hold"]


def test_dry_run_asks_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    log = _fake(tmp_path, monkeypatch, CONFIG)
    assert main(["--matrix", str(ROOT / "matrix.yaml"), "submit", "cpu", "--nodes", "9", "--dry-run"]) == 0
    assert "#SBATCH --array=0-8" in capsys.readouterr().out
    assert not log.exists()
