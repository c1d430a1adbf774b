"""A remote entry loaded into the engine while its blobs arrive, and stored as they pass.

Fetching an entry and then loading it costs the fetch plus the load.  Here the
engine's load archive reads each missing layer from its download as it arrives
(the fetcher keeps the next ones coming), and every byte the engine reads is
also written into the store under a lease.  The entry is committed only once
all its blobs are in and checked (the load archive hashes each, and so does
its writer).  A fault mid-stream leaves no half entry (the lease goes with its
temp files) and no image in the engine (the load stream ends short, so the
engine's own load fails).  A load the engine refuses for its own reasons is
done again from the store, once the import has completed.

It composes the saver (commit), the loader (what the engine lacks, the load
archive) and the blob files; it never decides whether to use the remote.
"""

from __future__ import annotations

import time
from typing import BinaryIO, Callable, Dict, Iterable, Mapping, Optional, Tuple, cast

from pytest_madcache.store.blobs import CHUNK, Blobs, BlobWriter
from pytest_madcache.store.entries import Entry, LoadResult
from pytest_madcache.store.errors import LoadStopped, SaveConflict, StoreError, unwritable
from pytest_madcache.store.evict import Limits
from pytest_madcache.store.imageformat import ArchiveError
from pytest_madcache.store.loading import Loader
from pytest_madcache.store.protocols import StoreEngine
from pytest_madcache.store.saving import Saver
from pytest_madcache.util.progress import Progress

__all__ = ["Tee", "import_and_load"]


class Tee:
    """A fetched blob's reader whose bytes also go to a BlobWriter; at the end the writer places the
    blob.  `error` keeps what the source raised, so a remote fault is told apart from a bad archive."""

    def __init__(self, source: BinaryIO, writer: BlobWriter) -> None:
        self.source = source
        self.writer = writer
        self.error: Optional[BaseException] = None

    def read(self, n: int = -1) -> bytes:
        try:
            chunk = self.source.read(n)
        except Exception as exc:  # the fetch's own error (RemoteError)
            self.error = exc
            raise
        try:
            if chunk:
                self.writer.write(chunk)
            elif not self.writer.done:
                self.writer.finish()
        except OSError as exc:
            self.error = unwritable(exc, self.writer.lease.blobs.layout.dir)
            raise self.error from None
        except StoreError as exc:  # the bytes do not hash to the blob's digest
            self.error = exc
            raise
        return chunk

    def drain(self) -> None:
        """Read what the load left (an engine that stopped early): the store needs the whole blob."""
        while not self.writer.done:
            if self.error is not None:
                raise self.error
            self.read(CHUNK)

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()
        self.writer.abort()


def import_and_load(saver: Saver, loader: Loader, blobs: Blobs, engine: StoreEngine, meta: Mapping[str, object],
                    open_blob: Callable[[str], BinaryIO], limits: Limits,
                    log: Callable[[str], None]) -> Tuple[Entry, int, LoadResult]:
    """Add the remote entry `meta` and load its image, streaming; returns the entry, the bytes
    fetched and how the image reached the engine.  What `open_blob` raises (RemoteError) comes
    through as it is, after the lease is gone."""
    start = time.monotonic()
    entry = Entry.from_json(meta)
    info = engine.info
    try:
        with blobs.lease() as lease:
            for digest in dict.fromkeys(entry.blobs):
                lease.publish(digest)
            have = loader.present_layers(engine, entry, info.delta)
            send = [entry.config, *(d for d in dict.fromkeys(entry.layers) if d not in have)]
            files, tees = _open(blobs, lease.writer, send, entry, open_blob)
            try:
                result: Optional[LoadResult] = None
                try:
                    result = loader.stream(engine, entry, files, have, info.load_layout)
                except LoadStopped:
                    raise
                except (StoreError, ArchiveError) as exc:
                    _raise_fetch_error(tees.values())
                    log(f"The engine did not take the streamed load of {entry.id} ({exc}); loading it from the cache")
                for tee in tees.values():
                    tee.drain()
                fetched = sum(t.writer.written for t in tees.values())
                fetched += _fetch_rest(blobs, lease.write_blob, entry, open_blob)
            finally:
                for fh in files.values():
                    fh.close()
            entry.stored = blobs.stored_sizes(entry.blobs)
            saver.commit_import(entry, lease, limits)
    except SaveConflict:
        # a concurrent prune took a blob we had: the plain import starts again
        entry, fetched = saver.import_entry(meta, open_blob, limits)
        result = None
    except OSError as exc:
        raise unwritable(exc, blobs.layout.dir) from None
    if result is not None:
        loaded = loader.find_in_engine(engine, entry, have.names)
        if loaded is not None:
            result.image_id = loaded.id
            result.seconds = time.monotonic() - start
            return entry, fetched, result
    return entry, fetched, loader.load(engine, entry)


def _open(blobs: Blobs, writer: Callable[[Optional[str], Optional[int]], BlobWriter], send: Iterable[str],
          entry: Entry, open_blob: Callable[[str], BinaryIO]) -> Tuple[Dict[str, BinaryIO], Dict[str, Tee]]:
    """The load's readers: the store's blob where it has it, else the fetch teed into a new blob."""
    files: Dict[str, BinaryIO] = {}
    tees: Dict[str, Tee] = {}
    try:
        for digest in send:
            try:
                files[digest] = blobs.open(digest)
                continue
            except FileNotFoundError:
                pass
            tee = tees[digest] = Tee(open_blob(digest), writer(digest, entry.sizes.get(digest)))
            files[digest] = cast(BinaryIO, tee)  # a reader: read() and close()
    except BaseException:
        for fh in files.values():
            fh.close()
        raise
    return files, tees


def _raise_fetch_error(tees: Iterable[Tee]) -> None:
    """A fetch that failed mid-stream ended the load: raise its error, not the engine's."""
    for tee in tees:
        if tee.error is not None:
            raise tee.error


def _fetch_rest(blobs: Blobs, write_blob: Callable[..., Tuple[str, int]], entry: Entry,
                open_blob: Callable[[str], BinaryIO]) -> int:
    """The blobs the engine already had and the store lacks: fetched after the load."""
    fetched = 0
    for digest in dict.fromkeys(entry.blobs):
        if blobs.has(digest):
            continue
        stream = open_blob(digest)
        try:
            _got, size = write_blob(stream, Progress("", enabled=False), expect=digest, size=entry.sizes.get(digest))
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        fetched += size
    return fetched
