"""`--perf-ab` on a real engine: the baseline's image, gone from the engine, comes back from the cache,
or from the remote cache into a cache directory that never built it, and runs beside the new image.

The model prints `performance: $SPEED samples/s`; the baseline's image has SPEED=100, the new one 80.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.plugin_helpers import read_csv, remove_images, tiny_context

pytestmark = pytest.mark.engine

MODEL = '''
import pytest

@pytest.mark.model("abm", context="model")
def test_ab(model_run):
    assert model_run().ok
'''


@pytest.fixture
def suite(pytester: pytest.Pytester, engine):
    tag = secrets.token_hex(3)
    pytester.makepyfile(test_ab=MODEL)
    yield pytester, tag
    remove_images(engine, "madcache.model=abm")


def _model(pytester: pytest.Pytester, speed: int, tag: str) -> None:
    tiny_context(pytester.path / "model", [f"LABEL test={tag}", f"ENV SPEED={speed}",
                                           'CMD ["sh", "-c", "echo performance: $SPEED samples/s"]'])


def _ab(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--enable-cache", "--perf-baseline=base.csv", "--perf-fail-threshold=5",
                                         "--perf-ab", "--perf-ab-pairs=3", "--output=now.csv", *args)


def _check_pairs(pytester: pytest.Pytester, result: pytest.RunResult) -> None:
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*A/B: the baseline's image * (from cache entry run_*)",
                                 "*A/B: abm: 3 pairs beside the baseline's image *",
                                 "*performance regression: abm *-20.0% (higher is better; 95% interval -20.0% to "
                                 "-20.0%, 3 pairs side by side)*"])
    row = read_csv(pytester.path / "now.csv")[0]
    assert (row["baseline_samples"], row["samples"]) == ("100.0,100.0,100.0", "80.0,80.0,80.0")
    assert row["perf_method"] == "paired t on log ratios"


def test_the_baseline_image_comes_back_from_the_cache(suite, engine, tmp_path: Path) -> None:
    pytester, tag = suite
    cache = tmp_path / "cache"
    _model(pytester, 100, tag)
    pytester.runpytest_subprocess("--enable-cache", f"--cache-dir={cache}", "--output=base.csv").assert_outcomes(
        passed=1)
    remove_images(engine, "madcache.model=abm")  # a fresh runner: only the cache has the baseline's image
    _model(pytester, 80, tag)
    _check_pairs(pytester, _ab(pytester, f"--cache-dir={cache}"))


def test_a_cache_that_never_built_the_baseline_gets_it_from_the_remote(suite, engine, tmp_path: Path) -> None:
    pytester, tag = suite
    remote = f"--cache-remote=file://{tmp_path}/remote"
    _model(pytester, 100, tag)
    pytester.runpytest_subprocess("--enable-cache", f"--cache-dir={tmp_path}/main-runner", remote,
                                  "--output=base.csv").assert_outcomes(passed=1)
    remove_images(engine, "madcache.model=abm")
    _model(pytester, 80, tag)
    _check_pairs(pytester, _ab(pytester, f"--cache-dir={tmp_path}/branch-runner", remote))


def test_the_same_image_runs_once(suite, engine, tmp_path: Path) -> None:
    pytester, tag = suite
    _model(pytester, 100, tag)
    args = ("--enable-cache", f"--cache-dir={tmp_path}/cache")
    pytester.runpytest_subprocess(*args, "--output=base.csv").assert_outcomes(passed=1)
    result = _ab(pytester, *args[1:])
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*A/B: abm: the baseline ran this same image (sha256:*): nothing to run side by "
                                 "side; compared with the baseline's row"])
    assert read_csv(pytester.path / "now.csv")[0]["samples"] == "100.0"
