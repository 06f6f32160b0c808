"""Run the benchmark suite, keep the pytest-benchmark JSON, and convert it into result records.

    python -m bench [--quick | --full | --tiny | --size S] [--device D] [--batch MODEL=N] [--results DIR]
                    [--json PATH] [--no-gpu] [PYTEST-ARGS...]
    python -m bench --acceptance [--quick | --full] [--device D]   (bench/acceptance.py; exit 0 PASS, 1 FAIL)

The raw JSON goes to ``DIR/bench-raw/<machine id>/NNNN_<time>-<run id>.json`` (pytest-benchmark's storage layout:
``pytest-benchmark --storage file://DIR/bench-raw compare`` works on it; or ``--json``), the records to ``DIR/bench/``
(``DIR``: ``--results``, else ``$TORCHRIG_RESULTS``, else ``./results``). Any other argument goes to pytest
unchanged, in order (``-k gemm``, ``-x``; a ``--`` before them is optional). Exit status: pytest's (0 when every
benchmark ran or was skipped with a reason), or torchrig's error code if the conversion fails. Uses the current
Python and its torch; downloads nothing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path

from bench.storage import raw_json_path
from torchrig.results.contract import RESULTS_ENV

_HERE = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__, allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--size", choices=("auto", "tiny", "quick", "full"), default="auto",
                      help="suite size (default auto: tiny on CPU, full on a GPU)")
    size.add_argument("--quick", dest="size", action="store_const", const="quick", help="= --size quick (~2 min)")
    size.add_argument("--full", dest="size", action="store_const", const="full", help="= --size full (~10 min)")
    size.add_argument("--tiny", dest="size", action="store_const", const="tiny", help="= --size tiny (CPU/CI)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto; in a GPU image "
                    "auto refuses to fall back to the CPU)")
    ap.add_argument("--no-gpu", dest="device", action="store_const", const="cpu",
                    help="= --device cpu: measure the CPU even in a GPU image (the records say so)")
    ap.add_argument("--batch", action="append", default=[], metavar="MODEL=N", help="batch override, repeatable")
    ap.add_argument("--ddp-gpus", type=int, default=0, help="GPUs for the DDP scaling benchmark (default all)")
    ap.add_argument("--results", type=Path, default=Path(os.environ.get(RESULTS_ENV) or "results"),
                    help=f"results directory (default ${RESULTS_ENV} or ./results)")
    ap.add_argument("--acceptance", action="store_true",
                    help="instead of the suite: harness vs bare reference loops on the device found, one verdict "
                    "(exit 0 PASS, 1 FAIL, 2 no usable device); --quick/--full/--tiny and --device apply")
    ap.add_argument("--json", type=Path, default=None, help="where to write the pytest-benchmark JSON")
    return ap


def pytest_args(argv: list[str] | None, stamp: str) -> tuple[argparse.Namespace, Path, list[str]]:
    """Parse the runner's options; return them, the JSON path and the pytest command line (unknown arguments
    are pytest's, forwarded in their order)."""
    args, rest = build_parser().parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    raw: Path = args.json or raw_json_path(args.results, stamp)
    out = [
        str(_HERE), "-c", str(_HERE / "pytest.ini"), "--rootdir", str(_HERE),
        f"--bench-size={args.size}", f"--bench-device={args.device}", f"--bench-ddp-gpus={args.ddp_gpus}",
        *(f"--bench-batch={b}" for b in args.batch),
        f"--benchmark-json={raw}", "--benchmark-disable-gc", "--benchmark-columns=min,mean,stddev,rounds,iterations",
        *rest,
    ]
    return args, raw, out


# What the suite needs in this Python (import name -> what to install).
NEEDS = {"torch": "torch", "pytest": "pytest", "pytest_benchmark": "pytest-benchmark"}


def missing_modules() -> list[str]:
    import importlib.util

    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def device_problem(option: str) -> str | None:
    """Why the suite cannot run on ``--device option`` here (a GPU image with no GPU, an arch this torch lacks),
    checked before pytest starts so that it ends with exit code 2 and one message."""
    from bench.device import DeviceProblem, choose_device

    try:
        choose_device(option)
    except DeviceProblem as e:
        return str(e)
    return None


def main(argv: list[str] | None = None) -> int:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    args, raw, cmdline = pytest_args(argv, stamp)
    missing = missing_modules()
    if missing:
        print(f"bench: this Python ({sys.executable}) has no {', '.join(missing)}; the benchmarks run on it.\n"
              f"  either install them:  {sys.executable} -m pip install {' '.join(NEEDS[m] for m in missing)}\n"
              "  (torch built for your GPU), or run the suite inside an image with nothing to install:\n"
              "  torchrig run-bench ENV  (nox -s bench-<env>)", file=sys.stderr)
        return 2
    if args.acceptance:
        from bench.acceptance import main as acceptance

        return acceptance(["--device", args.device, "--size", args.size])
    problem = device_problem(args.device)
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    import pytest

    from torchrig.errors import FatalError
    from torchrig.results.benchconv import convert

    raw.parent.mkdir(parents=True, exist_ok=True)
    code = int(pytest.main(cmdline))
    if not raw.exists():
        print(f"bench: pytest wrote no benchmark JSON (exit {code}); nothing to convert", file=sys.stderr)
        return code or 1
    try:
        written = convert([raw], args.results)
    except FatalError as e:
        print(f"bench: {e}", file=sys.stderr)
        return e.return_code
    print(f"bench: raw JSON {raw}\nbench: {len(written)} record(s) under {args.results / 'bench'}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
