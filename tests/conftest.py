"""Shared fixtures: a real Docker engine and small test images built FROM scratch.

The engine is the one DOCKER_HOST (or the default socket) points at; when
none answers, a private dockerd is installed and started for the session.
Under CI=true a missing engine fails the tests; elsewhere they are skipped
with the reason.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pytest

from tests.images import ImageFactory

pytest_plugins = ["pytester"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    from pytest_madcache.localengine import EngineUnavailable, ensure_engine

    stack = contextlib.ExitStack()
    try:
        host = stack.enter_context(ensure_engine())
    except EngineUnavailable as exc:
        message = f"no Docker engine for the real-engine tests: {exc}"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
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
    from pytest_madcache.engine import Engine

    return Engine()


@pytest.fixture
def images(engine, tmp_path_factory) -> Iterator[ImageFactory]:
    factory = ImageFactory(engine, tmp_path_factory.mktemp("images"))
    yield factory
    factory.cleanup()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"
