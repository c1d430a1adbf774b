"""Get a model's image: from the cache, by building, or from a named entry.

This is the part of the plugin that does not need pytest: it talks to the
store and the engine and says what happens in madengine's words, through a
`say` callable the caller routes (terminal, report, log).  Each image it
hands out comes with a plain event dict for the session summary.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .engine import BuildFailed, BuildResult, Engine, EngineError
from .key import CacheKey
from .model import ModelSpec
from .progress import human_bytes
from .store import Entry, Outcome, Store, StoreError, build_output, run_build

__all__ = ["ModelImage", "ImageService", "ImageError"]

Say = Callable[[str], None]


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

    def __init__(self, *, enabled: bool, store_factory: Callable[[Engine], Store], force_rebuild: bool = False,
                 warn: Callable[[str], None] = lambda text: None) -> None:
        self.enabled = enabled
        self.force_rebuild = force_rebuild
        self._store_factory = store_factory
        self._warn = warn
        self._engine: Optional[Engine] = None
        self._store: Optional[Store] = None
        self._store_failed = False
        self._memo: Dict[str, ModelImage] = {}
        self.say: Say = lambda text: None  # rebound per test by the caller

    # -- resources -------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            try:
                self._engine = Engine()
                self._engine.ping()
            except EngineError as exc:
                self._engine = None
                raise ImageError(str(exc)) from None
        return self._engine

    def store(self) -> Optional[Store]:
        """The cache, or None when it cannot be opened (warned once, tests go on uncached)."""
        if self._store is None and not self._store_failed:
            try:
                self._store = self._store_factory(self.engine)
                self._store.log = lambda text: self.say(text)
            except StoreError as exc:  # CacheUnwritable included
                self._store_failed = True
                self._warn(f"{exc}; tests go on without the cache")
        return self._store

    def build_tmp_dir(self) -> Optional[Any]:
        """Where builds keep their temp files: the cache's tmp/ while the cache is in use
        (so the plugin writes only there), else None (TMPDIR)."""
        store = self._store if self.enabled else None
        return store.tmp_dir if store is not None else None

    def close(self) -> None:
        if self._engine is not None:
            with contextlib.suppress(Exception):
                self._engine.client.close()
            self._engine = None

    # -- images ----------------------------------------------------------------

    def remembered(self, key: CacheKey) -> Optional[ModelImage]:
        return self._memo.get(key.digest)

    def obtain(self, spec: ModelSpec, key: CacheKey, ref: str, params: Mapping[str, Any],
               run_config: Mapping[str, Any], build: Callable[[], Any]) -> Tuple[ModelImage, Dict[str, Any]]:
        """The image for `key`, as a ModelImage plus an `image` event for the summary."""
        event: Dict[str, Any] = {"kind": "image", "model": spec.name, "key": key.digest, "cached": False,
                                 "hit": False, "built": False}
        name, tag = ref.rsplit(":", 1)
        store = self.store() if self.enabled else None
        if store is None:
            image_id, duration = self._build(build, event, cached=False)
            image = ModelImage(spec, ref, image_id, key.digest, dict(key.components), build_duration=duration,
                               params=dict(params))
            self._memo[key.digest] = image
            return image, event

        event["cached"] = True
        event["engine"] = self.engine.describe()  # the store is open, so the engine answered
        built: Dict[str, Any] = {}

        def build_and_announce() -> Any:
            if self.force_rebuild:
                self.say("Force rebuild requested (--force-rebuild). Will build Docker image and replace the "
                         "cache entry.")
            else:
                self.say("Cache miss. Will build Docker image and save to cache.")
            result = build()
            built["result"] = result
            duration = getattr(result, "duration", None)
            if duration is not None:
                self.say(f"Build Duration: {duration:.1f} seconds")
            self.say("Saving Docker image to cache...")
            return result

        try:
            outcome = store.get_or_build(key, build_and_announce, image_name=name, image_tag=tag,
                                         model_tags=spec.tags, nodes=spec.nodes, run_config=run_config,
                                         force_rebuild=self.force_rebuild, secret_values=spec.secret_values)
        except (BuildFailed, ImageError):
            raise
        except EngineError as exc:
            raise ImageError(str(exc)) from None
        except StoreError as exc:
            # The cache failed us after (or instead of) a build: go on without it.
            self._warn(f"the cache failed ({exc}); tests go on without the cache")
            if "result" in built:
                image_id, duration = build_output(built["result"], None)
            else:
                image_id, duration = self._build(build, event, cached=False)
            event.update(cached=False, built=True, build_seconds=duration)
            image = ModelImage(spec, ref, image_id, key.digest, dict(key.components), build_duration=duration,
                               params=dict(params))
            self._memo[key.digest] = image
            return image, event
        image = self._announce(outcome, spec, ref, key, params, event)
        self._memo[key.digest] = image
        return image, event

    def _announce(self, outcome: Outcome, spec: ModelSpec, ref: str, key: CacheKey, params: Mapping[str, Any],
                  event: Dict[str, Any]) -> ModelImage:
        entry = outcome.entry
        event["waited"] = outcome.waited
        event["fetched_bytes"] = outcome.fetched_bytes  # remote cache traffic (0 without a remote)
        event["pushed_bytes"] = outcome.pushed_bytes
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
            event.update(hit=True, cache_id=entry.id, how=load.how if load else None,
                         bytes_loaded=load.bytes_sent if load else 0, load_seconds=load.seconds if load else 0.0,
                         entry_build_seconds=entry.build_duration)
            return ModelImage(spec, ref, outcome.image_id, key.digest, dict(key.components), cache_hit=True,
                              cache_id=entry.id, load=load.how if load else None,
                              build_duration=entry.build_duration, params=dict(params))
        event.update(built=True, build_seconds=outcome.build_duration)
        if outcome.saved and entry is not None:
            self.say(f"Docker image saved to cache: {entry.id}")
            event["cache_id"] = entry.id
        if outcome.warning:
            self.say(f"Docker image not saved to cache: {outcome.warning}")
            self._warn(f"{outcome.warning}; tests go on without the cache")
        return ModelImage(spec, ref, outcome.image_id, key.digest, dict(key.components), cache_hit=False,
                          cache_id=entry.id if entry is not None else None,
                          build_duration=outcome.build_duration, params=dict(params))

    def _ensure_tag(self, image_id: str, ref: str) -> None:
        try:
            info = self.engine.inspect(image_id)
            if info is not None and ref not in info.repo_tags:
                self.engine.tag(image_id, ref)
        except EngineError:
            pass  # the image id still runs; the tag is a convenience

    def _build(self, build: Callable[[], Any], event: Dict[str, Any], cached: bool) -> Tuple[str, Optional[float]]:
        self.say("Building Docker image...")
        image_id, duration = run_build(build)
        self.say(f"Build Duration: {duration:.1f} seconds")
        event.update(built=True, build_seconds=duration, cached=cached)
        return image_id, duration

    def from_entry(self, spec: ModelSpec, entry: Entry, params: Mapping[str, Any]) -> Tuple[ModelImage, Dict[str, Any]]:
        """`--from-cache ID`: the entry's image, loaded when the engine lacks it."""
        memo = self._memo.get("entry:" + entry.id)
        if memo is not None:
            return memo, {"kind": "image", "reused": True, "model": spec.name}
        store = self._store_factory(self.engine)
        store.log = lambda text: self.say(text)
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
        image = ModelImage(spec, entry.image_ref, load.image_id or entry.image_id, entry.key, dict(entry.key_components),
                           cache_hit=True, cache_id=entry.id, load=load.how, build_duration=entry.build_duration,
                           params=dict(params))
        self._memo["entry:" + entry.id] = image
        event = {"kind": "image", "model": spec.name, "key": entry.key, "cached": True, "hit": True,
                 "engine": self.engine.describe(),
                 "built": False, "cache_id": entry.id, "how": load.how, "bytes_loaded": load.bytes_sent,
                 "load_seconds": load.seconds, "entry_build_seconds": entry.build_duration}
        return image, event


def build_with_engine(engine: Engine, spec: ModelSpec, tag: str, build_args: Mapping[str, str],
                      labels: Mapping[str, str], on_line: Optional[Callable[[str], None]],
                      tmp_dir: Optional[Any] = None) -> BuildResult:
    """The default build: the mark's builder (BuildKit where buildx is found) with the spec's context
    and Dockerfile; build args named in `secrets=` go to BuildKit as secret mounts, not build args."""
    secrets = {name: value for name, value in build_args.items() if name in spec.secrets}
    plain = {name: value for name, value in build_args.items() if name not in secrets}
    return engine.build(spec.context, dockerfile=spec.dockerfile, tag=tag, build_args=plain, labels=labels,
                        on_line=on_line, tmp_dir=tmp_dir, builder=spec.builder, secrets=secrets)
