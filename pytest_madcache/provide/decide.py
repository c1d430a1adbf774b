"""Get or build: the one place that decides, for one key, between a local hit, a remote hit, waiting
for another process building it, and a build followed by a save.  The build is an injected callable,
so tests and the CLI drive the same decisions the plugin does."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Type

from pytest_madcache.core.key import CacheKey
from pytest_madcache.remote.base import RemoteBackend, RemoteError
from pytest_madcache.store import CacheUnwritable, Entry, EntryCorrupt, LoadResult, Store, StoreError

__all__ = ["Outcome", "get_or_build", "get_cached", "run_build", "build_output"]


@dataclass
class Outcome:
    """What `get_or_build` did for one key."""

    entry: Optional[Entry]
    image_id: str
    hit: bool
    load: Optional[LoadResult] = None
    build_duration: Optional[float] = None
    waited: float = 0.0  # seconds spent waiting for another process building the same key
    saved: bool = False
    warning: Optional[str] = None
    fetched_bytes: int = 0  # bytes fetched from the remote cache (a remote hit)
    pushed_bytes: int = 0  # bytes pushed to the remote cache after a build
    evicted: int = 0  # entries a prefetch job's own Store evicted to make room (the session counts its Store's)


# -- get or build: the one place that decides hit, remote, build and save -----------


def get_or_build(
    store: Store,
    key: CacheKey,
    build: Callable[[], Any],
    *,
    remote: Optional[RemoteBackend] = None,
    image_name: str,
    image_tag: str = "latest",
    model_tags: Sequence[str] = (),
    nodes: int = 1,
    run_config: Optional[Mapping[str, Any]] = None,
    force_rebuild: bool = False,
    secret_values: Optional[Mapping[str, str]] = None,
    recorded: Optional[Callable[[str], str]] = None,
    files: Callable[[], Optional[Mapping[str, Any]]] = lambda: None,
) -> Outcome:
    """Load the image for `key` from the cache, or build it once and save it.

    `build()` returns an object with `image_id` and `duration` (the
    engine's BuildResult) or an image id.  A local miss asks `remote`
    (when set) before building, and a new entry is pushed to it.  Only one process builds a
    given key at a time; the others wait and then hit.  A corrupt entry
    or a failed load falls back to building; a cache that cannot be
    written still returns the built image, with `warning` set.  An image
    whose metadata holds one of `secret_values` (build arg name -> value)
    is not cached, locally or remotely, and `warning` says which and why.  `files()`, asked
    after the build, gives the key's file list to keep with the new entry.
    """
    if not force_rebuild:
        hit = _try_hit(store, key)
        if hit:
            return hit
    try:
        key_lock = store.key_lock(key.digest)
        waited = key_lock.__enter__()
    except CacheUnwritable as exc:
        return _build_uncached(build, str(exc))
    try:
        if not force_rebuild or waited > 0.5:
            hit = _try_hit(store, key) or (_try_remote(store, remote, key) if not force_rebuild else None)
            if hit:
                hit.waited = waited
                return hit
        image_id, duration = run_build(build)
        leaked = _secrets_in(recorded, image_id, secret_values or {})
        if leaked:
            return Outcome(None, image_id, hit=False, build_duration=duration, waited=waited,
                           warning=_secret_warning(leaked))
        try:
            entry = store.save(image_id, key, image_name=image_name, image_tag=image_tag,
                              model_tags=model_tags, nodes=nodes, build_duration=duration,
                              run_config=run_config, files=files())
        except CacheUnwritable as exc:
            return Outcome(None, image_id, hit=False, build_duration=duration, waited=waited, warning=str(exc))
        pushed = remote.push(entry, store.open_blob) if remote is not None else 0
        return Outcome(entry, image_id, hit=False, build_duration=duration, waited=waited, saved=True,
                       pushed_bytes=pushed)
    finally:
        key_lock.__exit__(None, None, None)


def _secrets_in(recorded: Optional[Callable[[str], str]], image_id: str,
                secret_values: Mapping[str, str]) -> List[str]:
    """Names of the secrets whose values the engine recorded in the image's config or history
    (the classic builder keeps build args that RUN steps use); their layers are never read.
    `recorded(image_id)` is that text, from the engine (`Engine.metadata_text`)."""
    values = {name: value for name, value in secret_values.items() if value}
    if not values or recorded is None:
        return []
    text = recorded(image_id)
    return sorted(name for name, value in values.items() if value in text or json.dumps(value)[1:-1] in text)


def get_cached(store: Store, key: CacheKey, remote: Optional[RemoteBackend] = None,
               instead: str = "not using it") -> Optional[Outcome]:
    """The image of `key` from the cache, else from the remote; None when neither has it.  Never
    builds: an A/B run wants the baseline's own image, not a new build of what made it, and a
    prefetch leaves builds to the tests.  `instead` ends the line a failed load says."""
    return _try_hit(store, key, instead) or _try_remote(store, remote, key, instead)


def _try_hit(store: Store, key: CacheKey, instead: str = "building instead") -> Optional[Outcome]:
    entry = store.lookup(key)
    if entry is None:
        return None
    return _hit(store, f"{entry.id} from cache", instead, lambda: (entry, 0, store.load(entry)))


def _try_remote(store: Store, remote: Optional[RemoteBackend], key: CacheKey,
                instead: str = "building instead") -> Optional[Outcome]:
    """A local miss: the remote's entry, loaded into the engine while its blobs arrive and stored as
    they pass (store/streaming.py); nothing of it is kept unless all of it came."""
    if remote is None:
        return None
    found = remote.find(key.digest, have=store.has_blob)
    if found is None:
        return None
    try:
        hit = _hit(store, f"{found.meta.get('id', key.digest[:12])} from the remote cache", instead,
                   lambda: store.import_and_load(found.meta, found.open_blob), passing=(CacheUnwritable,))
    except CacheUnwritable as exc:
        # another process (an xdist worker's prefetch) may have committed this very entry meanwhile
        hit = _try_hit(store, key, instead)
        if hit is None:
            store.log(f"Warning: {exc}; not fetching from the remote cache")
        return hit
    except RemoteError as exc:
        remote.failed(key.digest, exc)
        return None
    if hit is not None and hit.entry is not None:
        remote.mark_used(hit.entry)
    return hit


def _hit(store: Store, what: str, instead: str, attempt: Callable[[], Tuple[Entry, int, LoadResult]],
         passing: Tuple[Type[BaseException], ...] = ()) -> Optional[Outcome]:
    """The hit `attempt` gives (entry, bytes fetched, its load), or None once a failed load is said
    (a corrupt entry is dropped by the store); errors in `passing` are the caller's."""
    try:
        entry, fetched, load = attempt()
    except passing:
        raise
    except EntryCorrupt as exc:
        store.log(f"{exc}; {instead}")
        return None
    except StoreError as exc:
        store.log(f"Failed to load {what} ({exc}); {instead}")
        return None
    return Outcome(entry, load.image_id or entry.image_id, hit=True, load=load, build_duration=entry.build_duration,
                   fetched_bytes=fetched)


def _build_uncached(build: Callable[[], Any], warning: str) -> Outcome:
    image_id, duration = run_build(build)
    return Outcome(None, image_id, hit=False, build_duration=duration, warning=warning)


def _secret_warning(names: Sequence[str]) -> str:
    listed = ", ".join(repr(n) for n in names)
    first = names[0]
    return (f"the image records the value of secret build arg {listed} in its metadata (the legacy builder keeps "
            f"build args that RUN steps use in the image history), so it is not cached; read the secret from a "
            f"BuildKit secret mount instead (RUN --mount=type=secret,id={first} ... reads /run/secrets/{first}; "
            f"builder='buildkit' in the model mark, or 'auto' with docker-buildx installed)")


def build_output(result: Any, elapsed: Optional[float]) -> Tuple[str, Optional[float]]:
    """What a build callable returned (an image id, or an object with `image_id` and
    `duration` such as the engine's BuildResult) as (image_id, duration)."""
    if isinstance(result, str):
        return result, elapsed
    return result.image_id, getattr(result, "duration", None) or elapsed


def run_build(build: Callable[[], Any]) -> Tuple[str, Optional[float]]:
    """Run a build callable, timing it when it does not time itself."""
    start = time.monotonic()
    result = build()
    return build_output(result, time.monotonic() - start)
