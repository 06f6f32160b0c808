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
comparison says "not judged". The direction comes from the metric's ``higher_is_better`` (carried by the
current sample). There is no fixed-percentage threshold.

The same thresholds judge a node of a fleet against its group (:func:`against_median`): the baseline is the median
of the group's node means, the A/A spread is pooled over each node's repeated runs around that node's own mean
(so node-to-node differences, which are what is looked for, do not count as noise), the A/A range is the largest
one node's runs showed, and ``f = sqrt(1/n_node + 1/n_fewest)`` with ``n_fewest`` the fewest runs any node of the
group has (the median is one node's mean, or the midpoint of two: the conservative choice).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_K",
    "DEFAULT_MIN_REL_NOISE",
    "Judgement",
    "JudgementOutcome",
    "Sample",
    "against_median",
    "judge",
    "t_critical",
]

DEFAULT_K = 3.0
DEFAULT_MIN_REL_NOISE = 0.005

# What :func:`judge` concludes about one change. The report's comparisons add outcomes of their own on top
# (``torchrig.report.model.ComparisonOutcome``: unchanged, flaky, not compared).
JudgementOutcome = Literal["regression", "improvement", "within-noise", "unjudged"]


def _scale(values: Iterable[float]) -> float:
    """The largest magnitude among ``values`` (1 for none or all zero). Where a sum or square of finite values
    near the float limit (1e308 is valid JSON) overflows -- ``math.fsum`` and ``**`` raise OverflowError where a
    plain ``+`` or ``*`` gives inf -- it is taken of the values divided by this instead."""
    return max((abs(v) for v in values), default=0.0) or 1.0


def _rms(parts: Sequence[float]) -> float:
    try:
        return math.sqrt(math.fsum(p * p for p in parts) / len(parts))
    except OverflowError:
        scale = _scale(parts)
        return scale * math.sqrt(math.fsum((p / scale) ** 2 for p in parts) / len(parts))


@dataclass(frozen=True, kw_only=True)
class Sample:
    """The runs of one metric on one side: ``values[i]`` with its within-run ``stddevs[i]`` over ``repeats[i]``,
    in ``unit``; ``higher_is_better`` is the metric's direction."""

    values: tuple[float, ...]
    stddevs: tuple[float | None, ...]
    repeats: tuple[int, ...]
    unit: str = ""
    higher_is_better: bool = True

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
        try:
            return math.fsum(self.values) / len(self.values)
        except OverflowError:  # finite values near the float limit: the mean is still finite
            scale = _scale(self.values)
            return scale * (math.fsum(v / scale for v in self.values) / len(self.values))

    @property
    def range(self) -> float:
        return max(self.values) - min(self.values)

    @property
    def spread(self) -> float | None:
        """Run-to-run standard deviation with several runs; else the single run's own stddev (or None)."""
        if len(self.values) >= 2:
            try:
                return statistics.stdev(self.values)
            except OverflowError:
                scale = _scale(self.values)
                return scale * statistics.stdev(v / scale for v in self.values)
        return self.stddevs[0]

    def within(self) -> list[tuple[float, int]]:
        """``(stddev, repeats)`` of the runs that measured their own spread."""
        return [(s, r) for s, r in zip(self.stddevs, self.repeats, strict=True) if s is not None and r >= 2]


@dataclass(frozen=True, kw_only=True)
class Judgement:
    """The verdict on one metric: ``change`` is relative to the baseline mean (``None`` when that is 0)."""

    outcome: JudgementOutcome
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


def _pooled_aa_stddev(samples: Sequence[Sample]) -> tuple[float, int] | None:
    """The spread of the runs around their own sample's mean, pooled over the samples, and its degrees of freedom."""
    df = sum(x.n - 1 for x in samples)
    if df < 1:
        return None
    try:
        ss = math.fsum((v - x.mean) ** 2 for x in samples for v in x.values)
        return math.sqrt(ss / df), df
    except OverflowError:
        scale = _scale(v for x in samples for v in x.values)
        ss = math.fsum((v / scale - x.mean / scale) ** 2 for x in samples for v in x.values)
        return scale * math.sqrt(ss / df), df


def _pooled_within(samples: Sequence[Sample], *, standard_error: bool) -> float | None:
    parts = [(s / math.sqrt(r)) if standard_error else s for x in samples for s, r in x.within()]
    if not parts:
        return None
    return _rms(parts)


def _threshold(samples: Sequence[Sample], *, center: float, f: float, k: float,
               min_rel_noise: float) -> tuple[str, float] | None:
    """The largest of the thresholds in this module's docstring, with its name; None without noise evidence."""
    if k <= 0 or min_rel_noise < 0:
        raise ValueError("k must be > 0 and min_rel_noise >= 0")
    aa = _pooled_aa_stddev(samples)
    # With repeated runs the A/A spread already holds the drift between runs, so each run's own spread enters
    # as the standard error of its mean; without them the plain spread of single repeats is the stand-in.
    within = _pooled_within(samples, standard_error=aa is not None)
    if aa is None and within is None:
        return None
    thresholds: dict[str, float] = {f"noise floor {min_rel_noise:.1%}": k * min_rel_noise * abs(center) * f}
    if aa is not None:
        thresholds["A/A spread"] = t_critical(k, aa[1]) * aa[0] * f
        thresholds["A/A range"] = max(x.range for x in samples)
    if within is not None:
        thresholds["within-run spread"] = k * within * f
    return max(thresholds.items(), key=lambda kv: kv[1])


def _verdict(center: float, value: float, *, higher_is_better: bool, found: tuple[str, float] | None,
             runs: str) -> Judgement:
    delta = value - center
    change = delta / abs(center) if center != 0 else None
    if not all(math.isfinite(x) for x in (center, value, delta, found[1] if found else 0.0)):
        return Judgement(outcome="unjudged", baseline=center, current=value, delta=delta, change=None,
                         threshold=None, basis=f"{runs}: values too large to compare (beyond the float range)")
    if found is None:
        return Judgement(outcome="unjudged", baseline=center, current=value, delta=delta, change=change,
                         threshold=None, basis=f"{runs}, no recorded spread: noise unknown, not judged")
    source, threshold = found
    worse = delta < 0 if higher_is_better else delta > 0
    if abs(delta) <= threshold:
        outcome: JudgementOutcome = "within-noise"
    else:
        outcome = "regression" if worse else "improvement"
    return Judgement(outcome=outcome, baseline=center, current=value, delta=delta, change=change,
                     threshold=threshold, basis=f"{source}, {runs}")


def judge(
    base: Sample,
    cur: Sample,
    *,
    k: float = DEFAULT_K,
    min_rel_noise: float = DEFAULT_MIN_REL_NOISE,
) -> Judgement:
    """Compare ``cur`` against ``base`` under the rule in this module's docstring (direction: ``cur``'s)."""
    f = math.sqrt(1.0 / base.n + 1.0 / cur.n)
    found = _threshold((base, cur), center=base.mean, f=f, k=k, min_rel_noise=min_rel_noise)
    return _verdict(base.mean, cur.mean, higher_is_better=cur.higher_is_better, found=found,
                    runs=f"{base.n}+{cur.n} runs")


def against_median(
    node: Sample,
    group: Sequence[Sample],
    *,
    k: float = DEFAULT_K,
    min_rel_noise: float = DEFAULT_MIN_REL_NOISE,
) -> Judgement:
    """``node`` (one of ``group``) against the median of the group's node means, beyond the group's run-to-run
    noise (this module's docstring). "regression" means worse than the median beyond the noise."""
    if not any(x is node for x in group):
        raise ValueError("the node must be one of the group's samples")
    median = statistics.median(x.mean for x in group)
    f = math.sqrt(1.0 / node.n + 1.0 / min(x.n for x in group))
    found = _threshold(group, center=median, f=f, k=k, min_rel_noise=min_rel_noise)
    return _verdict(median, node.mean, higher_is_better=node.higher_is_better, found=found,
                    runs=f"{len(group)} nodes, {sum(x.n for x in group)} runs")
