"""Shared fixtures: a real Docker engine and small test images built FROM scratch.

The engine is the one DOCKER_HOST (or the default socket) points at; when
none answers, a private engine is installed and started for the session.
Under pytest-xdist every worker starts a private engine of its own.  The kind
of a private engine follows MADCACHE_ENGINE_KIND (debian12 by default; see
pytest_madcache.devtools.localengine.ENGINE_KINDS), which `python -m
pytest_madcache.localengine --engine KIND -- pytest ...` sets.  Under CI=true
a missing engine fails the tests; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pytest

from tests.images import ImageFactory
from tests.needs import unavailable

pytest_plugins = ["pytester"]


# The fixtures that talk to a real engine.  A test that asks for one (directly or through another
# fixture) must carry the `engine` mark, so scripts/test_matrix.sh runs it on every engine kind;
# a test with the mark must ask for one, or start engines of its own (`own_engines`), so no test
# runs four times for nothing.  Checked before -m deselects anything, so every run checks every test.
REAL_ENGINE_FIXTURES = frozenset({"docker_host", "engine", "images", "second_engine"})


def engine_mark_errors(items) -> dict:
    """Test node id -> why its `engine` mark disagrees with the fixtures it asks for."""
    errors = {}
    for item in items:
        used = sorted(REAL_ENGINE_FIXTURES.intersection(getattr(item, "fixturenames", ())))
        marked = item.get_closest_marker("engine") is not None
        if used and not marked:
            errors[item.nodeid] = (f"{item.nodeid}: uses the real-engine fixture(s) {', '.join(used)} "
                                   "without the `engine` mark (it would run on one engine kind only)")
        elif marked and not used and item.get_closest_marker("own_engines") is None:
            errors[item.nodeid] = (f"{item.nodeid}: has the `engine` mark but uses no real-engine fixture "
                                   f"({', '.join(sorted(REAL_ENGINE_FIXTURES))}) and starts no engine "
                                   "(`own_engines`): it would run once per engine kind for nothing")
    return errors


_MARK_ERROR = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    errors = engine_mark_errors(items)
    if not errors:
        return
    if not hasattr(config, "workerinput"):  # not an xdist worker (its env var leaks into subprocesses)
        raise pytest.UsageError("the engine mark and the real-engine fixtures disagree:\n  "
                                + "\n  ".join(errors.values()))
    # An xdist worker cannot stop collection without an INTERNALERROR: each such test errors instead.
    for item in items:
        if item.nodeid in errors:
            item.stash[_MARK_ERROR] = errors[item.nodeid]


def pytest_runtest_setup(item):
    error = item.stash.get(_MARK_ERROR, None)
    if error:
        pytest.fail(error, pytrace=False)


def _engine_kind() -> str:
    """The kind of private engine to start: $MADCACHE_ENGINE_KIND, else debian12."""
    from pytest_madcache.devtools.localengine import ENGINE_KINDS

    kind = os.environ.get("MADCACHE_ENGINE_KIND", "").strip() or "debian12"
    if kind not in ENGINE_KINDS:
        pytest.fail(f"MADCACHE_ENGINE_KIND={kind!r} is not an engine kind; valid kinds: {', '.join(ENGINE_KINDS)}",
                    pytrace=False)
    return kind


def _worker_engine(stack: contextlib.ExitStack, kind: str) -> str:
    """Under pytest-xdist each worker gets a private engine of its own.

    Tests remove images (with their parents) to act like a fresh runner;
    on an engine shared by two workers that races the other worker's builds,
    which use the same busybox parent images as build cache ("unknown parent
    image ID").  Within one worker tests run one at a time.
    """
    from pytest_madcache.devtools.localengine import _missing_packages, ensure_engine, install_packages, private_engine

    if os.geteuid() != 0:  # no private engine without root: share the one there is
        return stack.enter_context(ensure_engine(kind=kind))
    install_packages(_missing_packages(kind))
    return stack.enter_context(private_engine(kind=kind))


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    from pytest_madcache.devtools.localengine import EngineUnavailable, ensure_engine

    kind = _engine_kind()
    stack = contextlib.ExitStack()
    try:
        if os.environ.get("PYTEST_XDIST_WORKER"):
            host = _worker_engine(stack, kind)
        else:  # the engine in DOCKER_HOST when one answers, else a private one of `kind`
            host = stack.enter_context(ensure_engine(kind=kind))
    except EngineUnavailable as exc:
        unavailable(f"no Docker engine for the real-engine tests: {exc}")
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = host
    try:
        yield host
    finally:
        if old is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = old
        stack.close()


@pytest.fixture(scope="session")
def engine(docker_host: str):
    from pytest_madcache.engines.docker import Engine

    return Engine()


@pytest.fixture
def images(engine, tmp_path_factory) -> Iterator[ImageFactory]:
    factory = ImageFactory(engine, tmp_path_factory.mktemp("images"))
    yield factory
    factory.cleanup()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def registry_factory(tmp_path_factory):
    """Start CNCF distribution servers (Debian's docker-registry) on loopback."""
    import shutil
    import subprocess
    import time

    import requests

    from pytest_madcache.devtools.localengine import EngineUnavailable, install_packages

    if not shutil.which("docker-registry"):
        try:
            install_packages(["docker-registry"])
        except EngineUnavailable as exc:
            unavailable(f"no docker-registry for the remote-cache tests: {exc}")
    procs = []

    def start(extra_config: str = "") -> str:
        port = _free_port()
        root = tmp_path_factory.mktemp("registry")
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage:\n  filesystem: {{rootdirectory: {root / 'data'}}}\n  delete: {{enabled: true}}\n"
            f"http: {{addr: '127.0.0.1:{port}'}}\n" + extra_config
        )
        log = open(root / "registry.log", "wb")
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        procs.append((proc, log))
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code in (200, 401):
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not start: {(root / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.1)
        return f"127.0.0.1:{port}"

    yield start
    for proc, log in procs:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def registry(registry_factory) -> str:
    """host:port of a plain-HTTP registry on loopback."""
    return registry_factory()


@pytest.fixture(scope="session")
def second_engine(docker_host):
    """Another machine's engine: a second private engine (of the session's kind) with its own data root."""
    import docker

    from pytest_madcache.engines.docker import Engine
    from pytest_madcache.devtools.localengine import EngineUnavailable, private_engine

    stack = contextlib.ExitStack()
    try:
        host = stack.enter_context(private_engine(kind=_engine_kind()))
    except EngineUnavailable as exc:
        unavailable(f"cannot start a second engine: {exc}")
    try:
        yield Engine(client=docker.DockerClient(base_url=host, timeout=600))
    finally:
        stack.close()
