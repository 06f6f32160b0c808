"""Fit y = 2x + 1 with one ``nn.Linear`` and SGD on a mean-squared error, and check the answer.

Data: x uniform in [-1, 1], y = 2x + 1 plus Gaussian noise of ``--noise`` (0.01), drawn from the seed. Gates:
``|w - 2| < 0.01``, ``|b - 1| < 0.01`` and MSE < 0.001. With a GPU (``--device auto`` on a machine with one, or
``--device cuda``) the same model -- same initial weights, same batches -- is trained on the GPU too (TF32 off),
and the GPU's final w and b must agree with the CPU's within ``--tolerance`` (1e-4): an environment whose GPU
arithmetic is wrong fails here.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from tasks import _common
from tasks._common import Context, TaskSpec
from tasks.gating import min_regression_points

TRUE_W, TRUE_B = 2.0, 1.0
PARAM_TOL = 1e-2
MSE_TOL = 1e-3


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("regression options")
    g.add_argument("--samples", type=int, default=1024, help="data points (default 1024)")
    g.add_argument("--noise", type=float, default=0.01, help="standard deviation of the noise on y (default 0.01)")
    g.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest CPU/GPU difference of the fitted w and b (default 1e-4)")


def _train(ctx: Context, device: str, *, x: Any, y: Any, init: dict[str, Any], order: list[Any], lr: float,
           batch: int) -> tuple[Any, list[float], float]:
    """Train a fresh Linear(1, 1) from ``init`` over the batches in ``order``; (model, epoch losses, seconds)."""
    import torch
    from torch import nn

    model = nn.Linear(1, 1).to(device)
    model.load_state_dict(init)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    xd, yd = x.to(device), y.to(device)
    losses: list[float] = []
    t0 = time.perf_counter()
    epochs = len(order)
    for epoch, perm in enumerate(order, start=1):
        total = torch.zeros((), device=device)
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch].to(device)
            loss = loss_fn(model(xd[idx]), yd[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        losses.append(float(total) / len(x))
        if epoch in (1, epochs) or epoch % max(1, epochs // 5) == 0:
            w, b = model.weight.detach().item(), model.bias.detach().item()
            ctx.log(f"[{device}] epoch {epoch}/{epochs}  loss {losses[-1]:.3e}  w {w:.5f}  b {b:.5f}")
    if device == "cuda":
        torch.cuda.synchronize()
    return model, losses, time.perf_counter() - t0


def run(ctx: Context) -> None:
    import torch

    a = ctx.args
    if a.samples < 2:
        raise _common.UsageError(f"--samples must be at least 2, got {a.samples}")
    epochs = a.epochs or (20 if a.quick else 50)
    batch = a.batch_size or 32
    lr = a.lr if a.lr is not None else 0.1
    n = min(a.samples, a.train_limit) if a.train_limit else a.samples
    if not (math.isfinite(a.noise) and a.noise >= 0) or not (math.isfinite(a.tolerance) and a.tolerance > 0):
        raise _common.UsageError(f"--noise must be finite and >= 0 and --tolerance finite and > 0, got {a.noise} "
                                 f"and {a.tolerance}")
    need = min_regression_points(a.noise, PARAM_TOL)
    if n < need:
        raise _common.UsageError(f"{n} data points cannot gate |w - 2| < {PARAM_TOL:g} at noise {a.noise:g}: the "
                                 f"slope's 95 % error must fit in half the tolerance, which needs at least {need} "
                                 "points (docs/tasks.md, 'Enough data to gate'); raise --samples / --train-limit")
    ctx.set(epochs=epochs, batch_size=batch, lr=lr, samples=n, noise=a.noise, tolerance=a.tolerance)

    g = torch.Generator().manual_seed(a.seed)
    x = torch.rand(n, 1, generator=g) * 2 - 1
    y = TRUE_W * x + TRUE_B + a.noise * torch.randn(n, 1, generator=g)
    if a.shuffle_labels:
        y = y[torch.randperm(n, generator=g)]
    init = torch.nn.Linear(1, 1).state_dict()  # seeded by main()
    order = [torch.randperm(n, generator=g) for _ in range(epochs)]
    ctx.log(f"fitting y = {TRUE_W:g}x + {TRUE_B:g} (noise {a.noise:g}) on {n} points: {epochs} epochs, batch {batch}, "
            f"lr {lr:g}; start w {float(init['weight']):.4f} b {float(init['bias']):.4f}")

    model, losses, secs = _train(ctx, "cpu", x=x, y=y, init=init, order=order, lr=lr, batch=batch)
    w, b = model.weight.detach().item(), model.bias.detach().item()
    with torch.no_grad():
        mse = float(torch.mean((model(x) - y) ** 2))
    ctx.metric("final_loss", losses[-1], "squared error", higher_is_better=False)
    ctx.metric("throughput", n * epochs / secs if secs else 0.0, "samples/s")
    ctx.metric("w", w, "1")
    ctx.metric("b", b, "1")
    ctx.metric("w_abs_err", abs(w - TRUE_W), "1", higher_is_better=False)
    ctx.metric("b_abs_err", abs(b - TRUE_B), "1", higher_is_better=False)
    ctx.metric("mse", mse, "squared error", higher_is_better=False)
    ctx.gate("w_abs_err", "<", PARAM_TOL)
    ctx.gate("b_abs_err", "<", PARAM_TOL)
    ctx.gate("mse", "<", MSE_TOL)

    if ctx.device == "cuda":
        # The GPU must reproduce the CPU's answer; TF32 would round the products to 10 bits, far beyond 1e-4.
        torch.backends.cuda.matmul.allow_tf32 = False
        gpu_model, _, gpu_secs = _train(ctx, "cuda", x=x, y=y, init=init, order=order, lr=lr, batch=batch)
        gw, gb = gpu_model.weight.detach().item(), gpu_model.bias.detach().item()
        with torch.no_grad():
            gpu_mse = float(torch.mean((gpu_model(x.cuda()) - y.cuda()) ** 2))
        ctx.metric("gpu_w", gw, "1")
        ctx.metric("gpu_b", gb, "1")
        ctx.metric("gpu_mse", gpu_mse, "squared error", higher_is_better=False)
        ctx.metric("gpu_throughput", n * epochs / gpu_secs if gpu_secs else 0.0, "samples/s")
        ctx.metric("cpu_gpu_max_abs_diff", max(abs(gw - w), abs(gb - b)), "1", higher_is_better=False)
        ctx.gate("gpu_mse", "<", MSE_TOL)
        ctx.gate("cpu_gpu_max_abs_diff", "<", a.tolerance)


SPEC = TaskSpec(name="regression", description=__doc__ or "", run=run, add_arguments=add_arguments)


def main(argv: list[str] | None = None) -> int:
    return _common.main(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
