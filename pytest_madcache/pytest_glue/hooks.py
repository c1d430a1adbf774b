"""Hook specifications of pytest-madcache, registered in `pytest_addhooks`.

They let a suite add what decides its image (key material) and replace how
images are built or models are run (a remote builder, a cluster launcher, a
fake for tests).  The plugin's own implementations are `trylast`, so any
implementation in a conftest or plugin is called first and, for the
firstresult hooks, wins by returning something other than None.

Hookspecs only: nothing here runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Union

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from pytest_madcache.core.images import BuildResult
    from pytest_madcache.core.model import ModelSpec
    from pytest_madcache.core.run import RunOptions, RunResult


@pytest.hookspec()
def pytest_madcache_key_material(item: pytest.Item, model: "ModelSpec") -> Optional[Mapping[str, Any]]:
    """Return extra values that decide the image of `item` (e.g. a base image digest).

    Every implementation is called; the returned dicts are merged (values
    must be JSON-like) and join the cache key under ``params.key_material``.
    Return None to add nothing.
    """


@pytest.hookspec(firstresult=True)
def pytest_madcache_build_image(
    config: pytest.Config,
    model: "ModelSpec",
    tag: str,
    build_args: Mapping[str, str],
    labels: Mapping[str, str],
    on_line: Optional[Callable[[str], None]],
) -> "Optional[Union[BuildResult, str]]":
    """Build the image of `model` tagged `tag`; return a BuildResult or an image id.

    Called only when an image must be built (a cache miss, `--force-rebuild`,
    or with the cache disabled).  The image must exist in the engine the
    plugin uses (DOCKER_HOST) when the cache is enabled, since it is saved
    from there.  Raise `pytest_madcache.BuildFailed` to report a
    failed build with its log.  Stops at the first non-None result.
    """


@pytest.hookspec(firstresult=True)
def pytest_madcache_run_model(
    config: pytest.Config,
    image: Any,
    options: "RunOptions",
    on_line: Optional[Callable[[str], None]],
) -> "Optional[RunResult]":
    """Run the model in `image` (a `ModelImage`) with `options`; return a RunResult.

    `on_line` is set with `--live-output`: call it with each line of output
    as it comes.  With `--keep-alive`, `options.keep_alive` is set: leave the
    container running and return its id in `RunResult.container_id` (the
    plugin then says how to enter it and lists it in the summary).  Stops at
    the first non-None result.
    """


@pytest.hookspec(firstresult=True)
def pytest_madcache_baseline_image(config: pytest.Config, image: Any, key: str, image_id: str) -> Optional[Any]:
    """With `--perf-ab`: the image the baseline row ran, to run beside `image` (this test's `ModelImage`).

    `key` and `image_id` are the baseline row's `cache_key` and `docker_sha`.  Return a `ModelImage`
    (`dataclasses.replace(image, image_id=..., key=...)`), or None when it cannot be had: the run is
    then compared with the row, as without `--perf-ab`.  The plugin's own implementation runs last:
    the engine's copy when it still has the image, else the cache, else the remote cache.
    """
