"""--cache-summary-json / MADCACHE_SUMMARY_JSON: the session's exact cache counts as a file.

The CI integrations (the GitHub Action's job summary) read it instead of guessing
hits and misses from the entries' usage times.
"""

from __future__ import annotations

import json

import pytest

from pytest_madcache.core.events import ImageEvent, MessageEvent, WarningEvent, from_wire, to_wire
from pytest_madcache.pytest_glue.summary import Summary, run_row
from tests.plugin_helpers import FAKE_HOOKS

SUITE = """
    import pytest

    @pytest.mark.model("one")
    def test_run(model_run):
        assert model_run().performance == 12.5
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(FAKE_HOOKS)
    (pytester.path / "Dockerfile").write_text("FROM scratch\n")
    pytester.makepyfile(SUITE)
    return pytester


def test_option_writes_the_counts(suite: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.delenv("MADCACHE_SUMMARY_JSON", raising=False)
    result = suite.runpytest("-p", "no:cacheprovider", "--cache-summary-json", "out/summary.json")
    result.assert_outcomes(passed=1)
    data = json.loads((suite.path / "out" / "summary.json").read_text())
    assert data["enabled"] is False
    assert (data["hits"], data["misses"], data["builds"], data["bytes_loaded"]) == (0, 0, 1, 0)
    assert data["build_seconds"] == 0.25 and data["build_time_saved_seconds"] == 0
    assert data["entries_hit"] == [] and data["entries_saved"] == []


def test_environment_variable_writes_it_too(suite: pytest.Pytester, monkeypatch, tmp_path) -> None:
    target = tmp_path / "env-summary.json"
    monkeypatch.setenv("MADCACHE_SUMMARY_JSON", str(target))
    suite.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert json.loads(target.read_text())["builds"] == 1


def test_no_file_unless_asked(suite: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.delenv("MADCACHE_SUMMARY_JSON", raising=False)
    suite.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert not list(suite.path.rglob("*.json"))


def test_counts_from_events() -> None:
    s = Summary(enabled=True)
    s.add(ImageEvent("m", cached=True, hit=True, cache_id="run_1_aa", how="delta",
                     bytes_loaded=1000, load_seconds=0.5, entry_build_seconds=30.0))
    s.add(ImageEvent("m", cached=True, hit=True, cache_id="run_2_bb", how="present",
                     bytes_loaded=0, load_seconds=0.0, entry_build_seconds=10.0))
    s.add(ImageEvent("m", cached=True, hit=False, built=True, build_seconds=4.0, cache_id="run_3_cc"))
    s.add(ImageEvent("m", reused=True))
    data = s.as_dict()
    assert (data["hits"], data["misses"], data["present"], data["builds"], data["reused"]) == (2, 1, 1, 1, 1)
    assert data["bytes_loaded"] == 1000 and data["build_time_saved_seconds"] == 40.0
    assert data["entries_hit"] == ["run_1_aa", "run_2_bb"] and data["entries_saved"] == ["run_3_cc"]


def test_xdist_controller_writes_the_totals(pytester: pytest.Pytester, monkeypatch) -> None:
    import xdist  # noqa: F401 - the test extra installs it
    monkeypatch.delenv("MADCACHE_SUMMARY_JSON", raising=False)
    pytester.makeconftest(FAKE_HOOKS)
    (pytester.path / "Dockerfile").write_text("FROM scratch\n")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.model("a")
        def test_a(model_run):
            model_run()

        @pytest.mark.model("b")
        def test_b(model_run):
            model_run()
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-n", "2", "--cache-summary-json", "s.json")
    result.assert_outcomes(passed=2)
    assert json.loads((pytester.path / "s.json").read_text())["builds"] == 2


@pytest.mark.parametrize("event", [
    ImageEvent("m", key="k", cached=True, hit=True, engine="Docker 26", cache_id="run_1_aa", how="full",
               bytes_loaded=5, load_seconds=0.25, entry_build_seconds=3.0, waited=0.5, fetched_bytes=7),
    run_row(model="m", tags=["a", "b"], params={"bs": 4}, dockerfile="D", image="i:t", image_id="sha256:x",
            performance=1.5, metric="samples/s", status="SUCCESS", build_duration=None, duration=0.5,
            cache_hit=True, cache_id=None, nodeid="t.py::x", seq_time=1.0),
    MessageEvent("Cache hit!"), WarningEvent("the disk is full"),
])
def test_events_cross_to_the_xdist_controller_unchanged(event) -> None:
    """Workers send events as plain JSON-like dicts; the controller gets the same typed value back."""
    wire = json.loads(json.dumps(to_wire(event, "w1-3")))
    assert from_wire(wire) == ("w1-3", event)
