"""What the store needs from an image engine, as a Protocol (the real one is `engine.Engine`).

Saving and loading take any object with these methods, so test doubles
(an engine that saves crafted archives) and the real Docker/Podman client
fit the same slot.  Nothing here runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator, List, Optional, Protocol, Sequence

if TYPE_CHECKING:
    from pytest_madcache.core.images import EngineInfo, ImageInfo

__all__ = ["StoreEngine"]


class StoreEngine(Protocol):
    """The engine calls a save or a load makes."""

    @property
    def info(self) -> "EngineInfo": ...

    def inspect(self, ref: str) -> Optional["ImageInfo"]: ...

    def find(self, ids: Iterable[str]) -> Optional["ImageInfo"]: ...

    def tag(self, image_id: str, reference: str) -> None: ...

    def present_prefix(self, diff_ids: Sequence[str], hints: Iterable[str] = ()) -> int: ...

    def save(self, image_id: str, chunk_size: int = ...) -> Iterator[bytes]: ...

    def load(self, data: Iterable[bytes]) -> List[str]: ...
