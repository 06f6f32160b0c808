"""``python -m bench --acceptance``: does the harness measure what a bare loop measures, on the device found?

For each benchmark -- the calibration GEMM and copy, and training steps -- the harness figure (the suite's own
path: :func:`bench.harness.measure` driving the step through a ``pedantic`` runner that times rounds the way
pytest-benchmark does) is taken next to a bare reference loop in the same process: ``torch.mm`` / ``copy_`` /
a plain zero_grad-forward-backward-step loop written here without the harness, timed with CUDA events on a GPU
and ``time.perf_counter`` on the CPU. Harness and bare runs alternate, ``repeats`` times each. Printed per
benchmark: both figures, their ratio (harness / bare; goal >= 0.95), % of the spec peak where the GPU is in
``gpu_peaks.json``, the published anchor for that GPU where one exists, and the run-to-run CV of the harness
figure. One verdict line ends the output; the exit code is 0 for PASS, 1 for FAIL, 2 when the device cannot be
used (a GPU image with no GPU: see bench/device.py).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from bench.acceptance_data import ANCHORS, Anchor, Case, cases_for
from bench.busy import Busy
from bench.flags import precision_flags
from bench.harness import Plan, TorchDevice, measure
from bench.load import Verdict, judge, sample
from bench.peaks import GpuPeak, device_lookup

__all__ = ["Row", "main", "run_acceptance"]

RATIO_GOAL = 0.95
CV_LIMIT_PCT = {"cuda": 5.0, "rocm": 5.0, "cpu": 15.0}  # shared CPUs are noisier than a GPU


class _Stats:
    def __init__(self) -> None:
        self.data: list[float] = []


class PedanticRunner:
    """What :func:`bench.harness.measure` needs of pytest-benchmark's fixture: ``pedantic`` timing each round
    with ``time.perf_counter`` (pytest-benchmark's default timer) after untimed warm-up rounds."""

    name = "acceptance"

    def __init__(self) -> None:
        self.stats = type("S", (), {})()
        self.stats.stats = _Stats()

    def pedantic(self, fn: Callable[[], Any], *, rounds: int, warmup_rounds: int, iterations: int) -> None:
        assert iterations == 1
        for _ in range(warmup_rounds):
            fn()
        data = self.stats.stats.data
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            data.append(time.perf_counter() - t0)


def bare_step_s(step: Callable[[], Any], device: TorchDevice, *, steps: int, rounds: int, warmup: int = 2) -> list[
        float]:
    """Seconds per step of ``step``, one value per round of ``steps`` calls: CUDA events on a GPU (the device's
    own clock), perf_counter on the CPU. Nothing else: no harness."""
    import torch

    for _ in range(warmup):
        step()
    device.synchronize()
    out: list[float] = []
    for _ in range(rounds):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                step()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3 / steps)
        else:
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            out.append((time.perf_counter() - t0) / steps)
    return out


@dataclass(kw_only=True)
class Row:
    """One benchmark's acceptance figures."""

    case: Case
    unit: str
    harness: list[float] = field(default_factory=list)  # figure per repeat (work per second)
    bare: list[float] = field(default_factory=list)
    self_check_ok: bool = True
    peak: float | None = None  # spec peak in the same unit
    anchor: Anchor | None = None
    notes: list[str] = field(default_factory=list)
    busy: Busy | None = None  # the busy check of the first harness repeat (bench/busy.py)

    @property
    def ratio(self) -> float:
        """Harness over bare, each the median over repeats (repeats alternate the two, so drift hits both)."""
        return statistics.median(self.harness) / statistics.median(self.bare)

    @property
    def cv_pct(self) -> float:
        if len(self.harness) < 2:
            return 0.0
        return 100 * statistics.stdev(self.harness) / statistics.fmean(self.harness)

    def problems(self, cv_limit: float) -> list[str]:
        out = []
        if self.ratio < RATIO_GOAL:
            out.append(f"{self.case.id}: harness {self.ratio:.3f} x the bare loop (goal >= {RATIO_GOAL})")
        if self.cv_pct > cv_limit:
            out.append(f"{self.case.id}: run-to-run CV {self.cv_pct:.1f} % > {cv_limit:g} %")
        if not self.self_check_ok:
            out.append(f"{self.case.id}: the harness's wall/device self-check flagged rounds")
        return out

    def line(self) -> str:
        h, b = statistics.median(self.harness), statistics.median(self.bare)
        pct = f"{100 * h / self.peak:5.1f} % of spec" if self.peak else "  - % of spec"
        anchor = f"anchor {self.anchor.value:g} {self.unit} ({self.anchor.source})" if self.anchor else "no anchor"
        return (f"{self.case.id:<46} harness {h:>10.4g} {self.unit:<9} bare {b:>10.4g}  ratio {self.ratio:.3f}  "
                f"{pct}  CV {self.cv_pct:4.1f} %  {self.busy_cell()}  {anchor}")

    def busy_cell(self) -> str:
        """``busy 97 %``; ``HOST-BOUND`` added on a GPU below the threshold; ``busy n/a`` when unmeasured."""
        if self.busy is None or self.busy.pct is None:
            return "busy  n/a"
        return f"busy {self.busy.pct:3.0f} %" + (" HOST-BOUND" if self.busy.warn else "")


# ------------------------------------------------------------------------------------------------ steps


def _gemm(case: Case, device: TorchDevice) -> tuple[Callable[[], Any], Callable[[], Any], float]:
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[case.dtype]
    g = torch.Generator(device=device.torch_device).manual_seed(0)
    a = torch.randn(case.n, case.n, device=device.torch_device, dtype=dtype, generator=g)
    b = torch.randn(case.n, case.n, device=device.torch_device, dtype=dtype, generator=g)
    c = torch.empty_like(a)

    def step() -> Any:
        return torch.mm(a, b, out=c)

    return step, step, 2.0 * case.n**3 / 1e12  # the bare loop is the same call: the harness is what differs


def _copy(case: Case, device: TorchDevice) -> tuple[Callable[[], Any], Callable[[], Any], float]:
    import torch

    nbytes = case.n * 2**20
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device.torch_device)
    dst = torch.empty_like(src)

    def step() -> Any:
        return dst.copy_(src)

    return step, step, 2.0 * nbytes / 1e9  # read + write, as bench_calibration counts


def _train(case: Case, device: TorchDevice) -> tuple[Callable[[], Any], Callable[[], Any], float]:
    """The suite's workload step, and a plain training step over the same model, inputs and optimizer settings
    written here without the workload closure or the harness."""
    import torch

    from bench.workloads import _autocast_dtype, _bert, _cnn, build_workload

    assert case.train is not None
    w = build_workload(case.train, device)
    torch.manual_seed(0)
    model, inputs, loss_of, _ = (_bert if case.train.model == "bert" else _cnn)(case.train, device.torch_device)
    model.train()
    if case.train.model == "bert":
        opt: Any = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=float(w.config["lr"]), momentum=0.9,
                              weight_decay=float(w.config["weight_decay"]))
    dtype = _autocast_dtype(case.train.precision)

    def bare() -> Any:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            loss = loss_of(model(*inputs))
        loss.backward()
        opt.step()
        return loss

    return w.step, bare, float(case.train.batch)


_STEPS = {"gemm": _gemm, "copy": _copy, "train": _train}


def _peak(case: Case, peak: GpuPeak | None) -> float | None:
    if peak is None:
        return None
    if case.kind == "gemm":
        return peak.tflops.get(case.dtype)
    if case.kind == "copy":
        return peak.bandwidth_gbs
    return None


@contextlib.contextmanager
def _quiet() -> Iterator[list[str]]:
    seen: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield seen
    seen.extend(sorted({f"{w.category.__name__}: {w.message}" for w in caught}))


def run_case(case: Case, device: TorchDevice, *, plan: Plan, repeats: int) -> Row:
    harness_step, bare, per_step = _STEPS[case.kind](case, device)
    row = Row(case=case, unit=case.unit)
    for i in range(repeats):  # alternate, so that drift (clocks, other load) hits both alike
        with _quiet() as seen:  # one profiled busy-check round per case is enough
            m = measure(PedanticRunner(), harness_step, device=device, plan=replace(plan, busy_check=i == 0))
        row.self_check_ok &= m.agreement.ok
        row.busy = row.busy or m.busy
        row.notes.extend(s for s in seen if s not in row.notes)
        # The median round of each, the same statistic both ways: one round stalled by another process (a
        # shared CPU, a GPU clock dip) moves neither figure, where a mean would carry it into the ratio.
        row.harness.append(per_step / (statistics.median(m.round_s) / m.steps_per_round))
        bare_s = bare_step_s(bare, device, steps=m.steps_per_round, rounds=m.rounds)
        row.bare.append(per_step / statistics.median(bare_s))
    return row


def run_acceptance(device: TorchDevice, *, size: str, out: Callable[[str], None] = print) -> tuple[bool, list[Row]]:
    """Run and print every acceptance case for ``device``; return (passed, rows)."""
    import torch

    peak = device_lookup(device)
    cases, plan, repeats = cases_for(device.type, size)
    anchors = ANCHORS.get(peak.id, {}) if peak else {}
    out(f"acceptance: {device.name} ({device.gpu_name or 'CPU'}), torch {torch.__version__}, size {size}, "
        f"{repeats} repeats of {plan.rounds} rounds; spec peak: {peak.id if peak else 'none known'}"
        + (f" ({peak.partition})" if peak and peak.partition else ""))
    load0, t0 = sample(), time.monotonic()
    rows: list[Row] = []
    for case in cases:
        with precision_flags(tf32=False, cudnn_benchmark=case.kind == "train"):  # as the suite sets them
            row = run_case(case, device, plan=plan, repeats=repeats)
        row.peak, row.anchor = _peak(case, peak), anchors.get(case.anchor_key) if case.anchor_key else None
        rows.append(row)
        out(row.line())
        for note in row.notes[:3]:
            out(f"    note: {note}")
        if row.busy is not None and (row.busy.warn or row.busy.pct is None):
            out(f"    busy: {row.busy.message}")
    cv_limit = CV_LIMIT_PCT.get(device.accelerator, 5.0)
    problems = [p for r in rows for p in r.problems(cv_limit)]
    load = judge(load0, sample())  # the same busy-machine verdict as the suite's records (bench/load.py)
    out(f"load: {_load_line(load)}")
    busy = f" ({load.warning})" if load.busy else ""
    out(verdict_line(rows, problems, cv_limit=cv_limit, where=device.gpu_name or "CPU",
                     seconds=time.monotonic() - t0) + busy)
    return not problems, rows


def _load_line(v: Verdict) -> str:
    def la(s: dict[str, Any]) -> str:
        x = s.get("loadavg")
        return f"{x[0]:.2f}" if isinstance(x, list) and x and isinstance(x[0], float) else "n/a"

    share = "n/a" if v.other_cpu_share is None else f"{100 * v.other_cpu_share:.0f} %"
    return (f"load average (1 min) before {la(v.before)}, after {la(v.after)} on {v.after.get('cpu_count')} CPUs; "
            f"other processes' CPU share {share}; {'BUSY' if v.busy else 'quiet'}")


def verdict_line(rows: list[Row], problems: list[str], *, cv_limit: float, where: str, seconds: float) -> str:
    failed = {p.split(":")[0] for p in problems}
    head = "PASS" if not problems else "FAIL"
    return (f"acceptance: {head}: {len(rows) - len(failed)}/{len(rows)} benchmarks within {RATIO_GOAL} of the "
            f"bare loop with CV <= {cv_limit:g} % on {where} in {seconds:.0f} s"
            + ("" if not problems else "; " + "; ".join(problems)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench --acceptance", allow_abbrev=False)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", default="auto", choices=("auto", "tiny", "quick", "full"))
    args = ap.parse_args(argv)
    from bench.device import DeviceProblem, choose_device

    try:
        choice = choose_device(args.device)
    except DeviceProblem as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    import torch

    from bench.rocm_env import apply_rocm_env

    rocm = apply_rocm_env(torch)  # before the device runs anything (bench/rocm_env.py)
    device = TorchDevice(choice.name)
    for note in rocm.get("notes", []):
        print(f"note: {note}")
    for w in choice.warnings:
        print(f"warning: {w}")
    size = args.size if args.size != "auto" else ("quick" if device.type == "cpu" else "full")
    passed, _ = run_acceptance(device, size=size)
    return 0 if passed else 1
