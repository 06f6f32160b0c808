"""Run every correctness task in order (smoke, regression, cifar_cnn, bert_classifier, export), each in its own
process.

``python -m tasks`` (or ``python -m tasks.all``) passes the common options on to each task, prints one line per
task and a summary, and exits with the worst exit code: 0 only when every task passed its gates, 1 when a gate
failed, 2 when a task was given bad input (e.g. a malformed ``--data`` file, or ``--download`` with no network),
3 on an unexpected error. With no CIFAR-10 in ``--data``, cifar_cnn downloads it when it can and otherwise writes
the synthetic stand-in (``--synthetic-cifar`` asks for the stand-in up front, as ``run-tasks`` does offline).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from tasks import TASKS
from torchrig.results.contract import DATA_ENV, ENV_ID_ENV, RESULTS_ENV, TORCH_VERSION_ENV

TRAINING = ("regression", "cifar_cnn", "bert_classifier")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tasks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="epochs for the training tasks (default: theirs)")
    p.add_argument("--quick", action="store_true", help="the short budget of every task")
    p.add_argument("--results", default=os.environ.get(RESULTS_ENV) or "results")
    p.add_argument("--env-id", default=os.environ.get(ENV_ID_ENV) or None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--data", default=os.environ.get(DATA_ENV) or "data",
                   help=f"data directory for cifar_cnn and export (default: ${DATA_ENV} or ./data)")
    p.add_argument("--synthetic-cifar", action="store_true",
                   help="when --data holds no CIFAR-10, write the synthetic stand-in there first")
    p.add_argument("--expect-torch", default=None, help=f"passed to smoke (default: ${TORCH_VERSION_ENV})")
    p.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(TASKS)}")
    p.add_argument("--skip", default=None, help="comma-separated tasks to leave out")
    return p


def _names(arg: str | None, parser: argparse.ArgumentParser) -> list[str]:
    if not arg:
        return []
    names = [n.strip() for n in arg.split(",") if n.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; the tasks are {', '.join(TASKS)}")
    return names


def task_argv(name: str, a: argparse.Namespace) -> list[str]:
    argv = ["--device", a.device, "--seed", str(a.seed), "--results", a.results]
    if a.quick:
        argv.append("--quick")
    if a.quiet:
        argv.append("--quiet")
    if a.env_id:
        argv += ["--env-id", a.env_id]
    if a.epochs is not None and name in TRAINING:
        argv += ["--epochs", str(a.epochs)]
    if name in ("cifar_cnn", "export"):  # export's pruned CNN trains on the same CIFAR-10
        argv += ["--data", a.data]
    if name == "smoke" and a.expect_torch:
        argv += ["--expect-torch", a.expect_torch]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    only, skip = _names(a.only, parser), _names(a.skip, parser)
    selected = [t for t in TASKS if (not only or t in only) and t not in skip]
    if a.synthetic_cifar and "cifar_cnn" in selected:
        from tasks import make_data

        if not make_data.cifar_present(a.data):
            rc = make_data.make(a.data, seed=a.seed, train_size=50000, test_size=10000, force=False, quiet=a.quiet)
            if rc:
                return rc
    results: list[tuple[str, int, float]] = []
    for name in selected:
        cmd = [sys.executable, "-m", f"tasks.{name}", *task_argv(name, a)]
        if not a.quiet:
            print(f"==> {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        results.append((name, rc, time.perf_counter() - t0))
    words = {0: "pass", 1: "FAIL (gate)", 2: "FAIL (bad input)", 3: "ERROR"}
    print("\nsummary:", flush=True)
    for name, rc, secs in results:
        print(f"  {name:<16} {words.get(rc, f'exit {rc}'):<18} {secs:7.1f} s", flush=True)
    total = sum(s for _, _, s in results)
    ok = sum(1 for _, rc, _ in results if rc == 0)
    print(f"  {ok}/{len(results)} passed in {total:.1f} s", flush=True)
    # A task killed by a signal (negative code) or interrupted (130) counts as an error.
    return max((rc if rc in (0, 1, 2, 3) else 3 for _, rc, _ in results), default=0)


if __name__ == "__main__":
    raise SystemExit(main())
