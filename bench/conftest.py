"""pytest wiring of the benchmark suite: options, the device, the cases of the chosen size, the JSON fingerprint.

Options (see ``pytest bench --help``):
  --bench-size auto|tiny|quick|full   auto: tiny on CPU, full on a GPU
  --bench-device auto|cpu|cuda|cuda:N auto: the first GPU torch sees, else the CPU -- except in a GPU image
                                      ($TORCHRIG_ACCELERATOR cuda/rocm), which stops naming what is missing
                                      (bench/device.py); cpu there runs, with a warning in every record
  --bench-batch MODEL=N               override a model's batch size (repeatable), e.g. resnet50=64
  --bench-ddp-gpus N                  GPUs for the DDP scaling benchmark (default: all visible)
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from bench.device import DeviceChoice, DeviceProblem, choose_device
from bench.harness import TorchDevice
from bench.sizes import SIZES, BenchContext, SizeSet, size_set

_ENV_KEY = "torchrig"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("torchrig-bench", "torchrig benchmark suite")
    g.addoption("--bench-size", default="auto", choices=("auto", *SIZES), help="suite size (auto: tiny on CPU)")
    g.addoption("--bench-device", default="auto", help="torch device: auto, cpu, cuda, cuda:N")
    g.addoption("--bench-batch", action="append", default=[], metavar="MODEL=N",
                help="batch size override per model (resnet50, cifar_cnn, bert); repeatable")
    g.addoption("--bench-ddp-gpus", type=int, default=0, help="GPUs for the DDP benchmark (0: all visible)")


@functools.cache
def _choice(option: str) -> DeviceChoice:
    try:
        return choose_device(option)
    except DeviceProblem as e:
        raise pytest.UsageError(f"bench: {e}") from None


@functools.cache
def _device(option: str) -> TorchDevice:
    return TorchDevice(_choice(option).name)


def _parse_batches(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        model, _, n = item.partition("=")
        if model not in ("resnet50", "cifar_cnn", "bert") or not n.isdigit() or int(n) < 1:
            raise pytest.UsageError(f"--bench-batch {item!r}: expected MODEL=N with MODEL one of resnet50, "
                                    "cifar_cnn, bert and N >= 1")
        out[model] = int(n)
    return out


def _size_set(config: pytest.Config) -> SizeSet:
    cached = getattr(config, "_torchrig_suite", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    size = config.getoption("--bench-size")
    if size == "auto":
        size = "tiny" if _device(config.getoption("--bench-device")).type == "cpu" else "full"
    s = size_set(size, batch_overrides=_parse_batches(config.getoption("--bench-batch")))
    config._torchrig_suite = s  # type: ignore[attr-defined]
    return s


_CONFIG: pytest.Config | None = None  # pytest_runtest_logreport gets no config: the session's, kept here


def pytest_configure(config: pytest.Config) -> None:
    global _CONFIG  # noqa: PLW0603 - one pytest session per process
    _CONFIG = config
    from bench.load import sample

    config._torchrig_load_before = sample()  # type: ignore[attr-defined]  # before any CUDA context of ours
    import torch

    from bench.rocm_env import apply_rocm_env

    # ROCm's TF32 / NHWC / MIOpen-DB variables, before the device is touched (bench/rocm_env.py)
    config._torchrig_rocm_env = apply_rocm_env(torch)  # type: ignore[attr-defined]
    _parse_batches(config.getoption("--bench-batch"))  # a bad option is a usage error before collection
    _choice(config.getoption("--bench-device"))  # ... and so is a GPU image that sees no GPU


def pytest_report_header(config: pytest.Config) -> list[str]:
    dev = _device(config.getoption("--bench-device"))
    s = _size_set(config)
    return [f"torchrig bench: size={s.size} device={dev.name} ({dev.gpu_name or dev.accelerator}) "
            f"rounds={s.plan.rounds} warmup_rounds={s.plan.warmup_rounds} target_round_s={s.plan.target_round_s}"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    s = _size_set(metafunc.config)
    for fixture, cases in (("gemm_case", s.gemm), ("copy_case", s.copy), ("train_case", s.train),
                           ("ddp_case", s.ddp)):
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(fixture, cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def bench(pytestconfig: pytest.Config) -> BenchContext:
    """The device, the suite of the chosen size, and the options the benchmarks read."""
    return BenchContext(device=_device(pytestconfig.getoption("--bench-device")), size_set=_size_set(pytestconfig),
                        ddp_gpus=pytestconfig.getoption("--bench-ddp-gpus"))


@pytest.fixture(autouse=True)
def _free_memory(bench: BenchContext) -> Any:
    """Each benchmark starts with the memory of the previous one released and a fresh peak-memory counter."""
    import gc

    import torch

    def free() -> None:
        gc.collect()
        if bench.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(bench.device.torch_device)

    free()
    yield
    free()


# ------------------------------------------------------------------------------------------ pytest-benchmark


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    from bench.fingerprint import environment

    s = _size_set(config)
    info = environment(_device(config.getoption("--bench-device")))
    info["suite"] = {"size": s.size, "plan": vars(s.plan)}
    info["rocm_env"] = getattr(config, "_torchrig_rocm_env", None)
    machine_info[_ENV_KEY] = info


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    from bench.skips import record_skip

    if report.skipped and _CONFIG is not None:
        record_skip(_CONFIG, report)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    """Model FLOPS utilisation against the GEMM ceilings measured in this same run (order-independent); the
    skipped benchmarks with their reasons (bench/skips.py); the load before and after the session and the
    busy-machine warning (bench/load.py)."""
    from bench.skips import add_skipped
    from torchrig.results.benchconv import add_utilisation

    add_utilisation(output_json.get("benchmarks", []))
    add_skipped(config, output_json)
    run_warnings = list(_choice(config.getoption("--bench-device")).warnings)
    from bench.load import judge, sample

    load = judge(getattr(config, "_torchrig_load_before", {}), sample())
    output_json["torchrig_load"] = load.to_dict()
    if load.busy:
        run_warnings.append(load.warning)
    for b in output_json.get("benchmarks", []):
        extra = b.setdefault("extra_info", {})
        extra["warnings"] = [*extra.get("warnings", []), *run_warnings]
