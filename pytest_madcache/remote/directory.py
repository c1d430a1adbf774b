"""Remote caches: the far cache behind the local directory, as backends behind one small interface.

`RemoteBackend` is all that provide.py asks of a remote: find an entry by
key (its metadata and a reader of its blobs), hear that a fetch failed,
mark an entry used, take a new entry.  Two backends implement it, chosen by
the form of the `--cache-remote` value, the way pytest-benchmark picks its
storage from a URL:

* `REGISTRY/REPOSITORY` (`https://...`, `http://...`): an OCI registry (remote.py);
* `file:///path` or an absolute path: another cache directory, such as a
  network volume shared by runners whose local disks hold the near cache
  (`DirectoryRemote`, below).

Backends never see the local store; provide imports what they return.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Dict, List, Mapping, Optional, Protocol, Tuple

if TYPE_CHECKING:
    from pytest_madcache.store import Entry, Store

__all__ = ["RemoteBackend", "RemoteEntry", "RemoteError", "RemoteUnavailable", "RemoteLister", "DirectoryRemote", "open_remote",
           "directory_of"]


class RemoteError(RuntimeError):
    """The remote refused a request; the message says which and why."""


class RemoteUnavailable(RemoteError):
    """The remote cannot be reached at all (the caller degrades to local-only)."""


@dataclass(frozen=True)
class RemoteEntry:
    """What a remote holds for a key: the entry's metadata and a reader of each blob by digest."""

    meta: Mapping[str, Any]
    open_blob: Callable[[str], BinaryIO]


class RemoteBackend(Protocol):
    """A far cache: asked on a local miss, given every new entry."""

    def find(self, key: str, have: Optional[Callable[[str], bool]] = None) -> Optional[RemoteEntry]:
        """The entry held for `key`, or None (also when the remote fails: the backend warns).  `have(digest)`
        says which blobs the caller holds already, so a backend may fetch the missing ones ahead."""

    def failed(self, key: str, exc: RemoteError) -> None:
        """Reading `key`'s blobs broke after `find`: warn, or turn the remote off."""

    def mark_used(self, entry: "Entry") -> None:
        """A machine fetched `entry`: the remote's own LRU should see it."""

    def push(self, entry: "Entry", open_blob: Callable[[str], BinaryIO]) -> int:
        """Add `entry`, reading its blobs through `open_blob`; returns the bytes sent."""


class RemoteLister(Protocol):
    """What `madcache list/prune --remote` ask of a backend (its str() names it)."""

    def entries(self) -> List[Tuple[str, Dict[str, Any], float, str]]:
        """(key tag, entry metadata, last used, the remote's own id of it) per entry."""

    def prune(self, max_entries: int, ttl: Optional[float], now: Optional[float] = None) -> List[Dict[str, Any]]:
        """Remove entries by the local rules (TTL, then least recently used beyond the count)."""

    def pull_hint(self, tag: str) -> str:
        """How to get the entry tagged `tag` without madcache ("" when there is no such way)."""


def directory_of(text: str) -> Optional[str]:
    """The directory a `file://PATH` or absolute-path remote names (as written: the caller checks it is
    absolute), or None for a registry."""
    if text.startswith("file://"):
        return text[len("file://"):]
    return text if os.path.isabs(text) else None


def open_remote(text: str, log: Optional[Callable[[str], None]] = None,
                env: Mapping[str, str] = os.environ, settings: Any = None) -> "RemoteBackend":
    """The backend the setting names (see the module docstring).  With `settings`, a registry
    remote takes its layer compression from them and keeps its journal in the cache directory."""
    directory = directory_of(text)
    if directory is not None:
        return DirectoryRemote(Path(directory), log)
    from pytest_madcache.remote.oci import RemoteCache

    if settings is not None:
        return RemoteCache.from_settings(settings, log=log, env=env)
    return RemoteCache.from_setting(text, log=log, env=env)


class DirectoryRemote:
    """Another cache directory as the remote: blobs are copied (only those missing), entries keep their ids.

    It has no limits of its own on writes (several runners push to it); `madcache prune --remote`
    applies them, as for a registry.
    """

    def __init__(self, directory: Path, log: Optional[Callable[[str], None]] = None) -> None:
        self.dir = directory
        self.log = log
        self.disabled: Optional[str] = None
        self._store: Optional["Store"] = None

    def __str__(self) -> str:
        return f"file://{self.dir}"

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    def _open(self) -> Optional["Store"]:
        from pytest_madcache.store import Store, StoreError

        if self._store is None and not self.disabled:
            try:
                self._store = Store(self.dir, max_entries=sys.maxsize, max_size_bytes=sys.maxsize)
            except StoreError as exc:
                self.disabled = str(exc)
                self._say(f"Warning: remote cache {self} unavailable ({exc}); using the local cache only")
        return self._store

    def find(self, key: str, have: Optional[Callable[[str], bool]] = None) -> Optional[RemoteEntry]:
        store = self._open()
        entry = store.lookup(key) if store is not None else None
        if store is None or entry is None:
            return None

        def open_blob(digest: str) -> BinaryIO:
            try:
                return store.open_blob(digest)
            except OSError as exc:
                raise RemoteError(f"blob {digest} is gone from {self}: {exc}") from None

        return RemoteEntry(entry.to_json(), open_blob)

    def failed(self, key: str, exc: RemoteError) -> None:
        self._say(f"Warning: could not fetch key {key[:12]} from {self}: {exc}")

    def mark_used(self, entry: "Entry") -> None:
        from pytest_madcache.store import StoreError

        store = self._open()
        if store is not None:
            try:
                store.touch(store.get(entry.id))
            except StoreError:
                pass

    def push(self, entry: "Entry", open_blob: Callable[[str], BinaryIO]) -> int:
        from pytest_madcache.store import StoreError

        store = self._open()
        if store is None:
            return 0
        try:
            _, sent = store.import_entry(entry.to_json(), open_blob, last_used=time.time())
        except (StoreError, OSError) as exc:
            self._say(f"Warning: could not push {entry.id} to {self}: {exc}")
            return 0
        return sent

    # -- what `madcache list/prune --remote` use ---------------------------------------

    def entries(self) -> List[Tuple[str, Dict[str, Any], float, str]]:
        """(key tag, entry metadata, last used, entry id) per entry, as RemoteCache.entries gives them."""
        from pytest_madcache.remote.oci import key_tag

        store = self._open()
        return [(key_tag(e.key), e.to_json(), e.last_used, e.id) for e in (store.entries() if store else [])]

    def pull_hint(self, tag: str) -> str:
        return ""

    def prune(self, max_entries: int, ttl: Optional[float], now: Optional[float] = None) -> List[Dict[str, Any]]:
        store = self._open()
        if store is None:
            return []
        return [e.to_json() for e in store.prune(max_entries=max_entries, ttl=ttl)]
