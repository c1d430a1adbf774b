"""The cache directory: content-addressed blobs, entries, an index, limits.

Why this shape: `docker load` is CPU-bound in dockerd (~100-190 MB/s here)
while presence checks cost ~1 ms, and the engine accepts a load archive that
omits layers it already has.  So entries share layer blobs, a hit with the
image present loads nothing, and a hit with a partial engine sends only the
missing layers, streamed from blobs without a temporary tar.

Concurrency: the source of truth is the set of entry directories, each
created by one atomic rename; the index is a derived view written
atomically under the lock; a save in progress holds a lease so garbage
collection never removes a blob it is about to reference.  A crash at any
point leaves the old or the new state.

`Store` (front.py) is the one door; the rooms behind it are named for their
job (see front.py).  Nothing in this package knows builds or remotes.
"""

from pytest_madcache.store.blobs import ZSTD_SUFFIX
from pytest_madcache.store.entries import Entry, LoadResult, Stats, VerifyReport, new_entry_id
from pytest_madcache.store.errors import (
                                          CacheUnwritable,
                                          EntryCorrupt,
                                          EntryNotFound,
                                          LoadStopped,
                                          LockTimeout,
                                          StoreError,
)
from pytest_madcache.store.evict import Limits, Session, choose_evictions
from pytest_madcache.store.front import GB, Store
from pytest_madcache.util.fsutil import atomic_write

__all__ = [
    "Store", "Entry", "LoadResult", "Stats", "VerifyReport", "Limits", "Session", "choose_evictions",
    "StoreError", "EntryNotFound", "EntryCorrupt", "LockTimeout", "CacheUnwritable", "LoadStopped",
    "new_entry_id", "atomic_write", "ZSTD_SUFFIX", "GB",
]
