"""The entries and their index: which images the cache holds, and when each was last used.

The source of truth is the set of entry directories (entries/<id>/meta.json),
each created by one atomic rename; index.json is a derived view, read without
a lock (it is replaced atomically) and rebuilt from the directories when it
is missing, torn or stale.  Last use is the mtime of entries/<id>/used,
touched without a lock.

This module reads and writes entry metadata; it must not touch blob files
(collecting them is eviction's job) or know engines.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from pytest_madcache.core.key import CacheKey
from pytest_madcache.store.entries import STORE_FORMAT, Entry
from pytest_madcache.store.errors import CacheUnwritable, EntryNotFound, StoreError, unwritable
from pytest_madcache.store.layout import Layout

__all__ = ["Index", "total_bytes", "unique_bytes"]


class Index:
    """Entries by id, read cheaply (memoised on the index file's identity), written under the lock."""

    def __init__(self, layout: Layout, log: Callable[[str], None]) -> None:
        self.layout = layout
        self.log = log
        self._memo: Optional[Tuple[Tuple[int, int, int], Dict[str, Entry]]] = None

    def read_meta(self, entry_id: str) -> Optional[Entry]:
        """One entry from its own directory, or None when its metadata is unreadable."""
        path = self.layout.entry_dir / entry_id / "meta.json"
        try:
            data = json.loads(path.read_text())
            try:
                used: Optional[float] = os.stat(self.layout.entry_dir / entry_id / "used").st_mtime
            except FileNotFoundError:
                used = None
            return Entry.from_json(data, used)
        except (OSError, ValueError, TypeError, StoreError):
            return None

    def entry_ids(self) -> List[str]:
        try:
            return sorted(n for n in os.listdir(self.layout.entry_dir) if n.startswith("run_"))
        except FileNotFoundError:
            return []

    def current(self) -> Dict[str, Entry]:
        """The index, read without a lock (it is replaced atomically), or rebuilt."""
        path = self.layout.index_path
        ids = self.entry_ids()
        try:
            st = os.stat(path)
            memo_key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._memo and self._memo[0] == memo_key and sorted(self._memo[1]) == ids:
                entries = self._memo[1]
            else:
                data = json.loads(path.read_bytes())
                if data.get("format") != STORE_FORMAT:
                    raise ValueError("format")
                entries = {i: Entry.from_json(e) for i, e in data["entries"].items()}
                self._memo = (memo_key, entries)
            if sorted(entries) != ids:
                raise ValueError("index does not match the entry directories")
        except (OSError, ValueError, TypeError, KeyError, AttributeError, StoreError):
            return self._rebuild()
        return entries

    def _rebuild(self) -> Dict[str, Entry]:
        """Rebuild from entries/*/meta.json; drop entries whose metadata is unreadable."""
        try:
            with self.layout.lock():
                return self.write_locked(repair=True)
        except CacheUnwritable:
            # Read-only cache: serve what the metadata says, change nothing.
            return {i: e for i in self.entry_ids() if (e := self.read_meta(i)) is not None}

    def write_locked(self, repair: bool = False) -> Dict[str, Entry]:
        """Write index.json from the entry directories (the store lock held); with `repair`,
        entries whose metadata is unreadable are removed."""
        entries: Dict[str, Entry] = {}
        for entry_id in self.entry_ids():
            entry = self.read_meta(entry_id)
            if entry is None or entry.id != entry_id:
                if repair:
                    self.log(f"Dropping cache entry {entry_id}: its metadata is unreadable")
                    self.remove_dir(entry_id)
                continue
            entries[entry_id] = entry
        data = {"format": STORE_FORMAT, "entries": {i: e.to_json() for i, e in entries.items()}}
        path = self.layout.index_path
        try:
            self.layout.write(path, json.dumps(data, indent=1, sort_keys=True).encode())
            st = os.stat(path)
        except OSError as exc:
            raise unwritable(exc, self.layout.dir) from None
        # What we just wrote is what the next read would parse.
        self._memo = ((st.st_ino, st.st_mtime_ns, st.st_size), dict(entries))
        return entries

    def remove_dir(self, entry_id: str) -> None:
        """The entry disappears with one rename into tmp/; its files are deleted after."""
        src = self.layout.entry_dir / entry_id
        trash = self.layout.tmp_dir / f"trash-{entry_id}-{secrets.token_hex(4)}"
        try:
            os.rename(src, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def with_last_used(self, entry: Entry) -> Entry:
        try:
            entry.last_used = os.stat(self.layout.entry_dir / entry.id / "used").st_mtime
        except OSError:
            entry.last_used = entry.created
        return entry

    # -- queries ---------------------------------------------------------------

    def entries(self) -> List[Entry]:
        """All entries, most recently used first."""
        out = [self.with_last_used(e) for e in self.current().values()]
        return sorted(out, key=lambda e: (e.last_used, e.created), reverse=True)

    def get(self, entry_id: str) -> Entry:
        entry = self.current().get(entry_id)
        if entry is None:
            raise EntryNotFound(entry_id, self.entries())
        return self.with_last_used(entry)

    def lookup(self, key: Union[str, CacheKey]) -> Optional[Entry]:
        """The newest entry saved under `key`, or None."""
        digest = str(key)
        found = [e for e in self.current().values() if e.key == digest]
        if not found:
            return None
        return self.with_last_used(max(found, key=lambda e: e.created))

    def known_sizes(self) -> Dict[str, int]:
        """Uncompressed size per blob digest, as the entries record them."""
        sizes: Dict[str, int] = {}
        for e in self.current().values():
            sizes.update(e.sizes)
        return sizes

    def touch(self, entry: Entry) -> None:
        """Mark an entry used now; lock-free (utime is atomic), silent on a read-only cache."""
        path = self.layout.entry_dir / entry.id / "used"
        try:
            os.utime(path)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                path.touch()
                self.layout.share(path)
        except OSError:
            pass
        entry.last_used = time.time()


def unique_bytes(entries: Sequence[Entry]) -> Dict[str, int]:
    """Per entry, the bytes of blobs no other entry references."""
    users: Dict[str, int] = {}
    for e in entries:
        for d in set(e.blobs):
            users[d] = users.get(d, 0) + 1
    return {e.id: sum(e.disk_bytes(d) for d in set(e.blobs) if users[d] == 1) for e in entries}


def total_bytes(entries: Iterable[Entry]) -> int:
    """Bytes on disk of the blobs the entries reference, each blob counted once."""
    sizes: Dict[str, int] = {}
    for e in entries:
        for d in e.blobs:
            sizes[d] = e.disk_bytes(d)
    return sum(sizes.values())
