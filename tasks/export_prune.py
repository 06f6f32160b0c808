"""The pruned CNN of the export task: train, prune by global magnitude, fine-tune, make permanent, then (after the
export task has exported and parity-checked it like every other model) measure what pruning left in the file.

Steps, each one function below:

1. train the CIFAR CNN (:func:`tasks.cifar_cnn.build_model`) briefly on the CIFAR-10 under ``--data`` (the real
   files, or the synthetic stand-in tasks/cifar_data.py writes offline) and score it on held-out images;
2. ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured`` over every Conv2d and Linear weight, to
   ``--prune-sparsity`` of those weights (smallest magnitudes across the whole network, not per layer);
3. a short fine-tune with the masks in place, then ``prune.remove`` (the zeros become the weights themselves);
4. score it again on the same images. Gates: the dense model is well above chance, and the accuracy drop's
   one-sided 95 % upper bound (paired Wilson, tasks/gating.py) is within ``MAX_DROP`` points;
5. after export: the zeros counted in the ONNX file's Conv/Gemm/MatMul weight initializers (the file is what is
   deployed: an exporter that densified or re-laid out the weights would show here, not in the torch model),
   gated against the requested sparsity; raw and zlib-compressed sizes of the dense and the pruned file, and
   ONNX Runtime CPU latency of both on the same input (docs/tasks.md: what unstructured sparsity buys).
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks import export_onnx as ox
from tasks._common import Context, UsageError
from tasks.export_models import PARITY_BATCH, Case
from tasks.gating import check_heldout, min_paired_heldout, paired_drop_upper

__all__ = ["MAX_DROP", "add_arguments", "gate_onnx", "onnx_sparsity", "pruned_case", "validate"]

SPARSITY = 0.7  # default share of Conv2d/Linear weights set to zero
MAX_DROP = 5.0  # points: the upper 95 % bound of dense accuracy - pruned accuracy, same held-out images
MIN_DENSE_ACCURACY = 30.0  # % held-out: 3x chance (10 classes); the drop gate means nothing on an untrained net
SPARSITY_SLACK = 0.005  # the ONNX file may miss the target by this share (rounding of the global threshold)
LINEAR_OPS = ("Conv", "Gemm", "MatMul")
TIMING_REPEATS = 30


def add_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--data", default=os.environ.get("TORCHRIG_DATA") or "data",
                   help="CIFAR-10 directory for the pruned CNN (as cifar_cnn's --data; default $TORCHRIG_DATA or "
                        "./data; the synthetic stand-in is written there offline)")
    g.add_argument("--prune-sparsity", type=float, default=SPARSITY,
                   help=f"share of the CNN's Conv2d/Linear weights pruned to zero ({SPARSITY})")
    g.add_argument("--prune-train", type=int, default=None, help="training images (quick 2000, else 4000)")
    g.add_argument("--prune-epochs", type=int, default=None, help="dense training epochs (quick 2, else 3)")
    g.add_argument("--prune-heldout", type=int, default=1000, help="held-out images both models are scored on")


def validate(a: argparse.Namespace) -> None:
    if not 0.0 < a.prune_sparsity < 1.0:
        raise UsageError(f"--prune-sparsity must be between 0 and 1 (a share of the weights), got {a.prune_sparsity}")
    for opt in ("prune_train", "prune_epochs", "prune_heldout"):
        v = getattr(a, opt)
        if v is not None and v < 1:
            raise UsageError(f"--{opt.replace('_', '-')} must be at least 1, got {v}")


@dataclass(frozen=True, kw_only=True)
class _Data:
    train: Any  # DataLoader
    test: Any  # DataLoader
    n_test: int
    describe: str


def _load(ctx: Context) -> _Data:
    import torch
    from torch.utils.data import DataLoader, Subset

    from tasks.cifar_cnn import _transforms
    from tasks.cifar_data import CIFAR_URL, load

    a = ctx.args
    _, test_tf = _transforms()
    data = load(Path(a.data), download=False, url=CIFAR_URL, train_size=50000, test_size=10000, train_tf=test_tf,
                test_tf=test_tf, log=ctx.log, warn=ctx.warn)
    n_train = min(a.prune_train or (2000 if a.quick else 4000), len(data.train))
    n_test = min(a.prune_heldout, len(data.test))
    n_min = min_paired_heldout(MAX_DROP)
    if n_test < n_min:
        raise UsageError(f"--data {a.data}: {n_test} held-out image(s) for the pruned CNN; an accuracy drop gate of "
                         f"{MAX_DROP:g} points needs at least {n_min} (tasks/gating.py): raise --prune-heldout or "
                         "give a larger test set")
    check_heldout(f"--data {a.data}", MIN_DENSE_ACCURACY, data.train.targets[:n_train], data.test.targets[:n_test],
                  data.train.classes, fix="raise --prune-heldout or give a larger test set")
    gen = torch.Generator().manual_seed(a.seed)
    train = DataLoader(Subset(data.train, range(n_train)), batch_size=32, shuffle=True, drop_last=True,
                       generator=gen)
    test = DataLoader(Subset(data.test, range(n_test)), batch_size=500, shuffle=False)
    return _Data(train=train, test=test, n_test=n_test, describe=data.describe())


def _fit(model: Any, loader: Any, *, epochs: int, lr: float, device: str) -> None:
    """SGD with Nesterov momentum and a linear decay to zero, as cifar_cnn trains (no augmentation, float32)."""
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = max(1, epochs * len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device), label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


def _correct(model: Any, loader: Any, device: str) -> Any:
    """One bool per held-out image: did ``model`` classify it right (the paired comparison needs each one)."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for x, y in loader:
            out.append(model(x.to(device)).argmax(1).cpu() == y)
    return torch.cat(out)


def _weights(model: Any) -> list[tuple[Any, str]]:
    import torch

    return [(m, "weight") for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def _zero_share(params: list[tuple[Any, str]]) -> float:
    zeros = sum(int((m.weight == 0).sum()) for m, _ in params)
    return float(zeros / sum(int(m.weight.numel()) for m, _ in params))


def _prune(model: Any, sparsity: float) -> float:
    """Global L1 magnitude pruning of every Conv2d/Linear weight, made permanent; the share of zeros in torch."""
    from torch.nn.utils import prune

    params = _weights(model)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    return _zero_share(params)


def _make_permanent(model: Any) -> float:
    from torch.nn.utils import prune

    params = _weights(model)
    for m, name in params:
        prune.remove(m, name)
    return _zero_share(params)


def _gate_accuracy(ctx: Context, dense_ok: Any, pruned_ok: Any) -> None:
    n = len(dense_ok)
    lost = int((dense_ok & ~pruned_ok).sum())
    gained = int((~dense_ok & pruned_ok).sum())
    dense = ctx.metric("cnn_dense_accuracy", 100.0 * float(dense_ok.float().mean()), "%")
    pruned = ctx.metric("cnn_pruned_accuracy", 100.0 * float(pruned_ok.float().mean()), "%")
    ctx.metric("cnn_pruned_accuracy_drop", dense - pruned, "points", higher_is_better=False)
    upper = ctx.metric("cnn_pruned_accuracy_drop_upper95", paired_drop_upper(lost, gained, n), "points",
                       higher_is_better=False)
    ctx.gate("cnn_dense_accuracy", ">=", MIN_DENSE_ACCURACY)
    ctx.gate("cnn_pruned_accuracy_drop_upper95", "<=", MAX_DROP)
    ctx.log(f"cnn_pruned: held-out accuracy dense {dense:.1f} %, pruned {pruned:.1f} % on {n} images ({lost} lost, "
            f"{gained} gained): drop {dense - pruned:.1f} points, upper 95 % bound {upper:.2f}")


def pruned_case(ctx: Context, base: Case) -> Case:
    """The trained, pruned, fine-tuned CNN as a Case (its feeds are ``base``'s); ``dense`` is the model before."""
    import torch

    from tasks.cifar_cnn import build_model

    a = ctx.args
    device = "cuda" if ctx.device == "cuda" else "cpu"
    data = _load(ctx)
    ctx.log(f"cnn_pruned data: {data.describe}")
    epochs = a.prune_epochs or (2 if a.quick else 3)
    torch.manual_seed(a.seed)
    model = build_model(a.width).to(device)
    _fit(model, data.train, epochs=epochs, lr=0.05, device=device)
    dense = copy.deepcopy(model).cpu().eval()
    dense_ok = _correct(model, data.test, device)
    masked = _prune(model, a.prune_sparsity)
    _fit(model, data.train, epochs=1, lr=0.01, device=device)
    sparsity = _make_permanent(model)
    ctx.metric("cnn_pruned_torch_sparsity", sparsity, "share")
    _gate_accuracy(ctx, dense_ok, _correct(model, data.test, device))
    info = {**base.info, "trained": True, "prune": {
        "method": "torch.nn.utils.prune.global_unstructured, L1Unstructured, Conv2d+Linear weights, then "
                  "prune.remove", "sparsity": a.prune_sparsity, "sparsity_after_mask": round(masked, 6),
        "train_images": len(data.train.dataset), "heldout_images": data.n_test, "epochs": epochs,
        "fine_tune_epochs": 1, "max_drop_points": MAX_DROP, "min_dense_accuracy": MIN_DENSE_ACCURACY,
        "data": data.describe}}
    return Case(name="cnn_pruned", module=model.cpu().eval(), input_names=base.input_names,
                output_names=base.output_names, dynamic=base.dynamic, feeds=base.feeds, info=info, dense=dense)


def onnx_sparsity(path: Path) -> tuple[int, int]:
    """(zeros, elements) over the float weight initializers (2-D or more) that Conv, Gemm and MatMul nodes read."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    read = {i for n in proto.graph.node if n.op_type in LINEAR_OPS for i in n.input}
    zeros = total = 0
    for t in proto.graph.initializer:
        if t.name in read and len(t.dims) >= 2 and t.data_type == onnx.TensorProto.FLOAT:
            arr = numpy_helper.to_array(t)
            zeros += int(np.count_nonzero(arr == 0))
            total += int(arr.size)
    return zeros, total


def _sizes(ctx: Context, which: str, path: Path) -> int:
    raw = path.read_bytes()
    packed = len(zlib.compress(raw, 9))
    ctx.metric(f"cnn_{which}_onnx_bytes", len(raw), "bytes", higher_is_better=False)
    ctx.metric(f"cnn_{which}_onnx_zlib_bytes", packed, "bytes", higher_is_better=False)
    return packed


def gate_onnx(ctx: Context, case: Case, exp: ox.Exported, out_dir: Path, *, threads: int) -> None:
    """Sparsity measured in the exported file (gated), sizes raw/compressed and CPU latency against the dense file."""
    import numpy as np

    zeros, total = onnx_sparsity(exp.path)
    target = ctx.args.prune_sparsity
    share = ctx.metric("cnn_pruned_onnx_sparsity", zeros / total if total else 0.0, "share")
    ctx.gate("cnn_pruned_onnx_sparsity", ">=", target - SPARSITY_SLACK)
    dense = ox.export(case.dense, (case.feeds(PARITY_BATCH)["image"],), out_dir / f"cnn_dense_{exp.exporter}.onnx",
                      exp.exporter, input_names=case.input_names, output_names=case.output_names,
                      dynamic=case.dynamic)
    packed_dense, packed_pruned = _sizes(ctx, "dense", dense.path), _sizes(ctx, "pruned", exp.path)
    ctx.metric("cnn_pruned_zlib_shrink", packed_dense / packed_pruned, "x")
    feeds = {"image": np.asarray(case.feeds(PARITY_BATCH)["image"].numpy())}
    ms = {}
    for which, path in (("dense", dense.path), ("pruned", exp.path)):
        sess = ox.session(path, "CPUExecutionProvider", threads)
        ms[which] = ctx.metric(f"cnn_{which}_onnx_cpu_ms",
                               1e3 * ox.median_seconds(functools.partial(ox.run, sess, feeds),
                                                       repeats=TIMING_REPEATS), "ms/batch", higher_is_better=False)
    ctx.log(f"cnn_pruned {exp.exporter}: {zeros}/{total} weights zero in the ONNX file ({100 * share:.1f} %); "
            f"raw {dense.size_bytes / 1e6:.2f} -> {exp.size_bytes / 1e6:.2f} MB, zlib {packed_dense / 1e6:.2f} -> "
            f"{packed_pruned / 1e6:.2f} MB "
            f"({packed_dense / packed_pruned:.2f}x); ONNX Runtime CPU {ms['dense']:.2f} ms dense, "
            f"{ms['pruned']:.2f} ms pruned per batch of {PARITY_BATCH}")
