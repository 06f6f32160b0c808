"""The task framework: the command line, the run (device, seeding), progress, gates, the record, the exit code.

A task module defines a :class:`TaskSpec` (its name, its own options and a ``run(ctx)`` function) and calls
:func:`main`. ``run`` measures, calls :meth:`Context.metric` / :meth:`Context.gate`, and returns; everything else --
parsing, choosing the device, seeding, the verdict, the record, the exit code -- happens here, once.

Exit codes (the same for every task and for ``python -m tasks``):

* 0 -- every gate passed;
* 1 -- a gate failed (the record's warnings say which, and why: ``FAIL: ...``);
* 2 -- bad input: a one-line message on stderr, no traceback, no record (nothing was measured);
* 3 -- an unexpected error: the message (and the traceback: it is a bug) on stderr, and a record with verdict
  ``"error"``.

The torch helpers the tasks use (device, seeding, AMP, torch.compile) live in :mod:`tasks._torchsupport` and are
re-exported here, so a task imports one module. This module runs inside the images too: Python >= 3.10, torch
2.0.1 and newer, numpy 1.x or 2.x.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks._torchsupport import (
    NO_GPU_MESSAGES,
    accelerator_env,
    amp_autocast,
    available_cpus,
    compile_limitation,
    dataloader_generator,
    no_gpu_hint,
    resolve_device,
    seed_everything,
    seed_worker,
    set_deterministic,
    shuffled_labels,
)
from torchrig.capabilities import grad_scaler
from torchrig.errors import UsageError
from torchrig.results.contract import ENV_ID_ENV, RESULTS_ENV
from torchrig.results.records import (
    Gate,
    Metric,
    Record,
    Verdict,
    collect_container,
    collect_machine,
    collect_software,
    write_record,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAIL",
    "EXIT_PASS",
    "EXIT_USAGE",
    "NO_GPU_MESSAGES",
    "Context",
    "TaskSpec",
    "UsageError",
    "accelerator_env",
    "amp_autocast",
    "available_cpus",
    "build_parser",
    "compile_limitation",
    "dataloader_generator",
    "grad_scaler",
    "main",
    "no_gpu_hint",
    "seed_everything",
    "seed_worker",
    "shuffled_labels",
]

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_ERROR = 3


# ------------------------------------------------------------------------------------------------ the spec


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """One task: ``add_arguments`` adds its own options, ``run`` measures and gates through the context."""

    name: str
    description: str
    run: Callable[[Context], None]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    training: bool = True  # adds --epochs/--lr/--batch-size/--shuffle-labels/--train-limit/--test-limit
    epilog: str | None = None


# ------------------------------------------------------------------------------------------------ context


@dataclass
class Context:
    """What a running task sees: its options, the device, and where its measurements go."""

    name: str
    args: argparse.Namespace
    device: str  # "cpu" or "cuda" (ROCm GPUs are "cuda" to torch)
    metrics: dict[str, Metric] = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    resolved: dict[str, Any] = field(default_factory=dict)
    _nonfinite: dict[str, float] = field(default_factory=dict)
    _last_tick: float = field(default_factory=time.perf_counter)

    # ---- console
    @property
    def quiet(self) -> bool:
        return bool(self.args.quiet)

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{self.name}] {msg}", flush=True)

    def tick(self, msg: Callable[[], str], every_s: float = 10.0) -> None:
        """Log ``msg()`` if ``every_s`` seconds passed since the last tick: progress inside a long epoch."""
        now = time.perf_counter()
        if now - self._last_tick >= every_s:
            self._last_tick = now
            self.log(msg())

    def warn(self, msg: str) -> None:
        """Something the reader of the record should know; the verdict does not change."""
        self.warnings.append(msg)
        print(f"[{self.name}] warning: {msg}", file=sys.stderr, flush=True)

    def problem(self, msg: str) -> None:
        """A failure that is not a number against a threshold (e.g. no GPU visible): the verdict becomes fail."""
        self.problems.append(msg)
        print(f"[{self.name}] FAIL: {msg}", file=sys.stderr, flush=True)

    # ---- measurements
    def set(self, **values: Any) -> None:
        """Record resolved configuration (the epochs/learning rate/... actually used) in the record's config."""
        self.resolved.update(values)

    def metric(self, key: str, value: float, unit: str, *, higher_is_better: bool = True) -> float:
        value = float(value)
        if not math.isfinite(value):
            # JSON (and the schema) cannot hold NaN/inf: the metric is left out, a gate on it fails.
            self._nonfinite[key] = value
            self.warn(f"metric {key} is {value} (not finite): left out of the record")
            return value
        self.metrics[key] = Metric(value=value, unit=unit, higher_is_better=higher_is_better)
        return value

    def value(self, key: str) -> float:
        if key in self.metrics:
            return self.metrics[key].value
        return self._nonfinite[key]

    def gate(self, key: str, op: str, threshold: float) -> Gate:
        value = self.value(key)
        g = Gate.check(key, op, float(threshold), value)
        self.gates.append(g)
        unit = self.metrics[key].unit if key in self.metrics else ""
        self.log(f"gate {key} {op} {threshold:g}: {value:.6g} {unit} -> {'pass' if g.passed else 'FAIL'}")
        if not g.passed:  # the record's warnings say which gate failed and by how much (docs/tasks.md)
            self.problem(f"gate {key} {op} {threshold:g} not met: {key} = {value:.6g} {unit}".rstrip())
        return g

    def training_result(self, *, final_loss: float, samples: int, train_time: float, unit: str,
                        test_accuracy: float, gate: float) -> Gate:
        """The metrics every training task ends with, and its accuracy gate: loss, throughput in ``unit``
        (samples per second of training), training time, held-out accuracy ``>= gate`` percent."""
        self.metric("final_loss", final_loss, "nats", higher_is_better=False)
        self.metric("throughput", samples / train_time if train_time else 0.0, unit)
        self.metric("train_time", train_time, "s", higher_is_better=False)
        self.metric("test_accuracy", test_accuracy, "%")
        return self.gate("test_accuracy", ">=", gate)

    def check(self, key: str, ok: bool, failure: str, *, success: str | None = None) -> bool:
        """A yes/no check as a gate (metric 1 or 0, gate ``>= 1``), with the reason printed when it fails."""
        self.metric(key, 1.0 if ok else 0.0, "bool")
        g = Gate.check(key, ">=", 1.0, 1.0 if ok else 0.0)
        self.gates.append(g)
        if ok:
            self.log(f"check {key}: ok" + (f" ({success})" if success else ""))
        else:
            self.problem(f"{key}: {failure}")
        return ok

    def verdict(self) -> Verdict:
        if not self.gates and not self.problems:
            self.problem("no gate was evaluated")
        ok = not self.problems and all(g.passed for g in self.gates)
        return "pass" if ok else "fail"


# ------------------------------------------------------------------------------------------ the command line


def _env_default(var: str, fallback: str | None) -> str | None:
    return os.environ.get(var) or fallback


def build_parser(spec: TaskSpec) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m tasks.{spec.name}",
        description=spec.description,
        epilog=(spec.epilog or "")
        + "\nexit codes: 0 gate passed, 1 gate failed, 2 bad input, 3 unexpected error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("common options")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run; auto = the GPU when torch sees one, else the CPU (ROCm GPUs are 'cuda')")
    g.add_argument("--seed", type=int, default=0, help="seed for torch, numpy, random and the data order")
    g.add_argument("--quick", action="store_true", help="a short budget (CI, CPU): smaller data, fewer epochs")
    g.add_argument("--results", default=_env_default(RESULTS_ENV, "results"),
                   help=f"results directory (default: ${RESULTS_ENV} or ./results)")
    g.add_argument("--env-id", default=_env_default(ENV_ID_ENV, None),
                   help=f"environment id stored in the record (default: ${ENV_ID_ENV})")
    g.add_argument("--quiet", action="store_true", help="no progress output, only the verdict line")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: the CPUs this process may use)")
    g.add_argument("--no-deterministic", dest="deterministic", action="store_false",
                   help="do not ask torch for deterministic algorithms")
    if spec.training:
        t = p.add_argument_group("training options")
        t.add_argument("--epochs", type=int, default=None, help="epochs (default depends on --quick)")
        t.add_argument("--lr", type=float, default=None, help="peak learning rate (0 makes the gate fail)")
        t.add_argument("--batch-size", type=int, default=None, help="batch size")
        t.add_argument("--train-limit", type=int, default=None, help="use only the first N training examples")
        t.add_argument("--test-limit", type=int, default=None, help="use only the first N test examples")
        t.add_argument("--shuffle-labels", action="store_true",
                       help="train on randomly permuted labels (a broken setup: the gate must fail)")
    if spec.add_arguments is not None:
        spec.add_arguments(p)
    return p


def _validate_common(args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "train_limit", "test_limit", "threads"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    lr = getattr(args, "lr", None)
    if lr is not None and (lr < 0 or not math.isfinite(lr)):
        raise UsageError(f"--lr must be a finite number >= 0, got {lr}")
    try:
        Path(args.results).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the results directory {args.results!r}: {e.strerror}") from None
    if not os.access(args.results, os.W_OK):
        raise UsageError(f"the results directory {args.results!r} is not writable")


# --------------------------------------------------------------------------------------------- running


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


def _record(spec: TaskSpec, ctx: Context, verdict: Verdict, wall: float) -> Record:
    config = {k: _jsonable(v) for k, v in sorted(vars(ctx.args).items())}
    config["resolved"] = _jsonable(ctx.resolved)
    try:
        machine = collect_machine(ctx.device)
    except Exception:  # noqa: BLE001 - a broken GPU must not lose the record that says so
        machine = collect_machine("cpu")
    return Record(
        kind="task",
        name=spec.name,
        env_id=ctx.args.env_id,
        machine=machine,
        software=collect_software(),
        verdict=verdict,
        wall_time_s=round(wall, 3),
        metrics=dict(ctx.metrics),
        gates=tuple(ctx.gates),
        config=config,
        warnings=tuple(ctx.warnings) + tuple(f"FAIL: {p}" for p in ctx.problems),
        container=collect_container(),
    )


def main(spec: TaskSpec, argv: list[str] | None = None) -> int:
    """Run ``spec`` as a command; returns the exit code (see the module docstring)."""
    parser = build_parser(spec)
    args = parser.parse_args(argv)  # argparse itself exits 2 on a bad option
    t0 = time.perf_counter()
    ctx: Context | None = None
    try:
        _validate_common(args)
        import torch

        device = resolve_device(args.device)
        threads = args.threads or available_cpus()
        torch.set_num_threads(threads)
        if args.deterministic:
            set_deterministic()
        seed_everything(args.seed)
        ctx = Context(name=spec.name, args=args, device=device)
        ctx.set(device=device, threads=threads, torch=torch.__version__)
        accel = accelerator_env()
        if accel in NO_GPU_MESSAGES and device == "cpu" and spec.name != "smoke":
            ctx.warn(f"{NO_GPU_MESSAGES[accel]} (running on the CPU)")
        spec.run(ctx)
        verdict = ctx.verdict()
    except UsageError as e:
        print(f"{spec.name}: error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{spec.name}: interrupted (no record written)", file=sys.stderr, flush=True)
        return 130
    except Exception as e:  # noqa: BLE001 - anything else is a bug in the task or the environment
        traceback.print_exc(file=sys.stderr)
        msg = f"{type(e).__name__}: {e}"
        print(f"{spec.name}: unexpected error: {msg}", file=sys.stderr, flush=True)
        if ctx is None:
            ctx = Context(name=spec.name, args=args, device="cpu")
        ctx.warnings.append(f"error: {msg}")
        try:
            path = write_record(_record(spec, ctx, "error", time.perf_counter() - t0), args.results)
            print(f"{spec.name}: ERROR, record: {path}", file=sys.stderr, flush=True)
        except Exception as e2:  # noqa: BLE001
            print(f"{spec.name}: could not write the error record either: {e2}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    wall = time.perf_counter() - t0
    try:
        path = write_record(_record(spec, ctx, verdict, wall), args.results)
    except OSError as e:
        print(f"{spec.name}: could not write the record to {args.results}: {e}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    print(f"{spec.name}: {verdict.upper()} in {wall:.1f} s ({_gate_summary(ctx)}) record: {path}", flush=True)
    return EXIT_PASS if verdict == "pass" else EXIT_FAIL


def _gate_summary(ctx: Context) -> str:
    def one(g: Gate) -> str:
        v = ctx.value(g.metric)
        return f"{g.metric}={v:.4g} {g.op} {g.threshold:g}" + ("" if g.passed else " FAILED")

    failed = [g for g in ctx.gates if not g.passed]
    shown = ctx.gates if len(ctx.gates) <= 4 else failed
    head = f"{len(ctx.gates) - len(failed)}/{len(ctx.gates)} gates passed"
    return "; ".join([head, *(one(g) for g in shown)])

