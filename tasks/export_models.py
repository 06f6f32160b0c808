"""The two models the export task hands on, built the way their training tasks build them.

* The CIFAR CNN is :func:`tasks.cifar_cnn.build_model` (the ResNet-9 layout). It is not trained: export parity is
  a property of the graph and its weights, and the CNN's accuracy is the cifar_cnn task's gate. Its BatchNorm
  running statistics are calibrated on random batches first, so the exported (folded) BatchNorm is not the
  identity it is at initialisation.
* The BERT classifier is :func:`tasks.bert_classifier.load_model` on the packaged all-MiniLM-L6-v2 checkpoint,
  fine-tuned briefly on the shipped review sentences (:func:`tasks.sentiment_data.load_labelled_sentences`): the
  quantization gate compares held-out accuracy before and after int8, which needs a classifier well above chance.
  It runs with eager attention, the implementation exporters handle everywhere (see docs/tasks.md: the dynamo
  exporter of torch 2.14 mistranslates transformers 5's SDPA attention).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks import bert_classifier, cifar_cnn
from tasks._common import UsageError
from tasks.gating import check_heldout
from tasks.sentiment_data import Example, load_labelled_sentences

__all__ = ["Case", "bert_case", "cnn_case"]

PARITY_BATCH = 8  # the fixed batch the parity gate compares on
SECOND_BATCH = 3  # the other batch size the dynamic-axis gate runs


@dataclass(kw_only=True)
class Case:
    """One model to export: the module (eval mode, CPU), its inputs, and feeds for a batch of a given size."""

    name: str  # "cnn", "bert"
    module: Any
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic: dict[str, dict[int, str]]
    feeds: Callable[[int], dict[str, Any]]  # batch size -> {input name: CPU tensor}
    info: dict[str, Any] = field(default_factory=dict)  # what the record's config says about the model
    heldout: list[Example] = field(default_factory=list)  # BERT: the examples accuracy is measured on
    tokenize: Callable[[list[str]], dict[str, Any]] | None = None
    dense: Any = None  # cnn_pruned: the trained model before pruning (tasks/export_prune.py)


def cnn_case(*, width: int, seed: int) -> Case:
    import torch

    model = cifar_cnn.build_model(width)
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # calibration: the running statistics become the plain average over the batches
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(32, 3, 32, 32, generator=gen) * 1.5 + 0.2)
    model.eval()
    batches: dict[int, Any] = {}

    def feeds(n: int) -> dict[str, Any]:
        if n not in batches:
            g = torch.Generator().manual_seed(seed * 1000 + n)
            batches[n] = torch.randn(n, 3, 32, 32, generator=g)
        return {"image": batches[n]}

    params = sum(p.numel() for p in model.parameters())
    return Case(name="cnn", module=model, input_names=("image",), output_names=("logits",),
                dynamic={"image": {0: "batch"}}, feeds=feeds,
                info={"model": "ResNet-9 layout (tasks.cifar_cnn.build_model)", "width": width, "params": params,
                      "trained": False, "batchnorm": "calibrated on 4 random batches"})


BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _logits_module(model: Any) -> Any:
    """``model`` called with positional input tensors, returning only the logits (exporters want tensors out).

    forward() names its parameters: the dynamo exporter traces through ``torch.export``, which does not take
    ``*args``.
    """
    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits

    return Logits().eval()


def _use_eager_attention(model: Any) -> str:
    """Switch to eager attention where transformers can (>= 4.48 has set_attn_implementation); what is in use."""
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter("eager")
    return str(getattr(model.config, "_attn_implementation", None) or "eager")


def bert_case(*, train_limit: int, test_limit: int, epochs: int, max_length: int, lr: float, seed: int,
              log: Callable[[str], None], gate: float) -> Case:
    """The fine-tuned BERT; ``gate`` is the held-out accuracy gate the held-out rows must be enough for."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    name, local = bert_classifier.resolve_model(None)
    if local:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    data = load_labelled_sentences()
    tok, model = bert_classifier.load_model(name, local, len(data.labels), data.labels)
    attention = _use_eager_attention(model)
    train = _ordered(data.train, seed=1)[:train_limit]
    heldout = _ordered(data.test, seed=2)[:test_limit]
    check_heldout(f"--bert-heldout {test_limit}", gate, [y for _, y in train], [y for _, y in heldout], data.labels,
                  fix="leave --bert-heldout out (500) or raise it")

    def tokenize(texts: list[str]) -> dict[str, Any]:
        return dict(tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))

    t0 = time.perf_counter()
    _fine_tune(model, tokenize, train, epochs=epochs, lr=lr, seed=seed)
    log(f"bert: fine-tuned {name.rsplit('/', 1)[-1]} on {len(train)} sentences x {epochs} epoch(s) in "
        f"{time.perf_counter() - t0:.1f} s (attention: {attention})")
    model.eval()
    names = BERT_INPUTS
    if set(tokenize(["x"])) != set(names):
        raise UsageError(f"the export task expects a BERT tokenizer giving {', '.join(names)}; {name} gives "
                         f"{', '.join(tokenize(['x']))}")
    # The parity batches are sentences from the held-out set (the first 8, and 3 later ones): real lengths, padding.
    fixed = {PARITY_BATCH: [t for t, _ in heldout[:PARITY_BATCH]],
             SECOND_BATCH: [t for t, _ in heldout[PARITY_BATCH:PARITY_BATCH + SECOND_BATCH]]}

    def feeds(n: int) -> dict[str, Any]:
        enc = tokenize(fixed.get(n) or [t for t, _ in heldout[:n]])
        return {k: enc[k] for k in names}

    params = sum(p.numel() for p in model.parameters())
    return Case(name="bert", module=_logits_module(model), input_names=names, output_names=("logits",),
                dynamic={n: {0: "batch", 1: "sequence"} for n in names}, feeds=feeds, heldout=heldout,
                tokenize=tokenize,
                info={"model": name, "params": params, "attention": attention, "data": data.name,
                      "train_size": len(train), "heldout_size": len(heldout), "epochs": epochs, "lr": lr,
                      "max_length": max_length, "torch_threads": torch.get_num_threads()})


def _ordered(rows: list[Example], *, seed: int) -> list[Example]:
    """A fixed mixed-label order (the same whatever --seed is), so a limit takes both labels."""
    import random

    out = list(rows)
    random.Random(9173 + seed).shuffle(out)
    return out


def _fine_tune(model: Any, tokenize: Callable[[list[str]], dict[str, Any]], train: list[Example], *, epochs: int,
               lr: float, seed: int) -> None:
    """AdamW with a linear warm-up/decay and gradient clipping, as the BERT task trains (CPU, float32)."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    batch = 16
    steps = epochs * ((len(train) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * steps), steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=gen).tolist()
        for i in range(0, len(train), batch):
            chunk = [train[j] for j in order[i:i + batch]]
            out = model(**tokenize([t for t, _ in chunk]), labels=torch.tensor([y for _, y in chunk]))
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
