"""The pytest11 entry point (`-p no:madcache` turns it off), thin as pytest-xdist's plugin.py: the
options and hookspecs, the session's state made at configure, the header lines; the rest lives in
`pytest_glue/`: the session plugin (`session.py`), the fixtures (`fixtures.py`), the plugin's own
hook implementations (`defaults.py`), the summary, the options and the hookspecs.

Settings come from `options.read_config` (over `settings.resolve`: one precedence for CLI, plugin and
API); images from `provide.ImageService`.  Under pytest-xdist the controller resolves the settings once
and hands them to the workers (`workerinput`); workers send their events back inside each report's
`user_properties`, so the controller aggregates one summary and one CSV.  Nothing here imports the
Docker SDK: a suite without models never pays for it.
"""

from __future__ import annotations

from typing import List

import pytest

from pytest_madcache.core.marks import MARK_HELP
from pytest_madcache.core.settings import describe
from pytest_madcache.pytest_glue import defaults, hooks
from pytest_madcache.pytest_glue.fixtures import model_image, model_run
from pytest_madcache.pytest_glue.options import add_options, check_path_options
from pytest_madcache.pytest_glue.session import SessionPlugin, WorkerPrefetch, prefetching
from pytest_madcache.pytest_glue.state import STATE, MadcacheWarning, resolve_state

__all__ = ["MadcacheWarning", "STATE", "model_image", "model_run"]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    check_path_options(config)  # a path option written with a space that moved the rootdir (pytest#8846)
    config.addinivalue_line("markers", MARK_HELP)
    state = resolve_state(config)
    if state.from_cache:
        from pytest_madcache.store import EntryNotFound, Store, StoreError

        try:
            store = Store.from_settings(state.settings)
            state.from_cache_entry = store.get(state.from_cache)
        except EntryNotFound as exc:
            raise pytest.UsageError(f"--from-cache: {exc}") from None
        except StoreError as exc:
            raise pytest.UsageError(f"--from-cache {state.from_cache}: cannot read the cache: {exc}") from None
    if not state.is_worker:
        state.perf.baseline()  # a baseline that is not a results CSV stops the run here
    config.stash[STATE] = state
    config.pluginmanager.register(SessionPlugin(config), "madcache-session")
    if state.is_worker and prefetching(state, config):
        config.pluginmanager.register(WorkerPrefetch(config), "madcache-worker-prefetch")
    config.pluginmanager.register(defaults, "madcache-defaults")
    config.pluginmanager.register(state.perf, "madcache-perf")


def pytest_report_header(config: pytest.Config) -> List[str]:
    state = config.stash.get(STATE, None)
    if state is None:
        return []
    s = state.settings
    if state.from_cache:
        return [f"madcache: running from cache entry {state.from_cache} ({describe(s, ('dir',))})"]
    if not s.enabled:
        return ["madcache: cache disabled (--enable-cache to use it)"]
    return [f"madcache: cache enabled ({s.source('enabled')}); {describe(s)}"]


def pytest_report_collectionfinish(config: pytest.Config, items: List[pytest.Item]) -> List[str]:
    """Which engine the model tests will use, said only when there are some: a suite without
    models never pays for the Docker SDK.  (Under xdist the summary says it instead.)"""
    state = config.stash.get(STATE, None)
    if state is None or not any(item.get_closest_marker("model") for item in items):
        return []
    from pytest_madcache.core.images import EngineError
    from pytest_madcache.provide import ImageError

    try:
        return [f"madcache engine: {state.service.engine.describe()}"]
    except (ImageError, EngineError) as exc:
        # The engine's own line (ImageError wraps it, `from None`, adding a pointer to this line).
        said = exc.__context__ if isinstance(exc.__context__, EngineError) else exc
        return [f"madcache engine: {said}. Start one: install your distribution's docker.io package and "
                "run dockerd (as root), or run the tests under a private engine: "
                "python -m pytest_madcache.localengine -- pytest ..."]
