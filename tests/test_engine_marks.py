"""The collection-time check of tests/conftest.py: a test that asks for a real-engine fixture
without the `engine` mark, or has the mark and asks for none (and starts no engine), stops the run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CONFTEST = """
import pytest
from tests.conftest import pytest_collection_modifyitems, pytest_runtest_setup  # the check under test

@pytest.fixture
def engine():
    return "a stand-in: no engine is started here"

@pytest.fixture
def images(engine):
    return engine
"""

SUITE = """
import pytest

def test_unmarked_through_a_fixture(images):
    pass

@pytest.mark.engine
def test_marked_without_an_engine():
    pass

@pytest.mark.engine
def test_marked_and_using_it(engine):
    pass

@pytest.mark.engine
@pytest.mark.own_engines
def test_starting_engines_of_its_own():
    pass

def test_no_engine_at_all():
    pass
"""


@pytest.fixture
def suite(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    engine: e\n    own_engines: o\n")
    pytester.makepyfile(test_suite=SUITE)
    return pytester


@pytest.mark.parametrize("select", [[], ["-m", "engine"], ["-m", "not engine"]])
def test_a_disagreeing_test_stops_collection_whatever_is_selected(suite, select):
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", *select)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    err = result.stderr.str()
    assert "test_suite.py::test_unmarked_through_a_fixture: uses the real-engine fixture(s) engine, images " \
           "without the `engine` mark" in err
    assert "test_suite.py::test_marked_without_an_engine: has the `engine` mark but uses no real-engine" in err
    for fine in ("test_marked_and_using_it", "test_starting_engines_of_its_own", "test_no_engine_at_all"):
        assert fine not in err


def test_under_xdist_each_disagreeing_test_errors(suite):
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=3, errors=2)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
