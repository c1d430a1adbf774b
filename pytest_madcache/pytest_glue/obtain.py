"""What the fixtures do (fixtures.py declares them, and imports this on first use): `obtain_image`
gives this test's image, from the cache or built; `model_runner` the callable that runs a container
from it, each run a row of `--output`.  What to do for an image is provide's; here a test item
becomes its inputs, and the answers become test failures and events."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, List, Mapping, Optional, Sequence, Tuple

import pytest

from pytest_madcache.core.events import ImageEvent
from pytest_madcache.core.marks import RUN_KWARGS
from pytest_madcache.core.model import (
    ModelMarkError,
    ModelSpec,
    excluding,
    resolve_build_args,
    run_config,
    run_options,
    select_params,
    spec_from_marks,
)
from pytest_madcache.core.perfspec import PerfSpec
from pytest_madcache.core.run import RunResult, parse_performance
from pytest_madcache.perf.compare import run_repeated
from pytest_madcache.pytest_glue import defaults
from pytest_madcache.pytest_glue.state import State, emit, failed, flush_warning, get_state, live
from pytest_madcache.pytest_glue.summary import kept_line, run_row

if TYPE_CHECKING:
    from pytest_madcache.core.bases import ResolvedBase
    from pytest_madcache.core.key import CacheKey
    from pytest_madcache.provide import ModelImage

__all__ = ["obtain_image", "model_runner", "start_prefetch"]

_RUN_ONLY = [k for k in RUN_KWARGS if k not in ("command", "env", "timeout")]  # model_run()'s other keywords


def _spec(item: pytest.Item) -> ModelSpec:
    marks = list(item.iter_markers("model"))
    try:
        return spec_from_marks(marks, Path(str(item.path)).parent, item.nodeid, root=item.config.rootpath)
    except ModelMarkError as exc:
        raise failed(str(exc)) from None


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


def obtain_image(request: pytest.FixtureRequest) -> ModelImage:
    """The `model_image` fixture's value."""
    from pytest_madcache.core.images import BuildFailed
    from pytest_madcache.provide import ImageError

    item = request.node
    config = request.config
    state = get_state(config)
    marked = _spec(item)
    spec = _with_context(marked, state.additional_context)
    params = dict(getattr(getattr(item, "callspec", None), "params", {}) or {})
    service = state.service
    state.reporter.item = item
    try:
        if state.prefetch_queue:
            queue, state.prefetch_queue = state.prefetch_queue, None
            start_prefetch(queue, state)
        if state.from_cache_entry is not None:
            image, event = service.from_entry(spec, state.from_cache_entry, params)
            emit(item, event)
            return image
        spec, key, bases = _keyed(item, marked, params, state)
        remembered = service.remembered(key)
        if remembered is not None:
            emit(item, ImageEvent(model=spec.name, key=key.digest, reused=True))
            return dataclasses.replace(remembered, model=spec, params=params)
        ref = f"{spec.image}:{spec.image_tag or key.digest[:12]}"
        on_line = live(item) if state.live_output else None

        def build() -> Any:
            return config.hook.pytest_madcache_build_image(
                config=config, model=spec, tag=ref, build_args=dict(spec.build_args),
                labels={"madcache.model": spec.name, "madcache.key": key.digest}, on_line=on_line)

        image, event = service.obtain(spec, key, ref, params,
                                      dict(run_config(spec, params, state.additional_context),
                                           bases=[dataclasses.asdict(b) for b in bases]), build)
        emit(item, event)
        return image
    except BuildFailed as exc:
        raise failed(f"{item.nodeid}: the Docker build of model {spec.name!r} failed: {exc}\n"
                      f"--- last lines of the build log ---\n{exc.tail()}") from None
    except ImageError as exc:
        raise failed(f"{item.nodeid}: no image for model {spec.name!r}: {exc}") from None
    finally:
        flush_warning(item)


def _keyed(item: pytest.Item, marked: ModelSpec, params: Dict[str, Any],
           state: State) -> Tuple[ModelSpec, "CacheKey", List["ResolvedBase"]]:
    """The test's spec as it builds (build args filled from its parameters, the session's files left
    out of its context), its key and its resolved bases; a bad mark or Dockerfile fails the test."""
    from pytest_madcache.core.bases import DockerfileError, key_bases
    from pytest_madcache.core.key import KeyError_

    config = item.config
    try:
        # the mark's build args are filled from the parameters; --additional-context's are taken as given
        spec = _with_context(resolve_build_args(marked, params, item.nodeid), state.additional_context)
        # pytest's cache at the context's root is always the session's (as `madcache key` has it), wherever
        # the rootdir was
        spec = excluding(spec, (*state.outputs, Path(spec.context) / ".pytest_cache"))
        selected = select_params(params, spec, item.nodeid, custom_build=_custom_build(state, config))
    except ModelMarkError as exc:
        raise failed(str(exc)) from None
    material: Dict[str, Any] = {}
    for result in reversed(config.hook.pytest_madcache_key_material(item=item, model=spec)):
        if result:
            material.update(result)
    try:
        bases = state.service.resolve_bases(spec, spec.base_key or state.settings.base_key)
        key = state.service.key(spec.key_spec(selected, state.additional_context, material, key_bases(bases)),
                                state.settings.dir if state.settings.enabled else None)
    except DockerfileError as exc:
        raise failed(f"{item.nodeid}: cannot read the FROM lines of {spec.dockerfile}: {exc}") from None
    except KeyError_ as exc:
        raise failed(f"{item.nodeid}: cannot compute the cache key of model {spec.name!r}: {exc} "
                     "(use key_params=[...] or ignore_params=[...] in the model mark to leave such "
                     "parameters out)") from None
    return spec, key, bases


def start_prefetch(items: Sequence[pytest.Item], state: State) -> None:
    """`--cache-prefetch`: the images of `items`' keys obtained in the background, in this order
    (provide/prefetch.py).  A test whose key cannot be known yet is left to ask for itself."""
    from pytest_madcache.provide import ImageError

    keys = [key for key in (_item_key(item, state) for item in items) if key is not None]
    if not keys:
        return
    try:
        state.service.prefetch(keys, state.settings.prefetch_jobs or 1)
    except ImageError:
        return  # no engine: each test says so


def _item_key(item: pytest.Item, state: State) -> Optional["CacheKey"]:
    """The key `obtain_image` will ask for, computed ahead (the session picked tests that need an
    image); None for one marked skip, or one whose mark or Dockerfile fails (its test reports that)."""
    if not _will_run(item):
        return None
    params = dict(getattr(getattr(item, "callspec", None), "params", {}) or {})
    try:
        return state.service.key_ahead(lambda: _keyed(item, _spec(item), params, state)[1])
    except (Exception, pytest.fail.Exception, pytest.skip.Exception):
        return None


def _will_run(item: pytest.Item) -> bool:
    """Whether pytest will run the test: not skipped (`skip`, a true `skipif`) nor `xfail(run=False)`.
    pytest's own evaluation (the conditions may be strings over the module's globals)."""
    try:
        from _pytest.skipping import evaluate_skip_marks, evaluate_xfail_marks
    except ImportError:  # pragma: no cover - pytest 7.4 to 9 have both
        return item.get_closest_marker("skip") is None
    try:
        if evaluate_skip_marks(item) is not None:
            return False
        xfail = evaluate_xfail_marks(item)
    except (Exception, pytest.fail.Exception):  # a bad condition: its test reports it
        return True
    return xfail is None or xfail.run or bool(item.config.option.runxfail)


def _custom_build(state: State, config: pytest.Config) -> bool:
    """Whether a conftest or another plugin builds images (`pytest_madcache_build_image`): such a
    build may read any test parameter, so they all join the key (model.select_params)."""
    if state.custom_build is None:
        impls = config.pluginmanager.hook.pytest_madcache_build_image.get_hookimpls()
        state.custom_build = any(impl.plugin is not defaults for impl in impls)
    return state.custom_build


def model_runner(request: pytest.FixtureRequest, model_image: ModelImage) -> Callable[..., RunResult]:
    """The `model_run` fixture's value: the mark's run options are the defaults, the call's win."""
    item = request.node
    config = request.config
    state = get_state(config)
    spec = model_image.model
    base_dir = Path(str(item.path)).parent

    def run(command: Any = None, env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
            **overrides: Any) -> RunResult:
        unknown = sorted(set(overrides) - set(RUN_KWARGS))
        if unknown:
            raise TypeError(f"model_run() got unknown keyword argument(s) {', '.join(unknown)}; "
                            f"known: command, env, timeout, {', '.join(_RUN_ONLY)}")
        try:
            options = run_options(dict(overrides, command=command, env=env, timeout=timeout), base_dir,
                                  f"{item.nodeid}: model_run()", defaults=spec.run)
        except ModelMarkError as exc:
            raise ValueError(str(exc)) from None
        if state.settings.keep_alive:
            options = dataclasses.replace(options, keep_alive=True)

        def on(image: ModelImage) -> RunResult:
            result = config.hook.pytest_madcache_run_model(config=config, image=image, options=options,
                                                           on_line=live(item) if state.live_output else None)
            if result is None:
                raise RuntimeError("no pytest_madcache_run_model implementation returned a result")
            if result.performance is None and result.logs:  # a replacement run may leave parsing to us
                result.performance, result.metric = parse_performance(result.logs)
            return result

        start = time.time()
        result, baseline_runs, note = _side_by_side(item, state, model_image, on) if not options.keep_alive \
            else (None, (), "")
        if result is None:
            with _quiet(state):
                # the mark's perf_repeats and perf_warmup; --keep-alive keeps one container to look into: runs once
                result = run_repeated(lambda: on(model_image), PerfSpec() if options.keep_alive else spec.perf)
        result.cache_hit = model_image.cache_hit
        emit(item, run_row(
            model=spec.name, tags=spec.tags, params=model_image.params, dockerfile=str(spec.dockerfile),
            image=model_image.tag, image_id=model_image.image_id, performance=result.performance,
            metric=result.metric, status=result.status, build_duration=model_image.build_duration,
            duration=result.duration, cache_hit=model_image.cache_hit if state.summary.enabled else None,
            cache_id=model_image.cache_id, nodeid=item.nodeid, seq_time=start,
            kept_container=result.container_id, direction=spec.perf.direction or "",
            threshold=state.perf.threshold_for(spec.perf), samples=result.samples, cache_key=model_image.key,
            baseline_samples=baseline_runs, ab_note=note))
        if result.container_id:
            state.reporter.item = item
            state.reporter.say(kept_line(result.container_id))
        return result

    return run


def _quiet(state: State) -> ContextManager[None]:
    """A session that compares performance (a baseline, A/B, the history) holds the prefetch's
    transfers while a model runs, so they do not slow the runs it measures."""
    s = state.settings
    if s.perf_ab or s.perf_baseline is not None or s.perf_record:
        return state.service.quiet()
    return contextlib.nullcontext()


def _side_by_side(item: pytest.Item, state: State, image: ModelImage, on: Callable[[ModelImage], RunResult]
                  ) -> Tuple[Optional[RunResult], Tuple[float, ...], str]:
    """--perf-ab (ab.py): the run beside its baseline's image, or (None, (), why not) to run as usual."""
    if not state.settings.perf_ab:
        return None, (), ""
    from pytest_madcache.pytest_glue import ab

    state.reporter.item = item
    plan, note = ab.plan(item, state, image)
    result: Optional[RunResult] = None
    baseline_runs: Tuple[float, ...] = ()
    if plan is not None:
        state.reporter.say(f"A/B: {image.name}: {plan.pairs} pairs beside the baseline's image {plan.baseline.tag}")
        with _quiet(state):  # held only now: the baseline's image was obtained (plan) with transfers going
            pairs = ab.run_pairs(plan, image, on, lambda line: state.reporter.say(f"A/B: {image.name}: {line}"))
        result, baseline_runs, note = pairs.result, pairs.baseline_runs, pairs.note
    if note:
        state.reporter.say(f"A/B: {image.name}: {note}; compared with the baseline's row")
    return result, baseline_runs, note
