"""What each suite size runs: the cases are data, so what ``--bench-size quick`` measures can be read here.

``tiny`` runs every code path (GEMM, copy, eager and compiled training, AMP with and without a grad scaler,
channels-last, all three models) at sizes a 2-core CPU finishes in about a minute and a half; it is what the tests
and CI run. Its numbers only show that the code works: at these sizes fixed overheads dominate, so e.g. a model's
FLOPS utilisation against the tiny GEMM can exceed 100 %. ``quick`` aims
at about 2 minutes on one H100 and ``full`` at about 10 (estimates from published step times and typical
torch.compile times, not yet measured on a GPU: see docs/bench.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from bench.harness import Plan, TorchDevice

__all__ = ["SIZES", "BenchContext", "CopyCase", "GemmCase", "SizeSet", "TrainCase", "size_set"]

Size = Literal["tiny", "quick", "full"]
GemmDtype = Literal["fp32", "tf32", "fp16", "bf16"]
Precision = Literal["fp32", "tf32", "amp_bf16", "amp_fp16"]
ModelName = Literal["resnet50", "cifar_cnn", "bert"]
GEMM_DTYPES: tuple[GemmDtype, ...] = ("fp32", "tf32", "fp16", "bf16")
PRECISIONS: tuple[Precision, ...] = ("fp32", "tf32", "amp_bf16", "amp_fp16")


@dataclass(frozen=True, kw_only=True)
class GemmCase:
    dtype: GemmDtype
    n: int  # square n x n @ n x n

    @property
    def id(self) -> str:
        return f"{self.dtype}-n{self.n}"


@dataclass(frozen=True, kw_only=True)
class CopyCase:
    mib: int  # size of the source buffer

    @property
    def id(self) -> str:
        return f"{self.mib}MiB"


@dataclass(frozen=True, kw_only=True)
class TrainCase:
    model: ModelName
    batch: int
    resolution: int  # image side in pixels (CNNs) or sequence length in tokens (BERT)
    precision: Precision
    compile: bool = False
    channels_last: bool = False
    small: bool = False  # tiny's shrunk models: BERT 2 layers x hidden 64, CIFAR ResNet-9 width 16

    @property
    def id(self) -> str:
        res = f"seq{self.resolution}" if self.model == "bert" else f"{self.resolution}px"
        parts = [self.model, f"b{self.batch}", res, self.precision]
        if self.model != "bert":
            parts.append("cl" if self.channels_last else "nchw")
        parts.append("compile" if self.compile else "eager")
        if self.small:
            parts.append("small")
        return "-".join(parts)


@dataclass(frozen=True, kw_only=True)
class SizeSet:
    """The cases and timing plan of one ``--bench-size`` (tiny, quick, full)."""

    size: Size
    plan: Plan
    gemm: tuple[GemmCase, ...]
    copy: tuple[CopyCase, ...]
    train: tuple[TrainCase, ...]
    ddp: tuple[TrainCase, ...] = field(default=())


def _train(model: ModelName, batch: int, res: int, precisions: tuple[Precision, ...], *, compile: bool = False,
           channels_last: bool = True, small: bool = False) -> tuple[TrainCase, ...]:
    return tuple(TrainCase(model=model, batch=batch, resolution=res, precision=p, compile=compile,
                           channels_last=channels_last and model != "bert", small=small)
                 for p in precisions)


_TINY = SizeSet(
    size="tiny",
    plan=Plan(rounds=3, warmup_rounds=1, target_round_s=0.02, max_steps_per_round=20),
    gemm=tuple(GemmCase(dtype=d, n=256) for d in GEMM_DTYPES),
    copy=(CopyCase(mib=4),),
    train=(
        *_train("cifar_cnn", 8, 32, ("fp32", "amp_fp16"), small=True),
        *_train("cifar_cnn", 8, 32, ("fp32",), compile=True, small=True),
        *_train("resnet50", 2, 32, ("fp32",)),
        *_train("bert", 2, 16, ("fp32",), small=True),
        *_train("bert", 2, 32, ("amp_bf16",), small=True),
    ),
    ddp=_train("cifar_cnn", 8, 32, ("fp32",), small=True),
)

_QUICK = SizeSet(
    size="quick",
    plan=Plan(rounds=5, warmup_rounds=2, target_round_s=0.25),
    gemm=tuple(GemmCase(dtype=d, n=8192) for d in GEMM_DTYPES),
    copy=(CopyCase(mib=1024),),
    train=(
        *_train("resnet50", 128, 224, ("fp32", "amp_bf16")),
        *_train("cifar_cnn", 512, 32, ("fp32", "amp_bf16")),
        *_train("cifar_cnn", 512, 32, ("amp_bf16",), compile=True),
        *_train("bert", 32, 128, ("amp_bf16",)),
        *_train("bert", 32, 384, ("amp_bf16",)),
    ),
    ddp=_train("resnet50", 128, 224, ("amp_bf16",)),
)

_FULL = SizeSet(
    size="full",
    plan=Plan(rounds=10, warmup_rounds=3, target_round_s=0.5),
    gemm=tuple(GemmCase(dtype=d, n=n) for d in GEMM_DTYPES for n in (1024, 2048, 4096, 8192)),
    copy=tuple(CopyCase(mib=m) for m in (256, 1024, 4096)),
    train=(
        *_train("resnet50", 256, 224, ("fp32", "tf32", "amp_bf16", "amp_fp16")),
        *_train("resnet50", 256, 224, ("amp_bf16",), channels_last=False),
        *_train("resnet50", 256, 224, ("tf32", "amp_bf16"), compile=True),
        *_train("cifar_cnn", 512, 32, ("fp32", "amp_bf16", "amp_fp16")),
        *_train("cifar_cnn", 512, 32, ("amp_bf16",), compile=True),
        *_train("bert", 32, 128, ("fp32", "tf32", "amp_bf16", "amp_fp16")),
        *_train("bert", 32, 128, ("amp_bf16",), compile=True),
        *_train("bert", 32, 384, ("tf32", "amp_bf16", "amp_fp16")),
        *_train("bert", 32, 384, ("amp_bf16",), compile=True),
    ),
    ddp=_train("resnet50", 256, 224, ("amp_bf16",)),
)

@dataclass(frozen=True)
class BenchContext:
    """What a benchmark gets from the ``bench`` fixture: the device, the size set chosen, the options."""

    device: TorchDevice
    size_set: SizeSet
    ddp_gpus: int  # GPUs for the DDP benchmark; 0: all visible


SIZES: dict[str, SizeSet] = {"tiny": _TINY, "quick": _QUICK, "full": _FULL}


def size_set(size: str, *, batch_overrides: dict[str, int] | None = None) -> SizeSet:
    """The size set for ``size`` with per-model batch sizes replaced (``{"resnet50": 64}``)."""
    s = SIZES[size]
    if not batch_overrides:
        return s

    def fix(cases: tuple[TrainCase, ...]) -> tuple[TrainCase, ...]:
        return tuple(replace(c, batch=batch_overrides.get(c.model, c.batch)) for c in cases)

    return replace(s, train=fix(s.train), ddp=fix(s.ddp))
