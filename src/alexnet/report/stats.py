"""Means and differences of means with Student-t confidence intervals (t quantiles from scipy;
fractional degrees of freedom, as Welch's test gives, included).

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

from scipy import stats


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


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p for Student's t with ``df`` (any positive, fractional too)
    degrees of freedom; ``math.inf``: the normal."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    return float(stats.norm.ppf(p) if math.isinf(df) else stats.t.ppf(p, df))


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


__all__ = ["Estimate", "contrast_ci", "mean_ci", "t_quantile"]
