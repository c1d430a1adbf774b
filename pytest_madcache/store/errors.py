"""What the store raises: one base class, so callers can degrade to "no cache" in one place.

Only exception types live here; they carry messages a user can act on.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Protocol, Sequence

__all__ = ["StoreError", "CacheUnwritable", "LockTimeout", "EntryNotFound", "EntryCorrupt", "SaveConflict",
           "LoadStopped", "unwritable"]


class StoreError(RuntimeError):
    """The cache cannot do what was asked; the message says why."""


class CacheUnwritable(StoreError):
    """The cache directory cannot be written (read-only, permission denied, disk full)."""


class LockTimeout(StoreError):
    pass


class Listed(Protocol):
    """What the not-found message shows of each entry there is (an `Entry`; named here so the
    errors stay below the entries)."""

    @property
    def id(self) -> str: ...
    @property
    def image_ref(self) -> str: ...
    @property
    def model_tags(self) -> Sequence[str]: ...


class EntryNotFound(StoreError, KeyError):
    def __init__(self, entry_id: str, available: Sequence[Listed] = ()) -> None:
        self.entry_id = entry_id
        self.available = list(available)
        super().__init__(f"Cache entry '{entry_id}' not found")

    def __str__(self) -> str:
        lines = [f"Cache entry '{self.entry_id}' not found"]
        if self.available:
            lines += ["", "Available cache entries:"]
            lines += [f"  - {e.id}: {e.image_ref} (tags: {', '.join(e.model_tags) or '-'})" for e in self.available]
        else:
            lines += ["", "The cache is empty."]
        lines += ["", "Tip: Use 'madcache list' to see all available cache entries"]
        return "\n".join(lines)


class EntryCorrupt(StoreError):
    """An entry's data is missing or does not match its digests; it has been dropped."""


class LoadStopped(StoreError):
    """The caller ended a load mid-stream (its session ended): not the engine's refusal, so nothing
    is retried and nothing is dropped."""


class SaveConflict(StoreError):
    """A blob vanished between publish and commit (collected by a concurrent prune)."""


def unwritable(exc: OSError, directory: Path) -> CacheUnwritable:
    """An OSError from writing the cache, said in words (disk full, read-only, permission)."""
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied"}.get(exc.errno or 0, exc.strerror or str(exc))
    return CacheUnwritable(f"cannot write to the cache directory {directory}: {reason}")
