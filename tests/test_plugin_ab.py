"""`--perf-ab` in the plugin: a changed image runs beside its baseline's image, in balanced pairs,
and is judged from the pairs; the same image, a row from before, and a baseline image that is gone
each say why they were compared with the row instead; pytest-xdist.

The runs are faked (no engine; tests/test_plugin_ab_engine.py has the real one): the build's image id
comes from VERSION, the run's throughput from SPEED (version -> samples/s) times the runner's
drift, which is the same for both runs of a pair and swings by 30% from pair to pair.  The
baseline image comes from the conftest's `pytest_madcache_baseline_image` unless BASELINE_GONE.
"""

from __future__ import annotations

import csv
import json

import pytest

from tests.plugin_helpers import read_csv

AB_HOOKS = '''
import dataclasses, hashlib, json, os
import pytest
from pytest_madcache.core.images import BuildResult
from pytest_madcache.core.run import RunResult

DRIFT = [1.0, 0.7, 1.3, 0.8, 1.2, 0.9]
RUNS = []

def image_id(version):
    return "sha256:" + hashlib.sha256(version.encode()).hexdigest()

@pytest.hookimpl
def pytest_madcache_build_image(config, model, tag, build_args, labels, on_line):
    return BuildResult(image_id=image_id(os.environ["VERSION"]), duration=0.1)

@pytest.hookimpl
def pytest_madcache_run_model(config, image, options, on_line):
    speed = json.loads(os.environ["SPEED"])
    version = next(v for v in speed if image_id(v) == image.image_id)
    n = len(RUNS) + int(os.environ.get("DRIFT_START", "0")) * 2
    RUNS.append(version)
    with open(os.environ["RUN_LOG"], "a") as fh:
        fh.write(version + "\\n")
    value = speed[version] * DRIFT[(n // 2) % len(DRIFT)]
    if os.environ.get("JITTER") and version != "v1":
        value *= (1.04, 0.96, 0.99, 1.01)[(n // 2) % 4]
    code = 3 if os.environ.get("FAIL_VERSION") == version else 0
    return RunResult(exit_code=code, logs="performance: %r samples/s\\n" % value, duration=0.01)

@pytest.hookimpl
def pytest_madcache_baseline_image(config, image, key, image_id):
    if os.environ.get("BASELINE_GONE"):
        return None
    return dataclasses.replace(image, image_id=image_id, key=key, tag="baseline-image")
'''

MODEL = """
    import pytest

    @pytest.mark.model("m")
    def test_m(model_run):
        assert model_run().ok
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch) -> pytest.Pytester:
    for var in ("MADCACHE_PERF_BASELINE", "MADCACHE_PERF_FAIL_THRESHOLD", "MADCACHE_PERF_AB", "MADCACHE_PERF_AB_PAIRS",
                "MADCACHE_PERF_AB_MAX_PAIRS",
                "BASELINE_GONE", "DRIFT_START", "FAIL_VERSION", "JITTER"):
        monkeypatch.delenv(var, raising=False)
    pytester.makeconftest(AB_HOOKS)
    pytester.makepyfile(test_m=MODEL)
    (pytester.path / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.setenv("RUN_LOG", str(pytester.path / "runs.log"))
    monkeypatch.setenv("VERSION", "v1")
    monkeypatch.setenv("SPEED", json.dumps({"v1": 100.0}))
    return pytester


def run(suite: pytest.Pytester, *args: str) -> pytest.RunResult:
    (suite.path / "runs.log").write_text("")
    return suite.runpytest("-p", "no:cacheprovider", *args)


def runs(suite: pytest.Pytester) -> list:
    return (suite.path / "runs.log").read_text().split()


def change_image(suite: pytest.Pytester, monkeypatch, speed: float) -> None:
    """A new Dockerfile (a new key) builds v2, whose throughput is `speed`."""
    (suite.path / "Dockerfile").write_text("FROM scratch\n# v2\n")
    monkeypatch.setenv("VERSION", "v2")
    monkeypatch.setenv("SPEED", json.dumps({"v1": 100.0, "v2": speed}))


def rewrite_baseline(suite: pytest.Pytester, drop: tuple = (), blank: tuple = ()) -> None:
    """base.csv as an older or a hand-made CSV: columns `drop`ped, cells of `blank` emptied."""
    rows = read_csv(suite.path / "base.csv")
    for row in rows:
        row.update({name: "" for name in blank})
    with open(suite.path / "base.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[c for c in rows[0] if c not in drop], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


AB = ("--perf-baseline", "base.csv", "--perf-fail-threshold", "5", "--perf-ab", "--output", "now.csv")


def test_a_baseline_row_records_the_image_that_ran(suite) -> None:
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    row = read_csv(suite.path / "base.csv")[0]
    assert row["docker_sha"].startswith("sha256:") and len(row["cache_key"]) == 64
    assert row["samples"] == "100.0"


def test_a_10_percent_slowdown_is_regressed_from_balanced_pairs(suite, monkeypatch) -> None:
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    change_image(suite, monkeypatch, 90.0)
    result = run(suite, *AB, "--perf-ab-pairs", "4")
    result.assert_outcomes(failed=1)
    assert runs(suite) == ["v1", "v2", "v2", "v1", "v1", "v2", "v2", "v1"]  # A B, B A, A B, B A
    result.stdout.fnmatch_lines([
        "*A/B: m: 4 pairs beside the baseline's image baseline-image*",
        "*performance regression: m *-10.0% (higher is better; 95% interval -10.0% to -10.0%, 4 pairs side by "
        "side), beyond the threshold of 5%",
    ])
    row = read_csv(suite.path / "now.csv")[0]
    assert row["perf_method"] == "paired t on log ratios" and row["perf_status"] == "REGRESSED"
    assert [round(float(v), 6) for v in row["baseline_samples"].split(",")] == [100.0, 70.0, 130.0, 80.0]
    assert [round(float(v), 6) for v in row["samples"].split(",")] == [90.0, 63.0, 117.0, 72.0]


def test_a_rebuilt_image_of_the_same_speed_is_unchanged_where_one_row_would_fail(suite, monkeypatch) -> None:
    """The runner is 30% slower while this session runs: one row against the baseline says -30%."""
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    change_image(suite, monkeypatch, 100.0)
    monkeypatch.setenv("DRIFT_START", "1")  # the runner's drift: 0.7 for the first pair
    run(suite, "--perf-baseline", "base.csv", "--perf-fail-threshold", "5").assert_outcomes(failed=1)
    result = run(suite, *AB, "--perf-ab-pairs", "4")
    result.assert_outcomes(passed=1)
    row = read_csv(suite.path / "now.csv")[0]
    assert row["perf_status"] == "unchanged" and float(row["relative_change"]) == 0


def test_the_marks_repeats_and_warmup_set_the_pairs(suite, monkeypatch) -> None:
    suite.makepyfile(test_m=MODEL.replace('@pytest.mark.model("m")', '@pytest.mark.model("m", perf_repeats=2, perf_warmup=1)'))
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    change_image(suite, monkeypatch, 100.0)
    run(suite, *AB, "--perf-ab-pairs", "9").assert_outcomes(passed=1)
    assert runs(suite) == ["v1", "v2", "v1", "v2", "v2", "v1"]  # warm-up A B, then A B, B A


def test_the_same_image_spends_no_runs(suite) -> None:
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    result = run(suite, *AB)
    result.assert_outcomes(passed=1)
    assert runs(suite) == ["v1"]
    result.stdout.fnmatch_lines(["*A/B: m: the baseline ran this same image (sha256:*): nothing to run side by side; "
                                 "compared with the baseline's row"])


def test_a_baseline_image_that_is_gone_is_said_and_the_row_compared(suite, monkeypatch) -> None:
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    change_image(suite, monkeypatch, 90.0)
    monkeypatch.setenv("BASELINE_GONE", "1")
    result = run(suite, *AB)
    result.assert_outcomes(failed=1)  # -10% against the row, as without --perf-ab
    assert runs(suite) == ["v2"]
    result.stdout.fnmatch_lines(["*A/B: m: the baseline's image (key *, sha256:*) is not in the engine (the cache is "
                                 "off); compared with the baseline's row"])
    assert read_csv(suite.path / "now.csv")[0]["perf_method"] == ""


def test_a_row_from_before_rows_recorded_their_key_finds_its_image_by_id(suite, monkeypatch) -> None:
    """A CSV from before has docker_sha but no cache_key or samples: its image still runs beside (the
    service finds it by its id: tests/test_ab_service.py)."""
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    rewrite_baseline(suite, drop=("cache_key", "samples"))
    change_image(suite, monkeypatch, 90.0)
    result = run(suite, *AB, "--perf-ab-pairs", "2")
    result.assert_outcomes(failed=1)
    assert runs(suite) == ["v1", "v2", "v2", "v1"]


def test_a_row_with_no_image_at_all_is_compared_as_a_row(suite, monkeypatch) -> None:
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    rewrite_baseline(suite, blank=("cache_key", "docker_sha"))
    change_image(suite, monkeypatch, 100.0)
    result = run(suite, *AB)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*A/B: m: the baseline row records no image (written before results carried one)*"])


def test_a_baseline_run_that_fails_gives_up_the_pairs(suite, monkeypatch) -> None:
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    change_image(suite, monkeypatch, 100.0)
    monkeypatch.setenv("FAIL_VERSION", "v1")
    result = run(suite, *AB)
    result.assert_outcomes(passed=1)
    assert runs(suite) == ["v1", "v2"]  # the baseline's first run failed: this image runs once, as usual
    result.stdout.fnmatch_lines(["*A/B: m: the baseline's image baseline-image exited with 3; compared with the "
                                 "baseline's row"])


def test_a_candidate_run_that_fails_fails_the_test(suite, monkeypatch) -> None:
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    change_image(suite, monkeypatch, 100.0)
    monkeypatch.setenv("FAIL_VERSION", "v2")
    run(suite, *AB).assert_outcomes(failed=1)
    assert runs(suite) == ["v1", "v2"]
    assert read_csv(suite.path / "now.csv")[0]["status"] == "FAILURE"


def test_noisy_pairs_are_inconclusive_and_say_how_many_pairs_would_decide(suite, monkeypatch) -> None:
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    change_image(suite, monkeypatch, 94.0)
    monkeypatch.setenv("JITTER", "1")  # the candidate's runs move by +-4% on their own
    result = run(suite, *AB, "--perf-ab-pairs", "4", "--perf-ab-max-pairs", "4")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*: 1 inconclusive", "*test_m: inconclusive: m [[](no parameters)[]]: -6.0% (95% "
                                 "interval *, 4 pairs side by side) straddles the threshold of 5%; at the same spread, "
                                 "about * pairs in all (--perf-ab-max-pairs, with --perf-ab-pairs or the mark's "
                                 "perf_repeats) would decide it"])


def test_pairs_that_leave_a_test_inconclusive_are_followed_by_the_pairs_it_asks_for_once(suite, monkeypatch) -> None:
    """The same noisy 6% slowdown as above: 4 pairs straddle the threshold; the pairs they ask for,
    run once beside them in the same balanced order, decide it."""
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    change_image(suite, monkeypatch, 94.0)
    monkeypatch.setenv("JITTER", "1")
    result = run(suite, *AB, "--perf-ab-pairs", "4", "--perf-ab-max-pairs", "200")
    result.assert_outcomes(failed=1)
    (line,) = [x for x in result.outlines if "pairs left it inconclusive" in x]
    added = int(line.split("inconclusive: ")[1].split()[0])
    assert f"A/B: m: 4 pairs left it inconclusive: {added} more, {4 + added} in all (--perf-ab-max-pairs 200)" in line
    order = [("v1", "v2") if i % 2 == 0 else ("v2", "v1") for i in range(4 + added)]
    assert runs(suite) == [v for pair in order for v in pair]
    row = read_csv(suite.path / "now.csv")[0]
    assert row["perf_status"] == "REGRESSED" and len(row["samples"].split(",")) == 4 + added


def test_the_most_pairs_bound_the_extension(suite, monkeypatch) -> None:
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    change_image(suite, monkeypatch, 94.0)
    monkeypatch.setenv("JITTER", "1")
    result = run(suite, *AB, "--perf-ab-pairs", "4", "--perf-ab-max-pairs", "6")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*A/B: m: 4 pairs left it inconclusive: 2 more, 6 in all (--perf-ab-max-pairs 6)"])
    assert len(runs(suite)) == 12
    assert read_csv(suite.path / "now.csv")[0]["perf_status"] == "inconclusive"


def test_a_decided_test_runs_no_more_pairs(suite, monkeypatch) -> None:
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    change_image(suite, monkeypatch, 100.0)
    result = run(suite, *AB, "--perf-ab-pairs", "4", "--perf-ab-max-pairs", "200")
    result.assert_outcomes(passed=1)
    assert len(runs(suite)) == 8 and "left it inconclusive" not in result.stdout.str()


def test_the_second_run_of_a_test_is_matched_with_the_second_row(suite, monkeypatch) -> None:
    suite.makepyfile(test_m="""
        import pytest

        @pytest.mark.model("m")
        def test_m(model_run):
            assert model_run().ok
            assert model_run().ok
    """)
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    change_image(suite, monkeypatch, 90.0)
    run(suite, *AB, "--perf-ab-pairs", "2").assert_outcomes(failed=1)
    assert runs(suite) == ["v1", "v2", "v2", "v1"] * 2
    rows = read_csv(suite.path / "now.csv")
    assert [r["perf_status"] for r in rows] == ["REGRESSED", "REGRESSED"]


@pytest.mark.parametrize("args, said", [
    (("--keep-alive",), "--perf-ab (option --perf-ab) does nothing with --keep-alive*"),
    ((), "A/B side by side, 10 pairs, up to 30 when inconclusive (option --perf-ab)"),
    (("--perf-ab-max-pairs", "10"), "A/B side by side, 10 pairs (option --perf-ab)"),
])
def test_the_header_says_what_perf_ab_will_do(suite, monkeypatch, args, said) -> None:
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    result = run(suite, *AB, *args)
    result.stdout.fnmatch_lines([f"madcache perf: *{said}"])


def test_without_a_baseline_the_header_says_perf_ab_does_nothing(suite) -> None:
    result = run(suite, "--perf-ab")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["madcache perf: *--perf-ab (option --perf-ab) does nothing without a baseline "
                                 "(--perf-baseline)"])
    assert runs(suite) == ["v1"]


def test_each_xdist_worker_runs_its_own_pairs_and_the_controller_writes_once(suite, monkeypatch) -> None:
    pytest.importorskip("xdist")
    suite.makepyfile(test_m="""
        import pytest

        @pytest.mark.model("m")
        @pytest.mark.parametrize("batch", [1, 2, 3, 4])
        def test_m(model_run, batch):
            assert model_run().ok
    """)
    run(suite, "--output", "base.csv").assert_outcomes(passed=4)
    change_image(suite, monkeypatch, 90.0)
    result = run(suite, *AB, "--perf-ab-pairs", "2", "-n", "2")
    result.assert_outcomes(failed=4)
    assert sorted(runs(suite)) == ["v1"] * 8 + ["v2"] * 8
    rows = read_csv(suite.path / "now.csv")
    assert len(rows) == 4 and {r["perf_status"] for r in rows} == {"REGRESSED"}
    assert all(len(r["baseline_samples"].split(",")) == 2 for r in rows)


@pytest.mark.parametrize("args, message", [
    (("--perf-ab-pairs", "0"), "invalid value '0' for --perf-ab-pairs from option --perf-ab-pairs: expected a whole number >= 1"),
    (("--perf-ab", "--perf-ab-pairs", "two"), "invalid value 'two' for --perf-ab-pairs from option --perf-ab-pairs: expected a whole number >= 1"),
    (("--perf-ab", "--perf-ab-max-pairs", "-3"), "invalid value '-3' for --perf-ab-max-pairs from option --perf-ab-max-pairs: expected a whole number >= 1"),
])
def test_bad_values_name_the_flag(suite, args, message) -> None:
    result = run(suite, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])
