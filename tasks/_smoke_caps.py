"""smoke's capability checks: what users do with the image beyond importing torch (issue 19).

Each check is a gate (``Context.check``: pass/fail with the reason) or, where the image cannot do it by design, a
skip with the reason: :func:`skip` writes it to the record's ``config.resolved.skipped`` (check -> reason) and to
its warnings (``skipped <check>: <reason>``), so a report shows pass, fail or skipped-with-reason per check.

* ``cpp_extension_imports`` -- ``import torch.utils.cpp_extension`` (torch < 2.2 imports pkg_resources there:
  setuptools >= 82 breaks it; compat.yaml ``runtime_pins``);
* ``cpp_extension_load_inline`` -- a tiny C++ extension compiled with ``load_inline`` and called, where a C++
  compiler and ninja are present (devel images; runtime images with gcc/g++ but no ninja skip, saying so);
  ``cuda_extension_load_inline`` the same with a CUDA/HIP kernel on a GPU row with a GPU and nvcc/hipcc;
* ``torchvision_decode_png`` / ``torchvision_decode_jpeg`` -- an image encoded in memory and decoded back;
* ``dataloader_2_workers`` -- a DataLoader with two worker processes passing tensors through shared memory;
* on every visible GPU: ``gpu_arch_supported_<dev>`` (the device's arch is in ``torch.cuda.get_arch_list()``) and
  ``amp_runs_<dev>`` (float16 autocast forward/backward with a GradScaler, finite and close to float32).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tasks._common import Context
from tasks._torchsupport import gpu_facts
from torchrig.capabilities import grad_scaler

__all__ = ["check_amp", "check_arches", "check_cpp_extension", "check_dataloader", "check_image_decode", "skip"]

AMP_TOL = 2e-2  # float16 autocast vs float32, relative to the largest |entry|
JPEG_MEAN_ABS_TOL = 8.0  # quality 95 on a smooth 32x32 gradient: ~1 grey level off on average

_CPP_SRC = "torch::Tensor twice_plus(torch::Tensor x, double c) { return x * 2 + c; }"
_CUDA_SRC = r"""
__global__ void twice_plus_kernel(const float* x, float* y, float c, int64_t n) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i] * 2.0f + c;
}
torch::Tensor twice_plus_gpu(torch::Tensor x, double c) {
  auto y = torch::empty_like(x);
  int64_t n = x.numel();
  twice_plus_kernel<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), y.data_ptr<float>(), (float)c, n);
  return y;
}
"""


def skip(ctx: Context, key: str, reason: str) -> None:
    """Record ``key`` as skipped with ``reason`` (not a gate: the verdict does not change)."""
    skipped = ctx.resolved.setdefault("skipped", {})
    skipped[key] = reason
    ctx.warn(f"skipped {key}: {reason}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[-1] if text else ''}".rstrip(": ")


# ------------------------------------------------------------------------------------------- C++ extensions


def _compiler() -> str | None:
    cxx = os.environ.get("CXX", "").strip()
    return shutil.which(cxx) if cxx else shutil.which("c++") or shutil.which("g++")


def _ninja() -> str | None:
    return shutil.which("ninja")


def check_cpp_extension(ctx: Context) -> None:
    try:
        from torch.utils import cpp_extension
    except Exception as e:  # noqa: BLE001 - e.g. ModuleNotFoundError: No module named 'pkg_resources'
        hint = (" -- torch < 2.2 imports pkg_resources here: install setuptools<82 (compat.yaml runtime_pins)"
                if "pkg_resources" in str(e) else "")
        ctx.check("cpp_extension_imports", False, f"import torch.utils.cpp_extension: {_first_line(e)}{hint}")
        skip(ctx, "cpp_extension_load_inline", "torch.utils.cpp_extension does not import")
        return
    ctx.check("cpp_extension_imports", True, "", success="torch.utils.cpp_extension")
    cxx, ninja = _compiler(), _ninja()
    if cxx is None or ninja is None:
        missing = " and no ".join(w for w, p in (("C++ compiler (c++/g++, $CXX)", cxx), ("ninja", ninja))
                                  if p is None)
        skip(ctx, "cpp_extension_load_inline", f"no {missing} in this image (the devel image has them)")
        return
    build = _build_dir()
    if build is not None:
        _load_inline(ctx, cpp_extension, build)
        return
    with tempfile.TemporaryDirectory(prefix="torchrig-ext-") as tmp:
        _load_inline(ctx, cpp_extension, Path(tmp))


def _build_dir() -> Path | None:
    """Where load_inline builds: one folder per user and torch under $TORCH_EXTENSIONS_DIR (default: the temp
    dir), so a second smoke run loads the cached build (ninja rebuilds when the source changes); None when it
    cannot be made (a throw-away folder is used then)."""
    import torch

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or tempfile.gettempdir())
    path = root / f"torchrig-smoke-{os.getuid()}-torch{torch.__version__.replace('+', '-')}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def _load_inline(ctx: Context, cpp_extension: Any, build: Path) -> None:
    import torch

    x = torch.arange(6, dtype=torch.float32)
    t0 = time.perf_counter()
    try:
        mod = cpp_extension.load_inline(name="torchrig_smoke_ext", cpp_sources=_CPP_SRC, functions=["twice_plus"],
                                        build_directory=str(build), verbose=False)
        ok = bool(torch.equal(mod.twice_plus(x, 1.0), x * 2 + 1))
        why = "the compiled function returned the wrong values"
    except Exception as e:  # noqa: BLE001 - the compiler's or the loader's failure is the finding
        ok, why = False, _first_line(e)
    secs = time.perf_counter() - t0
    ctx.metric("load_inline_time", secs, "s", higher_is_better=False)
    ctx.check("cpp_extension_load_inline", ok, f"load_inline C++ extension: {why}", success=f"{secs:.1f} s")
    _load_inline_gpu(ctx, cpp_extension, build)


def _gpu_compiler() -> tuple[str, str] | None:
    import torch

    if getattr(torch.version, "hip", None):
        home = os.environ.get("ROCM_HOME") or os.environ.get("ROCM_PATH") or "/opt/rocm"
        tool = shutil.which("hipcc") or (str(Path(home, "bin", "hipcc")) if Path(home, "bin", "hipcc").exists()
                                         else None)
        return ("HIP", tool) if tool else None
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    tool = shutil.which("nvcc") or (str(Path(home, "bin", "nvcc")) if Path(home, "bin", "nvcc").exists() else None)
    return ("CUDA", tool) if tool else None


def _load_inline_gpu(ctx: Context, cpp_extension: Any, build: Path) -> None:
    import torch

    key = "cuda_extension_load_inline"
    if ctx.device != "cuda":
        skip(ctx, key, "no GPU in use (CPU run or no GPU visible)")
        return
    found = _gpu_compiler()
    if found is None:
        skip(ctx, key, "no nvcc/hipcc in this image (the devel image has it)")
        return
    kind, _tool = found
    x = torch.arange(1000, dtype=torch.float32, device="cuda")
    try:
        mod = cpp_extension.load_inline(
            name="torchrig_smoke_gpu_ext", cpp_sources="torch::Tensor twice_plus_gpu(torch::Tensor x, double c);",
            cuda_sources=_CUDA_SRC, functions=["twice_plus_gpu"], build_directory=str(build), verbose=False)
        out = mod.twice_plus_gpu(x, 1.0)
        torch.cuda.synchronize()
        ok, why = bool(torch.equal(out.cpu(), x.cpu() * 2 + 1)), "the kernel returned the wrong values"
    except Exception as e:  # noqa: BLE001
        ok, why = False, _first_line(e)
    ctx.check(key, ok, f"load_inline {kind} extension: {why}", success=kind)


# ---------------------------------------------------------------------------------------------- torchvision


def check_image_decode(ctx: Context) -> None:
    import torch

    try:
        from torchvision.io import decode_jpeg, decode_png, encode_jpeg, encode_png
    except Exception as e:  # noqa: BLE001
        ctx.check("torchvision_decode_png", False, f"torchvision.io: {_first_line(e)}")
        return
    ramp = torch.arange(32, dtype=torch.float32)
    img = torch.stack([(ramp[:, None] + ramp[None, :]) * 4, ramp[:, None].expand(32, 32) * 8,
                       ramp[None, :].expand(32, 32) * 8]).clamp(0, 255).to(torch.uint8)
    for fmt, enc, dec in (("png", encode_png, decode_png), ("jpeg", encode_jpeg, decode_jpeg)):
        try:
            data = enc(img) if fmt == "png" else enc(img, quality=95)
            out = dec(data)
            err = float((out.float() - img.float()).abs().mean()) if out.shape == img.shape else float("inf")
            ok = err == 0 if fmt == "png" else err < JPEG_MEAN_ABS_TOL
            why = f"decoded {tuple(out.shape)}, mean |error| {err:.3g} (expected {tuple(img.shape)}" + (
                ", exact)" if fmt == "png" else f", < {JPEG_MEAN_ABS_TOL:g})")
        except Exception as e:  # noqa: BLE001 - e.g. torchvision built without libjpeg/libpng
            ok, why = False, _first_line(e)
        ctx.check(f"torchvision_decode_{fmt}", ok, f"torchvision.io {fmt} round trip: {why}")


# ---------------------------------------------------------------------------------------------- DataLoader


class _Squares:
    """A map-style dataset (picklable for the worker processes): item i is a 64x64 tensor filled with i*i."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> Any:
        import torch

        return torch.full((64, 64), float(i * i))


def _shm_mb() -> float | None:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return st.f_blocks * st.f_frsize / 2**20


def check_dataloader(ctx: Context) -> None:
    from torch.utils.data import DataLoader

    shm = _shm_mb()
    if shm is not None:
        ctx.metric("dev_shm_size", shm, "MB")
    try:
        loader = DataLoader(_Squares(), batch_size=8, num_workers=2, timeout=120)  # type: ignore[arg-type]
        total = sum(float(b[:, 0, 0].sum()) for b in loader)
        expected = float(sum(i * i for i in range(64)))
        ok, why = total == expected, f"the batches sum to {total:g}, expected {expected:g}"
    except Exception as e:  # noqa: BLE001 - "bus error"/"shared memory" is the usual finding (docker's 64 MB)
        ok, why = False, _first_line(e) + (f" (/dev/shm is {shm:.0f} MB: run with --shm-size=8g or --ipc=host)"
                                           if shm is not None else "")
    ctx.check("dataloader_2_workers", ok, f"DataLoader(num_workers=2): {why}",
              success=f"/dev/shm {shm:.0f} MB" if shm is not None else None)


# --------------------------------------------------------------------------------------------- on the GPU


def _tag(device: str) -> str:
    return device.replace(":", "")


def check_arches(ctx: Context) -> set[str]:
    """One gate per visible GPU: this torch carries kernels for its arch. Returns the devices that it does not."""
    unusable = set()
    for gpu in gpu_facts():
        problem = gpu.problem()
        ctx.set(**{f"gpu_arch_cuda{gpu.index}": gpu.arch})
        if not ctx.check(f"gpu_arch_supported_cuda{gpu.index}", problem is None, problem or "",
                         success=f"{gpu.arch} ({gpu.name})"):
            unusable.add(f"cuda:{gpu.index}")
    return unusable


def check_amp(ctx: Context, devices: list[str]) -> None:
    import torch

    g = torch.Generator().manual_seed(ctx.args.seed)
    x = torch.randn(64, 256, generator=g)
    w = torch.randn(256, 128, generator=g) / 16
    for dev in (d for d in devices if d.startswith("cuda")):
        try:
            wd = w.to(dev).requires_grad_(True)
            scaler = grad_scaler("cuda")
            with torch.autocast(device_type="cuda", dtype=torch.float16):
                out = x.to(dev) @ wd
                loss = out.float().pow(2).mean()
            scaler.scale(loss).backward()
            ref = x.to(dev) @ w.to(dev)
            err = float((out.float() - ref).abs().max() / ref.abs().max())
            grad = wd.grad
            ok = (out.dtype == torch.float16 and grad is not None and bool(torch.isfinite(grad).all())
                  and err < AMP_TOL)
            why = f"dtype {out.dtype}, relative error {err:.3g} (< {AMP_TOL:g}), gradient finite: {grad is not None}"
        except Exception as e:  # noqa: BLE001
            ok, why = False, _first_line(e)
        ctx.check(f"amp_runs_{_tag(dev)}", ok, f"float16 autocast on {dev}: {why}")
