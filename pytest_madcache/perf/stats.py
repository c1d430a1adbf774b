"""A verdict on performance from samples and their spread, not from one difference.

A one-row comparison on a shared runner mistakes the runner's noise for a change.  Here the change
of a candidate against its baseline is estimated with a confidence interval, and a test regresses
only when the whole interval lies beyond the threshold the wrong way.  When the interval straddles
the threshold the verdict is `inconclusive`, with how many more A/B pairs would decide it if the
spread stays the same.

Two designs:
- **paired** (A/B: baseline and candidate run alternately on one runner, `balanced_order`): the
  change is the mean of the log ratios candidate/baseline over the pairs, with a Student t interval
  over the pairs.  Noise that hits both runs of a pair cancels.
- **independent** (a baseline row's repeats against this run's): Welch's t on the logs of the two
  sets of samples.

Logs make the change a ratio (what `x% slower` means) and keep it symmetric; percentages are
exp(log ratio) - 1.  Pure functions: no engine, no pytest, nothing printed.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from pytest_madcache.core.perfspec import HIGHER

__all__ = ["REGRESSED", "WORSE", "UNCHANGED", "BETTER", "INCONCLUSIVE", "PAIRED", "INDEPENDENT", "Estimate",
           "Verdict", "paired", "independent", "judge", "extension", "t_quantile", "balanced_order"]

# What a comparison found (perf/compare.py adds the statuses of runs that cannot be compared).
REGRESSED = "REGRESSED"  # the wrong way by more than the threshold: the test fails
WORSE = "worse"  # the wrong way, within the threshold (or no threshold)
UNCHANGED = "unchanged"
BETTER = "better"
INCONCLUSIVE = "inconclusive"  # the interval straddles the threshold: more samples would decide

PAIRED = "paired t on log ratios"
INDEPENDENT = "Welch t on logs"
_MOST_PAIRS = 10_000  # beyond this, `more` is None: the estimate sits (nearly) on the threshold


@dataclass(frozen=True)
class Estimate:
    """The candidate's change against the baseline, in percent, with its interval (None when there
    are too few samples for one: then it is a single difference, judged as one)."""

    change: float
    low: Optional[float]
    high: Optional[float]
    n: int  # pairs (paired), or the smaller number of samples (independent)
    method: str  # PAIRED or INDEPENDENT
    confidence: float = 0.95
    spread: float = 0.0  # standard deviation of the log ratios (paired); of the two sets together (independent)

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


@dataclass(frozen=True)
class Verdict:
    status: str
    more: Optional[int] = None  # inconclusive A/B: pairs to add for the interval to decide, at the same spread


def _logs(values: Sequence[float], what: str) -> List[float]:
    out = []
    for v in values:
        if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            raise ValueError(f"{what} has the value {v!r}: performance must be a positive number to be compared")
        out.append(math.log(v))
    return out


def _percent(log_ratio: float) -> float:
    return math.expm1(log_ratio) * 100.0


def _half_width(spread: float, n: int, df: int, confidence: float) -> float:
    return t_quantile(confidence, df) * spread / math.sqrt(n)


def paired(baseline: Sequence[float], candidate: Sequence[float], confidence: float = 0.95) -> Estimate:
    """The change from pairs run side by side: baseline[i] and candidate[i] ran next to each other."""
    if len(baseline) != len(candidate) or not baseline:
        raise ValueError(f"paired samples need as many baseline as candidate runs, at least 1 "
                         f"(got {len(baseline)} and {len(candidate)})")
    diffs = [b - a for a, b in zip(_logs(baseline, "the baseline"), _logs(candidate, "the candidate"))]
    n, mean = len(diffs), statistics.fmean(diffs)
    if n < 2:
        return Estimate(_percent(mean), None, None, n, PAIRED, confidence)
    spread = statistics.stdev(diffs)
    half = _half_width(spread, n, n - 1, confidence)
    return Estimate(_percent(mean), _percent(mean - half), _percent(mean + half), n, PAIRED, confidence, spread)


def independent(baseline: Sequence[float], candidate: Sequence[float], confidence: float = 0.95) -> Estimate:
    """The change between two sets of runs made apart (a baseline row's repeats, this run's)."""
    la, lb = _logs(baseline, "the baseline"), _logs(candidate, "the candidate")
    if not la or not lb:
        raise ValueError("an estimate needs at least one baseline and one candidate sample")
    mean = statistics.fmean(lb) - statistics.fmean(la)
    n = min(len(la), len(lb))
    if n < 2:
        return Estimate(_percent(mean), None, None, n, INDEPENDENT, confidence)
    va, vb = statistics.variance(la) / len(la), statistics.variance(lb) / len(lb)
    se = math.sqrt(va + vb)
    df = _welch_df(va, vb, len(la), len(lb))
    half = t_quantile(confidence, df) * se
    spread = math.sqrt(statistics.variance(la) + statistics.variance(lb))
    return Estimate(_percent(mean), _percent(mean - half), _percent(mean + half), n, INDEPENDENT, confidence,
                    spread)


def _welch_df(va: float, vb: float, na: int, nb: int) -> float:
    """Welch-Satterthwaite's degrees of freedom (fractional: t_quantile interpolates)."""
    if va + vb == 0:
        return float(na + nb - 2)
    return max(1.0, (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)))


def judge(estimate: Estimate, direction: str, threshold: Optional[float]) -> Verdict:
    """REGRESSED when the interval lies wholly beyond `threshold` percent the wrong way; INCONCLUSIVE
    when it straddles the threshold; else worse, better or unchanged by where the interval lies
    against 0.  Without an interval, the point estimate is judged as today's one-row comparison."""
    sign = -1.0 if direction == HIGHER else 1.0  # worse_by = sign * change
    if not estimate.has_interval:
        worse = round(sign * estimate.change, 9)
        if threshold is not None and worse > threshold:
            return Verdict(REGRESSED)
        return Verdict(WORSE if worse > 0 else BETTER if worse < 0 else UNCHANGED)
    assert estimate.low is not None and estimate.high is not None
    lo, hi = sorted((sign * estimate.low, sign * estimate.high))
    if threshold is not None:
        if lo > threshold:
            return Verdict(REGRESSED)
        if hi > threshold:
            return Verdict(INCONCLUSIVE, _more(estimate, sign * threshold))
    if lo > 0:
        return Verdict(WORSE)
    return Verdict(BETTER if hi < 0 else UNCHANGED)


def _more(estimate: Estimate, boundary: float) -> Optional[int]:
    """How many more pairs would shrink the interval, at the same spread, to clear the boundary (a
    change in percent); None for two sets of repeats (the baseline's are fixed: only `--perf-ab`
    can add pairs) and when no reasonable number would."""
    if estimate.method != PAIRED or boundary <= -100.0 or estimate.spread <= 0:
        return None
    distance = abs(math.log1p(estimate.change / 100.0) - math.log1p(boundary / 100.0))

    def clears(n: int) -> bool:
        return _half_width(estimate.spread, n, n - 1, estimate.confidence) < distance

    if distance == 0 or not clears(_MOST_PAIRS):
        return None
    low, high = estimate.n, _MOST_PAIRS  # the half width shrinks as n grows: bisect for the first n that clears
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if clears(mid) else (mid, high)
    return high - estimate.n


def extension(baseline: Sequence[float], candidate: Sequence[float], direction: str, threshold: Optional[float],
              most: int) -> int:
    """How many pairs to add, once, to the A/B pairs run so far: the number an `inconclusive` verdict
    asks for, up to `most` pairs in all (`most` when no number would do at the same spread: the
    estimate may still move); 0 when the verdict is decided, has no threshold, or `most` is reached.
    A second look raises the chance of a wrong REGRESSED a little (two looks, each at the interval's
    confidence); bench/bench_ab.py measures the false alarms of both stages together."""
    n = len(candidate)
    if threshold is None or n >= most or n < 2:
        return 0
    verdict = judge(paired(baseline, candidate), direction, threshold)
    if verdict.status != INCONCLUSIVE:
        return 0
    return most - n if verdict.more is None else min(verdict.more, most - n)  # None: more than `most` would take


def t_quantile(confidence: float, df: float) -> float:
    """The two-sided Student t quantile: P(|T| <= t) = confidence with `df` degrees of freedom; a
    fractional df (Welch's) is interpolated between its whole neighbours."""
    if not 0 < confidence < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0 < confidence < 1 and df >= 1 (got {confidence}, {df})")
    low = math.floor(df)
    if df == low:
        return _t_whole(confidence, int(low))
    frac = df - low
    return (1 - frac) * _t_whole(confidence, int(low)) + frac * _t_whole(confidence, int(low) + 1)


@functools.lru_cache(maxsize=4096)
def _t_whole(confidence: float, df: int) -> float:
    df = min(df, 1000)  # beyond, t is the normal quantile to 3 decimals
    low, high = 0.0, 1.0
    while _t_within(high, df) < confidence:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_within(mid, df) < confidence else (low, mid)
    return (low + high) / 2


def _t_within(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with a whole number of degrees of freedom, by the finite series of
    Abramowitz and Stegun 26.7.3 (odd df) and 26.7.4 (even df)."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2:
        if df == 1:
            return 2 * theta / math.pi
        term = total = c
        for k in range(3, df - 1, 2):
            term *= (k - 1) / k * c * c
            total += term
        return 2 / math.pi * (theta + s * total)
    term = total = 1.0
    for k in range(2, df - 1, 2):
        term *= (k - 1) / k * c * c
        total += term
    return s * total


def balanced_order(pairs: int) -> List[Tuple[str, str]]:
    """The order of `pairs` A/B pairs: A B, B A, A B, B A...  Each image runs first in half the pairs,
    so a drift over the job (caches warming, a CPU throttling) weighs on both alike."""
    if pairs < 1:
        raise ValueError(f"an A/B comparison needs at least 1 pair (got {pairs})")
    return [("A", "B") if i % 2 == 0 else ("B", "A") for i in range(pairs)]
