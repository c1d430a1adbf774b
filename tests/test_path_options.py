"""A value of ours written after a space (`--cache-dir DIR`) that pytest took for a test path.

pytest picks its rootdir and ini file before entry-point plugins add their options
(pytest-dev/pytest#8846): `--cache-dir /elsewhere/cache` is then an unknown flag followed by a
free argument, and once /elsewhere/cache exists (the second run, the one that should hit) it
counts as a test path: the rootdir moves and the project's ini file is not read.  The plugin
stops such a run before collection with one line naming the flag and the `--flag=value` form.
No Docker engine is needed: the suites have no model tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_madcache.pytest_glue import options

USAGE_ERROR = 4

#: The project's test reads the ini file: it passes only when pytest read the project's ini.
TEST = """
def test_reads_the_projects_ini(request):
    assert request.config.getini("madcache_max_entries") == "7"
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch) -> pytest.Pytester:
    """A project whose ini file sets testpaths and a madcache key; the test lives under tests/."""
    for var in ("MADCACHE_DIR", "MADENGINE_CACHE_DIR", "MADCACHE_OUTPUT", "MADCACHE_PERF_BASELINE",
                "MADCACHE_SUMMARY_JSON", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{pytester.path}/no-such-docker.sock")
    pytester.makeini("[pytest]\ntestpaths = tests\nmadcache_max_entries = 7\n")
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_project.py").write_text(TEST)
    return pytester


@pytest.fixture
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the project (a sibling of it under pytest's base temp dir)."""
    return tmp_path_factory.mktemp("elsewhere")


def run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest("-p", "no:cacheprovider", *args)


def assert_stopped_with_one_line(result: pytest.RunResult, flag: str, value: Path, env: str) -> None:
    assert result.ret == USAGE_ERROR
    lines = [line for line in result.stderr.lines if "as a test path" in line]
    assert len(lines) == 1, result.stderr.str()
    line = lines[0]
    assert line.startswith(f"ERROR: pytest took the value of {flag} {value} as a test path and made ")
    assert "the rootdir" in line and "pytest-dev/pytest#8846" in line
    assert f"write {flag}={value} (or set {env}" in line
    assert "collected" not in result.stdout.str() and "passed" not in result.stdout.str()


# the flag, the name of its value under `elsewhere`, the flag's environment variable
SPACE_FORMS = [
    pytest.param("--cache-dir", "cache", "MADCACHE_DIR", id="cache-dir"),
    pytest.param("--perf-baseline", "base.csv", "MADCACHE_PERF_BASELINE", id="perf-baseline"),
    pytest.param("--output", "results.csv", "MADCACHE_OUTPUT", id="output"),
    pytest.param("--cache-summary-json", "summary.json", "MADCACHE_SUMMARY_JSON", id="cache-summary-json"),
]


@pytest.mark.parametrize("flag,name,env", SPACE_FORMS)
def test_the_second_run_stops_before_collection(project, elsewhere, flag, name, env) -> None:
    """Run 1: the path does not exist yet and all is well (the project's ini is read).  Run 2: it
    exists (the run wrote it, or the user's file is there), and the run stops with one line."""
    value = elsewhere / name
    first = run(project, "--enable-cache", flag, str(value))
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines([f"rootdir: {project.path}*"])
    if flag == "--cache-dir":
        value.mkdir(exist_ok=True)
    elif not value.exists():  # --output and --cache-summary-json wrote theirs; the baseline is the user's
        value.write_text("model,performance,metric,status\n")
    second = run(project, "--enable-cache", flag, str(value))
    assert_stopped_with_one_line(second, flag, value, env)
    assert "the project's ini file" in second.stderr.str() and str(project.path / "tox.ini") in second.stderr.str()


@pytest.mark.parametrize("flag,name,env", SPACE_FORMS)
def test_the_equals_form_reads_the_projects_ini(project, elsewhere, flag, name, env) -> None:
    value = elsewhere / name
    made = run(project, f"--output={elsewhere / 'made.csv'}")  # a results CSV for --perf-baseline to read
    made.assert_outcomes(passed=1)
    if flag == "--cache-dir":
        value.mkdir()
    elif flag == "--perf-baseline":
        value.write_bytes((elsewhere / "made.csv").read_bytes())
    else:
        value.write_text("")
    result = run(project, "--enable-cache", f"{flag}={value}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"rootdir: {project.path}*"])


def test_a_value_inside_the_project_moves_nothing(project) -> None:
    """`--output results.csv` where results.csv exists beside the ini file: pytest still picks the
    project's rootdir and ini, so the run goes on (the value is read as the option's, not a test path)."""
    (project.path / "results.csv").write_text("")
    (project.path / "out").mkdir()
    result = run(project, "--output", "results.csv", "--cache-dir", "out")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"rootdir: {project.path}*"])


def test_an_explicit_test_path_first_keeps_the_projects_ini(project, elsewhere) -> None:
    """pytest looks for an ini file from each test path in turn: with `tests` before the value the
    project's ini is found, the rootdir is right, and nothing is said."""
    (elsewhere / "cache").mkdir()
    result = run(project, "tests", "--enable-cache", "--cache-dir", str(elsewhere / "cache"))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"rootdir: {project.path}*"])


def test_a_value_from_pytest_addopts_counts_too(project, elsewhere, monkeypatch) -> None:
    (elsewhere / "cache").mkdir()
    monkeypatch.setenv("PYTEST_ADDOPTS", f"--cache-dir {elsewhere / 'cache'}")
    assert_stopped_with_one_line(run(project), "--cache-dir", elsewhere / "cache", "MADCACHE_DIR")


def test_the_fallback_rule_when_pytests_own_function_is_unusable(project, elsewhere, monkeypatch) -> None:
    """Should pytest's private determine_setup move or change, a looser rule of our own decides:
    the value lies outside where pytest ran, the rootdir holds it, and no ini file at or above
    where pytest ran was read."""

    def moved(*args, **kwargs):
        raise ImportError("moved")

    monkeypatch.setattr(options, "_pytest_setup", moved)
    (elsewhere / "cache").mkdir()
    stopped = run(project, "--cache-dir", str(elsewhere / "cache"))
    assert_stopped_with_one_line(stopped, "--cache-dir", elsewhere / "cache", "MADCACHE_DIR")
    assert "so the project's ini file was not read" in stopped.stderr.str()
    (project.path / "out").mkdir()
    run(project, "--cache-dir", "out").assert_outcomes(passed=1)
    run(project, "tests", "--cache-dir", str(elsewhere / "cache")).assert_outcomes(passed=1)


def test_in_a_fresh_process_with_the_entry_point(project, elsewhere) -> None:
    """As a user runs it: a new interpreter, the plugin loaded by its entry point."""
    (elsewhere / "cache").mkdir()
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--enable-cache", "--cache-dir",
                                          str(elsewhere / "cache"))
    assert_stopped_with_one_line(result, "--cache-dir", elsewhere / "cache", "MADCACHE_DIR")
