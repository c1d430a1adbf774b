"""The blob files: content-addressed layers and configs, raw or zstd-compressed, and save leases.

A blob is named by the sha256 of its uncompressed bytes (a layer's diffID),
so entries share layers and a blob is stored once.  A save in progress holds
a lease (a lock file under tmp/ listing the blobs it has published), so
garbage collection never removes a blob that a running save is about to
reference; a dead process's lease is free and is collected.

This module writes and reads blob files; it must not know entries, the
index or limits.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from pytest_madcache.store.entries import hex_of
from pytest_madcache.store.errors import StoreError, unwritable
from pytest_madcache.store.layout import Layout
from pytest_madcache.util.codecs import STORE_CODECS, CodecMissing, Readable, decompressing, parse_codec, shrinks, zstd
from pytest_madcache.util.progress import Progress

__all__ = ["Blobs", "BlobWriter", "Lease", "LeaseSink", "ZSTD_SUFFIX", "COMPRESSIONS", "CHUNK", "blob_ok",
           "logical_size", "read_lines"]

CHUNK = 1 << 20
ZSTD_SUFFIX = ".zst"
COMPRESSIONS = STORE_CODECS  # level 1: see util/codecs.py for what it costs and saves


class Blobs:
    """blobs/sha256/<hex>[.zst]: where each blob's file is, and leases that add new ones."""

    def __init__(self, layout: Layout, compress: Optional[str]) -> None:
        self.layout = layout
        self.dir = layout.blob_dir
        self.compress = check_compression(compress)

    def path(self, digest: str) -> Path:
        """Where the blob lives uncompressed (see `file` for the file that exists)."""
        return self.dir / hex_of(digest)

    def file(self, digest: str) -> Optional[Path]:
        """The stored file of a blob, raw or zstd-compressed, or None."""
        raw = self.dir / hex_of(digest)
        if raw.is_file():
            return raw
        packed = self.dir / (hex_of(digest) + ZSTD_SUFFIX)
        return packed if packed.is_file() else None

    def has(self, digest: str) -> bool:
        return self.file(digest) is not None

    def open(self, digest: str) -> BinaryIO:
        """A reader of the blob's uncompressed bytes (FileNotFoundError when absent)."""
        path = self.file(digest)
        if path is None:
            raise FileNotFoundError(f"blob {digest} is not in {self.dir}")
        return open_stored(path)

    def stored_sizes(self, digests: Iterable[str]) -> Dict[str, int]:
        """Bytes on disk per blob (compressed or not), for the blobs that exist."""
        out = {}
        for d in digests:
            path = self.file(d)
            if path is not None:
                with contextlib.suppress(OSError):
                    out[d] = path.stat().st_size
        return out

    def names(self) -> List[str]:
        """File names under blobs/sha256 (hex, maybe with a suffix); [] when the dir is gone."""
        try:
            return sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []

    @contextlib.contextmanager
    def lease(self) -> Iterator["Lease"]:
        try:
            lease = Lease(self)
        except OSError as exc:
            raise unwritable(exc, self.layout.dir) from None
        try:
            yield lease
        finally:
            lease.close()


class Lease:
    """A save in progress: its lock is held while the process lives; its
    `digests` file lists blobs it has published, which GC must keep."""

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs
        tmp_dir = blobs.layout.tmp_dir
        token = f"{os.getpid()}-{secrets.token_hex(6)}"
        # Lock first, under a name GC ignores, then rename into view: GC never
        # sees a save-* lease whose lock is free while its owner lives.
        young = tmp_dir / f"new-{token}"
        young.mkdir(parents=True)
        blobs.layout.share(young)
        self._lock = blobs.layout.file_lock(str(young / "lock"), timeout=0)
        self._lock.acquire()
        self.dir = tmp_dir / f"save-{token}"
        os.rename(young, self.dir)
        self._digests = open(self.dir / "digests", "a")
        blobs.layout.share(self.dir / "digests")

    def publish(self, digest: str) -> None:
        # Record before the blob appears (or is reused), so a concurrent GC keeps it.
        self._digests.write(hex_of(digest) + "\n")
        self._digests.flush()

    def _place(self, tmp: Path, digest: str, suffix: str = "") -> None:
        self.publish(digest)
        existing = self.blobs.file(digest)
        if existing is not None:
            os.unlink(tmp)
            with contextlib.suppress(OSError):
                os.utime(existing)
        else:
            os.replace(tmp, self.blobs.dir / (hex_of(digest) + suffix))

    def write_blob(self, fh: Readable, progress: Progress, expect: Optional[str] = None,
                   size: Optional[int] = None) -> Tuple[str, int]:
        """Copy a stream into a blob, hashing as it goes; refuse it if it is not `expect`."""
        writer = self.writer(expect, size)
        try:
            chunk = fh.read(CHUNK)
            while chunk:
                writer.write(chunk)
                progress.update(len(chunk))
                chunk = fh.read(CHUNK)
            return writer.finish()
        finally:
            writer.abort()

    def writer(self, expect: Optional[str] = None, size: Optional[int] = None) -> "BlobWriter":
        """A blob written as its bytes arrive (write_blob's loop, or a load that reads a fetch)."""
        return BlobWriter(self, expect, size)

    def write_small_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        tmp = self.dir / f"blob-{secrets.token_hex(6)}"
        tmp.write_bytes(data)
        self.blobs.layout.share(tmp)
        self._place(tmp, digest)
        return digest

    def close(self) -> None:
        self._digests.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        self._lock.release()


class BlobWriter:
    """One blob written chunk by chunk into the lease's dir, hashed as it goes, placed by `finish`.

    With zstd compression on, the first MiB decides: a blob that does not
    shrink by codecs.MIN_GAIN is stored raw, so random weights cost no CPU on
    load.  `size` (when known) goes into the zstd frame header.  `abort`
    removes the temp file of a blob that was not finished (no-op after).
    """

    def __init__(self, lease: Lease, expect: Optional[str], size: Optional[int]) -> None:
        self.lease = lease
        self.expect = expect
        self.size = size
        self.tmp = lease.dir / f"blob-{secrets.token_hex(6)}"
        self.written = 0
        self.done = False
        self._hash = hashlib.sha256()
        self._first = b""  # held until a MiB decides the codec
        self._raw: Optional[BinaryIO] = None
        self._out: Any = None
        self._suffix = ""

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self.written += len(data)
        if self._out is None:
            self._first += data
            if len(self._first) >= CHUNK:
                self._open()
            return
        self._out.write(data)

    def _open(self) -> None:
        blobs = self.lease.blobs
        self._raw = open(self.tmp, "wb")
        blobs.layout.share(self.tmp)
        self._out = self._raw
        if blobs.compress == "zstd" and shrinks("zstd", self._first[:CHUNK], level=1):
            self._suffix = ZSTD_SUFFIX
            self._out = zstd().ZstdCompressor(level=1, write_content_size=self.size is not None).stream_writer(
                self._raw, size=self.size if self.size is not None else -1, closefd=False)
        first, self._first = self._first, b""
        self._out.write(first)

    def finish(self) -> Tuple[str, int]:
        """Check the digest and place the blob; StoreError (and nothing placed) when it is not `expect`."""
        if self._out is None:
            self._open()
        if self._out is not self._raw:
            self._out.close()
        assert self._raw is not None
        self._raw.close()
        digest = "sha256:" + self._hash.hexdigest()
        if self.expect is not None and digest != self.expect:
            raise StoreError(f"fetched data for {self.expect} hashes to {digest}; refused")
        self.lease._place(self.tmp, digest, self._suffix)
        self.done = True
        return digest, self.written

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        if self._raw is not None:
            self._raw.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


class LeaseSink:
    """archive.BlobSink over a save's lease: blobs land in the store, published for GC."""

    def __init__(self, lease: Lease, progress: Progress) -> None:
        self.lease = lease
        self.progress = progress

    def write_blob(self, fh: Readable, size: Optional[int]) -> Tuple[str, int]:
        return self.lease.write_blob(fh, self.progress, size=size)

    def write_small_blob(self, data: bytes) -> str:
        return self.lease.write_small_blob(data)


def check_compression(value: Optional[str]) -> str:
    """The settings' own parser, so `off` (and `0`, `false`) mean `none` here as on the command line."""
    try:
        value = parse_codec(value, STORE_CODECS)
    except ValueError:
        raise StoreError(f"unknown blob compression {value!r}: use one of {', '.join(COMPRESSIONS)} (or off)") from None
    if value == "zstd":
        try:
            zstd("compression 'zstd'")
        except CodecMissing as exc:
            raise StoreError(str(exc)) from None
    return value


def open_stored(path: Path) -> BinaryIO:
    fh = open(path, "rb")
    return decompressing(fh, "zstd") if path.name.endswith(ZSTD_SUFFIX) else fh


def logical_size(path: Optional[Path], known: Optional[int]) -> int:
    """A blob's uncompressed size: from metadata, or the raw file's size."""
    if path is None:
        raise FileNotFoundError("blob vanished")
    if known is not None:
        return known
    if path.name.endswith(ZSTD_SUFFIX):
        raise KeyError("size of a compressed blob no entry describes")
    return path.stat().st_size


def blob_ok(path: Path, digest: str, size: Optional[int]) -> bool:
    """Whether the file's uncompressed bytes hash to `digest` (and have `size`, when given)."""
    h = hashlib.sha256()
    n = 0
    try:
        with open_stored(path) as fh:
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                h.update(chunk)
                n += len(chunk)
    except Exception:  # OSError, or zstd's own error for a damaged frame
        return False
    return h.hexdigest() == hex_of(digest) and (size is None or size == n)


def read_lines(path: Path) -> Set[str]:
    try:
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}
    except OSError:
        return set()
