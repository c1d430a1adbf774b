"""Layer blobs between the local store's form and the registry's: compression and parallel fetches.

The store keeps layers as uncompressed tars named by diffID.  On the
registry a layer is usually compressed (gzip for any registry and engine,
zstd where chosen), so it has another digest and size: a `RemoteBlob`.
Here:

* `encode`: a layer's uncompressed bytes -> a compressed spool file and its
  RemoteBlob; a layer whose first MiB does not shrink (random weights) is
  left uncompressed, so no CPU is spent on it either way.
* `decoder`: a compressed stream -> the uncompressed bytes the store writes
  (and checks against the diffID).
* `BlobFetcher`: the `open_blob(diffID)` a remote entry hands the store.
  Each blob is downloaded on a thread into an anonymous spool file, its
  compressed digest checked at the end, resumed with Range when the
  connection drops; with `have` (which blobs the store holds) it downloads
  the next few missing blobs while the store consumes the current one.

It must not speak HTTP itself (registry.py does), know entries (remote.py) or
touch the store's files: it gets readers and hands readers back.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import weakref
from dataclasses import dataclass
from typing import BinaryIO, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from pytest_madcache.remote.base import RemoteError
from pytest_madcache.remote.registry import CHUNK, Registry
from pytest_madcache.util.codecs import REMOTE_CODECS, CodecMissing, CorruptStream, compressor, decompressing, shrinks
from pytest_madcache.util.refs import DOCKER_CONFIG, DOCKER_LAYER, OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD

__all__ = ["RemoteBlob", "COMPRESSIONS", "media_type", "codec_of", "encode", "decoder", "BlobFetcher"]

LAYER_TAR = OCI_LAYER
_MEDIA = {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}
CONFIG_TYPE = OCI_CONFIG
_CODECS = {
    OCI_CONFIG: "none", DOCKER_CONFIG: "none", OCI_LAYER: "none", OCI_LAYER_GZIP: "gzip", OCI_LAYER_ZSTD: "zstd",
    DOCKER_LAYER: "none", DOCKER_LAYER + ".gzip": "gzip", DOCKER_LAYER + ".zstd": "zstd",
}
COMPRESSIONS = REMOTE_CODECS
_LEVELS = {"gzip": 1, "zstd": 3}  # gzip 1: ~110 MB/s and ~0.3x on source trees here; level 6 is 3x slower


@dataclass(frozen=True)
class RemoteBlob:
    """A blob as the registry holds it."""

    digest: str
    size: int
    media_type: str = LAYER_TAR

    @property
    def codec(self) -> str:
        return codec_of(self.media_type)


def media_type(codec: str) -> str:
    return _MEDIA[codec]


def codec_of(media: str) -> str:
    try:
        return _CODECS[media]
    except KeyError:
        raise RemoteError(f"layer media type {media!r} is not one madcache reads (tar, tar+gzip, tar+zstd)") from None


# -- compression ---------------------------------------------------------------------


def encode(reader: BinaryIO, codec: str, spool_dir: Optional[str] = None) -> Optional[Tuple[BinaryIO, RemoteBlob]]:
    """Compress a layer into an anonymous spool file, hashing as it goes.

    None when `codec` is "none" or the layer does not compress (its first
    MiB shrinks by less than codecs.MIN_GAIN): then it goes up as it is.
    """
    if codec == "none":
        return None
    first = reader.read(CHUNK)
    if not shrinks(codec, first, _LEVELS[codec]):
        return None
    spool = tempfile.TemporaryFile(dir=spool_dir)
    try:
        packer = compressor(codec, _LEVELS[codec])
        h = hashlib.sha256()
        size = 0
        chunk = first
        while chunk:
            out = packer.compress(chunk)
            if out:
                h.update(out)
                spool.write(out)
                size += len(out)
            chunk = reader.read(CHUNK)
        out = packer.flush()
        h.update(out)
        spool.write(out)
        size += len(out)
        spool.flush()
    except BaseException:
        spool.close()
        raise
    return spool, RemoteBlob("sha256:" + h.hexdigest(), size, media_type(codec))


class _Decoded:
    """A layer's uncompressed bytes; a damaged stream or a missing zstandard is the remote's error."""

    def __init__(self, source: BinaryIO, codec: str) -> None:
        try:
            self.reader = decompressing(source, codec)
        except CodecMissing as exc:
            raise RemoteError(f"the entry's layers are zstd-compressed: {exc}") from None

    def read(self, n: int = -1) -> bytes:
        try:
            return self.reader.read(n)
        except CorruptStream as exc:
            raise RemoteError(f"the layer is corrupt: {exc}") from None

    def close(self) -> None:
        self.reader.close()


def decoder(source: BinaryIO, codec: str) -> BinaryIO:
    """The uncompressed bytes of `source`, compressed with `codec`."""
    if codec == "none":
        return source
    return _Decoded(source, codec)  # type: ignore[return-value]  # a reader, not a whole file object


# -- fetching ----------------------------------------------------------------------------


class _Cancelled(Exception):
    pass


class _Download:
    """One blob coming from the registry into an anonymous spool file, on its own thread."""

    def __init__(self, registry: Registry, blob: RemoteBlob, spool_dir: Optional[str]) -> None:
        self.registry = registry
        self.blob = blob
        self.spool = tempfile.TemporaryFile(dir=spool_dir)
        self.written = 0
        self.done = False
        self.error: Optional[BaseException] = None
        self.cancelled = False
        self.cond = threading.Condition()
        self._hash = hashlib.sha256()
        self.thread = threading.Thread(target=self._run, name=f"madcache-fetch-{blob.digest[7:19]}", daemon=True)
        self.thread.start()

    def _write(self, data: bytes) -> None:
        if self.cancelled:
            raise _Cancelled()
        self._hash.update(data)
        self.spool.write(data)
        self.spool.flush()
        with self.cond:
            self.written += len(data)
            self.cond.notify_all()

    def _run(self) -> None:
        error: Optional[BaseException] = None
        try:
            self.registry.download(self.blob.digest, self.blob.size, self._write)
            got = "sha256:" + self._hash.hexdigest()
            if got != self.blob.digest or self.written != self.blob.size:
                error = RemoteError(f"blob {self.blob.digest} from {self.registry.ref.host} hashes to {got} "
                                    f"({self.written} of {self.blob.size} bytes); refused")
        except _Cancelled:
            error = RemoteError("the fetch was abandoned")
        except RemoteError as exc:
            error = exc
        except Exception as exc:  # a spool write that failed (disk full) and the like
            error = RemoteError(f"fetching {self.blob.digest[:19]} failed: {exc}")
        with self.cond:
            self.error = error
            self.done = True
            self.cond.notify_all()

    def cancel(self) -> None:
        self.cancelled = True
        if self.done:
            self.spool.close()


class _Tail:
    """Reads a download's spool as it grows; raises the download's error instead of a short EOF."""

    def __init__(self, job: _Download) -> None:
        self.job = job
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        job = self.job
        with job.cond:
            while job.written <= self.pos and not job.done:
                job.cond.wait(1.0)
            if job.written <= self.pos:
                if job.error is not None:
                    raise job.error
                return b""
            if job.done and job.error is not None:
                raise job.error  # never hand out bytes of a blob known to be bad
            avail = job.written - self.pos
        take = avail if not n or n < 0 else min(n, avail)
        data = os.pread(job.spool.fileno(), take, self.pos)
        self.pos += len(data)
        return data

    def close(self) -> None:
        self.job.cancel()
        if not self.job.done:
            return
        self.job.spool.close()


class BlobFetcher:
    """`open_blob(digest)` for a remote entry: digest as the store names it -> its uncompressed bytes.

    `blobs` maps each of the entry's store digests (config, diffIDs) to the
    blob the registry holds; `order` is the order the store asks in.  With
    `have`, the next `parallel - 1` blobs the store lacks are fetched ahead.
    """

    def __init__(self, registry: Registry, blobs: Mapping[str, RemoteBlob], order: Sequence[str],
                 have: Optional[Callable[[str], bool]] = None, parallel: int = 3,
                 spool_dir: Optional[str] = None) -> None:
        self.registry = registry
        self.blobs = dict(blobs)
        self.order = list(dict.fromkeys(order))
        self.have = have
        self.parallel = max(1, parallel)
        self.spool_dir = spool_dir
        self._jobs: Dict[str, _Download] = {}
        self._needed: Optional[List[str]] = None
        weakref.finalize(self, _cancel_all, self._jobs)

    def _start(self, digest: str) -> _Download:
        job = self._jobs.get(digest)
        if job is None:
            try:
                blob = self.blobs[digest]
            except KeyError:
                raise RemoteError(f"the remote entry has no blob {digest}") from None
            job = self._jobs[digest] = _Download(self.registry, blob, self.spool_dir)
        return job

    def __call__(self, digest: str) -> BinaryIO:
        job = self._start(digest)
        del self._jobs[digest]
        if self.have is not None and self.parallel > 1:
            if self._needed is None:
                self._needed = [d for d in self.order if not self.have(d)]
            later = self._needed[self._needed.index(digest) + 1:] if digest in self._needed else []
            for ahead in later[: self.parallel - 1]:
                self._start(ahead)
        return decoder(_Tail(job), job.blob.codec)  # type: ignore[arg-type]  # _Tail reads like a file


def _cancel_all(jobs: Dict[str, _Download]) -> None:
    for job in list(jobs.values()):
        job.cancel()
