"""The statistics behind the report, against hand-computed cases and t tables."""

import math

import pytest

from alexnet.report.claims import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    no_effect_verdict,
    verdict,
)
from alexnet.report.stats import Estimate, contrast_ci, mean_ci, t_quantile

# Two-sided 95% critical values from printed t tables (df: t_{0.975}).
T_TABLE_975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    8: 2.306,
    10: 2.228,
    20: 2.086,
    30: 2.042,
    120: 1.980,
}


@pytest.mark.parametrize("df,expected", sorted(T_TABLE_975.items()))
def test_t_quantile_matches_the_printed_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=6e-4)


def test_t_quantile_tails_symmetry_and_normal_limit():
    assert t_quantile(0.995, 5) == pytest.approx(4.032, abs=1e-3)  # 99% two-sided, df 5
    assert t_quantile(0.025, 7) == pytest.approx(-t_quantile(0.975, 7))
    assert t_quantile(0.5, 3) == 0.0
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    # df = 1 is the Cauchy distribution: quantile tan(pi (p - 1/2))
    assert t_quantile(0.9, 1) == pytest.approx(math.tan(math.pi * 0.4), rel=1e-9)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        t_quantile(0.9, 0)


def test_welch_interval_equals_scipys_t_test():
    from scipy import stats

    welch = stats.ttest_ind([4, 6, 8], [1, 2, 3], equal_var=False).confidence_interval()
    est = contrast_ci([(1, [4, 6, 8]), (-1, [1, 2, 3])])
    assert (est.low, est.high) == pytest.approx((welch.low, welch.high), rel=1e-8)


def test_mean_ci_hand_computed():
    # mean 2.5, s^2 = 5/3, se = sqrt(5/12), t(0.975, 3) = 3.18245
    est = mean_ci([1, 2, 3, 4])
    half = 3.182446305 * math.sqrt(5 / 12)
    assert est.mean == 2.5 and est.n == 4 and est.df == 3
    assert (est.low, est.high) == pytest.approx((2.5 - half, 2.5 + half), rel=1e-8)
    assert est.half_width == pytest.approx(half)


def test_mean_ci_needs_two_values():
    one = mean_ci([7.0])
    assert one.mean == 7.0 and one.n == 1 and not one.has_ci and one.half_width is None
    assert math.isnan(mean_ci([]).mean)


def test_welch_difference_hand_computed():
    # means 6 and 2; variances 4 and 1 over n = 3: se^2 = 4/3 + 1/3 = 5/3;
    # Welch-Satterthwaite df = (5/3)^2 / ((4/3)^2/2 + (1/3)^2/2) = 50/17
    est = contrast_ci([(1, [4, 6, 8]), (-1, [1, 2, 3])])
    assert est.mean == pytest.approx(4.0)
    assert est.df == pytest.approx(50 / 17)
    half = t_quantile(0.975, 50 / 17) * math.sqrt(5 / 3)
    assert half == pytest.approx(4.1554, abs=1e-4)
    assert (est.low, est.high) == pytest.approx((4 - half, 4 + half))


def test_effect_averaged_over_pairs_hand_computed():
    # LRN on - off in a 2x2 grid, four cells with variance 4 and n = 3:
    # effect 1/2 [(22 - 25) + (23 - 26)] = -3; var = 1/4 * 4 * 4/3 = 4/3; df = 8
    on_o, off_o, on_n, off_n = [20, 22, 24], [23, 25, 27], [21, 23, 25], [24, 26, 28]
    est = contrast_ci([(0.5, on_o), (-0.5, off_o), (0.5, on_n), (-0.5, off_n)])
    assert est.mean == pytest.approx(-3.0)
    assert est.df == pytest.approx(8.0)
    half = 2.306004 * math.sqrt(4 / 3)
    assert (est.low, est.high) == pytest.approx((-3 - half, -3 + half), abs=1e-5)


def test_contrast_without_spread_or_with_single_values():
    flat = contrast_ci([(1, [2, 2]), (-1, [1, 1])])
    assert (flat.mean, flat.low, flat.high) == (1.0, 1.0, 1.0)
    single = contrast_ci([(1, [2.0]), (-1, [1.0, 1.5])])
    assert single.mean == pytest.approx(0.75) and not single.has_ci
    assert math.isnan(contrast_ci([(1, []), (-1, [1.0])]).mean)


@pytest.mark.parametrize(
    "low,high,paper,expected",
    [
        (-3.0, -1.0, -1.4, REPRODUCED),  # helps, the paper's size inside
        (-0.9, -0.1, -1.4, REPRODUCED),  # helps, less than the paper's
        (0.2, 1.0, -1.4, NOT_REPRODUCED),  # hurts
        (-0.3, 0.4, -1.4, NOT_REPRODUCED),  # no effect, and the paper's size ruled out
        (-2.0, 0.5, -1.4, INCONCLUSIVE),  # 0 and the paper's size both possible
    ],
)
def test_verdict_rule(low, high, paper, expected):
    est = Estimate((low + high) / 2, low, high, 6, 8.0)
    assert verdict(est, paper)[0] == expected


def test_verdict_without_interval_is_inconclusive():
    assert verdict(Estimate(-2.0, None, None, 2), -1.4)[0] == INCONCLUSIVE
    assert verdict(Estimate(math.nan, None, None, 0), -1.4)[0] == INCONCLUSIVE
    reason = verdict(Estimate(-2.0, -3.0, -1.0, 6, 8.0), -1.4)[1]
    assert "inside the CI" in reason


@pytest.mark.parametrize(
    "low,high,expected,says",
    [
        (-0.3, 0.4, REPRODUCED, "the paper's +0.1 is inside the CI"),  # within ±0.5
        (-0.45, 0.0, REPRODUCED, "within ±0.5"),  # within, the paper's +0.1 outside
        (-2.3, -0.6, NOT_REPRODUCED, "lowers the error"),  # helps beyond the band (AlexNet's size)
        (0.7, 1.5, NOT_REPRODUCED, "raises the error"),  # hurts beyond the band
        (-1.5, 1.7, INCONCLUSIVE, "beyond ±0.5"),  # holds +0.1 but also -1.4: no evidence
        (-0.9, -0.1, INCONCLUSIVE, "beyond ±0.5"),  # a gain, maybe inside the band, maybe not
    ],
)
def test_no_effect_verdict_is_an_equivalence_rule(low, high, expected, says):
    est = Estimate((low + high) / 2, low, high, 6, 8.0)
    got, reason = no_effect_verdict(est, 0.1, 0.5)
    assert got == expected and says in reason


def test_no_effect_verdict_without_interval_is_inconclusive():
    assert no_effect_verdict(Estimate(0.1, None, None, 2), 0.1, 0.5)[0] == INCONCLUSIVE
    assert no_effect_verdict(Estimate(math.nan, None, None, 0), 0.1, 0.5)[0] == INCONCLUSIVE
