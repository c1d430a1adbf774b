"""Get a model's image: from the cache, by building, or from a named entry.

The one place that decides hit, remote, build and save (`get_or_build`):
the store below it keeps blobs and entries and knows nothing of builds, the
engine builds and loads, the remote fetches and pushes.  No pytest here: it
says what happens in madengine's words through a `say` callable the caller
routes (terminal, report, log), and each image it hands out comes with an
ImageEvent for the session summary.  It must not reach back up into
the plugin.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Protocol, Tuple

from pytest_madcache.core.bases import VIA, BaseResolver, ResolvedBase, resolve_bases
from pytest_madcache.core.events import ImageEvent
from pytest_madcache.core.images import BuildFailed, EngineError
from pytest_madcache.core.key import CacheKey, KeyFiles, KeySpec, key_files, key_for
from pytest_madcache.core.keymemo import KeyCaches
from pytest_madcache.core.model import ModelSpec
from pytest_madcache.core.why import MissReason, explain
from pytest_madcache.engines.docker import Engine
from pytest_madcache.provide.decide import Outcome, build_output, get_cached, get_or_build, run_build
from pytest_madcache.provide.engineops import base_resolver
from pytest_madcache.provide.prefetch import Lines, Prefetcher, fetch_job
from pytest_madcache.remote.base import RemoteBackend
from pytest_madcache.store import Entry, LoadResult, Store, StoreError
from pytest_madcache.store.protocols import StoreEngine
from pytest_madcache.util.progress import human_bytes
from pytest_madcache.util.refs import split_reference

__all__ = ["ModelImage", "ImageService", "ImageError", "Reporter"]


class Reporter(Protocol):
    """Where an ImageService's words go: `say` for madengine's progress lines, `warn` for the
    one-time warnings (the cache could not be used; tests go on without it)."""

    def say(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...


class _Silent:
    def say(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass


class ImageError(RuntimeError):
    """No image for the test: a failed build (message ends with the log's tail) or engine trouble."""


@dataclass(frozen=True)
class ModelImage:
    """The image a model test runs, and how it was obtained."""

    model: ModelSpec
    tag: str  # image reference, name:tag
    image_id: str
    key: str
    key_components: Mapping[str, Any] = field(default_factory=dict)
    cache_hit: bool = False
    cache_id: Optional[str] = None
    load: Optional[str] = None  # "present", "delta", "full" for hits
    build_duration: Optional[float] = None  # this session's build, or the entry's recorded one on a hit
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.model.name


class ImageService:
    """One per process: the engine, the store (opened lazily) and images already obtained.

    An image obtained once in a session is reused for every test with the
    same key, so a parameter sweep asks the cache once.
    """

    def __init__(self, *, enabled: bool, store_factory: Callable[[StoreEngine, Callable[[str], None]], Store],
                 force_rebuild: bool = False, reporter: Optional[Reporter] = None,
                 remote: Optional[RemoteBackend] = None, decide: Optional[Callable[..., "Outcome"]] = None) -> None:
        """`store_factory(engine, log)` opens the cache, its messages going to `log`; `remote`, when
        set, is asked on a local miss and given each new entry (its messages should go to `say`, so
        that what it says for a prefetch is said under the test that takes it)."""
        self.enabled = enabled
        self.remote = remote
        self._prefetcher: Optional[Prefetcher] = None
        self.force_rebuild = force_rebuild
        self._decide = decide or get_or_build  # tests script outcomes here
        self._store_factory = store_factory
        self.reporter: Reporter = reporter or _Silent()
        self._lines = Lines(self.reporter.say)
        self._engine: Optional[Engine] = None
        self._store: Optional[Store] = None
        self._store_failed = False
        self._memo: Dict[str, ModelImage] = {}
        self._gone: set = set()  # baseline images looked for in vain (--perf-ab): asked once a session
        self._bases: Optional[BaseResolver] = None
        self._said_bases: set = set()
        self._held: Dict[str, List[str]] = {}  # key digest -> lines its computation said, for its test
        self.key_caches = KeyCaches()  # file and context digests this session has seen

    def key(self, spec: KeySpec, cache_dir: Optional[Path]) -> CacheKey:
        """The test's key (`key.key_for`), with what this session already hashed remembered."""
        return key_for(spec, cache_dir, self.key_caches)

    def say(self, text: str) -> None:
        """A line for the test at hand; from a prefetch job, kept for the test that takes it."""
        self._lines.say(text)

    # -- resources -------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            try:
                self._engine = Engine.open()
            except EngineError as exc:
                # One line per test: how to get an engine is said in full once, in the header (which
                # reads the engine's own message from this error's __context__); under xdist there is
                # no header, so the command is named here too.
                self._engine = None
                raise ImageError(f"{exc} (start one: python -m pytest_madcache.localengine -- pytest ..., "
                                 "or see \"madcache engine:\" in the header)") from None
        return self._engine

    def resolve_bases(self, spec: ModelSpec, mode: str) -> List[ResolvedBase]:
        """The model's base images resolved for the key by `mode` (nothing to resolve in `tag` mode:
        the engine is not even opened).  Registry answers are kept for the process."""
        if mode == "tag":
            return []
        if self._bases is None:
            self._bases = base_resolver(self.engine, self.reporter.warn)
        resolved = resolve_bases(spec.dockerfile, spec.build_args, mode, self._bases)[1]
        for base in resolved:
            said = f"Base image {base.reference} ({mode}): {VIA[base.via]}" + (
                f" {base.value}" if base.via != "tag" else "")
            if said not in self._said_bases:
                self._said_bases.add(said)
                self.say(said)
        return resolved

    def key_ahead(self, compute: Callable[[], CacheKey]) -> CacheKey:
        """A key computed before its test runs (for the prefetch): what computing it says (its base
        images) is held for the test that asks for that key, not said under the test at hand."""
        said: List[str] = []
        try:
            with self._lines.collecting(said.append):
                key = compute()
        except BaseException:
            for line in said:  # said once per session: not lost, if early
                self.say(line)
            raise
        self._held.setdefault(key.digest, []).extend(said)
        return key

    def store(self) -> Optional[Store]:
        """The cache, or None when it cannot be opened (warned once, tests go on uncached)."""
        if self._store is None and not self._store_failed:
            try:
                self._store = self._store_factory(self.engine, self.say)
            except StoreError as exc:  # CacheUnwritable included
                self._store_failed = True
                self.reporter.warn(f"{exc}; tests go on without the cache")
        return self._store

    def build_tmp_dir(self) -> Optional[Path]:
        """Where builds keep their temp files: the cache's tmp/ while the cache is in use
        (so the plugin writes only there), else None (TMPDIR)."""
        store = self._store if self.enabled else None
        return store.tmp_dir if store is not None else None

    def close(self) -> None:
        self.stop_prefetch()
        if self._engine is not None:
            with contextlib.suppress(Exception):
                self._engine.client.close()
            self._engine = None

    # -- images ----------------------------------------------------------------

    def prefetch(self, keys: Iterable[CacheKey], jobs: int) -> None:
        """Start obtaining the cached images of `keys` in the background, in this order, `jobs` at a
        time (prefetch.py); `obtain` then takes what they found.  Only with the cache in use."""
        if not self.enabled or self.force_rebuild or self.store() is None:
            return
        if self._prefetcher is None:
            self._prefetcher = Prefetcher(fetch_job(self._store_factory, self.engine, self.remote, self._lines), jobs)
        self._prefetcher.want(key for key in keys if key.digest not in self._memo)

    def stop_prefetch(self) -> List[str]:
        """Stop what the prefetch still does (the session's end, Ctrl-C) and wait for its threads; the
        warnings of jobs no test took."""
        if self._prefetcher is None:
            return []
        prefetcher, self._prefetcher = self._prefetcher, None
        return prefetcher.stop()

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Background transfers held at their next chunk for the duration (a model run whose
        performance is compared): the engine does only the run's work meanwhile."""
        if self._prefetcher is None:
            yield
            return
        with self._prefetcher.gate.paused():
            yield

    def _ahead(self, key: CacheKey, event: ImageEvent) -> Tuple[Optional[Outcome], ImageEvent]:
        """What a prefetch found for `key`, its lines said under this test: a hit, or None for the test
        to ask the cache itself (not prefetched, not cached, or the prefetch failed: asked again)."""
        ahead = self._prefetcher.take(key) if self._prefetcher is not None else None
        if ahead is None:
            return None, event
        for line in ahead.lines:
            self.say(line)
        if ahead.error is not None:
            self.say(f"Prefetching the image failed ({ahead.error}); asking the cache again")
            return None, event
        if ahead.outcome is None:
            return None, event
        return ahead.outcome, replace(event, ahead=True, ahead_seconds=ahead.seconds, ahead_waited=ahead.waited)

    def remembered(self, key: CacheKey) -> Optional[ModelImage]:
        return self._memo.get(key.digest)

    def obtain(self, spec: ModelSpec, key: CacheKey, ref: str, params: Mapping[str, Any],
               run_config: Mapping[str, Any], build: Callable[[], Any]) -> Tuple[ModelImage, ImageEvent]:
        """The image for `key`, as a ModelImage plus its event for the summary."""
        event = ImageEvent(model=spec.name, key=key.digest)
        for line in self._held.pop(key.digest, ()):
            self.say(line)
        name, tag = split_reference(ref)
        store = self.store() if self.enabled else None
        if store is None:
            image_id, duration = self._build(build)
            image = self._remember(key.digest, _model_image(spec, ref, image_id, key, params, build_duration=duration))
            return image, replace(event, built=True, build_seconds=duration)

        # The store is open, so the engine answered.
        event = replace(event, cached=True, engine=self.engine.describe())
        built: Dict[str, Any] = {}

        def build_and_announce() -> Any:
            if self.force_rebuild:
                self.say("Force rebuild requested (--force-rebuild). Will build Docker image and replace the "
                         "cache entry.")
                built["reason"] = MissReason("force", "--force-rebuild")
                built["files"] = self._files_json(store, key)
            else:
                reason, files = self._why_missed(store, spec, key)
                built["reason"], built["files"] = reason, files
                self.say("Cache miss. Will build Docker image and save to cache.")
                self.say(reason.line)
            result = build()
            built["result"] = result
            duration = getattr(result, "duration", None)
            if duration is not None:
                self.say(f"Build Duration: {duration:.1f} seconds")
            self.say("Saving Docker image to cache...")
            return result

        evicted_before = len(store.evicted)
        ahead, event = self._ahead(key, event)
        if ahead is not None:
            image, event = self._announce(ahead, spec, ref, key, params, replace(event, evicted=ahead.evicted))
            return self._remember(key.digest, image), event
        try:
            outcome = self._decide(store, key, build_and_announce, remote=self.remote, image_name=name,
                                   image_tag=tag, model_tags=spec.tags, nodes=spec.nodes, run_config=run_config,
                                   force_rebuild=self.force_rebuild, secret_values=spec.secret_values,
                                   recorded=lambda image_id: self.engine.metadata_text(image_id),
                                   files=lambda: built.get("files"))
        except (BuildFailed, ImageError):
            raise
        except EngineError as exc:
            raise ImageError(str(exc)) from None
        except StoreError as exc:
            # The cache failed us after (or instead of) a build: go on without it.
            self.reporter.warn(f"the cache failed ({exc}); tests go on without the cache")
            if "result" in built:
                image_id, duration = build_output(built["result"], None)
            else:
                image_id, duration = self._build(build)
            image = self._remember(key.digest, _model_image(spec, ref, image_id, key, params, build_duration=duration))
            return image, replace(event, cached=False, built=True, build_seconds=duration)
        reason = built.get("reason")
        if reason is not None and not outcome.hit:
            event = replace(event, miss_reason=reason.line, miss_group=reason.group)
        event = replace(event, evicted=len(store.evicted) - evicted_before)
        image, event = self._announce(outcome, spec, ref, key, params, event)
        return self._remember(key.digest, image), event

    def _why_missed(self, store: Store, spec: ModelSpec,
                    key: CacheKey) -> Tuple[MissReason, Optional[Mapping[str, Any]]]:
        """Why `key` missed, against the nearest entry of the model, and the key's file list to keep
        with the new entry (best effort: a file list that cannot be read only makes the reason shorter)."""
        files = self._files(store, key)
        try:
            entries = store.entries()
        except StoreError:
            entries = []
        reason = explain(key.components, files, spec.name, spec.image, entries, store.entry_files)
        return reason, files.to_json() if files is not None else None

    def _files(self, store: Store, key: CacheKey) -> Optional[KeyFiles]:
        try:
            return key_files(key, store.dir, self.key_caches)
        except OSError:
            return None

    def _files_json(self, store: Store, key: CacheKey) -> Optional[Mapping[str, Any]]:
        files = self._files(store, key)
        return files.to_json() if files is not None else None

    def _remember(self, memo_key: str, image: ModelImage) -> ModelImage:
        self._memo[memo_key] = image
        return image

    def _announce(self, outcome: Outcome, spec: ModelSpec, ref: str, key: CacheKey, params: Mapping[str, Any],
                  event: ImageEvent) -> Tuple[ModelImage, ImageEvent]:
        entry = outcome.entry
        event = replace(event, waited=outcome.waited, fetched_bytes=outcome.fetched_bytes,  # 0 without a remote
                        pushed_bytes=outcome.pushed_bytes)
        if outcome.hit and entry is not None:
            load = outcome.load
            self.say(f"Cache hit! Loading Docker image from cache: {entry.id}")
            if load is not None and load.how == "present":
                self.say(f"Docker image already present in the engine; nothing loaded: {entry.id}")
            elif load is not None:
                what = "only the missing layers" if load.how == "delta" else "all layers"
                self.say(f"Docker image loaded from cache successfully: {entry.id} ({what}: {load.layers_sent} "
                         f"layers, {human_bytes(load.bytes_sent)} in {load.seconds:.2f} s)")
            self._ensure_tag(outcome.image_id, ref)
            event = replace(event, hit=True, cache_id=entry.id, how=load.how if load else None,
                            bytes_loaded=load.bytes_sent if load else 0, load_seconds=load.seconds if load else 0.0,
                            entry_build_seconds=entry.build_duration)
            return _model_image(spec, ref, outcome.image_id, key, params, hit=True, entry=entry, load=load,
                                build_duration=entry.build_duration), event
        event = replace(event, built=True, build_seconds=outcome.build_duration)
        if outcome.saved and entry is not None:
            self.say(f"Docker image saved to cache: {entry.id}")
            event = replace(event, cache_id=entry.id)
        if outcome.warning:
            self.say(f"Docker image not saved to cache: {outcome.warning}")
            self.reporter.warn(f"{outcome.warning}; tests go on without the cache")
        return _model_image(spec, ref, outcome.image_id, key, params, entry=entry,
                            build_duration=outcome.build_duration), event

    def _ensure_tag(self, image_id: str, ref: str) -> None:
        try:
            info = self.engine.inspect(image_id)
            if info is not None and ref not in info.repo_tags:
                self.engine.tag(image_id, ref)
        except EngineError:
            pass  # the image id still runs; the tag is a convenience

    def _build(self, build: Callable[[], Any]) -> Tuple[str, Optional[float]]:
        """A build with the cache out of the way."""
        self.say("Building Docker image...")
        image_id, duration = run_build(build)
        self.say(f"Build Duration: {duration:.1f} seconds")
        return image_id, duration

    def baseline_image(self, image: ModelImage, key: str, image_id: str) -> Optional[ModelImage]:
        """`--perf-ab`: the image a baseline row ran (its key and image id), to run beside `image`:
        the engine's copy while it has one, else the cache's (by key, else by image id), else the
        remote's.  None when it is gone; never built again: a new build is not the baseline's image."""
        memo_key = "baseline:" + (key or image_id)
        if memo_key in self._memo:
            return replace(self._memo[memo_key], model=image.model, params=image.params)
        if memo_key in self._gone:
            return None
        found: Optional[ModelImage] = None
        try:
            if image_id and self.engine.has_image(image_id):
                found = replace(image, tag=image_id, image_id=image_id, key=key, cache_hit=False, cache_id=None,
                                load="present")
            store = self.store() if found is None and self.enabled else None
            if store is not None:
                found = self._baseline_from_cache(store, image, key, image_id)
        except (ImageError, EngineError, StoreError) as exc:
            self.say(f"A/B: cannot get the baseline's image ({exc})")
            found = None
        if found is None:
            self._gone.add(memo_key)
            return None
        if found.cache_id:
            rebuilt = (f"; the baseline ran {image_id[:19]}: the same inputs, built again or on another engine kind"
                       if image_id and found.image_id != image_id else "")
            self.say(f"A/B: the baseline's image {found.tag} (from cache entry {found.cache_id}{rebuilt})")
            self._ensure_tag(image.image_id, image.tag)  # a mark's fixed tag stays on this test's image
        else:
            self.say(f"A/B: the baseline's image {found.image_id[:19]} (present in the engine)")
        return self._remember(memo_key, found)

    def _baseline_from_cache(self, store: Store, image: ModelImage, key: str,
                             image_id: str) -> Optional[ModelImage]:
        if not key:  # a row written before rows recorded their key: its entry by the image it holds
            entry = next((e for e in store.entries() if e.image_id == image_id), None)
            key = entry.key if entry is not None else ""
        outcome = get_cached(store, CacheKey(key, {}), self.remote) if key else None
        if outcome is None or outcome.entry is None:
            return None
        return replace(image, tag=outcome.entry.image_ref, image_id=outcome.image_id, key=key, cache_hit=True,
                       cache_id=outcome.entry.id, load=outcome.load.how if outcome.load else None)

    def from_entry(self, spec: ModelSpec, entry: Entry, params: Mapping[str, Any]) -> Tuple[ModelImage, ImageEvent]:
        """`--from-cache ID`: the entry's image, loaded when the engine lacks it."""
        memo = self._memo.get("entry:" + entry.id)
        if memo is not None:
            return memo, ImageEvent(model=spec.name, reused=True)
        store = self._store_factory(self.engine, self.say)
        self.say(f"Running from cache: {entry.id}")
        try:
            load = store.load(entry)
        except EngineError as exc:
            raise ImageError(str(exc)) from None
        except StoreError as exc:
            raise ImageError(f"cannot load cache entry {entry.id}: {exc}") from None
        if load.how == "present":
            self.say(f"Docker image '{entry.image_ref}' already exists locally")
            self.say(f"Docker image already present in the engine; nothing loaded: {entry.id}")
        else:
            self.say(f"Docker image loaded from cache successfully: {entry.id} ({load.layers_sent} layers, "
                     f"{human_bytes(load.bytes_sent)} in {load.seconds:.2f} s)")
        self.say(f"Using cached tags: {', '.join(entry.model_tags)}")
        key = CacheKey(entry.key, dict(entry.key_components))
        image = self._remember("entry:" + entry.id, _model_image(
            spec, entry.image_ref, load.image_id or entry.image_id, key, params, hit=True, entry=entry, load=load,
            build_duration=entry.build_duration))
        return image, ImageEvent(model=spec.name, key=entry.key, cached=True, hit=True, engine=self.engine.describe(),
                                 cache_id=entry.id, how=load.how, bytes_loaded=load.bytes_sent,
                                 load_seconds=load.seconds, entry_build_seconds=entry.build_duration)


def _model_image(spec: ModelSpec, ref: str, image_id: str, key: CacheKey, params: Mapping[str, Any], *,
                 hit: bool = False, entry: Optional[Entry] = None, load: Optional[LoadResult] = None,
                 build_duration: Optional[float] = None) -> ModelImage:
    """The one place a ModelImage is made."""
    return ModelImage(spec, ref, image_id, key.digest, dict(key.components), cache_hit=hit,
                      cache_id=entry.id if entry is not None else None, load=load.how if load else None,
                      build_duration=build_duration, params=dict(params))
