"""pytest glue: options, ini keys, the `model` mark, fixtures, summary, xdist.

Kept thin on purpose: settings come from `options.read_config` (over
`settings.resolve`: one precedence for CLI, plugin and API), images from
`provide.ImageService`, containers from `runner`, numbers and CSV from
`report`, the comparison with a performance baseline from `perfplugin`.  Per-session state lives in
`config.stash`.  Under pytest-xdist the controller resolves the settings once
and hands them to the workers (`workerinput`); workers send their events back
inside each report's `user_properties`, so the controller aggregates one
summary and one CSV.

It must stay thin glue: options, fixtures, hooks and the summary; what to do with an image is provide.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

import pytest

from pytest_madcache.core.events import PROPERTY, Event, ImageEvent, MessageEvent, WarningEvent, from_wire, to_wire
from pytest_madcache.core.model import (
    MARK_HELP,
    RUN_KWARGS,
    ModelMarkError,
    ModelSpec,
    excluding,
    merge_marks,
    resolve_build_args,
    run_config,
    run_options,
    select_params,
    spec_from_marks,
)
from pytest_madcache.core.perfspec import PerfSpec
from pytest_madcache.core.run import RunOptions, RunResult, parse_performance
from pytest_madcache.core.settings import Settings, describe
from pytest_madcache.engines.runner import run_container
from pytest_madcache.perf.compare import run_repeated
from pytest_madcache.pytest_glue import hooks
from pytest_madcache.pytest_glue.options import PluginConfig, add_options, check_path_options, read_config
from pytest_madcache.pytest_glue.outputs import session_outputs
from pytest_madcache.pytest_glue.perf import PerfSession
from pytest_madcache.pytest_glue.summary import (
    Summary,
    kept_line,
    run_row,
    summary_lines,
    write_csv,
    write_summary_json,
)

if TYPE_CHECKING:  # engine, key, provide and store load when a test first needs an image
    from pytest_madcache.core.images import BuildResult
    from pytest_madcache.provide import ImageService, ModelImage

__all__ = ["MadcacheWarning", "STATE"]

WARM_FIXTURES = {"model_image", "model_run"}  # tests that need a model image (--cache-warm-only)


class MadcacheWarning(pytest.PytestWarning):
    """The cache could not be used; tests went on without it."""


# -- state ---------------------------------------------------------------------


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
    reporter: "_TestReporter"
    summary: Summary
    perf: PerfSession
    from_cache_entry: Any = None
    seen: Set[str] = field(default_factory=set)
    warned: Set[str] = field(default_factory=set)
    counter: Any = field(default_factory=itertools.count)
    pending_warning: Optional[str] = None  # to attach to the current test's report
    output_rows: Optional[int] = None
    since: float = 0.0  # when the session began (the controller's clock under xdist): its working set's start
    outputs: Tuple[Path, ...] = ()  # files the session writes: never part of a model's context
    custom_build: Optional[bool] = None  # a conftest or plugin builds images itself (found on first use)
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


def _state(config: pytest.Config) -> State:
    try:
        return config.stash[STATE]
    except KeyError:  # pragma: no cover - only if configure was skipped
        raise pytest.UsageError("pytest-madcache was not configured (is the plugin disabled with -p no:madcache?)")


# -- options -------------------------------------------------------------------

def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _resolve_state(config: pytest.Config) -> State:
    workerinput = getattr(config, "workerinput", None)
    is_worker = workerinput is not None
    wire = workerinput.get("madcache") if is_worker else None
    values = PluginConfig.from_wire(wire) if wire is not None else read_config(config, is_worker)
    settings, force, from_cache = values.settings, values.force_rebuild, values.from_cache
    reporter = _TestReporter(config)
    since = float(workerinput.get("madcache_since", time.time())) if is_worker else time.time()

    def make_service() -> "ImageService":
        from pytest_madcache.provide import ImageService
        from pytest_madcache.remote import open_remote
        from pytest_madcache.store import Session, Store

        remote = (open_remote(settings.remote, log=reporter.say, settings=settings)
                  if settings.enabled and settings.remote else None)
        return ImageService(enabled=settings.enabled, force_rebuild=force, reporter=reporter, remote=remote,
                            store_factory=lambda engine, log: Store.from_settings(
                                settings, engine=engine, progress=False, log=log, session=Session(since)))

    summary = Summary(enabled=settings.enabled or bool(from_cache))
    return State(settings=settings, additional_context=dict(settings.additional_context or {}), force_rebuild=force,
                 from_cache=from_cache, live_output=settings.live_output, output=settings.output,
                 is_worker=is_worker, make_service=make_service, reporter=reporter, summary=summary,
                 perf=PerfSession(settings, summary, is_worker, MadcacheWarning), since=since,
                 outputs=tuple(Path(p) for p in workerinput.get("madcache_outputs", ())) if is_worker
                 else session_outputs(config, settings))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    check_path_options(config)  # a path option written with a space that moved the rootdir (pytest#8846)
    config.addinivalue_line("markers", MARK_HELP)
    state = _resolve_state(config)
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
    config.pluginmanager.register(state.perf, "madcache-perf")


def _warn_once(state: State, text: str) -> None:
    text = f"madcache: {text}"
    if text in state.warned:
        return
    state.warned.add(text)
    warnings.warn(MadcacheWarning(text), stacklevel=2)
    state.pending_warning = text


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand the resolved settings, and when the session began, to each worker."""
    state = _state(node.config)
    node.workerinput["madcache"] = state.wire()
    node.workerinput["madcache_since"] = state.since
    node.workerinput["madcache_outputs"] = [str(p) for p in state.outputs]


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


# -- the plugin's own hook implementations (trylast: users' win) ----------------


@pytest.hookimpl(trylast=True)
def pytest_madcache_build_image(config: pytest.Config, model: ModelSpec, tag: str, build_args: Mapping[str, str],
                                labels: Mapping[str, str], on_line: Optional[Callable[[str], None]]) -> BuildResult:
    from pytest_madcache.provide import build_with_engine

    service = _state(config).service
    return build_with_engine(service.engine, model, tag, build_args, labels, on_line, tmp_dir=service.build_tmp_dir())


@pytest.hookimpl(trylast=True)
def pytest_madcache_run_model(config: pytest.Config, image: ModelImage, options: RunOptions,
                              on_line: Optional[Callable[[str], None]]) -> RunResult:
    return run_container(_state(config).service.engine.client, image.image_id, options, on_line)


# -- session plugin: events, summary, CSV -------------------------------------------


class SessionPlugin:
    """Per-config hooks that need the state: collection filter, events, summary."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @property
    def state(self) -> State:
        return _state(self.config)

    def pytest_collection_modifyitems(self, config: pytest.Config, items: List[pytest.Item]) -> None:
        if config.option.madcache_warm_only:  # warm-up: only tests that need a model image
            drop = [i for i in items if not WARM_FIXTURES & set(getattr(i, "fixturenames", ()))]
            if drop:
                config.hook.pytest_deselected(items=drop)
                items[:] = [i for i in items if i not in drop]
        entry = self.state.from_cache_entry
        if entry is None:
            return
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
        if pyfuncitem.config.option.madcache_warm_only and WARM_FIXTURES & set(pyfuncitem.fixturenames):
            return True
        return None

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if item.get_closest_marker("model") is not None:
            try:
                merge_marks(list(item.iter_markers("model")), item.nodeid)
            except ModelMarkError as exc:
                raise _failed(str(exc)) from None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        state = self.state
        if state.is_worker:
            return
        relayed = hasattr(report, "node")  # from an xdist worker
        for name, value in report.user_properties:
            if name != PROPERTY or not isinstance(value, dict):
                continue
            eid, event = from_wire(value)
            if event is None or eid in state.seen:
                continue
            state.seen.add(eid)
            if isinstance(event, MessageEvent):
                if relayed:
                    worker = getattr(report.node, "gateway", None)
                    prefix = f"[{worker.id}] " if worker is not None else ""
                    _write(self.config, f"{prefix}{event.text}")
                continue
            state.summary.add(event)
        if report.when == "call" and report.failed:
            state.summary.mark_failed(report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        state = self.state
        if state.is_worker:
            return
        if state.settings.enabled and state.summary.keys:
            try:
                _end_session(state)
            except Exception as exc:  # the results below are still written
                state.summary.warnings.append(f"madcache: cannot apply the cache limits: {exc!r}")
        summary_json = session.config.option.madcache_summary_json or os.environ.get("MADCACHE_SUMMARY_JSON", "").strip()
        if summary_json:
            target = Path(summary_json).expanduser()
            if not target.is_absolute():
                target = Path(session.config.invocation_params.dir) / target
            try:
                write_summary_json(target, state.summary, state.perf.report())
            except OSError as exc:
                warnings.warn(MadcacheWarning(f"madcache: cannot write {target}: {exc}"))
        if state.output is None:
            return
        try:
            perf = state.perf.report()
            state.output_rows = write_csv(state.output, state.summary.runs, perf.comparisons if perf else ())
        except OSError as exc:
            warnings.warn(MadcacheWarning(f"madcache: cannot write {state.output}: {exc}"))

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


def _as_list(value: Any) -> List[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _write(config: pytest.Config, text: str) -> None:
    """A line on the terminal now, even while output is captured."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None:
        return
    capman = config.pluginmanager.get_plugin("capturemanager")
    ctx = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
    with ctx:
        tr.write_line(text)


def _emit(item: pytest.Item, event: Event) -> None:
    """Attach an event to the test's report, in the plain form that crosses to the xdist controller."""
    state = _state(item.config)
    item.user_properties.append((PROPERTY, to_wire(event, state.event_id())))


class _TestReporter:
    """The plugin's Reporter: says lines in the terminal under the test being set up (and, from an
    xdist worker, in that test's report for the controller to print); warns once per text."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.item: Optional[pytest.Item] = None  # the test whose image is being obtained

    def say(self, text: str) -> None:
        if self.item is not None:
            _emit(self.item, MessageEvent(text))
        if not _state(self.config).is_worker:
            _write(self.config, text)

    def warn(self, text: str) -> None:
        _warn_once(_state(self.config), text)


# -- fixtures -----------------------------------------------------------------------


def _spec(item: pytest.Item) -> ModelSpec:
    marks = list(item.iter_markers("model"))
    try:
        return spec_from_marks(marks, Path(str(item.path)).parent, item.nodeid, root=item.config.rootpath)
    except ModelMarkError as exc:
        raise _failed(str(exc)) from None


def _with_context(spec: ModelSpec, context: Mapping[str, Any]) -> ModelSpec:
    """madengine's context keys that act: docker_build_arg (build) and docker_env_vars (run)."""
    from dataclasses import replace

    build_args = context.get("docker_build_arg")
    if isinstance(build_args, Mapping):
        spec = spec.with_build_args({str(k): str(v) for k, v in build_args.items()})
    env_vars = context.get("docker_env_vars")
    if isinstance(env_vars, Mapping):
        spec = replace(spec, run=replace(spec.run, env={**{str(k): str(v) for k, v in env_vars.items()},
                                                         **dict(spec.run.env)}))
    return spec


@pytest.fixture
def model_image(request: pytest.FixtureRequest) -> ModelImage:
    """The Docker image of this test's model: loaded from the cache or built (and saved)."""
    from pytest_madcache.core.bases import DockerfileError, key_bases
    from pytest_madcache.core.images import BuildFailed
    from pytest_madcache.core.key import KeyError_, key_for
    from pytest_madcache.provide import ImageError

    item = request.node
    config = request.config
    state = _state(config)
    marked = _spec(item)
    spec = _with_context(marked, state.additional_context)
    params = dict(getattr(getattr(item, "callspec", None), "params", {}) or {})
    service = state.service
    state.reporter.item = item
    try:
        if state.from_cache_entry is not None:
            image, event = service.from_entry(spec, state.from_cache_entry, params)
            _emit(item, event)
            return image
        try:
            # the mark's build args are filled from the parameters; --additional-context's are taken as given
            spec = _with_context(resolve_build_args(marked, params, item.nodeid), state.additional_context)
            spec = excluding(spec, state.outputs)
            selected = select_params(params, spec, item.nodeid, custom_build=_custom_build(state, config))
        except ModelMarkError as exc:
            raise _failed(str(exc)) from None
        material: Dict[str, Any] = {}
        for result in reversed(config.hook.pytest_madcache_key_material(item=item, model=spec)):
            if result:
                material.update(result)
        try:
            bases = service.resolve_bases(spec, spec.base_key or state.settings.base_key)
            key = key_for(spec.key_spec(selected, state.additional_context, material, key_bases(bases)),
                          state.settings.dir if state.settings.enabled else None)
        except DockerfileError as exc:
            raise _failed(f"{item.nodeid}: cannot read the FROM lines of {spec.dockerfile}: {exc}") from None
        except KeyError_ as exc:
            raise _failed(f"{item.nodeid}: cannot compute the cache key of model {spec.name!r}: {exc} "
                          "(use key_params=[...] or ignore_params=[...] in the model mark to leave such "
                          "parameters out)") from None
        remembered = service.remembered(key)
        if remembered is not None:
            _emit(item, ImageEvent(model=spec.name, key=key.digest, reused=True))
            return dataclasses.replace(remembered, model=spec, params=params)
        ref = f"{spec.image}:{spec.image_tag or key.digest[:12]}"
        on_line = _live(item) if state.live_output else None

        def build() -> Any:
            return config.hook.pytest_madcache_build_image(
                config=config, model=spec, tag=ref, build_args=dict(spec.build_args),
                labels={"madcache.model": spec.name, "madcache.key": key.digest}, on_line=on_line)

        image, event = service.obtain(spec, key, ref, params,
                                      dict(run_config(spec, params, state.additional_context),
                                           bases=[dataclasses.asdict(b) for b in bases]), build)
        _emit(item, event)
        return image
    except BuildFailed as exc:
        raise _failed(f"{item.nodeid}: the Docker build of model {spec.name!r} failed: {exc}\n"
                      f"--- last lines of the build log ---\n{exc.tail()}") from None
    except ImageError as exc:
        raise _failed(f"{item.nodeid}: no image for model {spec.name!r}: {exc}") from None
    finally:
        _flush_warning(item)


def _custom_build(state: State, config: pytest.Config) -> bool:
    """Whether a conftest or another plugin builds images (`pytest_madcache_build_image`): such a
    build may read any test parameter, so they all join the key (model.select_params)."""
    if state.custom_build is None:
        impls = config.pluginmanager.hook.pytest_madcache_build_image.get_hookimpls()
        state.custom_build = any(impl.plugin is not sys.modules[__name__] for impl in impls)
    return state.custom_build


def _end_session(state: State) -> None:
    """The controller, once every test ran: the limits, the working set last; a warning naming the
    setting to raise when the suite alone needs more; a record for `madcache stats`.  Its warnings
    go to the summary, not to `warnings.warn`: under `-W error` that would end the session here."""
    from pytest_madcache.provide import end_session
    from pytest_madcache.store import Session, Store, StoreError
    from pytest_madcache.util.progress import human_bytes

    s, summary = state.settings, state.summary
    try:
        store = Store.from_settings(s, progress=False)
        end = end_session(store, Session(state.since), summary.keys)
    except StoreError as exc:
        summary.warnings.append(f"madcache: cannot apply the cache limits: {exc}")
        return
    summary.evicted += len(end.evicted)
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


def _failed(message: str) -> BaseException:
    """The test's failure, to raise `from None`: pytest.fail inside an `except` block chains onto
    the error being handled, and pytest then shows the same message twice."""
    return pytest.fail.Exception(message, pytrace=False)


def _flush_warning(item: pytest.Item) -> None:
    """Attach a warning raised while getting the image to this test's report (for the summary)."""
    state = _state(item.config)
    if state.pending_warning:
        _emit(item, WarningEvent(state.pending_warning))
        state.pending_warning = None


def _live(item: pytest.Item) -> Optional[Callable[[str], None]]:
    """With --live-output: lines to the terminal as they come (in-process runs only)."""
    state = _state(item.config)
    if state.is_worker:
        return None
    return lambda line: _write(item.config, line)


@pytest.fixture
def model_run(request: pytest.FixtureRequest, model_image: ModelImage) -> Callable[..., RunResult]:
    """A callable `model_run(command=None, env=None, timeout=None, **run_options) -> RunResult`.

    Runs a container from `model_image`; the mark's run options are the
    defaults, the call's win.  Every run becomes a row of `--output`.
    """
    item = request.node
    config = request.config
    state = _state(config)
    spec = model_image.model
    base_dir = Path(str(item.path)).parent

    def run(command: Any = None, env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
            **overrides: Any) -> RunResult:
        unknown = sorted(set(overrides) - set(RUN_KWARGS))
        if unknown:
            raise TypeError(f"model_run() got unknown keyword argument(s) {', '.join(unknown)}; "
                            f"known: command, env, timeout, {', '.join(k for k in RUN_KWARGS if k not in ('command', 'env', 'timeout'))}")
        try:
            options = run_options(dict(overrides, command=command, env=env, timeout=timeout), base_dir,
                                  f"{item.nodeid}: model_run()", defaults=spec.run)
        except ModelMarkError as exc:
            raise ValueError(str(exc)) from None
        if state.settings.keep_alive:
            options = dataclasses.replace(options, keep_alive=True)

        def once() -> RunResult:
            result = config.hook.pytest_madcache_run_model(config=config, image=model_image, options=options,
                                                           on_line=_live(item) if state.live_output else None)
            if result is None:
                raise RuntimeError("no pytest_madcache_run_model implementation returned a result")
            if result.performance is None and result.logs:  # a replacement run may leave parsing to us
                result.performance, result.metric = parse_performance(result.logs)
            return result

        start = time.time()
        # the mark's perf_repeats and perf_warmup; --keep-alive keeps one container to look into, so runs once
        result = run_repeated(once, PerfSpec() if options.keep_alive else spec.perf)
        result.cache_hit = model_image.cache_hit
        _emit(item, run_row(
            model=spec.name, tags=spec.tags, params=model_image.params, dockerfile=str(spec.dockerfile),
            image=model_image.tag, image_id=model_image.image_id, performance=result.performance,
            metric=result.metric, status=result.status, build_duration=model_image.build_duration,
            duration=result.duration, cache_hit=model_image.cache_hit if state.summary.enabled else None,
            cache_id=model_image.cache_id, nodeid=item.nodeid, seq_time=start,
            kept_container=result.container_id, direction=spec.perf.direction or "",
            threshold=state.perf.threshold_for(spec.perf), samples=result.samples))
        if result.container_id:
            state.reporter.item = item
            state.reporter.say(kept_line(result.container_id))
        return result

    return run
