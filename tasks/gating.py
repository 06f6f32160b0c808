"""Enough data to gate: the least held-out examples (per class) an accuracy gate's verdict can rest on.

A gate "held-out accuracy >= g" on n examples is a statement about an accuracy measured with binomial noise. A
verdict means something only when the measurement could tell a model at the gate from a clearly better one, so
the rule is (the numbers are in docs/tasks.md):

* **total** -- n must be large enough that a model observed halfway between the gate and perfection, at
  p = (1 + g) / 2, has a one-sided 95 % Wilson lower bound at or above g. Wilson's bound at z = 1.645 is
  ``(p + z²/2n - z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``; :func:`min_heldout` finds the least such n. For
  g = 88 % (BERT): 80; 90 % (CIFAR stand-in): 98; 75 % (real CIFAR-10): 33. A 3-row file (1 held out) is far
  below every one of them;
* **per class** -- each of the k classes needs at least ``ceil(n / (2k))`` held-out examples (half its share of a
  balanced n), and the largest class's share must be below g: otherwise "always answer the majority class"
  passes the gate;
* **two classes at least**, in the held-out and in the training rows.

The regression task's parameter gates get the analogous rule: the least-squares slope's standard error on n
points x ~ U[-1, 1] is sigma * sqrt(3 / n); the gate |w - 2| < tol is meaningful when 1.96 standard errors fit in
half of it, so n >= (2 * 1.96 * sigma * sqrt(3) / tol)², and never fewer than 30 points (the MSE gate is a mean).
For the defaults (sigma 0.01, tol 0.01): 47.

An accuracy *drop* between two models scored on the same n examples (the export task's pruned CNN against the dense
one) is a paired comparison: only the examples the two disagree on carry information. With L examples the first
model got right and the second wrong, and G the other way, the drop is (L - G) / n, and its one-sided 95 % upper
bound is the Wilson upper bound of L / n minus G / n (:func:`paired_drop_upper`). A gate "drop <= D" is meaningful
when two models that never disagree are bounded at D / 2 or less, so at least half the allowance is left for a
real drop: :func:`min_paired_heldout` (D = 5 points: 106 examples).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from torchrig.errors import UsageError

__all__ = [
    "Z_ONE_SIDED_95", "check_heldout", "min_heldout", "min_paired_heldout", "min_regression_points",
    "paired_drop_upper", "wilson_lower", "wilson_upper",
]

Z_ONE_SIDED_95 = 1.6448536269514722
MIN_REGRESSION_POINTS = 30


def wilson_lower(p: float, n: int, z: float = Z_ONE_SIDED_95) -> float:
    """One-sided Wilson score lower bound of a proportion observed as ``p`` on ``n`` trials."""
    z2 = z * z
    return (p + z2 / (2 * n) - z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))) / (1 + z2 / n)


def wilson_upper(p: float, n: int, z: float = Z_ONE_SIDED_95) -> float:
    """One-sided Wilson score upper bound of a proportion observed as ``p`` on ``n`` trials."""
    return 1.0 - wilson_lower(1.0 - p, n, z)


def paired_drop_upper(lost: int, gained: int, n: int) -> float:
    """Upper 95 % bound, in points, of the accuracy drop of a model that loses ``lost`` and gains ``gained`` of
    ``n`` examples against a reference scored on the same examples (see the module docstring)."""
    if n < 1 or lost < 0 or gained < 0 or lost + gained > n:
        raise ValueError(f"paired counts need 0 <= lost + gained <= n and n >= 1, got {lost}, {gained}, {n}")
    return 100.0 * (wilson_upper(lost / n, n) - gained / n)


def min_paired_heldout(max_drop_points: float) -> int:
    """The least n on which two models that never disagree have a drop bound of at most half the allowance."""
    if not 0 < max_drop_points < 100:
        raise ValueError(f"an accuracy drop allowance is in (0, 100) points, got {max_drop_points}")
    n = 1
    while paired_drop_upper(0, 0, n) > max_drop_points / 2:
        n += 1
    return n


def min_heldout(gate_percent: float) -> int:
    """The least n whose Wilson lower bound at p = (1 + g) / 2 clears g (see the module docstring)."""
    g = gate_percent / 100.0
    if not 0 < g < 1:
        raise ValueError(f"an accuracy gate is a percentage in (0, 100), got {gate_percent}")
    p = (1 + g) / 2
    n = 1
    while wilson_lower(p, n) < g:
        n += 1
    return n


def check_heldout(what: str, gate_percent: float, train_labels: Sequence[int], test_labels: Sequence[int],
                  classes: Sequence[str], *, fix: str) -> None:
    """UsageError (exit 2) when ``test_labels`` are too few, too skewed or one class to gate at ``gate_percent``.

    ``what`` names the data ("--data reviews.csv"); ``fix`` says what to do (e.g. "use a bigger --test-limit")."""
    n_min = min_heldout(gate_percent)
    k = len(classes)
    per_class = math.ceil(n_min / (2 * k))
    why = (f"a {gate_percent:g} % accuracy gate needs at least {n_min} held-out examples, {per_class} of each "
           f"class, no class over {gate_percent:g} % of them, and two classes, so that its verdict does not rest "
           "on a handful (docs/tasks.md, 'Enough data to gate')")
    held = Counter(test_labels)
    trained = Counter(train_labels)
    problems: list[str] = []
    if len(test_labels) < n_min:
        problems.append(f"{len(test_labels)} held-out example(s)")
    if len(trained) < 2:
        problems.append(f"{len(trained)} class(es) in the {len(train_labels)} training example(s)")
    if len(held) < 2:
        problems.append(f"{len(held)} class(es) held out")
    short = [f"{classes[c] if 0 <= c < k else c!r}: {held.get(c, 0)}" for c in range(k) if held.get(c, 0) < per_class]
    if short and len(test_labels) >= n_min:
        problems.append("too few held out of " + ", ".join(short))
    if test_labels:
        top, count = held.most_common(1)[0]
        if 100.0 * count / len(test_labels) >= gate_percent:
            name = classes[top] if 0 <= top < k else repr(top)
            problems.append(f"class {name} is {100.0 * count / len(test_labels):.0f} % of the held-out rows "
                            "(always answering it would pass)")
    if problems:
        raise UsageError(f"{what}: cannot be gated ({'; '.join(problems)}): {why}; {fix}")


def min_regression_points(noise: float, tolerance: float) -> int:
    """The least number of points whose slope error fits the regression gate (see the module docstring)."""
    if noise <= 0:
        return MIN_REGRESSION_POINTS
    return max(MIN_REGRESSION_POINTS, math.ceil((2 * 1.959963984540054 * noise * math.sqrt(3) / tolerance) ** 2))
