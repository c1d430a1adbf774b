"""A newcomer without a running engine: one clear line in the header (the socket tried, where it came
from, how to get an engine), and each model test errors with one short line that refers to it,
instead of the SDK's nested connection error per test."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pytest_madcache.engines.docker import Engine, EngineError, engine_socket
from tests.plugin_helpers import FAKE_HOOKS

SUITE = """
    import pytest

    @pytest.mark.model("m", dockerfile="Dockerfile")
    @pytest.mark.parametrize("i", [1, 2, 3])
    def test_model(model_run, i):
        assert model_run().exit_code == 0

    def test_plain():
        pass
"""


@pytest.fixture
def no_engine(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A suite of three model tests and DOCKER_HOST naming a socket that does not exist."""
    (pytester.path / "Dockerfile").write_text("FROM scratch\n")
    pytester.makepyfile(test_suite=SUITE)
    host = f"unix://{tmp_path / 'nothing-here' / 'docker.sock'}"
    monkeypatch.setenv("DOCKER_HOST", host)
    return host


def setup_errors(result: pytest.RunResult) -> dict:
    """Each erroring test's report in the ERRORS section: test name -> its lines."""
    errors, current = {}, None
    for line in result.outlines:
        if line.startswith("_") and "ERROR at setup of " in line:
            current = line.split("ERROR at setup of ", 1)[1].split(" ")[0]
            errors[current] = []
        elif line.startswith(("=", "_")) or line.startswith("[gw"):
            current = None if line.startswith(("=", "_")) else current
        elif current is not None and line.strip():
            errors[current].append(line)
    return errors


def test_the_header_names_the_socket_and_how_to_get_an_engine(pytester: pytest.Pytester, no_engine: str) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=3)
    header = [line for line in result.outlines if line.startswith("madcache engine:")]
    assert header == [
        f"madcache engine: no Docker engine answers at {no_engine} (from DOCKER_HOST): no such socket. "
        "Start one: install your distribution's docker.io package and run dockerd (as root), or run the "
        "tests under a private engine: python -m pytest_madcache.localengine -- pytest ..."]
    assert "Error while fetching server API version" not in result.stdout.str()
    assert "Connection aborted" not in result.stdout.str()


def test_each_model_test_errors_with_one_line(pytester: pytest.Pytester, no_engine: str) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider")
    errors = setup_errors(result)
    assert sorted(errors) == [f"test_model[{i}]" for i in (1, 2, 3)]
    for name, lines in errors.items():
        assert len(lines) == 1, lines
        assert lines[0] == (
            f"test_suite.py::{name}: no image for model 'm': no Docker engine answers at {no_engine} "
            "(from DOCKER_HOST): no such socket (start one: python -m pytest_madcache.localengine -- pytest ..., "
            'or see "madcache engine:" in the header)')


def test_under_xdist_each_error_still_names_the_way_to_an_engine(pytester: pytest.Pytester, no_engine: str) -> None:
    """Workers print no header: the one line of each error names the command itself."""
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=1, errors=3)
    errors = setup_errors(result)
    assert len(errors) == 3
    for lines in errors.values():
        assert len(lines) == 1 and no_engine in lines[0] and "python -m pytest_madcache.localengine" in lines[0]


def test_builds_and_runs_by_users_hooks_pass_without_an_engine(pytester: pytest.Pytester, no_engine: str) -> None:
    """Only the plugin's own build and run need the engine: a suite whose hooks replace them passes."""
    pytester.makeconftest(FAKE_HOOKS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_the_socket_tried_and_where_it_came_from() -> None:
    assert engine_socket({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}) == \
        "unix:///run/user/1000/docker.sock (from DOCKER_HOST)"
    assert engine_socket({"DOCKER_HOST": "tcp://10.0.0.5:2375"}) == "tcp://10.0.0.5:2375 (from DOCKER_HOST)"
    assert engine_socket({}) == "unix:///var/run/docker.sock (the default socket: DOCKER_HOST is not set)"
    assert engine_socket({"DOCKER_HOST": ""}) == engine_socket({})


def test_a_socket_file_nobody_listens_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead engine's socket file left behind: refused, said as such, in one line."""
    path = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the file stays, nothing listens
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    with pytest.raises(EngineError) as raised:
        Engine()
    assert str(raised.value) == (f"no Docker engine answers at unix://{path} (from DOCKER_HOST): "
                                 "connection refused: nothing listens there")


def test_the_readme_shows_the_header_line_as_printed() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert (f"madcache engine: no Docker engine answers at {engine_socket({})}: no such socket. Start one: "
            "install your distribution's docker.io package and run dockerd (as root), or run the tests under a "
            "private engine: python -m pytest_madcache.localengine -- pytest ...") in readme
