"""The performance history: the default branch's last N runs, kept beside the baseline in a file and
in the remote, added to by `--perf-record`, printed by `madcache perf history`, drawn by `--perf-plot`.

The runs are faked as in test_plugin_perf.py (PERF from the container environment, FACTOR scaling the
sweep), so every figure is exact.  The remote is a directory remote here and a real registry (Debian's
docker-registry) in the last test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import pytest_madcache
from pytest_madcache.perf.compare import PerfReport, build_report
from pytest_madcache.perf.history import (
    History,
    HistoryError,
    HistoryFile,
    HistoryRun,
    Point,
    decode,
    encode,
    gather,
    record,
)
from tests.needs import unavailable
from tests.test_plugin_perf import SWEEP, matplotlib, run, suite  # noqa: F401 - suite is a fixture

SWEEP3 = SWEEP.replace("[2, 4]", "[1, 16, 64]").replace("BASE = {2: 100.0, 4: 200.0}",
                                                        "BASE = {1: 100.0, 16: 1000.0, 64: 2000.0}")


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MADCACHE_")}
    return subprocess.run([sys.executable, "-m", "pytest_madcache.cli", *args], env={**base, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def history_env(suite, monkeypatch, tmp_path):
    monkeypatch.setenv("MADCACHE_DIR", str(tmp_path / "cache"))
    for var in ("MADCACHE_PERF_RECORD", "MADCACHE_PERF_HISTORY", "MADCACHE_PERF_HISTORY_SIZE", "MADCACHE_REMOTE",
                "GITHUB_SHA", "CI_COMMIT_SHA"):
        monkeypatch.delenv(var, raising=False)
    suite.makepyfile(test_sweep=SWEEP3)
    return tmp_path / "cache" / "perf" / "history.json"


def test_each_recorded_session_adds_one_run_and_the_command_prints_them(suite, history_env, monkeypatch) -> None:
    for factor in ("1", "1.1", "0.9"):
        monkeypatch.setenv("FACTOR", factor)
        result = run(suite, "--perf-record")
        result.assert_outcomes(passed=3)
        result.stdout.fnmatch_lines(["performance history: this run recorded as run_*; * of at most 20 runs kept in "
                                     f"{history_env} (* B)"])
    history = HistoryFile(history_env).read()
    assert [[p.performance for p in r.points] for r in history.runs] == [
        [100.0, 1000.0, 2000.0], pytest.approx([110.0, 1100.0, 2200.0]), [90.0, 900.0, 1800.0]]
    shown = cli("perf", "history", "bench", env={"MADCACHE_DIR": str(history_env.parents[1])})
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"Performance history: 3 runs (at most 20, default), oldest first; {history_env}")
    assert lines[2] == "bench (samples/s, higher is better)"
    assert lines[3].split() == ["run", "date", "commit", "batch_size=1", "batch_size=16", "batch_size=64"]
    assert [line.split()[-3:] for line in lines[4:]] == [["100.0", "1000.0", "2000.0"], ["110.0", "1100.0", "2200.0"],
                                                        ["90.00", "900.0", "1800.0"]]
    missing = cli("perf", "history", "nosuch", env={"MADCACHE_DIR": str(history_env.parents[1])})
    assert missing.returncode == 1 and "no run of model 'nosuch' in the performance history (models: bench)" in \
        missing.stderr


def test_the_history_keeps_the_newest_n_runs(suite, history_env, monkeypatch) -> None:
    monkeypatch.setenv("MADCACHE_PERF_HISTORY_SIZE", "2")
    for factor in ("1", "2", "3"):
        monkeypatch.setenv("FACTOR", factor)
        run(suite, "--perf-record").stdout.fnmatch_lines(["*of at most 2 runs kept in*"])
    assert [r.points[0].performance for r in HistoryFile(history_env).read().runs] == [200.0, 300.0]


def test_without_perf_record_or_when_the_session_fails_nothing_is_recorded(suite, history_env) -> None:
    run(suite).assert_outcomes(passed=3)
    assert not history_env.exists()
    suite.makepyfile(test_broken="def test_broken():\n    assert False\n")
    result = run(suite, "--perf-record")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["performance history: this session is not recorded (it failed: exit status 1; "
                                 "option --perf-record asked for it)"])
    assert not history_env.exists()


@pytest.mark.parametrize("args, env, message", [
    (["--perf-history-size", "0"], {}, "invalid value '0' for --perf-history-size from option --perf-history-size: "
                                       "expected a whole number >= 1"),
    ([], {"MADCACHE_PERF_HISTORY_SIZE": "lots"}, "invalid value 'lots' for --perf-history-size from environment "
                                                 "variable MADCACHE_PERF_HISTORY_SIZE"),
    (["--perf-history", "."], {}, "invalid value '.' for --perf-history from option --perf-history: * is a directory"),
    ([], {"MADCACHE_PERF_RECORD": "maybe"}, "invalid value 'maybe' for --perf-record from environment variable "
                                             "MADCACHE_PERF_RECORD*"),
])
def test_bad_history_settings_are_usage_errors_naming_value_and_source(suite, history_env, monkeypatch, args, env,
                                                                        message) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run(suite, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_a_file_that_is_not_a_history_is_kept_and_said(suite, history_env) -> None:
    history_env.parent.mkdir(parents=True)
    history_env.write_text("my notes, not a history")
    result = run(suite, "--perf-record")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([f"warning: the performance history is not recorded: {history_env}: not a "
                                 "performance history*"])
    assert history_env.read_text() == "my notes, not a history"  # nothing lost


def test_under_xdist_the_controller_records_once(suite, history_env) -> None:
    import xdist  # noqa: F401 - the test extra installs it

    run(suite, "-n", "2", "--perf-record").assert_outcomes(passed=3)
    runs = HistoryFile(history_env).read().runs
    assert len(runs) == 1 and len(runs[0].points) == 3


def test_a_remote_directory_carries_the_history_to_another_cache_directory(suite, history_env, monkeypatch,
                                                                          tmp_path) -> None:
    remote = tmp_path / "shared"
    monkeypatch.setenv("MADCACHE_REMOTE", f"file://{remote}")
    run(suite, "--perf-record").stdout.fnmatch_lines([f"*kept in {history_env} (* B) and remote file://{remote} (* B)"])
    monkeypatch.setenv("MADCACHE_DIR", str(tmp_path / "other-runner"))  # another runner, same remote
    monkeypatch.setenv("FACTOR", "1.1")
    run(suite, "--perf-record").stdout.fnmatch_lines(["*this run recorded as run_*; 2 of at most 20 runs kept in*"])
    shown = cli("perf", "history", "--json", env={"MADCACHE_DIR": str(tmp_path / "third"),
                                                 "MADCACHE_REMOTE": f"file://{remote}"})
    assert [r["points"][0]["performance"] for r in json.loads(shown.stdout)["runs"]] == pytest.approx([100.0, 110.0])


def test_the_plot_draws_the_history_beside_the_bars(suite, history_env, monkeypatch) -> None:
    if matplotlib is None:
        unavailable("matplotlib is not installed (pip install -e '.[plot]')")
    for factor in ("1", "1.05", "0.95"):
        monkeypatch.setenv("FACTOR", factor)
        run(suite, "--perf-record")
    package_root = str(Path(pytest_madcache.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--perf-plot", "perf.svg")
    result.stdout.fnmatch_lines(["performance plot written to *perf.svg (with 3 earlier runs of the history)"])
    text = (suite.path / "perf.svg").read_text()
    assert "bench: the last 3 recorded runs and this one" in text and "this run" in text
    assert "batch_size=16" in text  # the legend: one line per batch size


def test_recording_and_plotting_read_the_remote_once(suite, history_env, monkeypatch, tmp_path) -> None:
    """The plot draws the history the record just merged: no second trip to the remote."""
    from pytest_madcache.remote.documents import DirectoryDocuments

    reads = []
    original = DirectoryDocuments.get_document
    monkeypatch.setattr(DirectoryDocuments, "get_document", lambda self, name: reads.append(name) or original(self, name))
    monkeypatch.setenv("MADCACHE_REMOTE", f"file://{tmp_path / 'shared'}")
    run(suite, "--perf-record")
    reads.clear()
    result = run(suite, "--perf-record", "--perf-plot", "perf.svg")
    assert reads == ["perf-history"]
    result.stdout.fnmatch_lines(["*this run recorded as run_*; 2 of at most 20 runs kept in*"])
    if matplotlib is not None:
        result.stdout.fnmatch_lines(["performance plot written to *perf.svg (with 1 earlier runs of the history)"])
    reads.clear()
    run(suite, "--perf-plot", "perf.svg")  # not recorded: the plot reads both copies itself
    assert reads == ["perf-history"]


# -- the history on its own ----------------------------------------------------------------------------


def _run(i: int, value: float) -> HistoryRun:
    return HistoryRun(id=f"run_{1000 + i}_0000000{i}", time=1000.0 + i,
                      points=(Point("m", '{"batch_size":1}', value, "samples/s", "higher"),))


def test_copies_merge_by_run_id_keep_the_newest_and_survive_the_round_trip() -> None:
    a, b = History((_run(1, 1.0), _run(3, 3.0))), History((_run(2, 2.0), _run(3, 3.0)))
    merged = a.merged(b)
    assert [r.id for r in merged.runs] == ["run_1001_00000001", "run_1002_00000002", "run_1003_00000003"]
    assert [r.id for r in merged.last(2).runs] == ["run_1002_00000002", "run_1003_00000003"]
    assert decode(encode(merged), "here") == merged
    with pytest.raises(HistoryError, match="there: not a performance history of format 1"):
        decode(b'{"format": 9}', "there")


def test_a_session_turned_into_a_run_keeps_its_interval_in_its_own_units() -> None:
    from pytest_madcache.perf.compare import Comparison
    from pytest_madcache.perf.history import run_from_report

    ab = Comparison(model="m", params={"batch_size": 16}, nodeid="t", seq_time=0.0, metric="samples/s",
                    performance=90.0, samples=(89.0, 90.0, 91.0), direction="higher", threshold=5.0,
                    status="REGRESSED", baseline=100.0, change=-10.0, low_change=-12.0, high_change=-8.0,
                    method="paired t on log ratios", pairs=3)
    none = Comparison(model="m", params={"batch_size": 1}, nodeid="u", seq_time=1.0, metric="samples/s",
                      performance=None, samples=(), direction="higher", threshold=None, status="no result")
    run_ = run_from_report(PerfReport(comparisons=(ab, none)), "run_1_00000000", 1.0)
    assert [(p.params, p.performance, p.low, p.high, p.samples) for p in run_.points] == [
        ('{"batch_size": 16}', 90.0, 88.0, 92.0, 3)]  # the baseline's 100 moved by -12% and -8%; no result left out
    assert build_report((), None).comparisons == ()


def test_two_sessions_recording_at_once_keep_both_runs(tmp_path) -> None:
    local = HistoryFile(tmp_path / "history.json")
    threads = [threading.Thread(target=record, args=(local, None, "", _run(i, float(i)), 20)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(local.read().runs) == 8


def test_a_registry_keeps_the_history_as_an_artifact_outside_the_entries(registry, tmp_path) -> None:
    from pytest_madcache.remote import open_remote
    from pytest_madcache.remote.documents import documents_of

    remote = open_remote(f"{registry}/history-{os.getpid()}")
    docs = documents_of(remote)
    assert docs.get_document("perf-history") is None
    outcome = record(HistoryFile(tmp_path / "a.json"), docs, "the registry", _run(1, 1.0), 20)
    assert outcome.problems == [] and outcome.remote_bytes > 0
    record(HistoryFile(tmp_path / "b.json"), docs, "the registry", _run(2, 2.0), 20)  # another runner
    seen = gather(HistoryFile(tmp_path / "c.json"), docs, "the registry", 20)
    assert [r.id for r in seen.history.runs] == ["run_1001_00000001", "run_1002_00000002"]
    assert remote.entries() == []  # listing and pruning see entries only
