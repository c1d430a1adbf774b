"""Getting an entry's image into the engine as cheaply as that engine allows.

Present already (under any id it goes by): tag it, load nothing.  Otherwise
stream a load archive in the engine's layout holding only what it lacks
(see EngineInfo.delta), every blob checked against its digest while it
streams, with no temporary tar.  The engine must then have the image: the
containerd store accepts some archives without loading anything, so every
load is checked, and a refused partial load is retried in full.

This module reads blobs and talks to the engine; it must not add entries.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, BinaryIO, Callable, Dict, Mapping, Optional, Set

from pytest_madcache.store import archive
from pytest_madcache.store.blobs import Blobs
from pytest_madcache.store.entries import Entry, LoadResult
from pytest_madcache.store.errors import EntryCorrupt, LoadStopped, StoreError
from pytest_madcache.store.evict import Evictor
from pytest_madcache.store.imageformat import ArchiveError
from pytest_madcache.store.index import Index
from pytest_madcache.store.protocols import StoreEngine
from pytest_madcache.store.tarstream import ReadAhead
from pytest_madcache.util.progress import Progress

if TYPE_CHECKING:
    from pytest_madcache.core.images import ImageInfo

__all__ = ["Loader"]


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
            loaded = self.find_in_engine(engine, entry)
            if loaded is None:
                raise StoreError(f"the engine reported loading {entry.id} but has no image {entry.config}")
        except (EntryCorrupt, LoadStopped):
            raise
        except Exception as exc:
            if not have:
                raise StoreError(f"loading {entry.id} into the engine failed: {exc}") from None
            # The engine may have dropped layers since we looked: send everything.
            self.log(f"Partial load of {entry.id} was refused ({exc}); sending all layers")
            result = self._stream_load(engine, entry, set(), info.load_layout)
            loaded = self.find_in_engine(engine, entry)
            if loaded is None:
                raise StoreError(f"the engine reported loading {entry.id} but has no image {entry.config}") from None
        self.index.touch(entry)
        result.seconds = time.monotonic() - start
        result.image_id = loaded.id
        return result

    def find_in_engine(self, engine: StoreEngine, entry: Entry) -> Optional["ImageInfo"]:
        """The entry's image in the engine under any id it goes by, and only if its layers
        are the entry's: metadata others can write must not point us at another image."""
        found = engine.find(entry.engine_ids)
        return found if found is not None and list(found.diff_ids) == list(entry.layers) else None

    def present_layers(self, engine: StoreEngine, entry: Entry, delta: str) -> Set[str]:
        """Layers a load may leave out: the lower chain the engine has ("chain"), or
        blobs of images we loaded into a containerd store before ("blobs")."""
        entries = self.index.current().values()
        if delta == "chain":
            hints = [i for e in entries if e.id != entry.id and e.layers[:1] == entry.layers[:1]
                     for i in e.engine_ids]
            return set(entry.layers[:engine.present_prefix(entry.layers, hints)])
        if delta == "blobs":
            wanted = set(entry.layers)
            have: Set[str] = set()
            for other in entries:
                shared = wanted & set(other.layers) - have
                if other.id == entry.id or not shared:
                    continue
                if engine.find([other.oci_id]) is not None:
                    have |= shared
            return have
        return set()

    def _stream_load(self, engine: StoreEngine, entry: Entry, have: Set[str], layout: str) -> LoadResult:
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

    def stream(self, engine: StoreEngine, entry: Entry, files: Mapping[str, BinaryIO], have: Set[str],
               layout: str) -> LoadResult:
        """Send the load archive of `entry` holding `files` (config and the layers not in `have`).  A blob
        that does not read or match raises ArchiveError (the engine's load ended short, nothing loaded);
        the engine's own refusal raises StoreError."""
        total = sum(entry.sizes.get(d, 0) for d in files)
        progress = Progress(f"Loading {entry.id}", total=total, enabled=self.progress)
        stream = archive.LoadArchive(entry.config, entry.layers, entry.sizes, entry.repo_tags, files,
                                     layout=layout, on_bytes=progress.update)
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
