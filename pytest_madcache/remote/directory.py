"""The directory backend: another cache directory as the remote (`file:///path` or an absolute path),
such as a network volume shared by runners whose local disks hold the near cache."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from pytest_madcache.store import Entry, Store
from pytest_madcache.remote.base import RemoteEntry, RemoteError, RemoteListing

__all__ = ["DirectoryRemote"]


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

    def sync(self, entries: Sequence["Entry"], open_blob: Callable[[str], BinaryIO],
             every: bool = False) -> Tuple[List[str], int, int]:
        """Copy the entries this directory lacks (`every`: all given); it keeps no push journal."""
        chosen = [e for e in entries if every or self.find(e.key) is None]
        return [e.id for e in chosen], 0, sum(self.push(e, open_blob) for e in chosen)

    def push_pending(self, open_blob: Callable[[str], BinaryIO]) -> int:
        """Nothing: a push here is one import, committed whole or not at all, so none is left half done."""
        return 0

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

    def entries(self) -> List[RemoteListing]:
        """Every entry, as RemoteCache.entries lists them (its `ref` is the entry id)."""
        store = self._open()
        return [_listing(e) for e in (store.entries() if store else [])]

    def pull_hint(self, tag: str) -> str:
        return ""

    def prune(self, max_entries: int, ttl: Optional[float], now: Optional[float] = None) -> List[RemoteListing]:
        store = self._open()
        if store is None:
            return []
        return [_listing(e) for e in store.prune(max_entries=max_entries, ttl=ttl)]


def _listing(entry: "Entry") -> RemoteListing:
    from pytest_madcache.remote.oci import key_tag

    return RemoteListing(key_tag(entry.key), entry.to_json(), entry.last_used, entry.id)
