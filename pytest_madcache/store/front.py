"""`Store`: the cache directory as the plugin, the CLI and the API see it.

A thin front over the rooms of this package: layout and locks
(layout.py), blob files and save leases (blobs.py), entries and the index
(index.py), eviction, garbage collection and verify (evict.py), adding
entries (saving.py) and loading them into an engine (loading.py).  It holds
the limits and the engine, and says nothing of builds or remotes: deciding
hit, remote, build and save is provide.py's job.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    BinaryIO,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from pytest_madcache.core.key import CacheKey
from pytest_madcache.store import streaming
from pytest_madcache.store.blobs import Blobs
from pytest_madcache.store.entries import Entry, LoadResult, Stats, VerifyReport
from pytest_madcache.store.errors import EntryNotFound, StoreError
from pytest_madcache.store.evict import Evictor, Limits, Session
from pytest_madcache.store.index import Index, total_bytes, unique_bytes
from pytest_madcache.store.layout import DEFAULT_LOCK_TIMEOUT, FILES, Layout
from pytest_madcache.store.loading import Loader
from pytest_madcache.store.protocols import StoreEngine
from pytest_madcache.store.saving import Saver

if TYPE_CHECKING:
    from pytest_madcache.core.settings import Settings

__all__ = ["Store", "GB"]

GB = 1024**3


class Store:
    """A cache directory with limits.  Safe to share between processes.

    `engine` (a `StoreEngine`, such as `engine.Engine`) is needed only to
    save and load, so listing and pruning work where no engine runs.
    """

    def __init__(
        self,
        directory: Union[str, Path],
        max_entries: int = 5,
        max_size_bytes: int = 100 * GB,
        ttl: Optional[float] = None,
        engine: Optional[StoreEngine] = None,
        progress: Optional[bool] = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        log: Optional[Callable[[str], None]] = None,
        compress: Optional[str] = None,
        shared: bool = False,
        session: Optional[Session] = None,
    ) -> None:
        self.dir = Path(directory).expanduser()
        self.limits = Limits(max_entries, max_size_bytes, ttl)
        self.engine = engine
        self.log = log or (lambda message: None)
        say = lambda message: self.log(message)  # noqa: E731 -- follows later changes of self.log
        self._layout = Layout(self.dir, shared=shared, lock_timeout=lock_timeout, log=say)
        self._index = Index(self._layout, say)
        self._blobs = Blobs(self._layout, compress)
        self._evictor = Evictor(self._layout, self._index, self._blobs, say)
        self._saver = Saver(self._layout, self._index, self._blobs, self._evictor, progress, say)
        self._loader = Loader(self._index, self._blobs, self._evictor, progress, say)
        self._saver.session = session

    @classmethod
    def from_settings(cls, settings: "Settings", **kwargs: Any) -> "Store":
        """A store as the settings describe it (directory, limits, compression, sharing)."""
        kwargs.setdefault("compress", settings.compress)
        kwargs.setdefault("shared", bool(settings.shared))
        return cls(settings.dir, max_entries=settings.max_entries, max_size_bytes=settings.max_size_bytes,
                   ttl=settings.ttl, **kwargs)

    # -- what it is --------------------------------------------------------------

    @property
    def max_entries(self) -> int:
        return self.limits.max_entries

    @property
    def max_size_bytes(self) -> int:
        return self.limits.max_bytes

    @property
    def ttl(self) -> Optional[float]:
        return self.limits.ttl

    @property
    def compress(self) -> str:
        return self._blobs.compress

    @property
    def shared(self) -> bool:
        return self._layout.shared

    @property
    def blob_dir(self) -> Path:
        return self._layout.blob_dir

    @property
    def entry_dir(self) -> Path:
        return self._layout.entry_dir

    @property
    def tmp_dir(self) -> Path:
        return self._layout.tmp_dir

    def blob_path(self, digest: str) -> Path:
        """Where the blob lives uncompressed (see `blob_file` for the file that exists)."""
        return self._blobs.path(digest)

    def blob_file(self, digest: str) -> Optional[Path]:
        """The stored file of a blob, raw or zstd-compressed, or None."""
        return self._blobs.file(digest)

    def has_blob(self, digest: str) -> bool:
        return self._blobs.has(digest)

    def open_blob(self, digest: str) -> BinaryIO:
        """A reader of the blob's uncompressed bytes (FileNotFoundError when absent)."""
        return self._blobs.open(digest)

    def lock(self) -> contextlib.AbstractContextManager:
        """The store lock (re-entrant within one Store): index, entry and blob-set changes."""
        return self._layout.lock()

    def key_lock(self, key: str, timeout: Optional[float] = None) -> contextlib.AbstractContextManager:
        """Single-flight per key; entering yields the seconds spent waiting for it."""
        return self._layout.key_lock(key, timeout)

    # -- queries -----------------------------------------------------------------

    def entries(self) -> List[Entry]:
        """All entries, most recently used first."""
        return self._index.entries()

    def get(self, entry_id: str) -> Entry:
        return self._index.get(entry_id)

    def lookup(self, key: Union[str, CacheKey]) -> Optional[Entry]:
        """The newest entry saved under `key`, or None."""
        return self._index.lookup(key)

    def unique_bytes(self, entries: Optional[Sequence[Entry]] = None) -> Dict[str, int]:
        """Per entry, the bytes of blobs no other entry references."""
        return unique_bytes(list(self._index.current().values()) if entries is None else list(entries))

    @staticmethod
    def total_bytes(entries: Iterable[Entry]) -> int:
        return total_bytes(entries)

    def stats(self) -> Stats:
        entries = list(self._index.current().values())
        blobs = sum(1 for n in self._blobs.names() if not n.startswith("."))
        total = total_bytes(entries)
        return Stats(
            directory=str(self.dir), entries=len(entries), max_entries=self.max_entries,
            total_bytes=total, max_bytes=self.max_size_bytes, ttl=self.ttl, blobs=blobs,
            shared_bytes_saved=sum(e.own_bytes for e in entries) - total,
        )

    def touch(self, entry: Entry) -> None:
        """Mark an entry used now; lock-free, silent on a read-only cache."""
        self._index.touch(entry)

    # -- adding and loading --------------------------------------------------------

    def save(self, image_id: str, key: Union[str, CacheKey], *, image_name: str, image_tag: str = "latest",
             model_tags: Sequence[str] = (), nodes: int = 1, build_duration: Optional[float] = None,
             run_config: Optional[Mapping[str, Any]] = None, replace: bool = True,
             files: Optional[Mapping[str, Any]] = None) -> Entry:
        """Store an engine image under `key`, streaming the engine's save straight into blobs.

        With `replace`, older entries of the same key are evicted in the same commit.  `files`
        (JSON) is kept beside the entry and read back by `entry_files` only to explain a miss.
        While a `session` runs, a save evicts none of its entries (see evict.choose_evictions).
        """
        return self._saver.save(self._engine("saving"), image_id, key, self.limits, image_name=image_name,
                                image_tag=image_tag, model_tags=model_tags, nodes=nodes,
                                build_duration=build_duration, run_config=run_config, replace=replace,
                                files=files)

    def entry_files(self, entry_id: str) -> Optional[Any]:
        """The file list kept beside an entry (JSON, as saved), or None."""
        entry = self._index.current().get(entry_id)
        if entry is None:
            return None
        try:
            return json.loads((self.entry_dir / entry.id / FILES).read_bytes())
        except (OSError, ValueError):
            return None

    @property
    def evicted(self) -> List[Entry]:
        """The entries this process's saves evicted for the limits."""
        return list(self._saver.evicted)

    def import_entry(self, meta: Mapping[str, Any], open_blob: Callable[[str], BinaryIO],
                     last_used: Optional[float] = None) -> Tuple[Entry, int]:
        """Add an entry whose blobs come from elsewhere (a registry), fetching only the missing
        ones through `open_blob(digest)`; returns the entry and the bytes fetched."""
        return self._saver.import_entry(meta, open_blob, self.limits, last_used)

    def import_and_load(self, meta: Mapping[str, Any],
                        open_blob: Callable[[str], BinaryIO]) -> Tuple[Entry, int, LoadResult]:
        """A remote entry into the cache and its image into the engine at once: the load reads each
        blob as it arrives (streaming.py).  Returns the entry, the bytes fetched and the load."""
        engine = self._engine("loading")
        known = self._index.current().get(str(meta.get("id", "")))
        if known is not None:
            return known, 0, self._loader.load(engine, known)
        return streaming.import_and_load(self._saver, self._loader, self._blobs, engine, meta, open_blob,
                                         self.limits, self.log)

    def load(self, entry: Entry) -> LoadResult:
        """Get an entry's image into the engine as cheaply as that engine allows (see loading.py)."""
        return self._loader.load(self._engine("loading"), entry)

    def _engine(self, what: str) -> StoreEngine:
        if self.engine is None:
            raise StoreError(f"{what} needs an engine")
        return self.engine

    # -- removing ------------------------------------------------------------------

    def evict(self, entry_id: str) -> Entry:
        with self.lock():
            entry = self._index.current().get(entry_id)
            if entry is None:
                raise EntryNotFound(entry_id, self.entries())
            self._evictor.drop_locked([entry_id])
        return entry

    def clear(self) -> List[Entry]:
        with self.lock():
            entries = list(self._index.current().values())
            self._evictor.drop_locked([e.id for e in entries])
        return entries

    def over_limits(self) -> bool:
        """Whether the entries break a limit (count, size, age), read without the lock: a cheap
        check before `prune` for sessions that only hit, which never went through a save's eviction."""
        return self._evictor.over_limits(self.limits)

    def prune(self, max_entries: Optional[int] = None, max_size_bytes: Optional[int] = None,
              ttl: Optional[float] = None, session: Optional[Session] = None) -> List[Entry]:
        """Apply limits now (the store's own where not given); return what was evicted.  With a
        `session` that has ended, its working set goes last (see evict.choose_evictions)."""
        limits = Limits(self.max_entries if max_entries is None else max_entries,
                        self.max_size_bytes if max_size_bytes is None else max_size_bytes,
                        self.ttl if ttl is None else ttl)
        with self.lock():
            self._index.write_locked(repair=True)
            return self._evictor.prune_locked(limits, session=session)

    def record_session(self, record: Mapping[str, Any]) -> None:
        """Keep what the last test session evicted and needed, for `madcache stats`; best effort."""
        with contextlib.suppress(OSError):
            self._layout.write(self._layout.last_session_path, json.dumps(dict(record), sort_keys=True).encode())

    def last_session(self) -> Optional[Dict[str, Any]]:
        """What `record_session` kept, or None."""
        try:
            data = json.loads(self._layout.last_session_path.read_bytes())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def verify(self, repair: bool = True) -> VerifyReport:
        """Hash every blob; drop entries that reference a bad or missing blob."""
        return self._evictor.verify(repair)
