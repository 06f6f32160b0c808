"""A DDP run whose ranks never meet ends within its init timeout with the NCCL hint, not after a bare 900 s.

On the CPU with gloo: rank 0 of a world of 2 is started alone (its second rank never joins), the way a GPU that
hangs at init or a blocked port leaves a real run. About 10 s.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ddp_worker import HANG_EXIT, LaunchError, hang_hint, launch
from bench.harness import Plan
from bench.sizes import TrainCase

CASE = TrainCase(model="cifar_cnn", batch=4, resolution=32, precision="fp32", small=True)
PLAN = Plan(rounds=1, warmup_rounds=0, target_round_s=0.01, max_steps_per_round=1)
HINTS = ("NCCL_DEBUG=INFO", "NCCL_P2P_DISABLE=1", "NCCL_IB_DISABLE=1", "--env", "--shm-size")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_rank_that_never_joins_ends_at_the_init_timeout_with_the_hint(tmp_path: Path) -> None:
    import json
    from dataclasses import asdict

    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    cmd = [sys.executable, "-m", "bench.ddp_worker", "--case", json.dumps(asdict(CASE)), "--device", "cpu",
           "--out", str(tmp_path / "r.json"), "--rounds", "1", "--warmup-rounds", "0", "--target-round-s", "0.01",
           "--max-steps", "1", "--init-timeout", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == HANG_EXIT, proc.stderr[-2000:]
    assert all(h in proc.stderr for h in HINTS), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "r.json").exists()


def test_a_run_past_its_wall_timeout_names_nccl_not_a_bare_timeout(tmp_path: Path) -> None:
    with pytest.raises(LaunchError) as e:
        launch(CASE, nproc=2, plan=PLAN, device="cpu", out=tmp_path / "r.json", timeout_s=0.5)
    assert "within 0.5 s" in str(e.value) and all(h in str(e.value) for h in HINTS)


def test_the_hint_names_what_to_try() -> None:
    text = hang_hint("x")
    assert text.startswith("x: ") and all(h in text for h in HINTS)
