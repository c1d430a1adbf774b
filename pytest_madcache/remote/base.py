"""What the rest of the package asks of a remote, and what a remote raises: the Protocol and the errors
alone, so each backend (directory.py, oci.py) and the registry client import them from below.

`RemoteBackend` is all that provide.py asks of a remote: find an entry by key (its metadata and a reader
of its blobs), hear that a fetch failed, mark an entry used, take a new entry, complete unfinished pushes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, List, Mapping, Optional, Protocol, Sequence, Tuple

if TYPE_CHECKING:
    from pytest_madcache.store import Entry

__all__ = ["RemoteBackend", "RemoteEntry", "RemoteError", "RemoteUnavailable", "RemoteLister", "RemoteListing"]


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

    def push_pending(self, open_blob: Callable[[str], BinaryIO]) -> int:
        """Complete the pushes from this cache that an earlier run left unfinished; the bytes sent."""

    def sync(self, entries: Sequence["Entry"], open_blob: Callable[[str], BinaryIO],
             every: bool = False) -> Tuple[List[str], int, int]:
        """`madcache push`: add the entries the remote lacks (`every`: all of them), after completing
        pushes an earlier run left unfinished; (ids pushed, unfinished pushes completed, bytes sent)."""


@dataclass(frozen=True)
class RemoteListing:
    """An entry as a remote lists it: its key tag, its metadata (an entry's JSON), when a machine last
    used it, and the remote's own name for it (a manifest digest, an entry id)."""

    tag: str
    meta: Mapping[str, Any]
    last_used: float
    ref: str

    @property
    def id(self) -> str:
        return str(self.meta.get("id", ""))

    @property
    def image(self) -> str:
        return f"{self.meta.get('image_name')}:{self.meta.get('image_tag')}"


class RemoteLister(Protocol):
    """What `madcache list/prune --remote` ask of a backend (its str() names it)."""

    def entries(self) -> List["RemoteListing"]:
        """One listing per entry the remote holds."""

    def prune(self, max_entries: int, ttl: Optional[float], now: Optional[float] = None) -> List["RemoteListing"]:
        """Remove entries by the local rules (TTL, then least recently used beyond the count)."""

    def pull_hint(self, tag: str) -> str:
        """How to get the entry tagged `tag` without madcache ("" when there is no such way)."""
