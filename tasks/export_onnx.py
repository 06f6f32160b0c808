"""The ONNX side of the export task: export with each exporter, check, run in ONNX Runtime, compare, quantize.

Nothing here knows about gates or records (that is :mod:`tasks.export`): these functions export, measure and
return numbers. An exporter that cannot export a model raises :class:`ExportSkip` with the reason; an exporter that
does not exist in this torch is named by :func:`exporter_unavailable` before anything is tried.

Runs inside the images: torch 2.0.1 (TorchScript exporter only, onnxruntime 1.18, numpy 1.x) up to current torch
(the dynamo exporter, ``torch.onnx.export(..., dynamo=True)``, from 2.5; it needs onnxscript).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "EXPORTERS",
    "TORCHSCRIPT_OPSET",
    "ExportSkip",
    "Exported",
    "Exporter",
    "available_providers",
    "check_model",
    "export",
    "exporter_unavailable",
    "median_seconds",
    "parity",
    "perturb_one_weight",
    "provider_problem",
    "quantize_int8",
    "session",
    "torch_version",
]

Exporter = Literal["torchscript", "dynamo"]
EXPORTERS: tuple[Exporter, ...] = ("torchscript", "dynamo")
# Opset 17 has LayerNormalization and is within what every supported torch's TorchScript exporter emits (2.0: <= 18)
# and what onnxruntime 1.18 runs (<= 20). The dynamo exporter picks its own (18 or newer): the record says which.
TORCHSCRIPT_OPSET = 17
DYNAMO_MIN_TORCH = (2, 5)  # torch.onnx.export(..., dynamo=True) first shipped in 2.5
# onnxruntime names its GPU execution providers; which torch accelerator each one runs on. AMD's is ROCm's EP up to
# onnxruntime 1.22 (the onnxruntime-rocm package) and MIGraphX's after it (onnxruntime-migraphx).
GPU_PROVIDERS = {"CUDAExecutionProvider": "cuda", "ROCMExecutionProvider": "rocm", "MIGraphXExecutionProvider": "rocm"}
# The onnxruntime builds that carry them: the plain onnxruntime package is CPU-only, and a session asked for a GPU
# provider it lacks runs on the CPU without an error.
GPU_PACKAGES = {"cuda": "onnxruntime-gpu", "rocm": "onnxruntime-rocm or onnxruntime-migraphx"}


class ExportSkip(Exception):
    """This exporter cannot export this model in this torch (a known limitation): skip it, with the reason."""


@dataclass(frozen=True, kw_only=True)
class Exported:
    """One exported file and what the record says about it."""

    path: Path
    exporter: Exporter
    opset: int
    size_bytes: int
    export_s: float


def torch_version() -> tuple[int, int]:
    import torch

    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def exporter_unavailable(exporter: Exporter, torch_ver: tuple[int, int], *, has_onnxscript: bool) -> str | None:
    """Why ``exporter`` does not exist for this torch (a skip reason), or None when it can be tried."""
    if exporter == "dynamo":
        if torch_ver < DYNAMO_MIN_TORCH:
            return (f"torch {torch_ver[0]}.{torch_ver[1]} has no torch.onnx.export(dynamo=True) (it shipped in "
                    f"{DYNAMO_MIN_TORCH[0]}.{DYNAMO_MIN_TORCH[1]}); the TorchScript exporter is this torch's exporter")
        if not has_onnxscript:
            return "the dynamo exporter needs the onnxscript package, which is not installed: pip install onnxscript"
    return None


def has_onnxscript() -> bool:
    return importlib.util.find_spec("onnxscript") is not None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress and warn about tracing; the task prints its own summary."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        warnings.simplefilter("ignore")
        yield


def _first_line(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # the dynamo exporter colours its messages
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {line[:300]}" if line else type(e).__name__


def export(model: Any, args: tuple[Any, ...], path: Path, exporter: Exporter, *, input_names: Sequence[str],
           output_names: Sequence[str], dynamic: Mapping[str, Mapping[int, str]]) -> Exported:
    """Export ``model`` (in eval mode, on the CPU) called with ``args`` to ``path``, one self-contained file.

    ``dynamic`` maps an input name to its dynamic axes (``{0: "batch"}``); outputs get the batch axis. Raises
    ExportSkip with the exporter's own message when it cannot export the model.
    """
    import onnx
    import torch

    t0 = time.perf_counter()
    try:
        with _quiet(), torch.no_grad():
            if exporter == "torchscript":
                axes = {**{n: dict(a) for n, a in dynamic.items()}, **{n: {0: "batch"} for n in output_names}}
                kw: dict[str, Any] = {"dynamo": False} if torch_version() >= DYNAMO_MIN_TORCH else {}
                torch.onnx.export(model, args, str(path), input_names=list(input_names),
                                  output_names=list(output_names), dynamic_axes=axes,
                                  opset_version=TORCHSCRIPT_OPSET, do_constant_folding=True, **kw)
            else:
                dims: dict[str, Any] = {}
                # Positional, in input order: the keys of a dict would have to be forward()'s parameter names.
                shapes = tuple({axis: dims.setdefault(label, torch.export.Dim(label))
                                for axis, label in dynamic.get(n, {}).items()} for n in input_names)
                program = torch.onnx.export(model, args, input_names=list(input_names),
                                            output_names=list(output_names), dynamo=True, dynamic_shapes=shapes,
                                            external_data=False, verbose=False)
                program.save(str(path), external_data=False)
    except Exception as e:
        raise ExportSkip(f"{exporter} exporter cannot export it: {_first_line(e)}") from e
    seconds = time.perf_counter() - t0
    proto = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return Exported(path=path, exporter=exporter, opset=int(opset), size_bytes=path.stat().st_size,
                    export_s=seconds)


def check_model(path: Path) -> str | None:
    """``onnx.checker.check_model`` with full checks; the failure message, or None when the model is valid."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # noqa: BLE001 - ValidationError, InferenceError, ... all mean "not valid"
        return _first_line(e)
    return None


def available_providers(device: str) -> list[tuple[str, str]]:
    """(execution provider, short name) to run on: always the CPU; a GPU provider when torch runs on a GPU too."""
    import onnxruntime as ort

    out = [("CPUExecutionProvider", "cpu")]
    if device == "cuda":
        out += [(p, short) for p, short in GPU_PROVIDERS.items() if p in ort.get_available_providers()]
    return out


def installed_onnxruntime_builds() -> list[str]:
    """The onnxruntime distributions installed here (onnxruntime, onnxruntime-gpu, ...), by their metadata."""
    import importlib.metadata as md

    names = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-rocm", "onnxruntime-migraphx", "onnxruntime-training")
    found = []
    for name in names:
        try:
            md.distribution(name)
        except md.PackageNotFoundError:
            continue
        found.append(name)
    return found


def cpu_only_build(gpu: str | None, available: Sequence[str], installed: Sequence[str]) -> str | None:
    """Why the GPU provider check is skipped on this GPU run, or None when it applies.

    It is skipped only where the image installs the plain, CPU-only ``onnxruntime`` and no GPU build: the row chose
    the CPU build because no GPU build on PyPI fits its CUDA/cuDNN or ROCm (matrix.yaml's comments say which), so
    ONNX sessions run on the CPU by design and the record says so. A GPU build that offers no GPU provider, or a
    session that falls back to the CPU, is still a failed gate (:func:`provider_problem`).
    """
    if gpu is None or any(p in available for p, short in GPU_PROVIDERS.items() if short == gpu):
        return None
    if "onnxruntime" not in installed or any(n not in {"onnxruntime", "onnxruntime-training"} for n in installed):
        return None
    return (f"this image installs the CPU-only onnxruntime build (no {GPU_PACKAGES[gpu]} fits this row's "
            f"{gpu.upper()} version on PyPI: see matrix.yaml), so ONNX sessions run on the CPU here")


def provider_problem(gpu: str | None, available: Sequence[str], session_providers: Sequence[str] | None = None,
                     *, version: str = "?") -> str | None:
    """Why onnxruntime will not run where torch runs, or None when it will.

    ``gpu`` is "cuda" or "rocm" when torch runs on that GPU, None on the CPU. ``available`` is
    ``ort.get_available_providers()``; ``session_providers`` is ``InferenceSession.get_providers()`` of a session
    asked for the GPU provider (onnxruntime falls back to the CPU silently when the provider cannot load).
    """
    if gpu is None:
        if "CPUExecutionProvider" not in available or (session_providers is not None
                                                        and "CPUExecutionProvider" not in session_providers):
            return (f"onnxruntime {version} offers {', '.join(available) or 'no provider'} without "
                    "CPUExecutionProvider on a CPU run: install the plain onnxruntime package")
        return None
    wanted = [p for p, short in GPU_PROVIDERS.items() if short == gpu]
    have = [p for p in wanted if p in available]
    if not have:
        return (f"torch runs on the {gpu.upper()} GPU but onnxruntime {version} offers only "
                f"{', '.join(available) or 'no provider'}: no {' or '.join(wanted)}, so every ONNX session runs on "
                f"the CPU; install {GPU_PACKAGES[gpu]} (for this row's {gpu.upper()} version) instead of onnxruntime")
    if session_providers is not None and (not session_providers or session_providers[0] not in have):
        return (f"onnxruntime {version} has {have[0]} but a session asked for it runs on "
                f"{', '.join(session_providers) or 'nothing'}: the provider could not load (its {gpu.upper()} or "
                f"cuDNN/MIOpen libraries are missing or of another major version than this {GPU_PACKAGES[gpu]} "
                "build expects)")
    return None


def session(path: Path, provider: str, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: ORT warns about unused initializers and CPU fallbacks
    providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def run(sess: Any, feeds: Mapping[str, Any]) -> Any:
    """The first output of ``sess`` for numpy ``feeds``."""
    return sess.run(None, dict(feeds))[0]


def parity(ref: Any, out: Any) -> tuple[float, float]:
    """(max absolute error, max absolute error relative to the largest reference magnitude).

    The relative figure divides by the largest |reference| rather than element-wise, so a logit near zero does not
    blow it up. Shapes must agree (a shape mismatch is infinitely wrong).
    """
    import numpy as np

    ref, out = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
    if ref.shape != out.shape:
        return float("inf"), float("inf")
    err = float(np.max(np.abs(ref - out))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return err, err / max(scale, 1e-12)


def median_seconds(fn: Callable[[], object], *, repeats: int, warmup: int = 2) -> float:
    """The median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization (weights int8, activations quantized at run time) with onnxruntime's quantizer."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def perturb_one_weight(path: Path, seed: int = 0) -> str:
    """The deliberately broken export: noise as large as its own spread added to one weight, in place.

    The weight is the largest float initializer that a MatMul, Gemm or Conv reads (a constant shift of an embedding
    table or a scale would vanish in the next LayerNorm). Returns its name; the file stays a valid model.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    read_by_linear = {i for n in proto.graph.node if n.op_type in ("MatMul", "Gemm", "Conv") for i in n.input}
    floats = [t for t in proto.graph.initializer
              if t.data_type == onnx.TensorProto.FLOAT and t.name in read_by_linear and len(t.dims) >= 2]
    if not floats:
        raise ValueError(f"{path.name} has no MatMul/Gemm/Conv weight to perturb")
    target = max(floats, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(target)
    noise = np.random.default_rng(seed).normal(0.0, float(arr.std()) or 1.0, arr.shape)
    target.CopyFrom(numpy_helper.from_array((arr + noise).astype(np.float32), target.name))
    onnx.save(proto, str(path))
    return str(target.name)
