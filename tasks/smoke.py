"""Check that the environment is the one it claims to be, and that its compiled parts run.

* torch's version is the expected one (``--expect-torch``, default ``$TORCHRIG_TORCH_VERSION``; the public version
  is compared, a local part such as ``+cu118`` is ignored);
* in a GPU image (``$TORCHRIG_ACCELERATOR`` = cuda or rocm) torch is a build for that accelerator and a GPU is
  visible -- when none is, the verdict is fail with what to do (``--gpus all``, the NVIDIA Container Toolkit);
* the GPUs (count, names) and cuDNN / MIOpen (version, a convolution checked against the CPU);
* a float32 matmul on every device, checked against a float64 CPU reference (TF32 off), plus float16 on GPUs;
* ``torch.compile`` of a small function on the main device matches eager mode. Where compat.yaml says this
  torch's compiler does not support this Python (``compile_max_python``, e.g. Python 3.11 with torch 2.0), a
  warning names the fix instead; where that is not known (torch newer than the compat data, no
  ``$TORCHRIG_COMPILE_MAX_PYTHON`` and no PyYAML), a failure is reported as a skip with its reason;
* torchvision imports and its compiled ``nms`` op gives the known answer on every device;
* what users do with the image (:mod:`tasks._smoke_caps`): ``torch.utils.cpp_extension`` imports, a tiny
  ``load_inline`` C++ (and, on a GPU, CUDA/HIP) extension compiles and runs where a compiler is present,
  torchvision decodes PNG and JPEG, a DataLoader with 2 workers runs over shared memory, and on each GPU its arch
  is in ``torch.cuda.get_arch_list()`` and float16 autocast runs. A check the image cannot do by design (no
  compiler, no GPU in use) is skipped with its reason: ``config.resolved.skipped`` and a ``skipped ...`` warning.

On a GPU image with no GPU visible the verdict is fail, naming what is missing (``--gpus``, the driver,
``/dev/kfd``), unless ``--device cpu`` was asked for: then the GPU checks are skipped with that reason.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from tasks import _common, _smoke_caps
from tasks._common import Context, TaskSpec
from tasks._torchsupport import missing_gpu
from torchrig.capabilities import compile_support
from torchrig.results.contract import TORCH_VERSION_ENV

MATMUL_TOL = 1e-4  # relative to the largest |entry|: float32 sums of 512 products are ~1e-6 off
MATMUL_FP16_TOL = 1e-2
CONV_TOL = 1e-4
COMPILE_TOL = 1e-5
NMS_EXPECTED = [0, 2]  # box 1 overlaps box 0 with IoU 81/119 = 0.68 > 0.5; box 2 overlaps nothing


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("smoke options")
    g.add_argument("--expect-torch", default=os.environ.get(TORCH_VERSION_ENV) or None,
                   help=f"the torch version this environment must have (default: ${TORCH_VERSION_ENV})")
    g.add_argument("--compile-backend", default="inductor", help="torch.compile backend to check (inductor)")


def public_version(v: str) -> str:
    return v.strip().split("+", 1)[0]


def _tag(device: str) -> str:
    return device.replace(":", "")


def _rel_err(out: Any, ref: Any) -> float:
    return float((out.double().cpu() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _check_versions(ctx: Context) -> None:
    import torch

    expected = ctx.args.expect_torch
    actual = torch.__version__
    ctx.log(f"python {sys.version.split()[0]}, torch {actual} (CUDA {torch.version.cuda}, "
            f"HIP {getattr(torch.version, 'hip', None)})")
    if expected:
        ctx.check("torch_version_matches", public_version(actual) == public_version(expected),
                  f"torch is {actual}, this environment expects {expected}", success=f"torch {actual}")
    else:
        ctx.warn(f"no expected torch version (--expect-torch or ${TORCH_VERSION_ENV}): version not checked")


def _check_accelerator(ctx: Context) -> list[str]:
    """The accelerator checks; returns the devices to test (cpu first)."""
    import torch

    accel = _common.accelerator_env()
    hip = getattr(torch.version, "hip", None)
    built = "rocm" if hip else "cuda" if torch.version.cuda else "cpu"
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    names = [torch.cuda.get_device_name(i) for i in range(count)]
    ctx.metric("gpu_count", count, "devices")
    ctx.set(torch_build=built, image_accelerator=accel, gpu_names=names)
    ctx.log(f"torch build: {built}; GPUs visible: {count}" + (f" ({', '.join(names)})" if names else ""))
    if accel in ("cuda", "rocm"):
        ctx.check("torch_build_matches_image", built == accel,
                  f"this is a {accel} image but torch is a {built} build ({torch.__version__})")
        if ctx.args.device == "cpu" and count == 0:
            _smoke_caps.skip(ctx, "gpu_visible", "--device cpu was asked for")
        else:
            missing = missing_gpu(accel, gpu_count=count, requested=ctx.args.device, torch_cuda=torch.version.cuda)
            ctx.check("gpu_visible", missing is None, missing or "", success=", ".join(names))
    devices = ["cpu"]
    if ctx.device == "cuda":
        devices += [f"cuda:{i}" for i in range(count)]
        lib = "MIOpen" if hip else "cuDNN"
        try:
            ok = bool(torch.backends.cudnn.is_available())
            version = torch.backends.cudnn.version() if ok else None
        except Exception as e:  # noqa: BLE001 - a broken library is what this check is for
            ok, version = False, None
            ctx.warn(f"{lib}: {type(e).__name__}: {e}")
        ctx.check("cudnn_available", ok, f"{lib} is not available to torch", success=f"{lib} {version}")
    return devices


def _check_math(ctx: Context, devices: list[str]) -> None:
    import torch
    import torch.nn.functional as F

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    g = torch.Generator().manual_seed(ctx.args.seed)
    a = torch.randn(512, 512, generator=g)
    b = torch.randn(512, 512, generator=g)
    ref = a.double() @ b.double()
    x = torch.randn(4, 8, 32, 32, generator=g)
    w = torch.randn(16, 8, 3, 3, generator=g)
    conv_ref = F.conv2d(x.double(), w.double(), padding=1)
    for dev in devices:
        t = _tag(dev)
        err = _rel_err(a.to(dev) @ b.to(dev), ref)
        ctx.metric(f"matmul_rel_err_{t}", err, "relative", higher_is_better=False)
        ctx.gate(f"matmul_rel_err_{t}", "<", MATMUL_TOL)
        if dev.startswith("cuda"):
            err16 = _rel_err(a.to(dev).half() @ b.to(dev).half(), ref)
            ctx.metric(f"matmul_fp16_rel_err_{t}", err16, "relative", higher_is_better=False)
            ctx.gate(f"matmul_fp16_rel_err_{t}", "<", MATMUL_FP16_TOL)
            cerr = _rel_err(F.conv2d(x.to(dev), w.to(dev), padding=1), conv_ref)
            ctx.metric(f"conv_rel_err_{t}", cerr, "relative", higher_is_better=False)
            ctx.gate(f"conv_rel_err_{t}", "<", CONV_TOL)


def _f(x: Any) -> Any:
    import torch

    return torch.sin(x) * 2 + torch.cos(x) ** 2 - x * 0.5


def _check_compile(ctx: Context) -> None:
    import torch

    support = compile_support()
    limitation = support.limitation()
    if limitation:
        ctx.warn(limitation)
        ctx.set(compile="skipped: known limitation")
        ctx.resolved.setdefault("skipped", {})["torch_compile_works"] = limitation
        return
    dev = ctx.device
    x = torch.randn(4096, generator=torch.Generator().manual_seed(1)).to(dev)
    t0 = time.perf_counter()
    try:
        compiled = torch.compile(_f, backend=ctx.args.compile_backend)
        out = compiled(x)
        if dev == "cuda":
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - any failure of the compiler stack is the finding
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        skip = support.failure_skip(e)
        if skip:  # whether this torch's compiler supports this Python is not known here: not a failure
            ctx.warn(skip)
            ctx.set(compile="skipped: failed, support unknown")
            ctx.resolved.setdefault("skipped", {})["torch_compile_works"] = skip
            return
        ctx.check("torch_compile_works", False,
                  f"torch.compile({ctx.args.compile_backend!r}) on {dev} failed: {type(e).__name__}: {first}"
                  + (" (inductor needs a C compiler in the image: gcc/g++)" if "ompiler" in first else ""))
        return
    secs = time.perf_counter() - t0
    err = float((out - _f(x)).abs().max())
    ctx.metric("compile_time", secs, "s", higher_is_better=False)
    ctx.metric("compile_max_abs_err", err, "1", higher_is_better=False)
    ctx.check("torch_compile_works", err < COMPILE_TOL,
              f"torch.compile result differs from eager by {err:g} (> {COMPILE_TOL:g})",
              success=f"{ctx.args.compile_backend} on {dev}, {secs:.1f} s")


def _check_torchvision(ctx: Context, devices: list[str]) -> None:
    import torch

    try:
        import torchvision
        from torchvision.ops import nms
    except Exception as e:  # noqa: BLE001 - e.g. "operator torchvision::nms does not exist"
        ctx.check("torchvision_imports", False,
                  f"{type(e).__name__}: {e} -- torchvision must be the build made for torch {torch.__version__}")
        return
    ctx.check("torchvision_imports", True, "", success=f"torchvision {torchvision.__version__}")
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    for dev in devices:
        try:
            keep = nms(boxes.to(dev), scores.to(dev), 0.5).cpu().tolist()
            ok, why = keep == NMS_EXPECTED, f"kept {keep}, expected {NMS_EXPECTED}"
        except Exception as e:  # noqa: BLE001
            ok, why = False, f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
        ctx.check(f"torchvision_nms_{_tag(dev)}", ok, f"torchvision.ops.nms on {dev}: {why}")


def run(ctx: Context) -> None:
    _check_versions(ctx)
    devices = _check_accelerator(ctx)
    if ctx.device == "cuda":  # before any kernel runs: a GPU without kernels in this torch fails by name
        unusable = _smoke_caps.check_arches(ctx)
        devices = [d for d in devices if d not in unusable]
    _check_math(ctx, devices)
    _check_compile(ctx)
    _check_torchvision(ctx, devices)
    _smoke_caps.check_image_decode(ctx)
    _smoke_caps.check_dataloader(ctx)
    _smoke_caps.check_cpp_extension(ctx)
    if ctx.device == "cuda":
        _smoke_caps.check_amp(ctx, devices)


SPEC = TaskSpec(name="smoke", description=__doc__ or "", run=run, add_arguments=add_arguments, training=False)


def main(argv: list[str] | None = None) -> int:
    return _common.main(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
