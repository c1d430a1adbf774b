"""`--perf-ab`: a model run beside the image its baseline ran, on this machine, in this job.

A baseline row made on another runner at another time differs from this run by the runners' noise
as well as by the change.  When a test's image differs from the one its baseline row ran, the
baseline's image (found by the row's key and image id: the engine, the cache, the remote cache; the
`pytest_madcache_baseline_image` hook) and this test's image run alternately, A B, B A...
(`perf.stats.balanced_order`), with the same command, environment and run options, so the noise
weighs on both alike; perf/compare.py judges the pairs (`perf.stats.paired`).  Pairs that leave
the test inconclusive are followed, once, by the pairs its verdict asks for (`perf.stats.extension`),
up to --perf-ab-max-pairs in all.

The same image, a row from before the results recorded images, or a baseline image that is gone:
one line says so, and the run is compared with the row as it is without `--perf-ab`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

import pytest

from pytest_madcache.perf.stats import balanced_order
from pytest_madcache.pytest_glue.state import State

if TYPE_CHECKING:
    from pytest_madcache.core.run import RunResult
    from pytest_madcache.provide import ModelImage

__all__ = ["Plan", "Pairs", "plan", "run_pairs", "RUNS"]

RUNS = pytest.StashKey[int]()  # model runs so far in a test: the n-th is matched with the n-th baseline row


@dataclass(frozen=True)
class Plan:
    """What to run side by side for one model run."""

    baseline: "ModelImage"
    pairs: int
    warmup: int  # runs of each image before the pairs, discarded
    most: int = 0  # pairs in all when the first ones end inconclusive (--perf-ab-max-pairs); <= pairs: no more
    threshold: Optional[float] = None
    direction: Optional[str] = None  # None: from the metric


@dataclass
class Pairs:
    """What the pairs gave: the candidate's last result (its performance the median of its paired
    runs, its `samples` those runs, its `duration` its own runs'), the baseline's runs in the same
    order, and why the pairs were given up ("" when they were not)."""

    result: Optional["RunResult"] = None
    baseline_runs: Tuple[float, ...] = ()
    note: str = ""


def plan(item: pytest.Item, state: State, image: "ModelImage") -> Tuple[Optional[Plan], str]:
    """(a plan, "") to run beside the baseline's image; (None, why not) otherwise ("" when there is
    nothing to say: no --perf-ab, no baseline, no row for this run)."""
    index = item.stash.get(RUNS, 0)
    item.stash[RUNS] = index + 1
    baseline = state.perf.baseline() if state.settings.perf_ab else None
    if baseline is None or not baseline.exists:
        return None, ""
    from pytest_madcache.perf.compare import params_key

    row, _ = baseline.match(image.model.name, params_key(image.params), item.nodeid, index)
    if row is None:
        return None, ""
    if not row.cache_key and not row.image_id:
        return None, "the baseline row records no image (written before results carried one)"
    if (row.image_id and row.image_id == image.image_id) or (row.cache_key and row.cache_key == image.key):
        return None, f"the baseline ran this same image ({image.image_id[:19]}): nothing to run side by side"
    other = item.config.hook.pytest_madcache_baseline_image(config=item.config, image=image, key=row.cache_key,
                                                            image_id=row.image_id)
    if other is None:
        s = state.settings
        where = ("the engine, the cache" + (" or the remote cache" if s.remote else "") if s.enabled
                 else "the engine (the cache is off)")
        return None, (f"the baseline's image (key {row.cache_key[:12] or 'not recorded'}, "
                      f"{row.image_id[:19] or 'no image id'}) is not in {where}")
    perf = image.model.perf
    pairs = perf.repeats if perf.repeats > 1 else state.settings.perf_ab_pairs
    return Plan(other, pairs, perf.warmup, most=state.settings.perf_ab_max_pairs,
                threshold=state.perf.threshold_for(perf), direction=perf.direction), ""


def run_pairs(plan: Plan, candidate: "ModelImage", run_on: Callable[["ModelImage"], "RunResult"],
              say: Callable[[str], None] = lambda line: None) -> Pairs:
    """The warm-up runs of each image, then the pairs in balanced order; then, when they leave the
    test inconclusive, the pairs its verdict asks for (perf.stats.extension), once, continuing the
    order.  A candidate run that fails (or, measured, prints no performance) ends the series: its
    result is returned as it is.  A baseline run that does gives up the pairs (`note` says why): the
    test then runs as it would without --perf-ab."""
    series = _Series(plan, candidate, run_on)
    order = [("A", "B")] * plan.warmup + balanced_order(plan.pairs)
    if not series.run(order, measured_from=plan.warmup):
        return series.pairs()
    added = _added(plan, series)
    if added:
        say(f"{plan.pairs} pairs left it inconclusive: {added} more, {plan.pairs + added} in all "
            f"(--perf-ab-max-pairs {plan.most})")
        series.run(balanced_order(plan.pairs + added)[plan.pairs:], measured_from=0)
    return series.pairs()


def _added(plan: Plan, series: "_Series") -> int:
    if series.last is None:
        return 0
    from pytest_madcache.perf.compare import default_direction
    from pytest_madcache.perf.stats import extension

    direction = plan.direction or default_direction(series.last.metric)
    return extension(series.samples["A"], series.samples["B"], direction, plan.threshold, plan.most)


class _Series:
    """The runs of one A/B series so far."""

    def __init__(self, plan: Plan, candidate: "ModelImage", run_on: Callable[["ModelImage"], "RunResult"]) -> None:
        self.plan, self.run_on = plan, run_on
        self.images = {"A": plan.baseline, "B": candidate}
        self.samples: Dict[str, List[float]] = {"A": [], "B": []}
        self.duration = 0.0  # the candidate's runs: what the row's test_duration means without --perf-ab
        self.last: Optional["RunResult"] = None
        self.ended: Optional[Pairs] = None

    def run(self, order: List[Tuple[str, str]], measured_from: int) -> bool:
        """Run ORDER; False when a run ended the series (then `pairs()` says how)."""
        for i, pair in enumerate(order):
            measured = i >= measured_from
            for name in pair:
                result = self.run_on(self.images[name])
                if name == "B":
                    self.duration += result.duration
                if not result.ok or (measured and result.performance is None):
                    self.ended = self._end(name, result)
                    return False
                if measured and result.performance is not None:
                    self.samples[name].append(float(result.performance))
                    if name == "B":
                        self.last = result
        return True

    def _end(self, name: str, result: "RunResult") -> Pairs:
        if name == "A":
            failed = "timed out" if result.timed_out else f"exited with {result.exit_code}"
            return Pairs(note=f"the baseline's image {self.plan.baseline.tag} "
                              + (failed if not result.ok else "printed no performance"))
        result.duration = self.duration
        return Pairs(result=result)

    def pairs(self) -> Pairs:
        if self.ended is not None:
            return self.ended
        last = self.last
        assert last is not None
        last.duration = self.duration
        last.performance = statistics.median(self.samples["B"])
        last.samples = tuple(self.samples["B"])
        return Pairs(result=last, baseline_runs=tuple(self.samples["A"]))
