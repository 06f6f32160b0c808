"""What ``python -m bench --acceptance`` runs per device and size, and the published anchors it prints beside.

Anchors (one GPU; ../shared/FACTS.md "Acceptance anchors", checked there against the sources named): they are
context, not gates -- a published figure comes from another software stack, batch size and input pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bench.harness import Plan
from bench.sizes import TrainCase

__all__ = ["ANCHORS", "Anchor", "Case", "cases_for"]

Kind = Literal["gemm", "copy", "train"]


@dataclass(frozen=True)
class Anchor:
    value: float
    source: str


@dataclass(frozen=True, kw_only=True)
class Case:
    kind: Kind
    n: int = 0  # GEMM side, or copy size in MiB
    dtype: str = "fp32"  # GEMM dtype
    train: TrainCase | None = None
    anchor_key: str | None = None

    @property
    def id(self) -> str:
        if self.kind == "gemm":
            return f"gemm {self.dtype} n={self.n}"
        if self.kind == "copy":
            return f"copy {self.n} MiB"
        assert self.train is not None
        return f"train {self.train.id}"

    @property
    def unit(self) -> str:
        return {"gemm": "TFLOP/s", "copy": "GB/s"}.get(self.kind) or (
            "seq/s" if self.train is not None and self.train.model == "bert" else "img/s")


_STAS = "stas00/ml-engineering MAMF, best shape"
_LAMBDA = "lambdal/deeplearning-benchmark, NGC + DeepLearningExamples"
ANCHORS: dict[str, dict[str, Anchor]] = {
    "h100-sxm": {"gemm_bf16": Anchor(794.5, _STAS), "copy": Anchor(2900, "Azure/AI-benchmarking-guide"),
                 "resnet50_amp": Anchor(2790, _LAMBDA), "bert384_amp": Anchor(845, _LAMBDA)},
    "h200-sxm": {"gemm_bf16": Anchor(795, _STAS), "copy": Anchor(4010, "Azure/AI-benchmarking-guide"),
                 "resnet50_amp": Anchor(3079, _LAMBDA), "bert384_amp": Anchor(932, _LAMBDA)},
    "gh200": {"gemm_bf16": Anchor(828.6, _STAS), "resnet50_amp": Anchor(2846, _LAMBDA)},
    "b200": {"gemm_bf16": Anchor(1745, _STAS), "resnet50_amp": Anchor(3076, _LAMBDA + " (likely input-bound)"),
             "bert384_amp": Anchor(1405, _LAMBDA)},
}


def _gpu_cases(n: int, mib: int, resnet_batch: int) -> tuple[Case, ...]:
    return (
        Case(kind="gemm", n=n, dtype="bf16", anchor_key="gemm_bf16"),
        Case(kind="copy", n=mib, anchor_key="copy"),
        Case(kind="train", train=TrainCase(model="resnet50", batch=resnet_batch, resolution=224,
                                           precision="amp_bf16", channels_last=True), anchor_key="resnet50_amp"),
        Case(kind="train", train=TrainCase(model="bert", batch=32, resolution=384, precision="amp_bf16"),
             anchor_key="bert384_amp"),
    )


def _cpu_cases(n: int, mib: int, batch: int, *, bert: bool) -> tuple[Case, ...]:
    cases = [
        Case(kind="gemm", n=n, dtype="fp32"),
        Case(kind="copy", n=mib),
        Case(kind="train", train=TrainCase(model="cifar_cnn", batch=batch, resolution=32, precision="fp32",
                                           channels_last=True, small=True)),
    ]
    if bert:
        cases.append(Case(kind="train", train=TrainCase(model="bert", batch=4, resolution=32, precision="fp32",
                                                        small=True)))
    return tuple(cases)


def cases_for(device_type: str, size: str) -> tuple[tuple[Case, ...], Plan, int]:
    """(cases, plan, repeats) for a device type ("cuda" or "cpu") and size (tiny, quick, full)."""
    if device_type == "cuda":
        if size == "full":
            return _gpu_cases(8192, 4096, 256), Plan(rounds=10, warmup_rounds=3, target_round_s=0.5), 3
        return _gpu_cases(8192, 1024, 128), Plan(rounds=5, warmup_rounds=2, target_round_s=0.25), 3
    if size == "tiny":
        return (_cpu_cases(128, 4, 4, bert=False),
                Plan(rounds=5, warmup_rounds=1, target_round_s=0.05, max_steps_per_round=50), 4)
    if size == "full":
        return _cpu_cases(1024, 256, 32, bert=True), Plan(rounds=10, warmup_rounds=2, target_round_s=0.2), 5
    return _cpu_cases(512, 64, 16, bert=True), Plan(rounds=5, warmup_rounds=1, target_round_s=0.1), 3
