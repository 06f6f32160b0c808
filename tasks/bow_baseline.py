"""A bag-of-words logistic-regression baseline: what the BERT task's data yields without a transformer.

Each text becomes the set of its lower-cased word tokens (presence, not counts) from a vocabulary of the training
texts; a multinomial logistic regression is fitted to convergence with L-BFGS on the summed cross-entropy plus
``0.5 * l2 * |W|^2`` (the bias is not penalised) -- the objective of scikit-learn's ``LogisticRegression(C=1)``.
Everything is float64 on the CPU, starts from zeros and draws no random numbers, so it neither depends on nor
disturbs the task's seeded generators: the same data gives the same accuracy on every run.

The task records the result as the ``baseline_accuracy`` metric beside ``test_accuracy``; the gate sits clearly
above it (docs/tasks.md), so a fine-tuning run that learns no more than word counts fails.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["bag_of_words_accuracy", "tokens"]

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens; ``don't`` stays one token (its negation matters to sentiment)."""
    return _TOKEN.findall(text.lower())


def _bags(texts: Sequence[str], vocab: dict[str, int]) -> tuple[Any, Any]:
    """(indices, offsets) for ``embedding_bag``: each text's distinct known words."""
    import torch

    indices: list[int] = []
    offsets: list[int] = []
    for t in texts:
        offsets.append(len(indices))
        indices.extend(sorted({vocab[w] for w in tokens(t) if w in vocab}))
    return torch.tensor(indices, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


def bag_of_words_accuracy(train: Sequence[tuple[str, int]], test: Sequence[tuple[str, int]], num_labels: int, *,
                          l2: float = 1.0, max_iter: int = 200) -> float:
    """Held-out accuracy (%) of the bag-of-words logistic regression fitted on ``train``."""
    import torch
    import torch.nn.functional as F

    vocab: dict[str, int] = {}
    for text, _ in train:
        for w in tokens(text):
            vocab.setdefault(w, len(vocab))
    x_idx, x_off = _bags([t for t, _ in train], vocab)
    y = torch.tensor([lab for _, lab in train], dtype=torch.long)
    weight = torch.zeros(max(1, len(vocab)), num_labels, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_labels, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7,
                            tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")

    def logits(idx: Any, off: Any) -> Any:
        return F.embedding_bag(idx, weight, off, mode="sum") + bias

    def closure() -> Any:
        opt.zero_grad()
        loss = F.cross_entropy(logits(x_idx, x_off), y, reduction="sum") + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small sparse sums: more threads only add contention
    try:
        with torch.enable_grad():
            opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    t_idx, t_off = _bags([t for t, _ in test], vocab)
    with torch.no_grad():
        pred = logits(t_idx, t_off).argmax(1)
    correct = int((pred == torch.tensor([lab for _, lab in test], dtype=torch.long)).sum())
    return 100.0 * correct / max(1, len(test))
