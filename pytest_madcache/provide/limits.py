"""The end of a session: pushes an earlier run left unfinished completed, the cache's limits applied
once, with the session's working set last, and what the suite would need to keep all of it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Sequence

from pytest_madcache.remote.base import RemoteBackend
from pytest_madcache.store import Entry, Session, Store

__all__ = ["SessionEnd", "end_session"]


@dataclass(frozen=True)
class SessionEnd:
    """What the end of a session did to the cache, and what its working set needs."""

    evicted: List[Entry]  # evicted now for the limits (the working set last)
    needed_entries: int  # entries the session's keys have in the cache (before evicting)
    needed_bytes: int  # bytes on disk those entries need together (shared layers once)
    max_entries: int
    max_bytes: int
    pushed_bytes: int = 0  # completing pushes an earlier run left unfinished

    @property
    def too_many(self) -> bool:
        return self.needed_entries > self.max_entries

    @property
    def too_big(self) -> bool:
        return self.needed_bytes > self.max_bytes


def end_session(store: Store, session: Session, keys: Sequence[str],
                remote: Optional[RemoteBackend] = None) -> SessionEnd:
    """Complete the pushes to `remote` an earlier run left unfinished (a session that only hits
    pushes nothing else, and would leave them to the next build), before the limits evict their
    blobs.  Then apply the limits: older entries go first, then among the working set the
    newest-created, so that the next identical run hits as much as it can."""
    pushed = remote.push_pending(store.open_blob) if remote is not None else 0
    wanted = set(keys)
    mine = [e for e in store.entries() if e.key in wanted]
    needed = store.total_bytes(mine)
    ended = replace(session, running=False, keys=frozenset(wanted))
    evicted = store.prune(session=ended) if store.over_limits() else []
    return SessionEnd(evicted, len({e.key for e in mine}), needed, store.max_entries, store.max_size_bytes, pushed)
