"""The session's state in `config.stash`, and the small ways the glue speaks: lines on the terminal,
events attached to a test's report (which cross to the xdist controller), warnings once per text."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple

import pytest

from pytest_madcache.core.events import PROPERTY, Event, MessageEvent, WarningEvent, to_wire
from pytest_madcache.core.settings import Settings
from pytest_madcache.pytest_glue.options import PluginConfig, read_config
from pytest_madcache.pytest_glue.outputs import session_outputs
from pytest_madcache.pytest_glue.perf import PerfSession
from pytest_madcache.pytest_glue.summary import Summary

if TYPE_CHECKING:  # provide and store load when a test first needs an image
    from pytest_madcache.provide import ImageService
    from pytest_madcache.store import Entry

__all__ = ["MadcacheWarning", "State", "STATE", "get_state", "resolve_state", "TestReporter", "write_line", "emit",
           "warn_once", "flush_warning", "live", "failed"]


class MadcacheWarning(pytest.PytestWarning):
    """The cache could not be used; tests went on without it."""


@dataclass
class State:
    """Everything the plugin keeps for one pytest session (in `config.stash`)."""

    settings: Settings
    additional_context: Dict[str, Any]
    force_rebuild: bool
    from_cache: Optional[str]
    live_output: bool
    output: Optional[Path]
    is_worker: bool
    make_service: Callable[[], "ImageService"]
    reporter: "TestReporter"
    summary: Summary
    perf: PerfSession
    from_cache_entry: Optional["Entry"] = None
    seen: Set[str] = field(default_factory=set)
    warned: Set[str] = field(default_factory=set)
    counter: "itertools.count[int]" = field(default_factory=itertools.count)
    pending_warning: Optional[str] = None  # to attach to the current test's report
    output_rows: Optional[int] = None
    since: float = 0.0  # when the session began (the controller's clock under xdist): its working set's start
    outputs: Tuple[Path, ...] = ()  # files the session writes: never part of a model's context
    custom_build: Optional[bool] = None  # a conftest or plugin builds images itself (found on first use)
    prefetch_queue: Optional[List[pytest.Item]] = None  # --cache-prefetch: started by the first test that needs it
    _service: Optional["ImageService"] = None

    @property
    def service(self) -> "ImageService":
        """Made on first use: a session whose tests use no model never imports the engine or store."""
        if self._service is None:
            self._service = self.make_service()
        return self._service

    def wire(self) -> Dict[str, Any]:
        """What the controller hands to xdist workers (plain values only)."""
        return PluginConfig(self.settings, self.force_rebuild, self.from_cache).to_wire()

    def event_id(self) -> str:
        return f"{os.getpid()}-{next(self.counter)}"


STATE = pytest.StashKey[State]()


def get_state(config: pytest.Config) -> State:
    try:
        return config.stash[STATE]
    except KeyError:  # pragma: no cover - only if configure was skipped
        raise pytest.UsageError(
            "pytest-madcache was not configured (is the plugin disabled with -p no:madcache?)") from None


def resolve_state(config: pytest.Config) -> State:
    workerinput: Dict[str, Any] = getattr(config, "workerinput", None) or {}
    is_worker = hasattr(config, "workerinput")
    wire = workerinput.get("madcache")
    values = PluginConfig.from_wire(wire) if wire is not None else read_config(config, is_worker)
    settings, force, from_cache = values.settings, values.force_rebuild, values.from_cache
    reporter = TestReporter(config)
    since = float(workerinput.get("madcache_since", time.time())) if is_worker else time.time()

    def make_service() -> "ImageService":
        from pytest_madcache.provide import ImageService
        from pytest_madcache.remote import open_remote
        from pytest_madcache.store import Session, Store

        service = ImageService(enabled=settings.enabled, force_rebuild=force, reporter=reporter,
                               store_factory=lambda engine, log: Store.from_settings(
                                   settings, engine=engine, progress=False, log=log, session=Session(since)))
        if settings.enabled and settings.remote:  # its lines through the service: a prefetch's go to their test
            service.remote = open_remote(settings.remote, log=service.say, settings=settings)
        return service

    summary = Summary(enabled=settings.enabled or bool(from_cache))
    return State(settings=settings, additional_context=dict(settings.additional_context or {}), force_rebuild=force,
                 from_cache=from_cache, live_output=settings.live_output, output=settings.output,
                 is_worker=is_worker, make_service=make_service, reporter=reporter, summary=summary,
                 perf=PerfSession(settings, summary, is_worker, MadcacheWarning), since=since,
                 outputs=tuple(Path(p) for p in workerinput.get("madcache_outputs", ())) if is_worker
                 else session_outputs(config, settings))


def warn_once(state: State, text: str) -> None:
    text = f"madcache: {text}"
    if text in state.warned:
        return
    state.warned.add(text)
    warnings.warn(MadcacheWarning(text), stacklevel=2)
    state.pending_warning = text


def write_line(config: pytest.Config, text: str) -> None:
    """A line on the terminal now, even while output is captured."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None:
        return
    capman = config.pluginmanager.get_plugin("capturemanager")
    ctx = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
    with ctx:
        tr.write_line(text)


def emit(item: pytest.Item, event: Event) -> None:
    """Attach an event to the test's report, in the plain form that crosses to the xdist controller."""
    state = get_state(item.config)
    item.user_properties.append((PROPERTY, to_wire(event, state.event_id())))


class TestReporter:
    """The plugin's Reporter: says lines in the terminal under the test being set up (and, from an
    xdist worker, in that test's report for the controller to print); warns once per text."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.item: Optional[pytest.Item] = None  # the test whose image is being obtained

    def say(self, text: str) -> None:
        if self.item is not None:
            emit(self.item, MessageEvent(text))
        if not get_state(self.config).is_worker:
            write_line(self.config, text)

    def warn(self, text: str) -> None:
        warn_once(get_state(self.config), text)


def failed(message: str) -> BaseException:
    """The test's failure, to raise `from None`: pytest.fail inside an `except` block chains onto
    the error being handled, and pytest then shows the same message twice."""
    return pytest.fail.Exception(message, pytrace=False)


def flush_warning(item: pytest.Item) -> None:
    """Attach a warning raised while getting the image to this test's report (for the summary)."""
    state = get_state(item.config)
    if state.pending_warning:
        emit(item, WarningEvent(state.pending_warning))
        state.pending_warning = None


def live(item: pytest.Item) -> Optional[Callable[[str], None]]:
    """With --live-output: lines to the terminal as they come (in-process runs only)."""
    state = get_state(item.config)
    if state.is_worker:
        return None
    return lambda line: write_line(item.config, line)
