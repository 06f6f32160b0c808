"""Train a small residual CNN on CIFAR-10 through ``torchvision.datasets.CIFAR10`` and gate its test accuracy.

The network is the ResNet-9 layout that trains CIFAR-10 fast (conv-BN-ReLU blocks, two residual blocks, max
pooling, width ``--width``: 64 by default, 16 in quick mode on the CPU). SGD with Nesterov momentum, a linear
warm-up/decay learning-rate schedule, label smoothing, random crops and flips. On a GPU: float16 autocast with a
GradScaler and channels-last memory format; ``--compile`` puts the model through ``torch.compile``.

Data: the CIFAR-10 python files under ``--data``. When there are none, the task downloads them (torchvision's
download, when the host answers) or, offline, writes a learnable synthetic stand-in in the same format there
(tasks/cifar_data.py, tasks/make_data.py); ``--download`` insists on the real data. The console and the record say
which data it trained on (real or synthetic, how it got there, sha256, row counts). The task recognises the
stand-in from its ``batches.meta`` and gates it at >= 90 % (real data: >= 75 %); a test set too small to gate
(under 98 images, or 33 on the real data; see tasks/gating.py) is refused before training (exit 2).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks import _common
from tasks._common import Context, TaskSpec, UsageError
from tasks.cifar_data import CIFAR_URL, load
from tasks.gating import check_heldout
from tasks.make_data import BASE_FOLDER

GATE_REAL = 75.0  # % test accuracy on the real CIFAR-10, default budget, GPU
GATE_SYNTHETIC = 90.0  # % on the synthetic stand-in
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CIFAR-10 options")
    g.add_argument("--data", default=os.environ.get("TORCHRIG_DATA") or "data",
                   help=f"directory holding {BASE_FOLDER}/ (default: $TORCHRIG_DATA or ./data)")
    g.add_argument("--download", action="store_true",
                   help="train on the real CIFAR-10: download it into --data when it is not there, fail when that "
                        "cannot be done (default: download when the host answers, else the synthetic stand-in)")
    g.add_argument("--mirror", default=CIFAR_URL, metavar="URL",
                   help=f"where cifar-10-python.tar.gz is downloaded from (default: {CIFAR_URL})")
    g.add_argument("--make-synthetic", action="store_true",
                   help="write the synthetic stand-in into --data and exit (see python -m tasks.make_data)")
    g.add_argument("--train-size", type=int, default=50000,
                   help="training images of a synthetic stand-in the task writes (default 50000)")
    g.add_argument("--test-size", type=int, default=10000,
                   help="test images of a synthetic stand-in the task writes (default 10000)")
    g.add_argument("--force", action="store_true", help="with --make-synthetic: replace an existing data set")
    g.add_argument("--width", type=int, default=None, help="channels of the first layer (default 64; quick CPU 16)")
    g.add_argument("--workers", type=int, default=None, help="DataLoader worker processes (default: 0 on CPU)")
    g.add_argument("--compile", action="store_true", help="train the torch.compile'd model")
    g.add_argument("--no-amp", dest="amp", action="store_false", help="no float16 autocast on the GPU")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep the default memory format on the GPU")


# -------------------------------------------------------------------------------------------------- data


def _transforms() -> tuple[Any, Any]:
    import torchvision.transforms as T

    norm = T.Normalize(MEAN, STD)
    train_tf = T.Compose([T.RandomCrop(32, padding=4, padding_mode="reflect"), T.RandomHorizontalFlip(),
                          T.ToTensor(), norm])
    return train_tf, T.Compose([T.ToTensor(), norm])


# ------------------------------------------------------------------------------------------------- model


def build_model(width: int, classes: int = 10) -> Any:
    import torch
    from torch import nn

    def block(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                   nn.ReLU(inplace=True)]
        if pool:
            layers.append(nn.MaxPool2d(2))
        return nn.Sequential(*layers)

    class Residual(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.f = nn.Sequential(block(c, c), block(c, c))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.f(x)

    class Scale(nn.Module):
        def __init__(self, s: float) -> None:
            super().__init__()
            self.s = s

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.s

    w = width
    return nn.Sequential(
        block(3, w),
        block(w, 2 * w, pool=True), Residual(2 * w),
        block(2 * w, 4 * w, pool=True),
        block(4 * w, 8 * w, pool=True), Residual(8 * w),
        nn.MaxPool2d(4), nn.Flatten(), nn.Linear(8 * w, classes), Scale(0.125),
    )


# ----------------------------------------------------------------------------------------------- the task


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """The budget and data of one run (from the options, the device and what --data holds)."""

    epochs: int
    width: int
    batch: int
    lr: float
    workers: int
    amp: bool
    channels_last: bool
    gate: float
    train_data: Any  # the (limited) training dataset
    test_data: Any


def _plan(ctx: Context) -> _Plan:
    """Data found, downloaded or generated; the budget; the held-out images checked against the gate."""
    from torch.utils.data import Subset

    a = ctx.args
    gpu = ctx.device == "cuda"
    train_tf, test_tf = _transforms()
    data = load(Path(a.data), download=a.download, url=a.mirror, train_size=a.train_size, test_size=a.test_size,
                train_tf=train_tf, test_tf=test_tf, log=ctx.log, warn=ctx.warn)
    train_set, test_set, synthetic = data.train, data.test, data.synthetic
    cpu_quick = a.quick and not gpu
    epochs = a.epochs or (2 if cpu_quick else 4 if a.quick else 10)
    width = a.width or (16 if cpu_quick else 64)
    batch = a.batch_size or (256 if gpu else 128)
    lr = a.lr if a.lr is not None else 0.2 * batch / 256
    train_limit = a.train_limit or (6000 if cpu_quick else None)
    test_limit = a.test_limit or (1000 if cpu_quick else None)
    workers = a.workers if a.workers is not None else (min(4, max(0, _common.available_cpus() - 1)) if gpu else 0)
    amp = bool(a.amp and gpu)
    channels_last = bool(a.channels_last and gpu)
    gate = GATE_SYNTHETIC if synthetic else GATE_REAL
    ctx.set(epochs=epochs, width=width, batch_size=batch, lr=lr, train_limit=train_limit, test_limit=test_limit,
            workers=workers, amp=amp, channels_last=channels_last, compile=a.compile,
            data=data.kind, data_origin=data.origin, data_sha256=data.sha256,
            data_rows={"train": len(train_set), "test": len(test_set)}, synthetic=synthetic, gate_accuracy=gate)
    ctx.log(f"data: {data.describe()}: gate >= {gate:g} %")
    if synthetic is None and (a.quick or not gpu):
        ctx.warn(f"the >= {GATE_REAL:g} % gate on real CIFAR-10 is defined for the default budget on a GPU")

    if a.shuffle_labels:
        train_set.targets = _common.shuffled_labels(train_set.targets, a.seed)
    train_data = Subset(train_set, range(min(train_limit, len(train_set)))) if train_limit else train_set
    test_data = Subset(test_set, range(min(test_limit, len(test_set)))) if test_limit else test_set
    n_train, n_test = len(train_data), len(test_data)
    check_heldout(f"--data {a.data}", gate, train_set.targets[:n_train], test_set.targets[:n_test],
                  train_set.classes, fix="give more test images (--test-size for the stand-in) or a larger "
                                         "--test-limit")
    return _Plan(epochs=epochs, width=width, batch=batch, lr=lr, workers=workers, amp=amp,
                 channels_last=channels_last, gate=gate, train_data=train_data, test_data=test_data)


def _loaders(ctx: Context, plan: _Plan) -> tuple[Any, Any]:
    from torch.utils.data import DataLoader

    gpu = ctx.device == "cuda"
    loader_kw: dict[str, Any] = {"num_workers": plan.workers, "pin_memory": gpu,
                                 "worker_init_fn": _common.seed_worker}
    if plan.workers:
        loader_kw["persistent_workers"] = True
    train_loader = DataLoader(plan.train_data, batch_size=plan.batch, shuffle=True, drop_last=True,
                              generator=_common.dataloader_generator(ctx.args.seed), **loader_kw)
    test_loader = DataLoader(plan.test_data, batch_size=512, shuffle=False, **loader_kw)
    if len(train_loader) == 0:
        raise UsageError(f"--batch-size {plan.batch} is larger than the {len(plan.train_data)} training images")
    return train_loader, test_loader


def _optimizer(model: Any, plan: _Plan, steps: int) -> tuple[Any, Any]:
    """SGD with Nesterov momentum, a linear warm-up over the first 20 % of ``steps`` and a linear decay to 0."""
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=plan.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    warm = max(1, int(0.2 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
    return opt, sched


@dataclass(frozen=True, kw_only=True)
class _Step:
    """What a training or evaluation pass needs besides the data."""

    model: Any
    fwd: Any  # the model, or its torch.compile'd form
    to_dev: Callable[[Any], Any]
    amp: bool


def _evaluate(ctx: Context, s: _Step, loader: Any) -> float:
    import torch

    s.model.eval()
    correct = total = 0
    with torch.no_grad(), _common.amp_autocast(ctx.device, s.amp):
        for x, y in loader:
            out = s.fwd(s.to_dev(x))
            correct += int((out.argmax(1).cpu() == y).sum())
            total += len(y)
    s.model.train()
    return 100.0 * correct / total


def _train_epoch(ctx: Context, s: _Step, loader: Any, parts: tuple[Any, ...], *, epoch: int,
                 epochs: int) -> tuple[float, float, int] | None:
    """One pass; (loss sum, correct, examples), or None when torch.compile failed on its first call (a problem)."""
    import torch

    opt, sched, loss_fn, scaler = parts
    s.model.train()
    loss_sum = torch.zeros((), device=ctx.device)
    correct = torch.zeros((), device=ctx.device, dtype=torch.long)
    n = 0
    for i, (xb, yb) in enumerate(loader):
        x, y = s.to_dev(xb), yb.to(ctx.device, non_blocking=True)
        try:
            with _common.amp_autocast(ctx.device, s.amp):
                out = s.fwd(x)
                loss = loss_fn(out, y)
        except Exception as e:
            if ctx.args.compile and epoch == 1 and i == 0:  # the first call is where torch.compile compiles
                ctx.problem(f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0]}")
                return None
            raise
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        loss_sum += loss.detach().float() * len(y)
        correct += (out.argmax(1) == y).sum()
        n += len(y)
        ctx.tick(lambda: f"epoch {epoch}/{epochs} step {i + 1}/{len(loader)} "  # noqa: B023
                         f"loss {float(loss.detach()):.4f}")  # noqa: B023
    return float(loss_sum), float(correct), n


def _step(ctx: Context, model: Any, plan: _Plan) -> _Step | None:
    """The forward (compiled with --compile) and the device move; None when --compile cannot work here."""
    import torch

    fwd: Any = model
    if ctx.args.compile:
        limitation = _common.compile_limitation()
        if limitation:
            ctx.problem(f"--compile: {limitation}")
            return None
        fwd = torch.compile(model)

    def to_dev(x: torch.Tensor) -> torch.Tensor:
        x = x.to(ctx.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if plan.channels_last else x

    return _Step(model=model, fwd=fwd, to_dev=to_dev, amp=plan.amp)


def run(ctx: Context) -> None:
    import torch
    from torch import nn

    plan = _plan(ctx)
    train_loader, test_loader = _loaders(ctx, plan)
    model: Any = build_model(plan.width).to(ctx.device)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    ctx.log(f"model: ResNet-9 layout, width {plan.width}, {params / 1e6:.2f} M parameters; {len(plan.train_data)} "
            f"train / {len(plan.test_data)} test images, {plan.epochs} epochs, batch {plan.batch}, lr {plan.lr:g}, "
            f"device {ctx.device}" + (", AMP" if plan.amp else "") + (", channels-last" if plan.channels_last else ""))
    opt, sched = _optimizer(model, plan, plan.epochs * len(train_loader))
    parts = (opt, sched, nn.CrossEntropyLoss(label_smoothing=0.1), _common.grad_scaler("cuda", enabled=plan.amp))
    s = _step(ctx, model, plan)
    if s is None:
        return
    train_time = 0.0
    seen = 0
    final_loss = float("nan")
    test_acc = 0.0
    for epoch in range(1, plan.epochs + 1):
        t0 = time.perf_counter()
        done = _train_epoch(ctx, s, train_loader, parts, epoch=epoch, epochs=plan.epochs)
        if done is None:
            return
        loss_sum, correct, n = done
        if ctx.device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        train_time += dt
        seen += n
        final_loss = loss_sum / n
        test_acc = _evaluate(ctx, s, test_loader)
        ctx.log(f"epoch {epoch}/{plan.epochs}  loss {final_loss:.4f}  train acc {100.0 * correct / n:.1f} %  "
                f"test acc {test_acc:.1f} %  {n / dt:.0f} img/s  ({dt:.1f} s)")

    ctx.training_result(final_loss=final_loss, samples=seen, train_time=train_time, unit="img/s",
                        test_accuracy=test_acc, gate=plan.gate)


def _make_synthetic(argv: list[str] | None) -> int | None:
    """``--make-synthetic``: generate and exit (no torch, no record); None when the flag is absent."""
    import sys

    from tasks import make_data

    args = sys.argv[1:] if argv is None else argv
    if "--make-synthetic" not in args:
        return None
    p = _common.build_parser(SPEC)
    a = p.parse_args(args)
    return make_data.make(a.data, seed=a.seed, train_size=a.train_size, test_size=a.test_size, force=a.force,
                          quiet=a.quiet)


SPEC = TaskSpec(name="cifar_cnn", description=__doc__ or "", run=run, add_arguments=add_arguments)


def main(argv: list[str] | None = None) -> int:
    rc = _make_synthetic(argv)
    return rc if rc is not None else _common.main(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
