"""The session plugin (registered per config, as pytest-xdist's dsession is): the warm-up filter, the
events of every test gathered on the controller, the cache's limits at the end, the summary, the
CSV and the summary JSON."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any, List, Optional

import pytest

from pytest_madcache.core.events import PROPERTY, MessageEvent, from_wire
from pytest_madcache.pytest_glue.state import MadcacheWarning, State, failed, get_state, write_line
from pytest_madcache.pytest_glue.summary import summary_lines, write_csv, write_summary_json

__all__ = ["SessionPlugin", "WARM_FIXTURES", "WorkerPrefetch", "prefetching"]

WARM_FIXTURES = {"model_image", "model_run"}  # tests that need a model image (--cache-warm-only, prefetch)


def needs_image(item: pytest.Item) -> bool:
    return bool(WARM_FIXTURES & set(getattr(item, "fixturenames", ())))


def prefetching(state: State, config: pytest.Config) -> bool:
    return (state.settings.enabled and state.settings.prefetch != "off" and not state.force_rebuild
            and state.from_cache is None and not config.option.collectonly)


class WorkerPrefetch:
    """Registered only on an xdist worker that prefetches, so a suite without xdist pays no hook per test."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Optional[pytest.Item]) -> None:
        """A worker learns its tests one by one: it asks for the next test's image."""
        if nextitem is not None and needs_image(nextitem):
            from pytest_madcache.pytest_glue.obtain import start_prefetch

            state = get_state(self.config)
            state.reporter.item = item
            try:
                start_prefetch([nextitem], state)
            except Exception:  # best effort (a warning raised under -W error): the test asks for itself
                pass


class SessionPlugin:
    """Per-config hooks that need the state: collection filter, events, summary."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @property
    def state(self) -> State:
        return get_state(self.config)

    def pytest_collection_modifyitems(self, config: pytest.Config, items: List[pytest.Item]) -> None:
        if config.option.madcache_warm_only:  # warm-up: only tests that need a model image
            drop = [i for i in items if not needs_image(i)]
            if drop:
                config.hook.pytest_deselected(items=drop)
                items[:] = [i for i in items if i not in drop]
        entry = self.state.from_cache_entry
        if entry is None:
            return
        from pytest_madcache.core.model import ModelMarkError, merge_marks

        wanted = set(entry.model_tags)
        keep, drop = [], []
        for item in items:
            marks = list(item.iter_markers("model"))
            try:
                kw = merge_marks(marks, item.nodeid) if marks else {}
            except ModelMarkError:
                keep.append(item)  # reported as an error at setup
                continue
            names = {kw.get("name")} | set(_as_list(kw.get("tags")))
            (keep if marks and names & wanted else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> Optional[bool]:
        """--cache-warm-only: the fixtures got the image (built or loaded, saved); skip the body."""
        if pyfuncitem.config.option.madcache_warm_only and needs_image(pyfuncitem):
            return True
        return None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        """--cache-prefetch: the tests whose images to ask for in the background, in the order they run.
        The first test that needs an image starts it (obtain.py): what it warns then belongs to a test."""
        if self.state.is_worker:
            return
        # an xdist controller collects nothing (under pytest 7.4 it has no `items` at all)
        items = [i for i in getattr(session, "items", ()) if needs_image(i)]
        if items and self._prefetching(session.config):
            self.state.prefetch_queue = items

    def _prefetching(self, config: pytest.Config) -> bool:
        return prefetching(self.state, config)

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if item.get_closest_marker("model") is not None:
            from pytest_madcache.core.model import ModelMarkError, merge_marks

            try:
                merge_marks(list(item.iter_markers("model")), item.nodeid)
            except ModelMarkError as exc:
                raise failed(str(exc)) from None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.user_properties and not (report.when == "call" and report.failed):
            return  # nothing of ours (most tests of a suite without models)
        state = self.state
        if state.is_worker:
            return
        relayed = hasattr(report, "node")  # from an xdist worker
        for name, value in report.user_properties:
            if name != PROPERTY or not isinstance(value, dict):
                continue
            eid, event = from_wire(value)
            if event is None or eid is None or eid in state.seen:
                continue
            state.seen.add(eid)
            if isinstance(event, MessageEvent):
                if relayed:
                    worker = getattr(report.node, "gateway", None)
                    prefix = f"[{worker.id}] " if worker is not None else ""
                    write_line(self.config, f"{prefix}{event.text}")
                continue
            state.summary.add(event)
        if report.when == "call" and report.failed:
            state.summary.mark_failed(report.nodeid)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        state = self.state
        if state._service is not None:
            # before the limits: a load still under way is of no use now
            for line in state._service.stop_prefetch():
                if line not in state.summary.warnings:
                    state.summary.warnings.append(line)
        if state.is_worker:
            return
        if state.settings.enabled and state.summary.keys:
            try:
                end_session(state)
            except Exception as exc:  # the results below are still written
                state.summary.warnings.append(f"madcache: cannot apply the cache limits: {exc!r}")
        summary_json = (session.config.option.madcache_summary_json
                        or os.environ.get("MADCACHE_SUMMARY_JSON", "").strip())
        if summary_json:
            target = Path(summary_json).expanduser()
            if not target.is_absolute():
                target = Path(session.config.invocation_params.dir) / target
            try:
                write_summary_json(target, state.summary, state.perf.report())
            except OSError as exc:
                warnings.warn(MadcacheWarning(f"madcache: cannot write {target}: {exc}"), stacklevel=2)
        if state.output is None:
            return
        try:
            perf = state.perf.report()
            state.output_rows = write_csv(state.output, state.summary.runs, perf.comparisons if perf else ())
        except OSError as exc:
            warnings.warn(MadcacheWarning(f"madcache: cannot write {state.output}: {exc}"), stacklevel=2)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        state = self.state
        if state.is_worker or not (state.summary.used or state.output):
            return
        terminalreporter.section("madcache")
        for line in summary_lines(state.summary):
            terminalreporter.write_line(line)
        if state.output is not None and state.output_rows is not None:
            terminalreporter.write_line(f"results written to {state.output} ({state.output_rows} rows)")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.state._service is not None:
            self.state._service.close()

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: hand the resolved settings, and when the session began, to each worker."""
        state = get_state(node.config)
        node.workerinput["madcache"] = state.wire()
        node.workerinput["madcache_since"] = state.since
        node.workerinput["madcache_outputs"] = [str(p) for p in state.outputs]


def _as_list(value: Any) -> List[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def end_session(state: State) -> None:
    """The controller, once every test ran: unfinished pushes completed, the limits, the working set
    last; a warning naming the setting to raise when the suite alone needs more; a record for
    `madcache stats`.  Its warnings go to the summary, not to `warnings.warn`: under `-W error` that
    would end the session here."""
    from pytest_madcache.provide import end_session
    from pytest_madcache.store import Session, Store, StoreError
    from pytest_madcache.util.progress import human_bytes

    s, summary = state.settings, state.summary
    try:
        store = Store.from_settings(s, progress=False)
        end = end_session(store, Session(state.since), summary.keys, state.service.remote)
    except StoreError as exc:
        summary.warnings.append(f"madcache: cannot apply the cache limits: {exc}")
        return
    summary.evicted += len(end.evicted)
    summary.pushed_bytes += end.pushed_bytes
    summary.end_lines += [f"Evicted cache entry {e.id} ({e.image_ref}) to stay within the limits"
                          for e in end.evicted]
    advice = []
    if end.too_many:
        advice.append(f"{end.needed_entries} entries, but the cache keeps {end.max_entries} "
                      f"({s.source('max_entries')}): raise --cache-max-entries to {end.needed_entries} "
                      "(MADCACHE_MAX_ENTRIES, or madcache_max_entries in the ini file)")
    if end.too_big:
        need_gb = -(-end.needed_bytes * 10 // 1024**3) / 10  # rounded up to 0.1 GB
        advice.append(f"{human_bytes(end.needed_bytes)}, but the cache keeps {s.max_size_gb:g} GB "
                      f"({s.source('max_size_gb')}): raise --cache-max-size-gb to {need_gb:g} "
                      "(MADCACHE_MAX_SIZE_GB, or madcache_max_size_gb in the ini file)")
    if advice:
        n = sum(1 for e in end.evicted if e.key in summary.keys)
        text = (f"this suite needs {' and '.join(advice)}; the {n} of its entr{'y' if n == 1 else 'ies'} evicted at "
                "the end of the session will be built again next run")
        summary.warnings.append(f"madcache: {text}")
    store.record_session({"ended": time.time(), "evicted": summary.evicted, "hits": summary.hits,
                          "misses": summary.misses, "needed_entries": end.needed_entries,
                          "needed_bytes": end.needed_bytes, "max_entries": end.max_entries,
                          "max_bytes": end.max_bytes})
