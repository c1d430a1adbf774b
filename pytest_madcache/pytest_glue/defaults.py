"""The plugin's own implementations of its hooks: build with the engine, run a container, find the
image a baseline ran.  `trylast`, so a conftest's or another plugin's implementation wins; registered
by plugin.py as a plugin of its own, so the fixtures can tell a suite's builder from this one
(`obtain._custom_build`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, Optional

import pytest

from pytest_madcache.pytest_glue.state import get_state

if TYPE_CHECKING:  # loaded when a test first builds or runs (a suite without models never does)
    from pytest_madcache.core.images import BuildResult
    from pytest_madcache.core.model import ModelSpec
    from pytest_madcache.core.run import RunOptions, RunResult
    from pytest_madcache.provide import ModelImage

__all__ = ["pytest_madcache_build_image", "pytest_madcache_run_model", "pytest_madcache_baseline_image"]


@pytest.hookimpl(trylast=True)
def pytest_madcache_build_image(config: pytest.Config, model: ModelSpec, tag: str, build_args: Mapping[str, str],
                                labels: Mapping[str, str], on_line: Optional[Callable[[str], None]]) -> BuildResult:
    from pytest_madcache.provide import build_with_engine

    service = get_state(config).service
    return build_with_engine(service.engine, model, tag, build_args, labels, on_line, tmp_dir=service.build_tmp_dir())


@pytest.hookimpl(trylast=True)
def pytest_madcache_run_model(config: pytest.Config, image: ModelImage, options: RunOptions,
                              on_line: Optional[Callable[[str], None]]) -> RunResult:
    from pytest_madcache.engines.runner import run_container

    return run_container(get_state(config).service.engine.client, image.image_id, options, on_line)


@pytest.hookimpl(trylast=True)
def pytest_madcache_baseline_image(config: pytest.Config, image: ModelImage, key: str,
                                   image_id: str) -> Optional[ModelImage]:
    return get_state(config).service.baseline_image(image, key, image_id)
