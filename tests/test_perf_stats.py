"""perf/stats.py on fixed samples: the t quantiles, the intervals of both designs, each verdict
(inconclusive included, with how many more pairs would decide it) and the A/B order."""

from __future__ import annotations

import math

import pytest

from pytest_madcache.core.perfspec import HIGHER, LOWER
from pytest_madcache.perf.stats import (BETTER, INCONCLUSIVE, INDEPENDENT, PAIRED, REGRESSED, UNCHANGED, WORSE,
                                        Estimate, balanced_order, extension, independent, judge, paired, t_quantile)


@pytest.mark.parametrize("df, table", [(1, 12.706), (2, 4.303), (4, 2.776), (5, 2.571), (10, 2.228), (19, 2.093),
                                       (30, 2.042), (120, 1.980)])
def test_t_quantiles_are_the_tables(df, table) -> None:
    assert round(t_quantile(0.95, df), 3) == table


def test_t_quantile_of_another_confidence_and_bad_arguments() -> None:
    assert round(t_quantile(0.99, 4), 3) == 4.604
    with pytest.raises(ValueError, match="df >= 1"):
        t_quantile(0.95, 0)
    with pytest.raises(ValueError, match="0 < confidence < 1"):
        t_quantile(1.0, 5)


def test_a_paired_interval_by_hand() -> None:
    """Log ratios 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t(0.975, 2) = 4.303, half width 0.2484."""
    est = paired([1.0, 1.0, 1.0], [math.exp(0.1), math.exp(0.2), math.exp(0.3)])
    assert est.method == PAIRED and est.n == 3
    assert round(est.change, 2) == 22.14
    assert (round(est.low, 2), round(est.high, 2)) == (-4.73, 56.58)


def test_noise_shared_by_a_pair_cancels() -> None:
    """The runner slows down and speeds up by 30% over the job; the candidate is 10% slower in each pair."""
    drift = [1.0, 0.7, 1.3, 0.8, 1.2, 0.9]
    base = [100 * d for d in drift]
    cand = [90 * d for d in drift]
    est = paired(base, cand)
    assert round(est.change, 6) == -10.0 and round(est.low, 6) == round(est.high, 6) == -10.0
    assert judge(est, HIGHER, 5.0).status == REGRESSED
    apart = independent(base, cand)  # the same samples, not paired: the drift swamps the change
    assert apart.method == INDEPENDENT and apart.low < -10.0 < 0 < apart.high
    assert judge(apart, HIGHER, 5.0).status == INCONCLUSIVE


def test_an_independent_interval_by_hand() -> None:
    """Logs {0, 0.2} and {0.1, 0.3}: means 0.1 and 0.2; variances 0.02 each, se 0.1414; df 2; t 4.303."""
    est = independent([1.0, math.exp(0.2)], [math.exp(0.1), math.exp(0.3)])
    half = 4.303 * math.sqrt(0.02 / 2 + 0.02 / 2)
    assert round(est.change, 3) == round(math.expm1(0.1) * 100, 3)
    assert round(est.low, 1) == round(math.expm1(0.1 - half) * 100, 1)
    assert round(est.high, 1) == round(math.expm1(0.1 + half) * 100, 1)


@pytest.mark.parametrize("direction, low, high, threshold, status", [
    (HIGHER, -20.0, -12.0, 10.0, REGRESSED),  # wholly beyond -10%: throughput fell
    (HIGHER, -14.0, -6.0, 10.0, INCONCLUSIVE),  # straddles -10%
    (HIGHER, -8.0, -2.0, 10.0, WORSE),  # surely worse, surely within the threshold
    (HIGHER, -3.0, 4.0, 10.0, UNCHANGED),
    (HIGHER, 2.0, 9.0, 10.0, BETTER),
    (LOWER, 12.0, 20.0, 10.0, REGRESSED),  # a time grew by more than 10%
    (LOWER, -20.0, -12.0, 10.0, BETTER),
    (LOWER, 6.0, 14.0, None, WORSE),  # no threshold: nothing regresses or is inconclusive
])
def test_verdicts_from_where_the_interval_lies(direction, low, high, threshold, status) -> None:
    est = Estimate(change=(low + high) / 2, low=low, high=high, n=8, method=PAIRED, spread=0.05)
    assert judge(est, direction, threshold).status == status


def test_inconclusive_says_how_many_more_pairs_would_decide() -> None:
    est = paired([100.0] * 4, [96.0, 89.0, 93.0, 86.0])  # about -9%, sd of the logs about 4.9%
    verdict = judge(est, HIGHER, 5.0)
    assert verdict.status == INCONCLUSIVE and verdict.more is not None and verdict.more > 0
    # with that many more pairs at the same spread, the interval clears the threshold
    n = est.n + verdict.more
    half = t_quantile(0.95, n - 1) * est.spread / math.sqrt(n)
    mean = math.log1p(est.change / 100)
    assert mean + half < math.log1p(-0.05)
    n -= 1
    assert mean + t_quantile(0.95, n - 1) * est.spread / math.sqrt(n) >= math.log1p(-0.05)


def test_one_sample_each_is_judged_as_one_difference() -> None:
    est = paired([100.0], [93.0])
    assert not est.has_interval and round(est.change, 6) == -7.0
    assert judge(est, HIGHER, 5.0).status == REGRESSED
    assert judge(est, HIGHER, 10.0).status == WORSE
    assert judge(independent([100.0], [100.0]), HIGHER, 5.0).status == UNCHANGED


def test_samples_that_cannot_be_compared_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"the baseline has the value 0.0: performance must be a positive"):
        paired([0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="as many baseline as candidate runs"):
        paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="the candidate has the value -1"):
        independent([1.0], [-1])


def test_the_order_is_balanced() -> None:
    order = balanced_order(6)
    assert order == [("A", "B"), ("B", "A")] * 3
    assert sum(1 for first, _ in order if first == "A") == sum(1 for first, _ in order if first == "B")
    assert balanced_order(1) == [("A", "B")]
    with pytest.raises(ValueError, match="at least 1 pair"):
        balanced_order(0)


def test_a_fractional_welch_df_interpolates_the_t_quantile() -> None:
    """Welch's df for these runs lies between 2 and 3: t is interpolated between t(2) = 4.303 and t(3) = 3.182."""
    assert t_quantile(0.95, 2.5) == pytest.approx((4.303 + 3.182) / 2, abs=0.001)
    base = [100.0, 101.0, 99.0]
    cand = [80.0, 84.0, 76.0]
    est = independent(base, cand)
    la = [math.log(v) for v in base]
    lb = [math.log(v) for v in cand]
    import statistics
    va, vb = statistics.variance(la) / 3, statistics.variance(lb) / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert 2 < df < 3
    half = t_quantile(0.95, df) * math.sqrt(va + vb)
    mean = statistics.fmean(lb) - statistics.fmean(la)
    assert est.low == pytest.approx(math.expm1(mean - half) * 100)


def test_identical_runs_with_a_threshold_of_0_are_unchanged() -> None:
    assert judge(paired([100.0] * 4, [100.0] * 4), HIGHER, 0.0).status == UNCHANGED
    assert judge(independent([100.0] * 3, [100.0] * 3), LOWER, 0.0).status == UNCHANGED


def test_more_pairs_near_the_threshold_and_none_for_two_sets_of_repeats() -> None:
    est = paired([100.0] * 6, [89.9, 90.1, 89.8, 90.2, 89.95, 90.05])  # -10.0%, right on a 10% threshold
    verdict = judge(est, HIGHER, 10.0)
    assert verdict.status == INCONCLUSIVE and (verdict.more is None or verdict.more > 100)
    verdict = judge(independent([100.0, 101.0, 99.0], [80.0, 92.0, 86.0]), HIGHER, 10.0)
    assert verdict.status == INCONCLUSIVE and verdict.more is None


def test_an_inconclusive_test_is_extended_once_by_what_it_asks_for_up_to_the_most() -> None:
    baseline, candidate = [100.0] * 4, [96.0, 89.0, 93.0, 86.0]  # the inconclusive pairs above
    more = judge(paired(baseline, candidate), HIGHER, 5.0).more
    assert more is not None and 0 < more < 100
    assert extension(baseline, candidate, HIGHER, 5.0, most=100) == more
    assert extension(baseline, candidate, HIGHER, 5.0, most=6) == 2  # bounded: 6 pairs in all
    assert extension(baseline, candidate, HIGHER, 5.0, most=4) == 0  # already at the most
    assert extension(baseline, candidate, HIGHER, None, most=100) == 0  # no threshold: never inconclusive
    assert extension(baseline, [80.0, 81.0, 79.0, 80.5], HIGHER, 5.0, most=100) == 0  # decided: REGRESSED


def test_an_estimate_right_on_the_threshold_is_extended_to_the_most() -> None:
    baseline, candidate = [100.0] * 6, [89.9, 90.1, 89.8, 90.2, 89.95, 90.05]  # -10.0% on a 10% threshold
    assert extension(baseline, candidate, HIGHER, 10.0, most=40) == 34
