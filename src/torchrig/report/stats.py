"""The regression rule: is a change between a baseline and a current set of runs bigger than run-to-run noise?

Each side is a :class:`Sample`: one value per run (record) of one metric, in one environment, on one machine
(same fingerprint), with each run's own spread (``stddev`` over ``repeats`` measurements) where it has one.
``f = sqrt(1/n_base + 1/n_cur)`` turns the noise of one run into the noise of a difference of two means.
The change must exceed every one of these thresholds:

* **A/A spread**: ``t * s_AA * f``, where ``s_AA`` is the pooled sample standard deviation of the run values
  around their own side's mean (how much identical runs on the same machine differ) and ``t`` the one-sided
  Student-t critical value for its ``n_base + n_cur - 2`` degrees of freedom at the confidence ``k`` stands for
  (``k`` = 3: 99.87%). With few runs the spread itself is uncertain, and t says how much: two runs against one
  can hardly prove anything, five against five can.
* **within-run spread**: ``k * s_in * f``, with ``s_in`` the runs' own ``stddev / sqrt(repeats)``, pooled. That
  misses drift between runs (clocks, placement, allocator state), so where no side has repeated runs the plain
  ``stddev`` of single repeats is used instead: a conservative stand-in, never a smaller one.
* **noise floor**: ``k * min_rel_noise * |baseline| * f`` (default 0.5%): timers and boost clocks make smaller
  differences meaningless even when a handful of runs happen to agree.
* **A/A range**: the largest difference two repeated runs on the same side already showed.

A change is judged only with noise evidence (repeated runs, or runs that recorded their spread); without it the
comparison says "not judged". The direction comes from the metric's ``higher_is_better``. There is no
fixed-percentage threshold.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_K",
    "DEFAULT_MIN_REL_NOISE",
    "Judgement",
    "Outcome",
    "Sample",
    "judge",
    "t_critical",
]

DEFAULT_K = 3.0
DEFAULT_MIN_REL_NOISE = 0.005

Outcome = Literal["regression", "improvement", "within-noise", "unjudged"]


@dataclass(frozen=True, kw_only=True)
class Sample:
    """The runs of one metric on one side: ``values[i]`` with its within-run ``stddevs[i]`` over ``repeats[i]``."""

    values: tuple[float, ...]
    stddevs: tuple[float | None, ...]
    repeats: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("a sample needs at least one run")
        if not len(self.values) == len(self.stddevs) == len(self.repeats):
            raise ValueError("values, stddevs and repeats must have one entry per run")

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / len(self.values)

    @property
    def range(self) -> float:
        return max(self.values) - min(self.values)

    def within(self) -> list[tuple[float, int]]:
        """``(stddev, repeats)`` of the runs that measured their own spread."""
        return [(s, r) for s, r in zip(self.stddevs, self.repeats, strict=True) if s is not None and r >= 2]


@dataclass(frozen=True, kw_only=True)
class Judgement:
    """The verdict on one metric: ``change`` is relative to the baseline mean (``None`` when that is 0)."""

    outcome: Outcome
    baseline: float
    current: float
    delta: float
    change: float | None
    threshold: float | None  # absolute: |delta| must exceed this to be flagged
    basis: str  # which noise estimate set the threshold, in words (shown in the report)


# ------------------------------------------------------------------------------------- Student's t, no scipy


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _t_sf(t: float, df: int) -> float:
    """P(T > t) for t >= 0 and Student's t with ``df`` degrees of freedom."""
    return 0.5 * _betai(df / 2.0, 0.5, df / (df + t * t))


@functools.lru_cache(maxsize=256)
def t_critical(k: float, df: int) -> float:
    """The one-sided Student-t critical value at the confidence a normal ``k`` sigma stands for."""
    if df < 1:
        raise ValueError("df must be at least 1")
    alpha = 0.5 * math.erfc(k / math.sqrt(2.0))
    lo, hi = 0.0, 1e9
    for _ in range(200):  # bisection: the survival function falls monotonically
        mid = (lo + hi) / 2.0
        if _t_sf(mid, df) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


# ------------------------------------------------------------------------------------------------ the rule


def _pooled_aa_stddev(base: Sample, cur: Sample) -> tuple[float, int] | None:
    df = (base.n - 1) + (cur.n - 1)
    if df < 1:
        return None
    ss = math.fsum((v - base.mean) ** 2 for v in base.values) + math.fsum((v - cur.mean) ** 2 for v in cur.values)
    return math.sqrt(ss / df), df


def _pooled_within(samples: Sequence[Sample], *, standard_error: bool) -> float | None:
    parts = [(s / math.sqrt(r)) if standard_error else s for x in samples for s, r in x.within()]
    if not parts:
        return None
    return math.sqrt(math.fsum(p * p for p in parts) / len(parts))


def judge(
    base: Sample,
    cur: Sample,
    *,
    higher_is_better: bool,
    k: float = DEFAULT_K,
    min_rel_noise: float = DEFAULT_MIN_REL_NOISE,
) -> Judgement:
    """Compare ``cur`` against ``base`` under the rule in this module's docstring."""
    if k <= 0 or min_rel_noise < 0:
        raise ValueError("k must be > 0 and min_rel_noise >= 0")
    b, c = base.mean, cur.mean
    delta = c - b
    change = delta / abs(b) if b != 0 else None
    runs = f"{base.n}+{cur.n} runs"

    aa = _pooled_aa_stddev(base, cur)
    # With repeated runs the A/A spread already holds the drift between runs, so each run's own spread enters
    # as the standard error of its mean; without them the plain spread of single repeats is the stand-in.
    within = _pooled_within((base, cur), standard_error=aa is not None)
    if aa is None and within is None:
        return Judgement(outcome="unjudged", baseline=b, current=c, delta=delta, change=change, threshold=None,
                         basis=f"{runs}, no recorded spread: noise unknown, not judged")

    f = math.sqrt(1.0 / base.n + 1.0 / cur.n)
    thresholds: dict[str, float] = {f"noise floor {min_rel_noise:.1%}": k * min_rel_noise * abs(b) * f}
    if aa is not None:
        thresholds["A/A spread"] = t_critical(k, aa[1]) * aa[0] * f
        thresholds["A/A range"] = max(base.range, cur.range)
    if within is not None:
        thresholds["within-run spread"] = k * within * f
    source, threshold = max(thresholds.items(), key=lambda kv: kv[1])

    worse = delta < 0 if higher_is_better else delta > 0
    if abs(delta) <= threshold:
        outcome: Outcome = "within-noise"
    else:
        outcome = "regression" if worse else "improvement"
    return Judgement(outcome=outcome, baseline=b, current=c, delta=delta, change=change, threshold=threshold,
                     basis=f"{source}, {runs}")
