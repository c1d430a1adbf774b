"""perf.py and perftable.py on their own (no pytest session, no engine): which way is better,
repeats, reading a baseline, matching a run to its row, the change and the threshold, the table."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List

import pytest

from pytest_madcache.perf.compare import (BETTER, HIGHER, INCOMPARABLE, LOWER, NEW, NO_RESULT, REGRESSED, UNCHANGED, WORSE,
                                  AMBIGUOUS, BaselineError, PerfSpec, build_report, compare_runs, default_direction,
                                  load_baseline, perf_spec, run_repeated)
from pytest_madcache.perf.table import markdown, report_json, terminal_lines
from pytest_madcache.pytest_glue.summary import run_row, write_csv
from pytest_madcache.engines.runner import RunResult


def run(model="m", perf=100.0, metric="samples/s", nodeid="t.py::test", params=None, seq=0.0, threshold=None,
        direction="", samples=()):
    return run_row(model=model, tags=[model], params=params if params is not None else {"batch_size": 1},
                   dockerfile="D", image="i", image_id="sha256:x", performance=perf, metric=metric, status="SUCCESS",
                   build_duration=None, duration=1.0, cache_hit=None, cache_id=None, nodeid=nodeid, seq_time=seq,
                   direction=direction, threshold=threshold, samples=samples)


@pytest.mark.parametrize("metric, direction", [
    ("samples/s", HIGHER), ("MB/s", HIGHER), ("images/sec", HIGHER), ("tokens/s", HIGHER), ("TFLOPS", HIGHER),
    ("ms", LOWER), ("s", LOWER), ("seconds", LOWER), ("s/iter", LOWER), ("ms/batch", LOWER), ("latency_ms", LOWER),
    ("p99 latency", LOWER), ("", HIGHER), (None, HIGHER),
])
def test_times_are_better_lower_everything_else_higher(metric, direction) -> None:
    assert default_direction(metric) == direction


def test_the_marks_perf_keywords_are_checked() -> None:
    assert perf_spec({}) == PerfSpec()
    assert perf_spec({"perf_repeats": 5, "perf_warmup": 2, "perf_direction": "lower", "perf_threshold": 7}) == \
        PerfSpec(direction="lower", repeats=5, warmup=2, threshold=7.0)
    for kw, message in (({"perf_repeats": 0}, "perf_repeats=0 must be a whole number >= 1"),
                        ({"perf_repeats": True}, "perf_repeats=True"),
                        ({"perf_warmup": -1}, "perf_warmup=-1 must be a whole number >= 0"),
                        ({"perf_direction": "faster"}, "perf_direction='faster' must be 'higher' or 'lower'"),
                        ({"perf_threshold": "10"}, "perf_threshold='10' must be a percentage >= 0")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            perf_spec(kw)


def _runs(*outcomes) -> List[RunResult]:
    """RunResults to hand out in order: a number is a good run with that performance, None a run that
    printed none, 'fail' a run that exited 1."""
    return [RunResult(exit_code=1, logs="", duration=1.0) if o == "fail"
            else RunResult(exit_code=0, logs="", duration=1.0, performance=o, metric="x/s") for o in outcomes]


def test_repeats_take_the_median_of_the_measured_runs_after_the_warmup() -> None:
    given = iter(_runs(999.0, 10.0, 40.0, 20.0, 30.0))
    result = run_repeated(lambda: next(given), PerfSpec(repeats=4, warmup=1))
    assert result.samples == (10.0, 40.0, 20.0, 30.0) and result.performance == 25.0  # median of an even count
    assert result.duration == 5.0 and next(given, "all used") == "all used"
    single = iter(_runs(7.0))
    assert run_repeated(lambda: next(single), PerfSpec()).samples == ()  # one run: no spread to record


def test_a_failed_or_silent_run_ends_the_series_as_it_is() -> None:
    given = iter(_runs(1.0, 2.0, "fail", 4.0))
    result = run_repeated(lambda: next(given), PerfSpec(repeats=3, warmup=1))
    assert (result.ok, result.performance, result.samples, result.duration) == (False, None, (), 3.0)
    silent = iter(_runs(1.0, None, 3.0))
    result = run_repeated(lambda: next(silent), PerfSpec(repeats=2))
    assert result.ok and result.performance is None and result.samples == ()


def test_the_baseline_keeps_good_rows_and_reads_params_canonically(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    write_csv(path, [run(perf=1.0, params={"b": 2, "a": "x"}), run(perf=None, nodeid="t.py::none"),
                     replace(run(model="failed", perf=5.0), status="FAILURE")])  # only good runs are baselines
    baseline = load_baseline(path)
    assert [(r.model, r.params, r.performance) for r in baseline.rows] == [("m", '{"a": "x", "b": 2}', 1.0)]
    assert load_baseline(tmp_path / "nope.csv").exists is False
    with pytest.raises(BaselineError, match="is a directory"):
        load_baseline(tmp_path)
    (tmp_path / "other.csv").write_text("model,performance\nm,1\n")
    with pytest.raises(BaselineError, match="no column params, metric, status"):
        load_baseline(tmp_path / "other.csv")


def _baseline(tmp_path: Path, *runs):
    write_csv(tmp_path / "b.csv", runs)
    return load_baseline(tmp_path / "b.csv")


def test_matching_model_and_params_then_test_id_then_order(tmp_path: Path) -> None:
    b = _baseline(tmp_path,
                  run(perf=10.0, nodeid="t.py::a"), run(perf=20.0, nodeid="t.py::b"),  # same model and params
                  run(model="solo", perf=5.0, nodeid="old.py::renamed"),
                  run(model="twice", perf=1.0, nodeid="t.py::c", seq=1), run(model="twice", perf=2.0, nodeid="t.py::c", seq=2))
    found = {(c.model, c.nodeid, c.seq_time): (c.baseline, c.status, c.note) for c in compare_runs([
        run(perf=10.0, nodeid="t.py::a"), run(perf=20.0, nodeid="t.py::b"), run(perf=30.0, nodeid="t.py::new"),
        run(model="solo", perf=5.0, nodeid="new.py::renamed"),
        run(model="twice", perf=1.0, nodeid="t.py::c", seq=5), run(model="twice", perf=2.0, nodeid="t.py::c", seq=6),
        run(model="twice", perf=3.0, nodeid="t.py::c", seq=7),
        run(model="m", perf=1.0, params={"batch_size": 64}),
    ], b)}
    assert found[("m", "t.py::a", 0.0)][:2] == (10.0, UNCHANGED)
    assert found[("m", "t.py::b", 0.0)][:2] == (20.0, UNCHANGED)
    assert found[("m", "t.py::new", 0.0)] == (None, AMBIGUOUS, "2 baseline rows have this model and these "
                                                                "parameters, none from this test")
    assert found[("solo", "new.py::renamed", 0.0)][:2] == (5.0, UNCHANGED)  # one row fits: the test id does not matter
    assert [found[("twice", "t.py::c", s)][:2] for s in (5, 6)] == [(1.0, UNCHANGED), (2.0, UNCHANGED)]
    assert found[("twice", "t.py::c", 7)][:2] == (None, NEW)
    assert found[("m", "t.py::test", 0.0)] == (None, NEW, "no baseline row for this model and these parameters")


@pytest.mark.parametrize("perf, direction, threshold, change, status", [
    (80.0, "", 10, -20.0, REGRESSED),
    (95.0, "", 10, -5.0, WORSE),
    (90.0, "", 10, -10.0, WORSE),  # exactly the threshold: not beyond it
    (89.99, "", 10, -10.01, REGRESSED),
    (80.0, "", None, -20.0, WORSE),  # no threshold: reported, never failing
    (120.0, "", 10, 20.0, BETTER),
    (120.0, "lower", 10, 20.0, REGRESSED),
    (80.0, "lower", 10, -20.0, BETTER),
    (100.0, "", 0, 0.0, UNCHANGED),
    (99.9, "", 0, -0.1, REGRESSED),  # a threshold of 0: any step the wrong way fails
])
def test_change_direction_and_threshold(tmp_path: Path, perf, direction, threshold, change, status) -> None:
    b = _baseline(tmp_path, run(perf=100.0))
    [c] = compare_runs([run(perf=perf, direction=direction, threshold=threshold)], b)
    assert (c.change, c.status, c.fails) == (change, status, status == REGRESSED)


def test_no_value_another_metric_or_a_zero_baseline_cannot_be_compared(tmp_path: Path) -> None:
    b = _baseline(tmp_path, run(model="a", perf=1.0, metric="ms"), run(model="z", perf=0.0))
    got = {c.model: (c.status, c.change, c.note) for c in compare_runs(
        [run(model="a", perf=1.0, metric="s"), run(model="z", perf=5.0), run(model="n", perf=None)], b)}
    assert got == {"a": (INCOMPARABLE, None, "the baseline's metric is 'ms'"),
                   "z": (INCOMPARABLE, None, "the baseline is 0"),
                   "n": (NO_RESULT, None, "the run printed no 'performance: <value> <metric>' line")}
    [c] = compare_runs([run(perf=5.0)], None)
    assert c.status == NEW


def test_the_table_per_model_sorted_by_batch_size(tmp_path: Path) -> None:
    b = _baseline(tmp_path, *(run(perf=p, params={"batch_size": bs}, nodeid=f"t.py::t[{bs}]")
                              for bs, p in ((2, 100.0), (16, 400.0), (4, 200.0))))
    now = [run(perf=p, params={"batch_size": bs}, nodeid=f"t.py::t[{bs}]", threshold=10, samples=s)
           for bs, p, s in ((16, 320.0, (300.0, 320.0, 340.0)), (2, 101.0, ()), (4, 200.0, ()), (32, 9.5, ()))]
    report = build_report(now, b, threshold=10, baseline_source="option --perf-baseline",
                          threshold_source="option --perf-fail-threshold")
    lines = [line for line in terminal_lines(report)]
    texts = [line.text for line in lines]
    assert texts[0].endswith("fail threshold 10% (option --perf-fail-threshold): 1 REGRESSED, 1 better, 1 unchanged, 1 new")
    table = texts[texts.index("m (higher is better; median of 3 runs (min-max))") + 1:][:5]
    assert table == [
        "  batch_size          performance  metric     baseline  change  status",
        "  2                         101.0  samples/s     100.0   +1.0%  better",
        "  4                         200.0  samples/s     200.0   +0.0%  unchanged",
        "  16          320.0 (300.0-340.0)  samples/s     400.0  -20.0%  REGRESSED",
        "  32                         9.50  samples/s                    new",
    ]
    assert [line.tone for line in lines if "REGRESSED" in line.text or "better" in line.text][-3:] == ["good", "bad", "bad"]
    md = markdown(report)
    assert "| 16 | 320.0 (300.0-340.0) | samples/s | 400.0 | **-20.0%** | **REGRESSED** |" in md
    data = report_json(report)
    assert data["counts"] == {"REGRESSED": 1, "better": 1, "new": 1, "unchanged": 1} and data["regressions"] == 1
    assert [r["params"]["batch_size"] for r in data["models"]["m"]] == [2, 4, 16, 32]
    assert data["models"]["m"][2]["min"] == 300.0 and data["models"]["m"][2]["samples"] == [300.0, 320.0, 340.0]


def test_markdown_escapes_pipes_in_parameters() -> None:
    report = build_report([run(params={"shape": "a|b"})], None)
    assert "| a\\|b | 100.0 |" in markdown(report)
