"""Export the task models to ONNX, check them in ONNX Runtime, quantize BERT to int8, and optionally view them.

The CIFAR CNN and the BERT classifier (see tasks/export_models.py for how each is built and why) are exported with
every exporter this torch has: the TorchScript-based ``torch.onnx.export`` (opset 17) and, from torch 2.5, the
dynamo exporter (``dynamo=True``, its own opset). Each file goes through ``onnx.checker`` and runs in ONNX Runtime
on the CPU (and on the CUDA/ROCm execution providers when onnxruntime has them and torch sees a GPU). Gates:

* parity with eager PyTorch on a fixed batch: max absolute error and max error relative to the largest logit;
* a dynamic batch axis: the same file runs a second batch size (BERT: a different sequence length too) with the
  right output shape and the same parity;
* BERT int8 (onnxruntime dynamic quantization): the file shrinks by a factor and held-out accuracy drops by no
  more than a stated number of points (from a fine-tuned model that is well above chance);
* the pruned CNN (``cnn_pruned``, tasks/export_prune.py: trained on the CIFAR-10 under ``--data``, global magnitude
  pruning, fine-tune, ``prune.remove``): the accuracy drop against the dense model (upper 95 % bound) and the
  sparsity counted in the exported file's weight initializers; raw and compressed sizes, dense vs pruned latency.

An exporter that this torch lacks, or that cannot export a model, is skipped with the reason (in the record's
config and warnings); a wrong number fails. ``--perturb-weight`` is the deliberately broken export: the parity
gates must fail. ``--out DIR`` keeps the .onnx files; ``--view`` serves one in Netron on localhost.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Any

from tasks import _common, export_prune
from tasks import export_onnx as ox
from tasks._common import Context, TaskSpec, UsageError
from tasks.export_models import PARITY_BATCH, SECOND_BATCH, Case, bert_case, cnn_case

MODELS = ("cnn", "bert", "cnn_pruned")
# Parity thresholds per model and execution provider, float32 (max abs error, max error relative to max |logit|).
# Measured on the CPU (docs/tasks.md): CNN 7.8e-8 abs, BERT <= 1.3e-6 abs. GPU providers (TF32, fused kernels): not
# measured yet, a wide bound.
PARITY = {
    ("cnn", "cpu"): (1e-4, 1e-4), ("bert", "cpu"): (1e-4, 1e-4),
    ("cnn", "cuda"): (1e-2, 1e-2), ("bert", "cuda"): (1e-2, 1e-2),
    ("cnn", "rocm"): (1e-2, 1e-2), ("bert", "rocm"): (1e-2, 1e-2),
}
PARITY.update({("cnn_pruned", p): t for (m, p), t in list(PARITY.items()) if m == "cnn"})
BERT_MIN_ACCURACY = 75.0  # % held-out, eager float32: the briefly fine-tuned model must be well above chance (50 %)
INT8_MAX_DROP = 3.0  # accuracy points lost by int8 (ONNX float32 -> int8, same 500 sentences); measured 1.8
INT8_MIN_SHRINK = 3.0  # file size float32 / int8
VIEWABLE = ("cnn", "bert", "bert_int8")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("export options")
    g.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    g.add_argument("--exporters", default=None,
                   help=f"comma-separated subset of {', '.join(ox.EXPORTERS)} (default: every one this torch has)")
    g.add_argument("--out", default=None, help="keep the .onnx files in this directory (default: a temporary one)")
    g.add_argument("--view", nargs="?", const="cnn", default=None, choices=VIEWABLE,
                   help="after the gates, serve this model (default cnn) in Netron and print the URL")
    g.add_argument("--view-host", default="127.0.0.1", help="address Netron listens on (127.0.0.1)")
    g.add_argument("--view-port", type=int, default=0, help="port Netron listens on (default: a free one)")
    g.add_argument("--view-seconds", type=float, default=None, help="serve this long, then stop (default: Ctrl-C)")
    g.add_argument("--perturb-weight", action="store_true",
                   help="perturb one weight in every exported file (a broken export: the parity gates must fail)")
    g.add_argument("--width", type=int, default=16, help="CNN width (16)")
    g.add_argument("--bert-train", type=int, default=None, help="BERT fine-tuning sentences (quick 640, else 1500)")
    g.add_argument("--bert-heldout", type=int, default=None, help="held-out sentences for accuracy (500: all)")
    g.add_argument("--bert-epochs", type=int, default=1, help="BERT fine-tuning epochs (1)")
    g.add_argument("--max-length", type=int, default=64, help="BERT tokens per sentence (64)")
    export_prune.add_arguments(p.add_argument_group("pruned CNN options (cnn_pruned)"))


def _names(arg: str, allowed: tuple[str, ...], option: str) -> list[str]:
    names = [n.strip() for n in arg.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise UsageError(f"{option} {arg!r}: choose from {', '.join(allowed)}")
    return [n for n in allowed if n in names]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _validate(a: argparse.Namespace) -> tuple[list[str], list[ox.Exporter]]:
    models = _names(a.models, MODELS, "--models")
    exporters: list[ox.Exporter] = [e for e in ox.EXPORTERS if a.exporters is None or
                                    e in _names(a.exporters, ox.EXPORTERS, "--exporters")]
    for opt in ("width", "bert_train", "bert_heldout", "bert_epochs"):
        v = getattr(a, opt)
        if v is not None and v < 1:
            raise UsageError(f"--{opt.replace('_', '-')} must be at least 1, got {v}")
    if a.max_length < 8:
        raise UsageError(f"--max-length must be at least 8, got {a.max_length}")
    export_prune.validate(a)
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"the export task needs {' and '.join(missing)}: pip install {' '.join(missing)} (the "
                         "images carry the versions matrix.yaml pins for their torch)")
    if a.view:
        from tasks.export_view import netron_missing

        msg = netron_missing()
        if msg:
            raise UsageError(msg)
        if (a.view.startswith("bert") and "bert" not in models) or (a.view == "cnn" and "cnn" not in models):
            raise UsageError(f"--view {a.view}: that model is not in --models {a.models}")
    if a.view_seconds is not None and a.view_seconds <= 0:
        raise UsageError(f"--view-seconds must be positive, got {a.view_seconds}")
    if a.out:
        try:
            Path(a.out).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--out {a.out}: cannot create it ({e.strerror})") from None
    return models, exporters


# ------------------------------------------------------------------------------------------------ one file


def _eager(case: Case, n: int, device: str = "cpu") -> Any:
    import torch

    feeds = case.feeds(n)
    with torch.no_grad():
        return case.module(*(feeds[k].to(device) for k in case.input_names)).float().cpu().numpy()


def _np_feeds(case: Case, n: int) -> dict[str, Any]:
    return {k: v.numpy() for k, v in case.feeds(n).items()}


def _gate_file(ctx: Context, case: Case, exp: ox.Exported, *, threads: int) -> None:
    """Checker, then for every execution provider: parity on the fixed batch, the dynamic batch, latency."""
    key = f"{case.name}_{exp.exporter}"
    ctx.metric(f"{key}_size_mb", exp.size_bytes / 1e6, "MB", higher_is_better=False)
    ctx.metric(f"{key}_export_s", exp.export_s, "s", higher_is_better=False)
    err = ox.check_model(exp.path)
    if not ctx.check(f"{key}_checker", err is None, f"onnx.checker rejects {exp.path.name}: {err}"):
        return
    if ctx.args.perturb_weight:
        ctx.warn(f"{exp.path.name}: weight {ox.perturb_one_weight(exp.path)} perturbed (--perturb-weight)")
    ref, ref2 = _eager(case, PARITY_BATCH), _eager(case, SECOND_BATCH)
    for provider, short in ox.available_providers(ctx.device):
        sess = ox.session(exp.path, provider, threads)
        out = ox.run(sess, _np_feeds(case, PARITY_BATCH))
        abs_err, rel_err = ox.parity(ref, out)
        max_abs, max_rel = PARITY[(case.name, short)]
        pk = f"{key}_{short}"
        ctx.metric(f"{pk}_max_abs_err", abs_err, "abs", higher_is_better=False)
        ctx.metric(f"{pk}_max_rel_err", rel_err, "rel", higher_is_better=False)
        ctx.gate(f"{pk}_max_abs_err", "<=", max_abs)
        ctx.gate(f"{pk}_max_rel_err", "<=", max_rel)
        out2 = ox.run(sess, _np_feeds(case, SECOND_BATCH))
        abs2, rel2 = ox.parity(ref2, out2)
        ok = tuple(out2.shape) == tuple(ref2.shape) and abs2 <= max_abs and rel2 <= max_rel
        ctx.check(f"{pk}_dynamic_batch", ok,
                  f"batch {SECOND_BATCH}: output {tuple(out2.shape)} (eager {tuple(ref2.shape)}), max abs error "
                  f"{abs2:.3g}, relative {rel2:.3g}",
                  success=f"batch {PARITY_BATCH} and {SECOND_BATCH}")
        feeds = _np_feeds(case, PARITY_BATCH)
        ms = 1e3 * ox.median_seconds(functools.partial(ox.run, sess, feeds), repeats=10)
        ctx.metric(f"{pk}_ms", ms, "ms/batch", higher_is_better=False)
        ctx.log(f"{case.name} {exp.exporter} opset {exp.opset} {exp.size_bytes / 1e6:.1f} MB on {short}: max abs "
                f"error {abs_err:.2g} (relative {rel_err:.2g}), {ms:.2f} ms per batch of {PARITY_BATCH}")


def _eager_latency(ctx: Context, case: Case) -> None:
    import torch

    devices = ["cpu", *(["cuda"] if ctx.device == "cuda" else [])]
    for device in devices:
        module = case.module.to(device)
        feeds = {k: v.to(device) for k, v in case.feeds(PARITY_BATCH).items()}
        args = tuple(feeds[k] for k in case.input_names)

        def call(m: Any = module, a: tuple[Any, ...] = args, d: str = device) -> None:
            with torch.no_grad():
                m(*a)
            if d == "cuda":
                torch.cuda.synchronize()

        ms = 1e3 * ox.median_seconds(call, repeats=10)
        ctx.metric(f"{case.name}_eager_{device}_ms", ms, "ms/batch", higher_is_better=False)
    case.module.to("cpu")


# ------------------------------------------------------------------------------------------- quantization


def _accuracy_onnx(case: Case, sess: Any) -> float:
    import numpy as np

    assert case.tokenize is not None
    correct = 0
    for i in range(0, len(case.heldout), 32):
        chunk = case.heldout[i:i + 32]
        enc = case.tokenize([t for t, _ in chunk])
        logits = ox.run(sess, {k: enc[k].numpy() for k in case.input_names})
        correct += int((np.argmax(logits, axis=-1) == np.array([y for _, y in chunk])).sum())
    return 100.0 * correct / len(case.heldout)


def _accuracy_eager(case: Case) -> float:
    import torch

    assert case.tokenize is not None
    correct = 0
    with torch.no_grad():
        for i in range(0, len(case.heldout), 32):
            chunk = case.heldout[i:i + 32]
            enc = case.tokenize([t for t, _ in chunk])
            logits = case.module(*(enc[k] for k in case.input_names))
            correct += int((logits.argmax(-1) == torch.tensor([y for _, y in chunk])).sum())
    return 100.0 * correct / len(case.heldout)


def _quantize(ctx: Context, case: Case, exp: ox.Exported, out_dir: Path, *, threads: int) -> Path | None:
    """int8 BERT from ``exp``: size and accuracy before/after, gated. Returns the int8 file."""
    dst = out_dir / f"bert_{exp.exporter}_int8.onnx"
    try:
        ox.quantize_int8(exp.path, dst)
    except Exception as e:  # noqa: BLE001 - the quantizer's failures are the environment's failure to hand on
        ctx.problem(f"onnxruntime quantize_dynamic failed on {exp.path.name}: {type(e).__name__}: {e}")
        return None
    size = dst.stat().st_size
    ctx.metric("bert_int8_size_mb", size / 1e6, "MB", higher_is_better=False)
    ctx.metric("bert_int8_shrink", exp.size_bytes / size, "x")
    ctx.gate("bert_int8_shrink", ">=", INT8_MIN_SHRINK)
    fp32 = ox.session(exp.path, "CPUExecutionProvider", threads)
    int8 = ox.session(dst, "CPUExecutionProvider", threads)
    eager = ctx.metric("bert_eager_accuracy", _accuracy_eager(case), "%")
    before = ctx.metric("bert_onnx_accuracy", _accuracy_onnx(case, fp32), "%")
    after = ctx.metric("bert_int8_accuracy", _accuracy_onnx(case, int8), "%")
    ctx.metric("bert_int8_accuracy_drop", before - after, "points", higher_is_better=False)
    ctx.gate("bert_eager_accuracy", ">=", BERT_MIN_ACCURACY)
    ctx.gate("bert_int8_accuracy_drop", "<=", INT8_MAX_DROP)
    feeds = _np_feeds(case, PARITY_BATCH)
    ms = 1e3 * ox.median_seconds(lambda: ox.run(int8, feeds), repeats=10)
    ctx.metric("bert_int8_cpu_ms", ms, "ms/batch", higher_is_better=False)
    ctx.set(int8={"from": exp.exporter, "file": dst.name, "size_bytes": size,
                  "method": "onnxruntime.quantization.quantize_dynamic, weights QInt8"})
    ctx.log(f"bert int8 ({exp.exporter}): {exp.size_bytes / 1e6:.1f} -> {size / 1e6:.1f} MB "
            f"({exp.size_bytes / size:.2f}x), held-out accuracy eager {eager:.1f} %, ONNX {before:.1f} %, int8 "
            f"{after:.1f} % ({len(case.heldout)} sentences), {ms:.2f} ms per batch of {PARITY_BATCH}")
    return dst


# ------------------------------------------------------------------------------------------------ the task


def _build(ctx: Context, name: str) -> Case:
    a = ctx.args
    if name == "cnn":
        return cnn_case(width=a.width, seed=a.seed)
    if name == "cnn_pruned":
        return export_prune.pruned_case(ctx, cnn_case(width=a.width, seed=a.seed))
    return bert_case(train_limit=a.bert_train or (640 if a.quick else 1500),
                     test_limit=a.bert_heldout or 500, epochs=a.bert_epochs,
                     max_length=a.max_length, lr=1e-4, seed=a.seed, log=ctx.log, gate=BERT_MIN_ACCURACY)


def run(ctx: Context) -> None:
    import torch

    a = ctx.args
    models, exporters = _validate(a)
    threads = torch.get_num_threads()
    versions = {d: _version(d) for d in ("onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "netron")}
    import onnxruntime as ort

    ctx.set(models=models, exporters=exporters, torchscript_opset=ox.TORCHSCRIPT_OPSET,
            versions={k: v for k, v in versions.items() if v}, ort_providers=ort.get_available_providers(),
            thresholds={f"{m}/{p}": {"max_abs": t[0], "max_rel": t[1]} for (m, p), t in PARITY.items()},
            bert_min_accuracy=BERT_MIN_ACCURACY, int8_max_drop=INT8_MAX_DROP, int8_min_shrink=INT8_MIN_SHRINK)
    tmp = None if a.out else tempfile.TemporaryDirectory(prefix="torchrig-export-")
    out_dir = Path(a.out) if a.out else Path(tmp.name)  # type: ignore[union-attr]
    files: dict[str, Path] = {}
    exported: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    try:
        for name in models:
            t0 = time.perf_counter()
            case = _build(ctx, name)
            ctx.set(**{name: case.info})
            ctx.log(f"{name}: built in {time.perf_counter() - t0:.1f} s")
            done: list[ox.Exported] = []
            for exporter in exporters:
                label = f"{name}/{exporter}"
                reason = ox.exporter_unavailable(exporter, ox.torch_version(), has_onnxscript=ox.has_onnxscript())
                if reason is None:
                    try:
                        done.append(ox.export(case.module, tuple(case.feeds(PARITY_BATCH)[k]
                                                                 for k in case.input_names),
                                              out_dir / f"{name}_{exporter}.onnx", exporter,
                                              input_names=case.input_names, output_names=case.output_names,
                                              dynamic=case.dynamic))
                    except ox.ExportSkip as e:
                        reason = str(e)
                if reason is not None:
                    skipped[label] = reason
                    ctx.warn(f"skip {label}: {reason}")
                    continue
                exp = done[-1]
                exported[label] = {"file": exp.path.name, "opset": exp.opset, "size_bytes": exp.size_bytes,
                                   "export_s": round(exp.export_s, 2)}
                files.setdefault(name, exp.path)
                _gate_file(ctx, case, exp, threads=threads)
            if not done:
                why = "; ".join(skipped[f"{name}/{e}"] for e in exporters)
                ctx.problem(f"{name}: no exporter of torch {torch.__version__} could export it ({why})")
                continue
            _eager_latency(ctx, case)
            if name == "cnn_pruned":
                export_prune.gate_onnx(ctx, case, done[0], out_dir, threads=threads)
            if name == "bert":
                int8 = _quantize(ctx, case, done[0], out_dir, threads=threads)
                if int8 is not None:
                    files["bert_int8"] = int8
        if files and (why_not := _gate_providers(ctx, next(iter(files.values())), threads=threads)):
            skipped["onnxruntime_providers"] = why_not
        ctx.set(exported=exported, skipped=skipped, out=str(out_dir) if a.out else None)
        if a.view:
            _view(ctx, files.get(a.view))
    finally:
        if tmp is not None:
            tmp.cleanup()


def _gate_providers(ctx: Context, path: Path, *, threads: int) -> str | None:
    """onnxruntime runs where torch runs: on a GPU run, a GPU provider exists and a session really gets it.

    Returns the reason when the check does not apply (a GPU run of an image that installs the CPU build by design).
    """
    import onnxruntime as ort
    import torch

    gpu = None if ctx.device != "cuda" else "rocm" if getattr(torch.version, "hip", None) else "cuda"
    available = list(ort.get_available_providers())
    version = str(getattr(ort, "__version__", "?"))
    cpu_build = ox.cpu_only_build(gpu, available, ox.installed_onnxruntime_builds())
    if cpu_build is not None:  # the row chose the CPU build (no GPU build fits it): said, not silent, not a failure
        ctx.set(ort_session_providers=["CPUExecutionProvider"])
        ctx.warn(f"skip onnxruntime_providers: {cpu_build}")
        return cpu_build
    problem = ox.provider_problem(gpu, available, version=version)
    used: list[str] | None = None
    if problem is None:
        wanted = next((p for p, short in ox.GPU_PROVIDERS.items() if short == gpu and p in available),
                      "CPUExecutionProvider")
        used = list(ox.session(path, wanted, threads).get_providers())
        problem = ox.provider_problem(gpu, available, used, version=version)
    ctx.set(ort_session_providers=used)
    ctx.check("onnxruntime_providers", problem is None, problem or "",
              success=f"{(used or ['?'])[0]} (available: {', '.join(available)})")
    return None


def _view(ctx: Context, path: Path | None) -> None:
    from tasks.export_view import serve

    a = ctx.args
    if path is None:
        ctx.warn(f"--view {a.view}: nothing was exported for it")
        return
    viewer = serve(path, host=a.view_host, port=a.view_port)
    print(f"[export] Netron is serving {path.name} at {viewer.url}"
          + (f" for {a.view_seconds:g} s" if a.view_seconds else " (Ctrl-C to stop)"), flush=True)
    viewer.wait(a.view_seconds)


SPEC = TaskSpec(name="export", description=__doc__ or "", run=run, add_arguments=add_arguments, training=False)


def main(argv: list[str] | None = None) -> int:
    return _common.main(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
