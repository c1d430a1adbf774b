"""Byte streams under the archives: a lean tar walker and read-ahead threads.

`tarfile` in stream mode buffers through layers that cost more than the
engine's own save here, and a single thread that talks to dockerd while it
hashes and writes leaves the engine idle; these pieces fix both.  They know
nothing of images (that is archive.py) or of where bytes go (the store).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Dict, Iterable, Iterator, Tuple

from pytest_madcache.util.codecs import Readable

__all__ = ["TarError", "iter_tar", "safe_member", "read_exact", "ReadAhead", "Prefetch", "coalesce", "CHUNK"]

CHUNK = 1 << 20
MAX_SMALL_MEMBER = 64 << 20  # extended headers larger than this are not honest ones


class TarError(ValueError):
    """A tar member that is unsafe or malformed."""


def safe_member(name: str) -> str:
    """Normalise a tar member name; refuse absolute paths and `..`."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise TarError(f"refusing image archive member {name!r} (absolute path or '..')")
    return str(PurePosixPath(*[part for part in p.parts if part != "."]))


# -- the tar stream ---------------------------------------------------------------


def read_exact(fh: Readable, n: int) -> bytes:
    data = fh.read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = fh.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class _MemberReader:
    """Exactly `size` bytes of one tar member, read straight from the stream."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh = fh
        self.left = size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.fh.read(n)
        if not data:
            raise EOFError("the archive ends inside a member")
        self.left -= len(data)
        return data

    def drain(self) -> None:
        while self.left > 0:
            self.read(CHUNK)


def iter_tar(fh: BinaryIO) -> Iterator[Tuple[tarfile.TarInfo, _MemberReader]]:
    """Walk a tar stream without tarfile's buffering layers: headers via
    TarInfo.frombuf (checksums checked), member data handed out unbuffered.
    Handles PAX (path, linkpath, size) and GNU long names."""
    overrides: Dict[str, str] = {}
    while True:
        header = read_exact(fh, 512)
        if len(header) < 512:
            if header:
                raise EOFError("the archive ends inside a header")
            return
        if header == b"\0" * 512:
            return
        info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            if info.size > MAX_SMALL_MEMBER:
                raise TarError("oversized extended tar header")
            data = read_exact(fh, info.size)
            read_exact(fh, (-info.size) % 512)
            if info.type == tarfile.GNUTYPE_LONGNAME:
                overrides["path"] = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif info.type == tarfile.GNUTYPE_LONGLINK:
                overrides["linkpath"] = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif info.type == tarfile.XHDTYPE:
                overrides.update(_pax_records(data))
            continue
        if "path" in overrides:
            info.name = overrides["path"]
        if "linkpath" in overrides:
            info.linkname = overrides["linkpath"]
        if "size" in overrides:
            info.size = int(overrides["size"])
        overrides = {}
        size = info.size if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE) else 0
        member = _MemberReader(fh, size)
        yield info, member
        member.drain()
        read_exact(fh, (-size) % 512)


def _pax_records(data: bytes) -> Dict[str, str]:
    out: Dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        record = data[space + 1:pos + length - 1]
        key, _, value = record.partition(b"=")
        out[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class ReadAhead:
    """Runs an iterator of byte chunks on a thread, `depth` chunks ahead of its consumer.

    dockerd is CPU-bound on one core for both `docker save` and `docker
    load`; when the same thread that talks to it also hashes, reads and
    writes blobs, the engine waits in between.  Producing on a thread keeps
    both sides busy.  An exception in the producer is raised in the consumer.
    """

    def __init__(self, chunks: Iterable[bytes], depth: int = 64) -> None:
        import queue
        import threading

        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._pump, args=(iter(chunks),), daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is None:
            self._done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def close(self, wait: bool = False) -> None:
        """Stop the producer; with `wait`, return once it has left its current read (so the caller
        may read what it was reading)."""
        self._stop.set()
        if wait:
            self._thread.join()

    def _put(self, item: Any) -> bool:
        """Queue an item unless the consumer has gone; False when it has."""
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self, it: Iterator[bytes]) -> None:
        end: Any = None
        try:
            for chunk in it:
                if not self._put(chunk):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            end = exc
        self._put(end)


def coalesce(chunks: Iterable[bytes], size: int = CHUNK) -> Iterator[bytes]:
    """The same bytes in pieces of at least `size` (the last may be shorter).

    The engine's save stream arrives in 32 KiB HTTP chunks: handing each one
    across threads cost a save 24,000 queue round trips per 776 MB here.
    """
    parts = []
    held = 0
    for chunk in chunks:
        parts.append(chunk)
        held += len(chunk)
        if held >= size:
            yield parts[0] if len(parts) == 1 else b"".join(parts)
            parts, held = [], 0
    if held:
        yield b"".join(parts)


class Prefetch(io.RawIOBase):
    """A file object over the engine's save stream, read ahead by a thread (see ReadAhead)
    in pieces of about CHUNK bytes."""

    def __init__(self, chunks: Iterable[bytes], depth: int = 16) -> None:
        self._ahead = ReadAhead(coalesce(chunks), depth)
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = memoryview(next(self._ahead))
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        self._ahead.close()
        super().close()
