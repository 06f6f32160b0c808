"""Data-parallel training throughput: one process per GPU under ``torchrun``, DistributedDataParallel.

Started by :func:`launch` (``python -m torch.distributed.run --standalone --nproc_per_node N -m bench.ddp_worker``).
Every rank builds the same workload as the single-GPU benchmark (its own synthetic batch of ``case.batch``, so the
global batch grows with the number of GPUs: weak scaling), wraps the model in DDP, and runs rounds of
``steps_per_round`` steps ended by a device synchronisation. A round's time is the slowest rank's; the global
throughput is ``world_size * batch * steps_per_round / round time``. Rank 0 writes the result as JSON.

On a CPU (gloo backend) the same code runs, which is how the tests exercise it; the benchmark itself needs GPUs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.harness import Plan
from bench.sizes import TrainCase
from torchrig.results.io import atomic_write_text

__all__ = ["DEFAULT_INIT_TIMEOUT_S", "HANG_EXIT", "LaunchError", "hang_hint", "launch"]

# How long a rank waits for the others to join (torch.distributed's own default is 30 min, NCCL's 10): a rank that
# never comes (a GPU that hangs at init, a blocked port) must end with the hint below, not a silent half hour.
DEFAULT_INIT_TIMEOUT_S = 300.0
HANG_EXIT = 3  # the worker's exit code when it gave up waiting for the other ranks


class LaunchError(RuntimeError):
    """torchrun failed; the message carries the tail of its output."""


def hang_hint(what: str) -> str:
    """What to try when the ranks of a DDP run did not meet: NCCL's own log, its transports, shared memory."""
    return (f"{what}: the ranks did not meet (process-group init or a collective never completed). Rerun with "
            "`--env NCCL_DEBUG=INFO` (and NCCL_DEBUG_SUBSYS=INIT,NET) to see where NCCL stops; where GPUs have no "
            "working peer-to-peer path or InfiniBand, try `--env NCCL_P2P_DISABLE=1` or `--env NCCL_IB_DISABLE=1`; "
            "NCCL moves data through /dev/shm, so give the container more with --shm-size (default 8g) or "
            "--ipc-host")


def launch(case: TrainCase, *, nproc: int, plan: Plan, device: str, out: Path,
           timeout_s: float = 900, init_timeout_s: float = DEFAULT_INIT_TIMEOUT_S) -> dict[str, Any]:
    """Run the worker on ``nproc`` processes and return rank 0's result. ``device`` is "cuda" or "cpu".

    A run whose ranks do not meet within ``init_timeout_s`` (or that outlives ``timeout_s``) raises LaunchError
    with :func:`hang_hint`."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "bench.ddp_worker",
        "--case", json.dumps(asdict(case)), "--device", device, "--out", str(out),
        "--rounds", str(plan.rounds), "--warmup-rounds", str(plan.warmup_rounds),
        "--target-round-s", str(plan.target_round_s), "--max-steps", str(plan.max_steps_per_round),
        "--init-timeout", str(init_timeout_s),
    ]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default, set here so it does not warn
    out.unlink(missing_ok=True)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise LaunchError(hang_hint(f"torchrun with {nproc} processes did not finish within {timeout_s:g} s")) from e
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stdout + proc.stderr)[-3000:]
        what = f"torchrun with {nproc} processes failed (exit {proc.returncode})"
        if f"exitcode: {HANG_EXIT}" in tail or any(
                sign in tail for sign in ("did not meet", "collective operation timeout", "timed out", "Timed out")):
            what = hang_hint(what)
        raise LaunchError(f"{what}:\n{tail}")
    return json.loads(out.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _rates(rounds: list[float], n: int, batch: int, world: int) -> dict[str, Any]:
    """Per-step time, spread and global throughput from the rounds of ``n`` steps each."""
    step_s = statistics.fmean(rounds) / n
    sd = statistics.stdev(rounds) / n if len(rounds) > 1 else 0.0
    return {
        "batch_per_rank": batch,
        "global_batch": batch * world,
        "steps_per_round": n,
        "round_s": rounds,
        "step_s": step_s,
        "step_stddev_s": sd,
        "cv_pct": 100 * sd / step_s if step_s > 0 else 0.0,
        "throughput": world * batch / step_s,
        "throughput_stddev": world * batch * sd / step_s**2,
    }


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--case", required=True, help="TrainCase as JSON")
    ap.add_argument("--device", choices=("cuda", "cpu"), required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--warmup-rounds", type=int, required=True)
    ap.add_argument("--target-round-s", type=float, required=True)
    ap.add_argument("--max-steps", type=int, required=True)
    ap.add_argument("--init-timeout", type=float, default=DEFAULT_INIT_TIMEOUT_S,
                    help="seconds a rank waits for the others, at init and in each collective")
    args = ap.parse_args(argv)

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from bench.flags import precision_flags
    from bench.harness import TorchDevice
    from bench.workloads import build_workload

    case = TrainCase(**json.loads(args.case))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    device = TorchDevice(f"cuda:{local}" if args.device == "cuda" else "cpu")
    backend = "nccl" if args.device == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=args.init_timeout))
    except Exception as e:  # noqa: BLE001 - DistStoreError, a RuntimeError "timed out": the other ranks never came
        print(hang_hint(f"rank {rank} of {world}: {backend} init gave up after {args.init_timeout:g} s ({e})"),
              file=sys.stderr, flush=True)
        return HANG_EXIT
    try:
        with precision_flags(tf32=case.precision == "tf32", cudnn_benchmark=True) as flags:
            ids = [device.torch_device.index] if device.type == "cuda" else None
            w = build_workload(case, device, wrap=lambda m: DDP(m, device_ids=ids))

            def slowest(x: float) -> float:
                t = torch.tensor([x], dtype=torch.float64, device=device.torch_device)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                return float(t.item())

            def timed(n: int) -> float:
                dist.barrier(device_ids=ids) if ids else dist.barrier()
                device.synchronize()
                t0 = time.perf_counter()
                for _ in range(n):
                    w.step()
                device.synchronize()
                return slowest(time.perf_counter() - t0)

            first_s = timed(1)
            probe_s = timed(1)
            # every rank must run the same number of steps (DDP all-reduces each one): agree on the largest
            n = int(slowest(float(max(1, min(args.max_steps, math.ceil(args.target_round_s / max(probe_s, 1e-9)))))))
            for _ in range(args.warmup_rounds):
                timed(n)
            rounds = [timed(n) for _ in range(args.rounds)]
        if rank == 0:
            result = {"world_size": world, "backend": dist.get_backend(), "device": device.name,
                      "gpu_name": device.gpu_name, **_rates(rounds, n, case.batch, world), "first_step_s": first_s,
                      "item_unit": w.item_unit, "flags": flags, "workload": w.config}
            atomic_write_text(args.out, json.dumps(result, indent=2))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
