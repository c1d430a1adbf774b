"""How entries and blobs leave: limits (LRU), the one removal transaction, garbage collection, verify.

Every removal (evict, clear, prune, a save's replaced entries, corrupt
blobs, verify's repair) goes through `Evictor.drop_locked`: each entry
directory disappears by one rename, the index is written once, then the
blobs that nothing references any more are collected.  The limits are plain
data (`Limits`) and `choose_evictions` is a pure function, so the cheap
"over the limits?" check and the eviction itself cannot disagree.

This module deletes; it must not create entries or talk to an engine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Callable, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

from filelock import FileLock, Timeout

from pytest_madcache.store.blobs import Blobs, blob_ok, read_lines
from pytest_madcache.store.entries import Entry, VerifyReport, hex_of
from pytest_madcache.store.errors import EntryCorrupt, StoreError
from pytest_madcache.store.index import Index, total_bytes
from pytest_madcache.store.layout import Layout

__all__ = ["Limits", "Session", "choose_evictions", "Evictor"]

STALE_TMP_SECONDS = 3600  # a lease killed before its rename, or a killed build's dir, is collected after this


@dataclass(frozen=True)
class Limits:
    """What the cache may hold: entries, bytes on disk, and age since last use (None: no limit)."""

    max_entries: int
    max_bytes: int
    ttl: Optional[float] = None


@dataclass(frozen=True)
class Session:
    """A test session using the cache: entries used since `since` are its working set.  While
    `running`, no entry of it makes room for another (the limits then hold from its end on)."""

    since: float
    running: bool = True
    keys: FrozenSet[str] = frozenset()  # the keys it asked for: at its end, its own entries go before others'



def choose_evictions(entries: Sequence[Entry], limits: Limits, now: float,
                     protect: AbstractSet[str] = frozenset(), session: Optional[Session] = None) -> List[Entry]:
    """The entries to evict so the rest fit the limits: expired ones, then least recently used first.

    `entries` carry their last use; `protect` (a save's new entry) is never chosen.  With a
    `session`, the entries used since it began are its working set: they go last, and not at
    all while it runs (`session.running`).  Plain LRU would evict, on a suite larger than the
    limit, exactly the entry the next test of the next run asks for first; among the working
    set the newest-created go first instead, so the entries that hit this time hit next time; the
    session's own (`session.keys`) before those a concurrent session used.
    """
    def current(e: Entry) -> bool:
        return session is not None and e.last_used >= session.since

    older = sorted((e for e in entries if not current(e)), key=lambda e: (e.last_used, e.created))
    own = session.keys if session is not None else frozenset()
    working = sorted((e for e in entries if current(e)), key=lambda e: (e.key not in own, -e.created, e.id))
    left = older + working
    chosen: List[Entry] = []
    if limits.ttl is not None:
        for e in older:
            if e.id not in protect and now - e.last_used > limits.ttl:
                chosen.append(e)
                left.remove(e)
    spared = set(protect) | ({e.id for e in working} if session is not None and session.running else set())
    for e in list(left):  # the order above
        if len(left) <= limits.max_entries and total_bytes(left) <= limits.max_bytes:
            break
        if e.id in spared:
            continue
        chosen.append(e)
        left.remove(e)
    return chosen


class Evictor:
    """Removes entries and collects blobs, always under the store lock."""

    def __init__(self, layout: Layout, index: Index, blobs: Blobs, log: Callable[[str], None]) -> None:
        self.layout = layout
        self.index = index
        self.blobs = blobs
        self.log = log

    def over_limits(self, limits: Limits) -> bool:
        """Whether the entries break a limit, read without the lock: a cheap check before `prune`."""
        entries = [self.index.with_last_used(e) for e in self.index.current().values()]
        return bool(choose_evictions(entries, limits, time.time()))

    def prune_locked(self, limits: Limits, protect: AbstractSet[str] = frozenset(),
                     exclude_lease: Optional[Path] = None,
                     drop: Sequence[str] = (), session: Optional[Session] = None) -> List[Entry]:
        """Evict to the limits; `drop` (entries a save replaced) go too, in the same removal.
        Returns the entries evicted for the limits."""
        entries = [self.index.with_last_used(e) for e in self.index.current().values() if e.id not in drop]
        evicted = choose_evictions(entries, limits, time.time(), protect, session)
        self.drop_locked([*drop, *(e.id for e in evicted)], exclude_lease)
        return evicted

    def drop_locked(self, entry_ids: Sequence[str], exclude_lease: Optional[Path] = None) -> None:
        """The one way entries leave: remove their directories, write the index once, collect blobs."""
        for entry_id in entry_ids:
            self.index.remove_dir(entry_id)
        if entry_ids:
            self.index.write_locked()
        self.gc_locked(exclude_lease)

    def gc_locked(self, exclude_lease: Optional[Path] = None) -> Tuple[int, int]:
        """Remove blobs no entry or live save references, and dead saves' leftovers."""
        on_disk = self.blobs.names()
        if not on_disk and not self.blobs.dir.is_dir():
            return 0, 0
        referenced: Set[str] = set()
        for entry_id in self.index.entry_ids():
            entry = self.index.read_meta(entry_id)
            if entry is not None:
                referenced.update(hex_of(d) for d in entry.blobs)
        referenced |= self._live_lease_digests(exclude_lease)
        removed = freed = 0
        for name in on_disk:
            if name.split(".", 1)[0] in referenced:
                continue
            path = self.blobs.dir / name
            with contextlib.suppress(OSError):
                size = path.stat().st_size
                path.unlink()
                removed += 1
                freed += size
        for name in os.listdir(self.layout.dir):
            if name.startswith(".tmp-"):  # torn atomic writes: writers hold this lock
                with contextlib.suppress(OSError):
                    os.unlink(self.layout.dir / name)
        return removed, freed

    def _live_lease_digests(self, exclude: Optional[Path]) -> Set[str]:
        """Digests published by saves still running; dead saves' leases are removed."""
        live: Set[str] = set()
        tmp_dir = self.layout.tmp_dir
        try:
            names = os.listdir(tmp_dir)
        except FileNotFoundError:
            return live
        for name in names:
            path = tmp_dir / name
            if name.startswith("trash-"):
                shutil.rmtree(path, ignore_errors=True)
                continue
            if name.startswith(("new-", "buildx-")):  # a lease killed before its rename; a killed build's dir
                with contextlib.suppress(OSError):
                    if time.time() - path.stat().st_mtime > STALE_TMP_SECONDS:
                        shutil.rmtree(path, ignore_errors=True)
                continue
            if not name.startswith("save-"):
                continue
            if exclude is not None and path == exclude:
                live |= read_lines(path / "digests")
                continue
            if os.path.islink(path / "lock") or os.path.islink(path):
                continue  # not ours: never follow a planted link
            probe = FileLock(str(path / "lock"), timeout=0)
            try:
                probe.acquire()
            except Timeout:
                live |= read_lines(path / "digests")
                continue
            except OSError:
                continue
            try:
                shutil.rmtree(path, ignore_errors=True)  # its process is gone
            finally:
                probe.release()
        return live

    # -- corruption ------------------------------------------------------------

    def drop_corrupt(self, entry: Entry, why: str) -> None:
        """Drop the entry, its bad blobs, and every other entry that needs a bad blob; raise EntryCorrupt."""
        with contextlib.suppress(StoreError):
            with self.layout.lock():
                bad = set()
                for digest in entry.blobs:
                    path = self.blobs.file(digest)
                    if path is None:
                        bad.add(digest)
                    elif not blob_ok(path, digest, entry.sizes.get(digest)):
                        bad.add(digest)
                        with contextlib.suppress(OSError):
                            path.unlink()
                sharing = [other.id for other in self.index.current().values()
                           if other.id != entry.id and bad & set(other.blobs)]
                for other_id in sharing:
                    self.log(f"Dropping cache entry {other_id}: it shares a corrupt blob with {entry.id}")
                self.drop_locked([entry.id, *sharing])
        raise EntryCorrupt(f"cache entry {entry.id} is corrupt ({why}); it has been dropped")

    def verify(self, repair: bool = True) -> VerifyReport:
        """Hash every blob; drop entries that reference a bad or missing blob."""
        report = VerifyReport()
        entries = list(self.index.current().values())
        bad: Set[str] = set()
        paths: Dict[str, Path] = {}
        for name in self.blobs.names():
            if name.startswith("."):
                continue
            path = self.blobs.dir / name
            digest = "sha256:" + name.split(".", 1)[0]
            paths[digest] = path
            report.blobs_checked += 1
            with contextlib.suppress(OSError):
                report.bytes_checked += path.stat().st_size
            if not blob_ok(path, digest, None):
                report.bad_blobs.append(digest)
                bad.add(digest)
        for e in entries:
            for d in e.blobs:
                if d not in bad and not self.blobs.has(d):
                    report.missing_blobs.append(d)
                    bad.add(d)
        broken = [e for e in entries if bad & set(e.blobs)]
        report.broken_entries = [e.id for e in broken]
        if repair and (broken or report.bad_blobs):
            with self.layout.lock():
                for d in report.bad_blobs:
                    with contextlib.suppress(OSError):
                        paths[d].unlink()
                report.dropped_entries = [e.id for e in broken]
                self.drop_locked(report.dropped_entries)
        return report
