"""The training workloads: ResNet-50, the CIFAR CNN and BERT-base, each as one closure doing a full training step.

A step is forward, loss, backward and optimizer step with a real learning rate, on a fixed synthetic batch that
already lives on the device (so input loading is not measured). The step never reads a value back to the host, so
steps queue up on the GPU as they would in training; the harness synchronises once per round. (Exception: the fp16
grad scaler checks for inf/NaN gradients on the host each step, as it does in real fp16 training.)
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.harness import TorchDevice
from bench.rocm_env import tf32_problem
from bench.sizes import TrainCase
from torchrig.capabilities import compile_support, grad_scaler

__all__ = [
    "Workload",
    "build_workload",
    "compile_problem",
    "count_flops",
    "model_problem",
    "precision_problem",
]

CIFAR_CLASSES = 10
IMAGENET_CLASSES = 1000


CIFAR_WIDTH = 64  # the task's default width; tiny ("small") cases use 16, as the task's quick CPU mode does


def _cifar_builder() -> Callable[..., nn.Module]:
    """The CIFAR network of the correctness task (tasks/cifar_cnn.py, a ResNet-9), so the benchmark measures the
    model the task trains."""
    from tasks.cifar_cnn import build_model

    return build_model  # type: ignore[no-any-return]


def model_problem(case: TrainCase) -> str | None:
    """Why the model of ``case`` cannot be built here, or None."""
    try:
        if case.model == "cifar_cnn":
            _cifar_builder()
        elif case.model == "resnet50":
            import torchvision  # noqa: F401
        else:
            import transformers  # noqa: F401
    except ImportError as e:
        return f"{case.model} needs a module that cannot be imported here: {e}"
    return None


# --------------------------------------------------------------------------------------------- capabilities


def compile_problem(device_type: str) -> str | None:
    """Why ``torch.compile`` (inductor) cannot run here, or None. Which Python the compiler supports comes from
    compat.yaml through :func:`torchrig.capabilities.compile_support`; where that is unknown, the benchmark tries
    and a failure becomes a skip (see bench_models)."""
    if not hasattr(torch, "compile"):
        return f"torch.compile needs torch >= 2.0 (this is {torch.__version__})"
    limitation = compile_support().limitation()
    if limitation:
        return limitation
    try:
        import torch._dynamo as dynamo

        supported = getattr(dynamo, "is_dynamo_supported", None)
        if supported is not None and not supported():
            return "TorchDynamo is not supported on this platform"
    except Exception as e:  # noqa: BLE001 - any import failure means compile cannot run
        return f"torch._dynamo cannot be imported: {e}"
    if device_type == "cpu" and not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        return "inductor on CPU needs a C++ compiler (no c++/g++/clang++ on PATH)"
    if device_type == "cuda" and importlib.util.find_spec("triton") is None:
        return "inductor on GPU needs triton (not installed)"
    return None


def _autocast_dtype(precision: str) -> torch.dtype | None:
    return {"amp_bf16": torch.bfloat16, "amp_fp16": torch.float16}.get(precision)


def precision_problem(precision: str, device: TorchDevice) -> str | None:
    """Why training at ``precision`` cannot run on ``device``, or None."""
    if precision == "tf32":
        if device.type == "cpu":
            return "TF32 is a GPU tensor-core mode; on CPU it would be plain fp32"
        if device.accelerator == "cuda" and torch.cuda.get_device_capability(device.torch_device)[0] < 8:
            return f"TF32 needs compute capability >= 8.0 ({device.gpu_name} has less)"
        return tf32_problem(torch)  # ROCm: hipBLASLt's TF32 needs torch >= 2.6 and HIPBLASLT_ALLOW_TF32=1
    dtype = _autocast_dtype(precision)
    if dtype is None:
        return None
    if device.type == "cuda":
        if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return f"{device.gpu_name} does not support bf16"
        return None
    # CPU: older torch warns and silently disables autocast for fp16; treat that as unsupported.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autocast("cpu", dtype=dtype):
                out = torch.ones(2, 2) @ torch.ones(2, 2)
        except Exception as e:  # noqa: BLE001
            return f"CPU autocast to {dtype} fails in torch {torch.__version__}: {e}"
    if out.dtype != dtype:
        msgs = "; ".join(str(w.message) for w in caught)
        return f"CPU autocast to {dtype} is not supported by torch {torch.__version__} ({msgs or 'ignored'})"
    if dtype is torch.float16:
        try:
            grad_scaler("cpu")
        except Exception as e:  # noqa: BLE001
            return f"fp16 training on CPU needs a CPU GradScaler: {e}"
    return None


# ------------------------------------------------------------------------------------------------ workloads


@dataclass(kw_only=True)
class Workload:
    step: Callable[[], torch.Tensor]  # one training step; returns the loss (on the device, not synchronised)
    eager_step: Callable[[], torch.Tensor]  # the same step without torch.compile (for counting FLOPs)
    model: nn.Module  # the eager module (shares its parameters with the compiled one)
    items_per_step: int
    item_unit: str  # "images" or "sequences"
    config: dict[str, Any] = field(default_factory=dict)
    extra_forward_flops: float = 0.0  # for the fallback FLOP counter: work not in Conv/Linear modules


def build_workload(case: TrainCase, device: TorchDevice,
                   wrap: Callable[[nn.Module], nn.Module] | None = None) -> Workload:
    """The training step of ``case`` on ``device``. ``wrap`` (e.g. DistributedDataParallel) wraps the model before
    it is compiled; the optimizer works on the same parameters either way."""
    dev = device.torch_device
    torch.manual_seed(0)
    extra_fwd = 0.0
    if case.model == "bert":
        model, inputs, loss_of, cfg = _bert(case, dev)
        h, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
        # QK^T and attention x V: 2 matmuls of 2*s*s*h FLOPs per layer and sequence (not nn.Linear modules)
        extra_fwd = 4.0 * case.batch * case.resolution**2 * h * layers
        unit = "sequences"
        opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
        opt_desc = {"optimizer": "AdamW", "lr": 5e-5, "weight_decay": 0.01}
    else:
        model, inputs, loss_of, cfg = _cnn(case, dev)
        unit = "images"
        # ImageNet recipe for ResNet-50 (lr 0.1 per 256 images, linear scaling); the CIFAR recipe for the CNN.
        lr = 0.1 * case.batch / 256 if case.model == "resnet50" else 0.05
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4 if case.model == "cifar_cnn"
                              else 1e-4)
        opt_desc = {"optimizer": "SGD", "lr": lr, "momentum": 0.9, "weight_decay": opt.defaults["weight_decay"]}
    model.train()

    autocast_dtype = _autocast_dtype(case.precision)
    scaler = grad_scaler(device.type) if case.precision == "amp_fp16" else None
    wrapped: nn.Module = wrap(model) if wrap is not None else model
    run_model: Callable[..., Any] = torch.compile(wrapped) if case.compile else wrapped

    def autocast() -> contextlib.AbstractContextManager[Any]:
        # nullcontext, not autocast(enabled=False): torch 2.0 warns about a CPU autocast dtype even when disabled
        return torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()

    def make_step(fwd: Callable[..., Any]) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_of(fwd(*inputs))
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            return loss.detach()

        return step

    config = {
        "model": case.model,
        "params": sum(p.numel() for p in model.parameters()),
        **cfg,
        **opt_desc,
        "grad_scaler": scaler is not None,
        "autocast_dtype": str(autocast_dtype).replace("torch.", "") if autocast_dtype else None,
        "compile_mode": "default (inductor)" if case.compile else None,
        "data": "synthetic, one fixed batch resident on the device",
    }
    return Workload(step=make_step(run_model), eager_step=make_step(wrapped), model=model,
                    items_per_step=case.batch, item_unit=unit, config=config, extra_forward_flops=extra_fwd)


def _cnn(case: TrainCase, dev: torch.device) -> tuple[nn.Module, tuple[torch.Tensor, ...], Callable[[Any], Any],
                                                      dict[str, Any]]:
    if case.model == "resnet50":
        import torchvision

        model: nn.Module = torchvision.models.resnet50(weights=None)
        classes = IMAGENET_CLASSES
    else:
        model = _cifar_builder()(16 if case.small else CIFAR_WIDTH, CIFAR_CLASSES)
        classes = CIFAR_CLASSES
    fmt = torch.channels_last if case.channels_last else torch.contiguous_format
    model = model.to(dev, memory_format=fmt)
    x = torch.randn(case.batch, 3, case.resolution, case.resolution, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (case.batch,), device=dev)
    arch = ("torchvision.models.resnet50(weights=None)" if case.model == "resnet50" else
            f"tasks.cifar_cnn.build_model (ResNet-9), width {16 if case.small else CIFAR_WIDTH}")
    cfg = {"architecture": arch, "image_size": case.resolution, "classes": classes,
           "memory_format": "channels_last" if case.channels_last else "contiguous"}
    return model, (x,), lambda out: F.cross_entropy(out, y), cfg


def _bert(case: TrainCase, dev: torch.device) -> tuple[nn.Module, tuple[torch.Tensor, ...], Callable[[Any], Any],
                                                       dict[str, Any]]:
    import transformers

    kw: dict[str, Any] = {}
    if case.small:  # tiny: same architecture, shrunk
        kw = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 256}
    cfg = transformers.BertConfig(**kw)
    # SQuAD-style fine-tuning head (what the published BERT-base seq-384 throughputs measure), random init.
    model = transformers.BertForQuestionAnswering(cfg).to(dev)
    b, s = case.batch, case.resolution
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (b, s), generator=g).to(dev)
    starts = torch.randint(0, s, (b,), generator=g).to(dev)
    ends = torch.randint(0, s, (b,), generator=g).to(dev)
    types = torch.zeros(b, s, dtype=torch.long, device=dev)
    # No attention_mask: the sequences are unpadded, so a mask of ones changes nothing but the kernels. With one,
    # eager transformers checks it on the host every step (a device sync) and picks another attention path than
    # the compiled graph, so eager vs compile would compare different kernels.

    def fwd_inputs() -> tuple[torch.Tensor, ...]:
        return ids, types

    def loss_of(out: Any) -> Any:
        start_logits, end_logits = out
        return (F.cross_entropy(start_logits, starts) + F.cross_entropy(end_logits, ends)) / 2

    class _Logits(nn.Module):
        """Call BERT positionally and return plain tensors: the same code under eager and torch.compile."""

        def __init__(self, m: nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.m(input_ids=input_ids, attention_mask=None, token_type_ids=token_type_ids)
            return out.start_logits, out.end_logits

    info = {
        "architecture": "transformers.BertForQuestionAnswering(BertConfig(" + (
            "2 layers, hidden 64, 2 heads" if case.small else "BERT-base defaults") + ")), random init",
        "seq_len": s,
        "attention_mask": None,  # unpadded sequences: no mask (same attention kernel eager and compiled)
        "head": "question answering (SQuAD-style start/end positions)",
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "transformers": transformers.__version__,
    }
    return _Logits(model), fwd_inputs(), loss_of, info


# ------------------------------------------------------------------------------------------------ FLOPs


def count_flops(step: Callable[[], Any], model: nn.Module | None = None, *,
                extra_forward_flops: float = 0.0) -> tuple[float | None, str]:
    """FLOPs of one call of ``step`` and how they were counted.

    torch >= 2.1 has ``torch.utils.flop_counter``, which counts the matmuls, convolutions and attention the step
    dispatches (forward and backward; elementwise work and the optimizer are not counted, by convention). On torch
    2.0 the fallback counts nn.Conv2d/nn.Linear forward work with hooks, adds ``extra_forward_flops`` and takes
    backward as twice forward.
    """
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        FlopCounterMode = None
    if FlopCounterMode is not None:
        with FlopCounterMode(display=False) as counter:
            step()
        return float(counter.get_total_flops()), "torch.utils.flop_counter: one eager step, forward + backward"
    if model is None:
        return None, "no FLOP counter in this torch"
    total = [0.0]

    def hook(mod: nn.Module, inp: Any, out: torch.Tensor) -> None:
        if isinstance(mod, nn.Conv2d):
            total[0] += 2.0 * out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total[0] += 2.0 * out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        step()
    finally:
        for h in handles:
            h.remove()
    return 3.0 * (total[0] + extra_forward_flops), "module hooks (Conv2d/Linear + attention estimate), backward = 2x"
