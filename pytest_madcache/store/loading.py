"""Getting an entry's image into the engine as cheaply as that engine allows.

Present already (under any id it goes by): tag it, load nothing.  Otherwise
stream a load archive in the engine's layout holding only what it lacks
(see EngineInfo.delta; on a containerd store that includes a base the
engine pulled, named by the compressed descriptors the saving engine
recorded), every blob checked against its digest while it
streams, with no temporary tar.  The engine must then have the image: the
containerd store accepts some archives without loading anything, so every
load is checked, and a refused partial load is retried in full.

This module reads blobs and talks to the engine; it must not add entries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Callable, Dict, FrozenSet, Mapping, Optional, Set

from pytest_madcache.store import archive
from pytest_madcache.store.blobs import Blobs
from pytest_madcache.store.entries import Entry, LoadResult
from pytest_madcache.store.errors import EntryCorrupt, LoadStopped, StoreError
from pytest_madcache.store.evict import Evictor
from pytest_madcache.store.imageformat import ArchiveError, Descriptor
from pytest_madcache.store.index import Index
from pytest_madcache.store.protocols import StoreEngine
from pytest_madcache.store.tarstream import ReadAhead
from pytest_madcache.util.progress import Progress

if TYPE_CHECKING:
    from pytest_madcache.core.images import ImageInfo

__all__ = ["Loader", "Omitted"]


@dataclass(frozen=True)
class Omitted:
    """The layers a load leaves out because the engine holds them, and the manifest's names for
    those it holds under its own descriptor (a pulled, compressed layer) rather than the diffID."""

    layers: FrozenSet[str] = frozenset()
    names: Mapping[str, Descriptor] = field(default_factory=dict)

    def __contains__(self, digest: object) -> bool:
        return digest in self.layers

    def __bool__(self) -> bool:
        return bool(self.layers)


class Loader:
    def __init__(self, index: Index, blobs: Blobs, evictor: Evictor, progress: Optional[bool],
                 log: Callable[[str], None]) -> None:
        self.index = index
        self.blobs = blobs
        self.evictor = evictor
        self.progress = progress
        self.log = log

    def load(self, engine: StoreEngine, entry: Entry) -> LoadResult:
        """The entry's image in the engine; a corrupt or missing blob drops the entry (EntryCorrupt)."""
        start = time.monotonic()
        present = self.find_in_engine(engine, entry)
        if present is not None:
            for ref in entry.repo_tags:
                if ref not in present.repo_tags:
                    engine.tag(present.id, ref)
            self.index.touch(entry)
            return LoadResult("present", seconds=time.monotonic() - start, image_id=present.id)
        info = engine.info
        have = self.present_layers(engine, entry, info.delta)
        try:
            result = self._stream_load(engine, entry, have, info.load_layout)
            loaded = self.find_in_engine(engine, entry, have.names)
            if loaded is None:
                raise StoreError(f"the engine reported loading {entry.id} but has no image {entry.config}")
        except (EntryCorrupt, LoadStopped):
            raise
        except Exception as exc:
            if not have:
                raise StoreError(f"loading {entry.id} into the engine failed: {exc}") from None
            # The engine may have dropped layers since we looked: send everything.
            self.log(f"Partial load of {entry.id} was refused ({exc}); sending all layers")
            result = self._stream_load(engine, entry, Omitted(), info.load_layout)
            loaded = self.find_in_engine(engine, entry)
            if loaded is None:
                raise StoreError(f"the engine reported loading {entry.id} but has no image {entry.config}") from None
        self.index.touch(entry)
        result.seconds = time.monotonic() - start
        result.image_id = loaded.id
        return result

    def find_in_engine(self, engine: StoreEngine, entry: Entry,
                       names: Optional[Mapping[str, Descriptor]] = None) -> Optional["ImageInfo"]:
        """The entry's image in the engine under any id it goes by, and only if its layers
        are the entry's: metadata others can write must not point us at another image.
        `names`: how the load just made named the layers it left out (that changes the id)."""
        found = engine.find([*entry.engine_ids, *([entry.named_id(names)] if names else [])])
        return found if found is not None and list(found.diff_ids) == list(entry.layers) else None

    def present_layers(self, engine: StoreEngine, entry: Entry, delta: str) -> Omitted:
        """Layers a load may leave out: the lower chain the engine has ("chain"); on a containerd
        store ("blobs"), blobs of images we loaded before (sent under their diffIDs) and the lower
        chain of images the engine got elsewhere, named as the saving engine named them."""
        entries = self.index.current().values()
        if delta == "chain":
            hints = [i for e in entries if e.id != entry.id and e.layers[:1] == entry.layers[:1]
                     for i in e.engine_ids]
            return Omitted(frozenset(entry.layers[:engine.present_prefix(entry.layers, hints)]))
        if delta == "blobs":
            wanted = set(entry.layers)
            ours: Set[str] = set()
            for other in entries:
                shared = wanted & set(other.layers) - ours
                if other.id == entry.id or not shared:
                    continue
                if engine.find([other.oci_id]) is not None:
                    ours |= shared
            foreign = set(entry.layers[:engine.present_prefix(entry.layers)]) - ours
            names = {d: n for d, n in ((d, entry.descriptor(d)) for d in foreign) if n is not None}
            return Omitted(frozenset(ours | foreign), names)
        return Omitted()

    def _stream_load(self, engine: StoreEngine, entry: Entry, have: Omitted, layout: str) -> LoadResult:
        send = [d for d in dict.fromkeys(entry.layers) if d not in have]
        files: Dict[str, BinaryIO] = {}
        try:
            # Open every blob before streaming: an eviction after this point
            # cannot pull data from under the load (unlinked files stay readable).
            for digest in [entry.config, *send]:
                try:
                    files[digest] = self.blobs.open(digest)
                except FileNotFoundError:
                    self.evictor.drop_corrupt(entry, f"blob {digest} is missing")
            try:
                return self.stream(engine, entry, files, have, layout)
            except ArchiveError as exc:
                self.evictor.drop_corrupt(entry, str(exc))
                raise AssertionError("unreachable") from None  # pragma: no cover (drop_corrupt raises)
        finally:
            for fh in files.values():
                fh.close()

    def stream(self, engine: StoreEngine, entry: Entry, files: Mapping[str, BinaryIO], have: Omitted,
               layout: str) -> LoadResult:
        """Send the load archive of `entry` holding `files` (config and the layers not in `have`).  A blob
        that does not read or match raises ArchiveError (the engine's load ended short, nothing loaded);
        the engine's own refusal raises StoreError."""
        total = sum(entry.sizes.get(d, 0) for d in files)
        progress = Progress(f"Loading {entry.id}", total=total, enabled=self.progress)
        stream = archive.LoadArchive(entry.config, entry.layers, entry.sizes, entry.repo_tags, files,
                                     layout=layout, names=have.names, on_bytes=progress.update)
        ahead = ReadAhead(stream, depth=16)  # read, decompress and hash on a thread; send on this one
        try:
            engine.load(ahead)
        except LoadStopped:
            raise
        except Exception as exc:
            if stream.bad:
                raise ArchiveError(stream.bad) from None
            raise StoreError(str(exc)) from None
        finally:
            ahead.close(wait=True)  # no thread reads `files` once this returns
            progress.close()
        if stream.bad:
            raise ArchiveError(stream.bad)
        return LoadResult("delta" if have else "full", bytes_sent=stream.sent, layers_sent=len(files) - 1)
