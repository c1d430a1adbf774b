"""Performance tracking in the plugin: a baseline CSV, regressions that fail by direction, repeats,
the table (terminal, Markdown, summary JSON, plot), and pytest-xdist.

The runs are faked (no engine): the conftest's run hook prints `performance: <PERF> <METRIC>` from the
container environment the test passes, so every figure below is exact.  The baseline is always a CSV
an earlier session wrote with --output: the loop a CI pipeline runs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import pytest_madcache

from tests.needs import unavailable
from tests.plugin_helpers import read_csv

try:  # here, before any pytester snapshot of sys.modules: numpy refuses to be imported twice in one process
    import matplotlib.figure  # noqa: F401 - the plot extra (and the test extra) installs it
except ImportError:
    matplotlib = None

#: Build and run replaced: PERF (a value, or PERF_SEQ: one value per call, in order) and METRIC
#: come from the container environment the test passes to model_run().
PERF_HOOKS = '''
import pytest
from pytest_madcache.core.images import BuildResult
from pytest_madcache.core.run import RunResult

CALLS = {}

@pytest.hookimpl
def pytest_madcache_build_image(config, model, tag, build_args, labels, on_line):
    return BuildResult(image_id="sha256:" + "ab" * 32, duration=0.25)

@pytest.hookimpl
def pytest_madcache_run_model(config, image, options, on_line):
    env = dict(options.env)
    if "PERF_SEQ" in env:
        values = env["PERF_SEQ"].split(",")
        n = CALLS[env["PERF_SEQ"]] = CALLS.get(env["PERF_SEQ"], -1) + 1
        value = values[n]
    else:
        value = env.get("PERF", "12.5")
    return RunResult(exit_code=0, logs="performance: %s %s\\n" % (value, env.get("METRIC", "samples/s")), duration=0.01)
'''

#: A model swept over two batch sizes; FACTOR (host environment) scales its throughput.
SWEEP = """
    import os
    import pytest

    BASE = {2: 100.0, 4: 200.0}

    @pytest.mark.model("bench", ignore_params=["batch_size"])
    @pytest.mark.parametrize("batch_size", [2, 4])
    def test_sweep(model_run, batch_size):
        factor = float(os.environ.get("FACTOR", "1"))
        assert model_run(env={"PERF": str(BASE[batch_size] * factor)}).ok
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch) -> pytest.Pytester:
    for var in ("MADCACHE_PERF_BASELINE", "MADCACHE_PERF_FAIL_THRESHOLD", "MADCACHE_PERF_REPORT", "MADCACHE_PERF_PLOT",
                "MADCACHE_SUMMARY_JSON", "FACTOR"):
        monkeypatch.delenv(var, raising=False)
    pytester.makeconftest(PERF_HOOKS)
    (pytester.path / "Dockerfile").write_text("FROM scratch\n")
    return pytester


def run(suite: pytest.Pytester, *args: str) -> pytest.RunResult:
    return suite.runpytest("-p", "no:cacheprovider", *args)


def by_params(path) -> dict:
    return {json.loads(r["params"]).get("batch_size"): r for r in read_csv(path)}


# -- the loop: a baseline, a regression, a threshold ---------------------------------------------


def test_a_20_percent_drop_fails_with_threshold_10_and_the_csv_reads_minus_20(suite, monkeypatch) -> None:
    suite.makepyfile(test_sweep=SWEEP)
    run(suite, "--output", "base.csv").assert_outcomes(passed=2)

    monkeypatch.setenv("FACTOR", "0.8")
    result = run(suite, "--perf-baseline", "base.csv", "--perf-fail-threshold", "10", "--output", "now.csv")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*performance regression: bench [[]batch_size=2[]]: 80 samples/s against a baseline of 100, -20.0% "
        "(higher is better), beyond the threshold of 10%",
        "*= madcache performance =*",
        "2 runs against baseline *base.csv (option --perf-baseline); fail threshold 10% (option --perf-fail-threshold): "
        "2 REGRESSED",
        "bench (higher is better)",
        "  batch_size  performance  metric     baseline  change  status",
        "  2                 80.00  samples/s     100.0  -20.0%  REGRESSED",
        "  4                 160.0  samples/s     200.0  -20.0%  REGRESSED",
    ])
    rows = by_params(suite.path / "now.csv")
    assert rows[2]["relative_change"] == "-20" and rows[4]["relative_change"] == "-20"
    assert rows[2]["baseline_performance"] == "100" and rows[2]["perf_status"] == "REGRESSED"
    assert rows[2]["direction"] == "higher"
    assert rows[2]["status"] == "FAILURE"  # the test failed, so the run is not a good result


def test_a_5_percent_drop_passes_and_is_reported(suite, monkeypatch) -> None:
    suite.makepyfile(test_sweep=SWEEP)
    run(suite, "--output", "base.csv").assert_outcomes(passed=2)

    monkeypatch.setenv("FACTOR", "0.95")
    result = run(suite, "--perf-baseline", "base.csv", "--perf-fail-threshold", "10", "--output", "now.csv")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*fail threshold 10%*: 2 worse", "  2 * 95.00  samples/s * 100.0   -5.0%  worse"])
    assert {r["relative_change"] for r in read_csv(suite.path / "now.csv")} == {"-5"}


def test_without_a_threshold_regressions_are_reported_and_fail_nothing(suite, monkeypatch) -> None:
    suite.makepyfile(test_sweep=SWEEP)
    run(suite, "--output", "base.csv")
    monkeypatch.setenv("FACTOR", "0.5")
    result = run(suite, "--perf-baseline", "base.csv", "--output", "now.csv")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*no fail threshold: regressions fail nothing: 2 worse", "  4 * 100.0 * 200.0  -50.0%  worse"])
    assert {r["relative_change"] for r in read_csv(suite.path / "now.csv")} == {"-50"}
    monkeypatch.setenv("FACTOR", "1.25")
    result = run(suite, "--perf-baseline", "base.csv", "--perf-fail-threshold", "10")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*: 2 better", "  2 * 125.0 * 100.0  +25.0%  better"])


def test_the_settings_come_from_the_environment_and_the_ini_file_too(suite, monkeypatch) -> None:
    suite.makepyfile(test_sweep=SWEEP)
    run(suite, "--output", "base.csv")
    suite.makeini("[pytest]\nmadcache_perf_baseline = base.csv\nmadcache_perf_fail_threshold = 30\n")
    monkeypatch.setenv("FACTOR", "0.8")
    result = run(suite)  # the ini key's 30% tolerates the 20% drop
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["madcache perf: baseline *base.csv (2 rows; ini key madcache_perf_baseline in *tox.ini); "
                                 "fail threshold 30% (ini key madcache_perf_fail_threshold in *tox.ini)"])
    monkeypatch.setenv("MADCACHE_PERF_FAIL_THRESHOLD", "10%")  # the environment is above the ini file
    result = run(suite)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*fail threshold 10% (environment variable MADCACHE_PERF_FAIL_THRESHOLD)*"])
    assert run(suite, "--perf-fail-threshold", "off").ret == 0  # and the flag above both


# -- direction ------------------------------------------------------------------------------------------


def test_time_metrics_are_better_lower_and_the_mark_can_say_so(suite, monkeypatch) -> None:
    suite.makepyfile(test_dirs="""
        import os
        import pytest

        F = float(os.environ.get("FACTOR", "1"))

        @pytest.mark.model("latency")
        def test_ms(model_run):  # 'ms' is a time: lower is better by default
            model_run(env={"PERF": str(10 * F), "METRIC": "ms"})

        @pytest.mark.model("step")
        def test_seconds_per_iteration(model_run):
            model_run(env={"PERF": str(2 * F), "METRIC": "s/iter"})

        @pytest.mark.model("throughput")
        def test_samples_per_second(model_run):
            model_run(env={"PERF": str(50 * F), "METRIC": "samples/s"})

        @pytest.mark.model("loss", perf_direction="lower")
        def test_the_mark_says_lower(model_run):
            model_run(env={"PERF": str(0.5 * F), "METRIC": "nats"})

        @pytest.mark.model("ms-but-higher", perf_direction="higher")
        def test_the_mark_overrides_the_metric(model_run):
            model_run(env={"PERF": str(30 * F), "METRIC": "ms"})
    """)
    run(suite, "--output", "base.csv").assert_outcomes(passed=5)
    monkeypatch.setenv("FACTOR", "1.2")  # every value 20% up
    result = run(suite, "--perf-baseline", "base.csv", "--perf-fail-threshold", "10", "--output", "up.csv")
    result.assert_outcomes(passed=2, failed=3)
    failed = {r.nodeid.split("::")[1] for r in result.reprec.getreports("pytest_runtest_logreport") if r.failed}
    assert failed == {"test_ms", "test_seconds_per_iteration", "test_the_mark_says_lower"}
    result.stdout.fnmatch_lines(["*latency [[](no parameters)[]]: 12 ms against a baseline of 10, +20.0% (lower is better)*"])
    status = {r["model"]: (r["direction"], r["perf_status"]) for r in read_csv(suite.path / "up.csv")}
    assert status == {"latency": ("lower", "REGRESSED"), "step": ("lower", "REGRESSED"),
                      "throughput": ("higher", "better"), "loss": ("lower", "REGRESSED"),
                      "ms-but-higher": ("higher", "better")}


def test_a_mark_threshold_is_above_the_sessions(suite, monkeypatch) -> None:
    suite.makepyfile(test_noisy="""
        import os
        import pytest

        @pytest.mark.model("noisy", perf_threshold=25)
        def test_noisy(model_run):
            model_run(env={"PERF": str(100 * float(os.environ.get("FACTOR", "1")))})

        @pytest.mark.model("steady")
        def test_steady(model_run):
            model_run(env={"PERF": str(100 * float(os.environ.get("FACTOR", "1")))})
    """)
    run(suite, "--output", "base.csv")
    monkeypatch.setenv("FACTOR", "0.8")
    result = run(suite, "--perf-baseline", "base.csv", "--perf-fail-threshold", "10")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*steady*-20.0% (higher is better), beyond the threshold of 10%"])


# -- matching -----------------------------------------------------------------------------------------


def test_runs_match_by_model_and_parameters_then_by_test_id(suite, monkeypatch) -> None:
    suite.makepyfile(test_match="""
        import os
        import pytest

        F = float(os.environ.get("FACTOR", "1"))

        @pytest.mark.model("shared", ignore_params=["batch_size"])
        @pytest.mark.parametrize("batch_size", [8])
        def test_fast(model_run, batch_size):
            model_run(env={"PERF": str(1000 * F)})

        @pytest.mark.model("shared", ignore_params=["batch_size"])
        @pytest.mark.parametrize("batch_size", [8])
        def test_slow(model_run, batch_size):  # same model, same parameters: told apart by the test id
            model_run(env={"PERF": str(10 * F)})

        @pytest.mark.model("twice")
        def test_two_runs(model_run):  # two runs in one test: matched in order
            model_run(env={"PERF": str(1 * F)})
            model_run(env={"PERF": str(3 * F)})
    """)
    run(suite, "--output", "base.csv").assert_outcomes(passed=3)
    monkeypatch.setenv("FACTOR", "0.95")
    result = run(suite, "--perf-baseline", "base.csv", "--perf-fail-threshold", "10", "--output", "now.csv")
    result.assert_outcomes(passed=3)  # with the wrong rows, fast would be +9400% and slow -99%
    assert {(r["nodeid"].split("::")[1], r["baseline_performance"], r["relative_change"])
            for r in read_csv(suite.path / "now.csv")} == {
        ("test_fast[8]", "1000", "-5"), ("test_slow[8]", "10", "-5"),
        ("test_two_runs", "1", "-5"), ("test_two_runs", "3", "-5")}


def test_a_renamed_test_still_matches_by_model_and_parameters(suite, monkeypatch) -> None:
    suite.makepyfile(test_sweep=SWEEP)
    run(suite, "--output", "base.csv")
    (suite.path / "test_sweep.py").unlink()
    suite.makepyfile(test_renamed=SWEEP.replace("def test_sweep", "def test_sweep_renamed"))
    monkeypatch.setenv("FACTOR", "0.8")
    result = run(suite, "--perf-baseline", "base.csv", "--perf-fail-threshold", "10")
    result.assert_outcomes(failed=2)


def test_a_run_without_a_baseline_row_is_new_and_never_fails(suite, monkeypatch) -> None:
    suite.makepyfile(test_sweep=SWEEP)
    run(suite, "--output", "base.csv")
    suite.makepyfile(test_sweep=SWEEP.replace("BASE = {2: 100.0, 4: 200.0}", "BASE = {2: 100.0, 4: 200.0, 8: 1.0}")
                     .replace("[2, 4]", "[2, 4, 8]"))
    monkeypatch.setenv("FACTOR", "0.1")  # far worse: only the runs that have a baseline can regress
    result = run(suite, "--perf-baseline", "base.csv", "--perf-fail-threshold", "10", "--output", "now.csv")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*: 2 REGRESSED, 1 new", "  8 * 0.1  samples/s * new"])
    new = by_params(suite.path / "now.csv")[8]
    assert (new["perf_status"], new["relative_change"], new["baseline_performance"]) == ("new", "", "")


def test_a_baseline_file_not_there_yet_makes_every_run_new(suite) -> None:
    """A first pipeline has no baseline: the run goes on, every row is new, the header says so."""
    suite.makepyfile(test_sweep=SWEEP)
    result = run(suite, "--perf-baseline", "never-written.csv", "--perf-fail-threshold", "10")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "madcache perf: baseline *never-written.csv (no such file yet; option --perf-baseline); *",
        "*baseline *never-written.csv (option --perf-baseline) does not exist yet: every run is new; *: 2 new",
    ])


def test_a_baseline_that_is_not_a_results_csv_is_a_usage_error_naming_its_source(suite, monkeypatch) -> None:
    suite.makepyfile(test_sweep=SWEEP)
    (suite.path / "notes.csv").write_text("name,value\nx,1\n")
    monkeypatch.setenv("MADCACHE_PERF_BASELINE", "notes.csv")
    result = run(suite)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: invalid value '*notes.csv' for --perf-baseline from environment variable "
                                 "MADCACHE_PERF_BASELINE: *notes.csv is not a results CSV written by --output: no column "
                                 "model, params, performance, metric, status (it has: name, value)"])


@pytest.mark.parametrize("args, env, message", [
    (["--perf-fail-threshold", "ten"], {}, "ERROR: invalid value 'ten' for --perf-fail-threshold from option "
                                           "--perf-fail-threshold: expected a percentage >= 0*"),
    ([], {"MADCACHE_PERF_PLOT": "plot.jpg"}, "ERROR: invalid value 'plot.jpg' for --perf-plot from environment variable "
                                             "MADCACHE_PERF_PLOT: expected a file name ending in .png or .svg"),
    (["--perf-report", "."], {}, "ERROR: invalid value '.' for --perf-report from option --perf-report: * is a directory"),
])
def test_bad_perf_settings_are_usage_errors_naming_value_and_source(suite, monkeypatch, args, env, message) -> None:
    suite.makepyfile(test_sweep=SWEEP)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run(suite, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_bad_perf_keywords_in_the_mark_fail_the_test_naming_it(suite) -> None:
    suite.makepyfile(test_marks="""
        import pytest

        @pytest.mark.model("m", perf_repeats=0)
        def test_repeats(model_run):
            model_run()

        @pytest.mark.model("m", perf_direction="up")
        def test_direction(model_run):
            model_run()
    """)
    result = run(suite)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*test_marks.py::test_repeats: perf_repeats=0 must be a whole number >= 1",
                                 "*test_marks.py::test_direction: perf_direction='up' must be 'higher' or 'lower'*"])


# -- repeats --------------------------------------------------------------------------------------------


def test_repeats_record_the_median_and_the_spread_and_judge_the_change_by_its_interval(suite, monkeypatch) -> None:
    suite.makepyfile(test_rep="""
        import os
        import pytest

        @pytest.mark.model("rep", perf_repeats=3, perf_warmup=1)
        def test_rep(model_run):
            result = model_run(env={"PERF_SEQ": os.environ["SEQ"]})
            assert len(result.samples) == 3  # the measured runs: the warm-up run is discarded
            assert result.performance == sorted(result.samples)[1]  # their median
    """)
    monkeypatch.setenv("SEQ", "1000,19,21,20")
    run(suite, "--output", "base.csv").assert_outcomes(passed=1)
    row = read_csv(suite.path / "base.csv")[0]  # 1000 was the warm-up
    assert (row["performance"], row["performance_min"], row["performance_max"], row["repeats"]) == ("20", "19", "21", "3")
    assert row["samples"] == "19.0,21.0,20.0"

    # Repeats on both sides: Welch's t on the logs.  16 +- 0.5 against 20 +- 1 is 20% lower, surely.
    monkeypatch.setenv("SEQ", "1,16,15.5,16.5")
    result = run(suite, "--perf-baseline", "base.csv", "--perf-fail-threshold", "10", "--output", "now.csv")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["rep (higher is better; median of 3 runs (min-max))",
                                 "  (no parameters)  16.00 (15.50-16.50)  samples/s * 20.00  -20.0% [[]-2*, -1*[]]  REGRESSED",
                                 "*performance regression: rep *-20.0% (higher is better; 95% interval -2*% to -1*%, "
                                 "3 runs each), beyond the threshold of 10%"])
    now = read_csv(suite.path / "now.csv")[0]
    assert now["perf_method"] == "Welch t on logs"
    assert float(now["change_low"]) < float(now["relative_change"]) < float(now["change_high"]) < -10

    # A noisy run whose median is 20% lower, but whose runs spread from 0.5 to 50: not decided, and said so.
    monkeypatch.setenv("SEQ", "1,16,0.5,50")
    result = run(suite, "--perf-baseline", "base.csv", "--perf-fail-threshold", "10", "--output", "now.csv")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*: 1 inconclusive",
                                 "*test_rep: inconclusive: rep [[](no parameters)[]]: *% (95% interval *, 3 runs each) "
                                 "straddles the threshold of 10%; the baseline's repeats are fixed: --perf-ab, which "
                                 "runs the baseline's image beside this one in pairs, may decide it"])
    assert read_csv(suite.path / "now.csv")[0]["perf_status"] == "inconclusive"


# -- the table elsewhere: summary JSON, Markdown, plot ------------------------------------------------------


def test_the_summary_json_and_the_markdown_report_carry_the_table(suite, monkeypatch) -> None:
    suite.makepyfile(test_sweep=SWEEP)
    run(suite, "--output", "base.csv")
    monkeypatch.setenv("FACTOR", "0.8")
    run(suite, "--perf-baseline", "base.csv", "--perf-fail-threshold", "10", "--perf-report", "out/perf.md",
        "--cache-summary-json", "out/summary.json").assert_outcomes(failed=2)
    data = json.loads((suite.path / "out" / "summary.json").read_text())["perf"]
    assert data["regressions"] == 2 and data["threshold"] == 10 and data["counts"] == {"REGRESSED": 2}
    row = data["models"]["bench"][0]
    assert (row["params"], row["performance"], row["baseline"], row["relative_change"], row["status"]) == (
        {"batch_size": 2}, 80.0, 100.0, -20.0, "REGRESSED")
    md = (suite.path / "out" / "perf.md").read_text()
    assert md == data["markdown"]
    assert "| batch_size | performance | metric | baseline | change | status |" in md
    assert "| 2 | 80.00 | samples/s | 100.0 | **-20.0%** | **REGRESSED** |" in md
    assert "- `test_sweep.py::test_sweep[4]`: performance regression: bench [batch_size=4]: 160 samples/s" in md


def test_no_perf_setting_no_table(suite) -> None:
    """Without a perf setting the session says and writes nothing new (the CSV keeps its columns)."""
    suite.makepyfile(test_sweep=SWEEP)
    result = run(suite, "--output", "base.csv", "--cache-summary-json", "s.json")
    result.assert_outcomes(passed=2)
    assert "madcache performance" not in result.stdout.str() and "madcache perf:" not in result.stdout.str()
    assert "perf" not in json.loads((suite.path / "s.json").read_text())
    row = read_csv(suite.path / "base.csv")[0]
    assert (row["relative_change"], row["perf_status"], row["repeats"]) == ("", "", "1")


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".svg", b"<?xml")])
def test_the_plot_shows_each_model_against_its_baseline(suite, monkeypatch, suffix, magic) -> None:
    if matplotlib is None:
        unavailable("matplotlib is not installed (pip install -e '.[plot]')")
    suite.makepyfile(test_sweep=SWEEP)
    run(suite, "--output", "base.csv")
    monkeypatch.setenv("FACTOR", "0.8")
    # in a process of its own (matplotlib and numpy do not survive pytester's in-process module reset),
    # with the plugin this test imported
    package_root = str(Path(pytest_madcache.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--perf-baseline", "base.csv", "--perf-plot", f"perf{suffix}")
    result.stdout.fnmatch_lines([f"performance plot written to *perf{suffix}"])
    data = (suite.path / f"perf{suffix}").read_bytes()
    assert data.startswith(magic) and len(data) > 5000
    if suffix == ".svg":  # text stays text: the title, the axis, the change
        text = data.decode()
        assert "bench (samples/s, higher is better)" in text and "batch_size" in text and "-20.0%" in text


def test_without_matplotlib_the_plot_is_a_warning_and_the_tests_still_pass(suite, monkeypatch) -> None:
    suite.makepyfile(test_sweep=SWEEP)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    result = suite.runpytest_inprocess("-p", "no:cacheprovider", "--perf-plot", "perf.png")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["warning: no performance plot (option --perf-plot asked for *perf.png): matplotlib is "
                                 "not installed (pip install 'pytest-madcache[[]plot[]]')"])
    assert not (suite.path / "perf.png").exists()


# -- pytest-xdist ---------------------------------------------------------------------------------------


def test_under_xdist_workers_fail_regressions_and_the_controller_compares_and_writes_once(suite, monkeypatch) -> None:
    import xdist  # noqa: F401 - the test extra installs it

    suite.makepyfile(test_sweep=SWEEP.replace("[2, 4]", "[2, 4, 8, 16]").replace(
        "BASE = {2: 100.0, 4: 200.0}", "BASE = {2: 100.0, 4: 200.0, 8: 300.0, 16: 400.0}") + """
    def test_workers_make_no_report(request):
        from pytest_madcache.plugin import STATE
        perf = request.config.stash[STATE].perf
        assert perf.is_worker and perf.report() is None  # the controller compares for the table
    """)
    run(suite, "-n", "2", "--output", "base.csv").assert_outcomes(passed=5)
    monkeypatch.setenv("FACTOR", "0.8")
    result = run(suite, "-n", "2", "--perf-baseline", "base.csv", "--perf-fail-threshold", "10", "--output", "now.csv",
                 "--perf-report", "perf.md", "--cache-summary-json", "s.json")
    result.assert_outcomes(passed=1, failed=4)
    out = result.stdout.str()
    assert out.count("= madcache performance =") == 1
    result.stdout.fnmatch_lines(["4 runs against baseline *: 4 REGRESSED", "  16 * 320.0  samples/s * 400.0  -20.0%  REGRESSED",
                                 "performance report written to *perf.md"])
    assert sorted(r["relative_change"] for r in read_csv(suite.path / "now.csv")) == ["-20"] * 4
    assert json.loads((suite.path / "s.json").read_text())["perf"]["regressions"] == 4
    assert (suite.path / "perf.md").read_text().count("| **-20.0%** | **REGRESSED** |") == 4
