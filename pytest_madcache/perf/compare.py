"""Performance tracking without pytest: repeats, a baseline CSV, and the comparison of a run with it.

A model run prints `performance: <value> <metric>` (runner.py); with `--output`
every run becomes a CSV row (report.py).  Here such a CSV, written earlier, is
the *baseline*: each run of this session is matched to its baseline row (same
model and parameters; the test id, then the order of the runs within the test,
when that is ambiguous), and the signed change in percent says whether it got
better or worse in the metric's direction (higher is better, unless the mark
says `perf_direction="lower"` or the metric is plainly a time: `ms`, `s`,
`s/iter`, `latency`...).  A change the wrong way by more than the threshold is
a regression that fails the test.

Plain dataclasses and functions: the plugin, the CI helpers and tests use them
as they are.  Nothing here runs containers, prints, or imports pytest;
perftable.py renders what is computed here.
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from pytest_madcache.core.events import RunEvent
from pytest_madcache.core.perfspec import HIGHER, LOWER, PERF_KWARGS, PerfSpec, perf_spec
from pytest_madcache.core.run import RunResult
from pytest_madcache.perf.stats import (
    BETTER,
    INCONCLUSIVE,
    PAIRED,
    REGRESSED,
    UNCHANGED,
    WORSE,
    Estimate,
    independent,
    judge,
    paired,
)

__all__ = [
    "HIGHER", "LOWER", "PERF_KWARGS", "PerfSpec", "perf_spec", "default_direction", "run_repeated",
    "Baseline", "BaselineRow", "BaselineError", "load_baseline", "params_key",
    "Comparison", "compare_runs", "PerfReport", "build_report",
    "NEW", "BETTER", "WORSE", "UNCHANGED", "REGRESSED", "INCONCLUSIVE", "NO_RESULT", "AMBIGUOUS", "INCOMPARABLE",
]


# What a comparison found (the table's status column).
# REGRESSED, WORSE, UNCHANGED and BETTER are the verdicts of perf/stats.py.
NEW = "new"  # no baseline row for this run
NO_RESULT = "no result"  # the run printed no performance (it failed, or never said)
AMBIGUOUS = "ambiguous"  # several baseline rows fit and none is from this test
INCOMPARABLE = "incomparable"  # another metric in the baseline, or a baseline of 0
STATUSES = (REGRESSED, INCONCLUSIVE, WORSE, BETTER, UNCHANGED, NEW, AMBIGUOUS, INCOMPARABLE, NO_RESULT)

_TIME_UNITS = frozenset({
    "ns", "us", "µs", "ms", "s", "sec", "secs", "second", "seconds", "min", "mins", "minute", "minutes",
    "h", "hr", "hrs", "hour", "hours",
})


def default_direction(metric: Optional[str]) -> str:
    """`lower` for metrics that are plainly times (`ms`, `s`, `seconds`, `s/iter`, `latency`...), else `higher`."""
    if not metric:
        return HIGHER
    low = metric.strip().lower()
    if "latency" in low:
        return LOWER
    return LOWER if low.split("/", 1)[0].strip() in _TIME_UNITS else HIGHER


# -- the mark's part ------------------------------------------------------------------



def run_repeated(run_once: Callable[[], RunResult], spec: PerfSpec) -> RunResult:
    """Run `spec.warmup` discarded runs, then `spec.repeats` measured ones; the result of the last,
    with `performance` the median of the measured runs and `samples` all of them.

    A run that fails, or a measured run that prints no performance, ends the series: its result is
    returned as it is (no median), so the row says what went wrong.  `duration` adds up every run.
    """
    total = spec.warmup + spec.repeats
    if total == 1:
        return run_once()
    samples: List[float] = []
    duration = 0.0
    result = None
    for i in range(total):
        result = run_once()
        duration += result.duration
        measured = i >= spec.warmup
        if not result.ok or (measured and result.performance is None):
            result.duration = duration
            return result
        if measured and result.performance is not None:  # measured runs that got here printed one
            samples.append(float(result.performance))
    assert result is not None
    result.duration = duration
    result.performance = statistics.median(samples)
    result.samples = tuple(samples)
    return result


# -- the baseline -----------------------------------------------------------------------


class BaselineError(ValueError):
    """The baseline file cannot be used (not a results CSV); the caller adds the source."""


def params_key(params: Mapping[str, Any]) -> str:
    """The canonical text of a run's parameters, as `--output` writes its `params` column."""
    return json.dumps(dict(params), sort_keys=True, default=str)


def _canonical_params(text: str) -> str:
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return text.strip()
    return params_key(value) if isinstance(value, dict) else text.strip()


@dataclass(frozen=True)
class BaselineRow:
    """A good run of the baseline: its model, parameters, test and performance."""

    model: str
    params: str  # params_key()
    nodeid: str
    performance: float
    metric: str
    samples: Tuple[float, ...] = ()  # every measured run (a CSV from before has none)
    cache_key: str = ""  # the image that ran: --perf-ab runs it again, from the cache
    image_id: str = ""


REQUIRED_COLUMNS = ("model", "params", "performance", "metric", "status")


@dataclass(frozen=True)
class Baseline:
    """The rows of a baseline CSV that can be compared with: status SUCCESS and a performance."""

    path: Path
    rows: Tuple[BaselineRow, ...] = ()
    exists: bool = True  # False: no such file yet (a first pipeline): every run is new

    def match(self, model: str, params: str, nodeid: str, index: int = 0) -> Tuple[Optional[BaselineRow], str]:
        """The row for the `index`-th run of test `nodeid` (model and params_key): by model and parameters;
        when several rows fit, those of the same test, in order.  (None, why) when none fits."""
        fits = [r for r in self.rows if r.model == model and r.params == params]
        if len(fits) == 1:
            return fits[0], ""
        if not fits:
            return None, "no baseline row for this model and these parameters"
        same = [r for r in fits if r.nodeid == nodeid]
        if not same:
            return None, (f"{len(fits)} baseline rows have this model and these parameters, "
                          "none from this test")
        if index < len(same):
            return same[index], ""
        return None, f"the baseline has {len(same)} runs of this test with these parameters, this is run {index + 1}"


def load_baseline(path: Path) -> Baseline:
    """Read a results CSV written by `--output`.  A missing file is an empty baseline (exists=False);
    anything else that is not such a CSV raises BaselineError saying why."""
    path = Path(path)
    if not path.exists():
        return Baseline(path=path, exists=False)
    if path.is_dir():
        raise BaselineError(f"{path} is a directory, not a results CSV")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise BaselineError(f"{path} is not a results CSV written by --output: no column "
                                    f"{', '.join(missing)}"
                                    + (f" (it has: {', '.join(columns[:12])})" if columns else ""))
            rows: List[BaselineRow] = []
            for raw in reader:
                if (raw.get("status") or "").strip() != "SUCCESS":
                    continue
                try:
                    value = float(raw.get("performance") or "")
                except ValueError:
                    continue
                rows.append(BaselineRow(model=raw.get("model") or "", params=_canonical_params(raw.get("params") or ""),
                                        nodeid=raw.get("nodeid") or "", performance=value,
                                        metric=(raw.get("metric") or "").strip(),
                                        samples=_samples(raw.get("samples") or ""),
                                        cache_key=(raw.get("cache_key") or "").strip(),
                                        image_id=(raw.get("docker_sha") or "").strip()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BaselineError(f"cannot read {path}: {exc}") from None
    return Baseline(path=path, rows=tuple(rows))


def _samples(text: str) -> Tuple[float, ...]:
    """The `samples` cell (`12.5,13.1,...`); a cell that is not all numbers counts as none."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        return ()


# -- comparing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """One model run against its baseline row."""

    model: str
    params: Mapping[str, Any]
    nodeid: str
    seq_time: float  # with nodeid: which run of the session this is (report.py's CSV rows)
    metric: Optional[str]
    performance: Optional[float]  # the median when the mark asked for repeats
    samples: Tuple[float, ...]  # the measured runs, with repeats
    direction: str
    threshold: Optional[float]  # percent; None: regressions fail nothing
    status: str
    baseline: Optional[float] = None
    # signed percent: (performance - baseline) / |baseline| * 100 for one difference; with an interval,
    # the change of the geometric means (perf/stats.py), and `baseline` is then the baseline image's
    # median in this job (A/B) or the row's median (repeats on both sides)
    change: Optional[float] = None
    note: str = ""  # why there is no baseline value
    low_change: Optional[float] = None  # the change's interval (perf/stats.py), percent; None: a single difference
    high_change: Optional[float] = None
    method: str = ""  # stats.PAIRED (an A/B run), stats.INDEPENDENT (repeats on both sides), "" (one difference)
    pairs: int = 0  # the samples behind the interval: pairs, or the fewer repeats of either side
    more: Optional[int] = None  # inconclusive A/B: pairs to add that would likely decide it
    confidence: float = 0.95

    @property
    def low(self) -> Optional[float]:
        return min(self.samples) if self.samples else None

    @property
    def high(self) -> Optional[float]:
        return max(self.samples) if self.samples else None

    @property
    def fails(self) -> bool:
        return self.status == REGRESSED

    @property
    def label(self) -> str:
        """The parameters as the table shows them: `batch_size=16, precision=fp16`."""
        return ", ".join(f"{k}={v}" for k, v in self.params.items()) or "(no parameters)"

    @property
    def interval(self) -> str:
        """`95% interval -15.0% to -9.6%, 10 pairs side by side`, or "" for a single difference."""
        if self.low_change is None or self.high_change is None:
            return ""
        how = "pairs side by side" if self.method == PAIRED else "runs each"
        return (f"{self.confidence:.0%} interval {self.low_change:+.1f}% to {self.high_change:+.1f}%, "
                f"{self.pairs} {how}")

    def failure(self) -> str:
        """The message a regressed test fails with: value, baseline, change (its interval) and threshold."""
        better = "higher" if self.direction == HIGHER else "lower"
        interval = f"; {self.interval}" if self.interval else ""
        return (f"performance regression: {self.model} [{self.label}]: {self.performance:.6g} {self.metric or ''}"
                f" against a baseline of {self.baseline:.6g}, {self.change:+.1f}% ({better} is better{interval}), "
                f"beyond the threshold of {self.threshold:g}%")


def _compare(run: RunEvent, baseline: Optional[Baseline], index: int) -> Comparison:
    direction = run.direction or default_direction(run.metric)
    base = Comparison(model=run.model, params=dict(run.params), nodeid=run.nodeid, seq_time=run.seq_time,
                      metric=run.metric, performance=run.performance, samples=tuple(run.samples),
                      direction=direction, threshold=run.threshold, status=NEW, note=run.ab_note)
    if run.performance is None:
        return replace(base, status=NO_RESULT, note="the run printed no 'performance: <value> <metric>' line")
    if baseline is None or not baseline.exists:
        return replace(base, note="no baseline")
    row, why = baseline.match(run.model, params_key(run.params), run.nodeid, index)
    if row is None:
        return replace(base, status=AMBIGUOUS if "none from this test" in why else NEW, note=why)
    base = replace(base, baseline=row.performance)
    if row.metric != (run.metric or ""):
        return replace(base, status=INCOMPARABLE, note=f"the baseline's metric is {row.metric!r}")
    if row.performance == 0:
        return replace(base, status=INCOMPARABLE, note="the baseline is 0")
    estimate, why = _estimate(run, row)
    if why:
        base = replace(base, note=why)
    if estimate is None:  # a single difference: judged as one, by the same rule
        change = (run.performance - row.performance) / abs(row.performance) * 100.0
        single = judge(Estimate(change=change, low=None, high=None, n=1, method=""), direction, run.threshold)
        return replace(base, change=round(change, 2), status=single.status)
    verdict = judge(estimate, direction, run.threshold)
    against = statistics.median(run.baseline_samples) if estimate.method == PAIRED else row.performance
    return replace(base, baseline=against, change=round(estimate.change, 2), status=verdict.status,
                   low_change=_rounded(estimate.low), high_change=_rounded(estimate.high), method=estimate.method,
                   pairs=estimate.n, more=verdict.more, confidence=estimate.confidence)


def _estimate(run: RunEvent, row: BaselineRow) -> Tuple[Optional[Estimate], str]:
    """The change with its interval: from an A/B run's pairs, else from both sides' repeats (two or
    more each); None when there is only one difference to judge, with why when there were more."""
    try:
        if run.baseline_samples and len(run.baseline_samples) == len(run.samples):
            return paired(run.baseline_samples, run.samples), ""
        if len(run.samples) >= 2 and len(row.samples) >= 2:
            return independent(row.samples, run.samples), ""
    except ValueError as exc:  # a value <= 0 has no logarithm: the medians are compared, as without repeats
        return None, f"{exc}; the medians are compared"
    return None, ""


def _rounded(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 2)


def compare_runs(runs: Sequence[RunEvent], baseline: Optional[Baseline]) -> List[Comparison]:
    """Every run against the baseline, in (test id, time) order; the n-th run of a test with the same
    model and parameters is matched with the n-th such row of that test in the baseline."""
    seen: Dict[Tuple[str, str, str], int] = {}
    out = []
    for run in sorted(runs, key=lambda r: (r.nodeid, r.seq_time)):
        slot = (run.nodeid, run.model, params_key(run.params))
        index = seen.get(slot, 0)
        seen[slot] = index + 1
        out.append(_compare(run, baseline, index))
    return out


@dataclass(frozen=True)
class PerfReport:
    """A session's comparisons and what they were made against: what perftable.py renders."""

    comparisons: Tuple[Comparison, ...]
    baseline: Optional[Path] = None  # the file named, whether or not it exists
    baseline_exists: bool = False
    baseline_source: str = ""  # where the setting came from (option, environment variable, ini key)
    threshold: Optional[float] = None  # the session's; a mark may set its own
    threshold_source: str = ""

    def count(self, status: str) -> int:
        return sum(1 for c in self.comparisons if c.status == status)

    @property
    def regressions(self) -> List[Comparison]:
        """The runs that regressed beyond the threshold, in the table's order."""
        return [c for rows in self.by_model().values() for c in rows if c.fails]

    @property
    def undecided(self) -> List[Comparison]:
        """The runs whose interval straddles the threshold (perf/stats.py), in the table's order."""
        return [c for rows in self.by_model().values() for c in rows if c.status == INCONCLUSIVE]

    def by_model(self) -> Dict[str, List[Comparison]]:
        """The comparisons per model (models in order of appearance), each model's rows sorted by parameters."""
        out: Dict[str, List[Comparison]] = {}
        for c in self.comparisons:
            out.setdefault(c.model, []).append(c)
        return {m: sorted(rows, key=lambda c: (_sort_key(c.params), c.nodeid, c.seq_time)) for m, rows in out.items()}


def _sort_key(params: Mapping[str, Any]) -> Tuple[Any, ...]:
    """Numbers in numeric order (batch 2 before 16), then text."""
    key: List[Any] = []
    for name, value in params.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        key.append((name, 0 if number else 1, value if number else 0, "" if number else str(value)))
    return tuple(key)


def build_report(runs: Sequence[RunEvent], baseline: Optional[Baseline], *, threshold: Optional[float] = None,
                 baseline_source: str = "", threshold_source: str = "") -> PerfReport:
    return PerfReport(
        comparisons=tuple(compare_runs(runs, baseline)),
        baseline=baseline.path if baseline is not None else None,
        baseline_exists=bool(baseline is not None and baseline.exists),
        baseline_source=baseline_source, threshold=threshold, threshold_source=threshold_source,
    )
