"""Means and differences of means with Student-t confidence intervals, in plain Python.

scipy is not a dependency, so the t distribution is computed here: its CDF from the regularised
incomplete beta function (continued fraction, modified Lentz), its quantile by bisection on the
CDF. Any positive degrees of freedom work, including the fractional ones of Welch's test.

- :func:`mean_ci`: a cell's mean over seeds, ``mean +- t(0.975, n-1) * s / sqrt(n)``.
- :func:`contrast_ci`: any linear combination of independent group means, ``sum_i c_i m_i``,
  with variance ``sum_i c_i^2 s_i^2 / n_i`` and Welch-Satterthwaite degrees of freedom. An
  effect "LRN on - off, averaged over the pooling settings" is such a combination. It needs
  every group to have two or more values (a variance per group): with fewer the interval is
  unknown and the estimate says so (``low``/``high`` are None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_EPS = 1e-15
_TINY = 1e-300


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its confidence interval (None when it cannot be computed)."""

    mean: float
    low: float | None
    high: float | None
    n: int  # values behind the estimate (all groups together for a contrast)
    df: float | None = None  # degrees of freedom of the t quantile used

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    @property
    def has_ci(self) -> bool:
        return self.low is not None and self.high is not None


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                    -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry
    # I_x(a, b) = 1 - I_{1-x}(b, a) on the other side.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (``math.inf``: the normal)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(df):
        return 0.5 * (1.0 + math.erf(t / math.sqrt(2.0)))
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, for 0 < p < 1 (bisection to ~1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else math.nan
    return mean, var


def mean_ci(values: Sequence[float], level: float = 0.95) -> Estimate:
    """The mean of ``values`` with its ``level`` t interval; no interval for fewer than 2."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return Estimate(math.nan, None, None, 0)
    mean, var = _mean_var(values)
    if n < 2:
        return Estimate(mean, None, None, n)
    half = t_quantile(0.5 + level / 2.0, n - 1) * math.sqrt(var / n)
    return Estimate(mean, mean - half, mean + half, n, float(n - 1))


def contrast_ci(terms: Sequence[tuple[float, Sequence[float]]], level: float = 0.95) -> Estimate:
    """``sum(c * mean(values) for c, values in terms)`` with a Welch-Satterthwaite t interval.

    Each term is a coefficient and the values of one independent group. With any group empty the
    estimate is nan; with any group of one value it has no interval. All groups without spread
    give a zero-width interval.
    """
    terms = [(float(c), [float(v) for v in values]) for c, values in terms]
    n = sum(len(values) for _, values in terms)
    if not terms or any(not values for _, values in terms):
        return Estimate(math.nan, None, None, n)
    stats = [(c, *_mean_var(values), len(values)) for c, values in terms]
    estimate = sum(c * mean for c, mean, _, _ in stats)
    if any(size < 2 for *_, size in stats):
        return Estimate(estimate, None, None, n)
    parts = [c * c * var / size for c, _, var, size in stats]
    se2 = sum(parts)
    if se2 == 0.0:
        return Estimate(estimate, estimate, estimate, n, math.inf)
    sizes = [size for *_, size in stats]
    df = se2 * se2 / sum(p * p / (size - 1) for p, size in zip(parts, sizes, strict=True))
    half = t_quantile(0.5 + level / 2.0, df) * math.sqrt(se2)
    return Estimate(estimate, estimate - half, estimate + half, n, df)


__all__ = ["Estimate", "betainc", "contrast_ci", "mean_ci", "t_cdf", "t_quantile"]
