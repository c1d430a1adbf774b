"""Sending a blob to a registry: one PUT, or POST + PATCH chunks + PUT, resumed where it broke.

An interrupted chunk resumes from the offset the registry reports (GET on the
upload's location, `Range: 0-N`); an upload the registry forgot (restarted
without a fixed http.secret) starts over.  A body is re-iterable (`Body`
opens a fresh reader each time), so a request sent again after a 401 sends it
whole.  The requests themselves (retries, auth, TLS) are registry.py's, reached
through the `Endpoint` it implements; it must not know what the blob holds
(compression is transfer.py's, entries oci.py's).
"""

from __future__ import annotations

import re
from typing import Any, BinaryIO, Callable, Iterator, Optional, Protocol, Tuple, Union
from urllib.parse import urljoin

import requests

from pytest_madcache.remote.base import RemoteError, RemoteUnavailable
from pytest_madcache.remote.retry import Dropped, RetryPolicy, pause
from pytest_madcache.util.refs import RemoteRef

__all__ = ["CHUNK", "OpenAt", "Endpoint", "Body", "push_blob", "opener", "skip_to"]

CHUNK = 1 << 20  # bytes read, sent or received at a time

OpenAt = Callable[[int], BinaryIO]  # a reader of a blob's bytes from an offset


class Endpoint(Protocol):
    """What an upload needs of the registry client (registry.Registry)."""

    ref: RemoteRef
    retry: RetryPolicy
    upload_chunk: int

    def request(self, method: str, url: str, ok: Tuple[int, ...] = (200,), *, retry: bool = True,
                **kwargs: Any) -> requests.Response: ...

    def url(self, path: str) -> str: ...

    def count_sent(self, n: int) -> None: ...

    def blob_size(self, digest: str) -> Optional[int]: ...


class Body:
    """An upload body: `length` bytes from `open_at(offset)`, counted as they go out.  Each
    iteration opens a fresh reader, so a request sent again (after a 401) sends it whole."""

    def __init__(self, open_at: OpenAt, offset: int, length: int, count: Callable[[int], None]) -> None:
        self.open_at = open_at
        self.offset = offset
        self.len = length
        self._count = count

    def __iter__(self) -> Iterator[bytes]:
        fh = self.open_at(self.offset)
        try:
            left = self.len
            while left > 0:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    raise RemoteError(f"the blob ended {left} bytes early while it was sent")
                left -= len(chunk)
                self._count(len(chunk))
                yield chunk
        finally:
            fh.close()


def push_blob(reg: Endpoint, digest: str, size: int, open_at: OpenAt) -> None:
    """Send a blob the registry lacks: one PUT, or POST + PATCH chunks + PUT above `reg.upload_chunk`.
    Raises RemoteUnavailable when the registry stays away."""
    restarts = 0
    while True:
        try:
            _push_once(reg, digest, size, open_at)
            return
        except Dropped:
            restarts += 1
            if restarts >= reg.retry.attempts:
                raise RemoteUnavailable(f"registry {reg.ref.host} kept failing while {digest[:19]} was sent") \
                    from None
            pause(reg.retry.wait(restarts - 1))
            if reg.blob_size(digest) == size:  # the last attempt got through after all
                return


def _start_upload(reg: Endpoint) -> str:
    resp = reg.request("POST", reg.url("blobs/uploads/"), ok=(202,))
    resp.close()
    location = resp.headers.get("Location")
    if not location:
        raise RemoteError(f"registry {reg.ref.host} gave no upload location")
    return urljoin(reg.url(""), location)


def _push_once(reg: Endpoint, digest: str, size: int, open_at: OpenAt) -> None:
    location = _start_upload(reg)
    octet = {"Content-Type": "application/octet-stream"}
    if size <= reg.upload_chunk:
        _put_final(reg, location, digest, size, open_at, 0)
        return
    offset = 0
    failures = 0
    while offset < size:
        n = min(reg.upload_chunk, size - offset)
        try:
            resp = reg.request(
                "PATCH", location, ok=(202,), retry=False, data=Body(open_at, offset, n, reg.count_sent),
                headers=dict(octet, **{"Content-Range": f"{offset}-{offset + n - 1}", "Content-Length": str(n)}))
            resp.close()
            location = urljoin(reg.url(""), resp.headers.get("Location") or location)
            offset = range_end(resp.headers.get("Range"), offset + n)
            failures = 0
        except Dropped:
            failures += 1
            if failures >= reg.retry.attempts:
                raise
            pause(reg.retry.wait(failures - 1))
            location, offset = _upload_status(reg, location)  # raises Dropped when the upload is gone
    _put_final(reg, location, digest, 0, open_at, size)


def _upload_status(reg: Endpoint, location: str) -> Tuple[str, int]:
    """Where an interrupted upload stands (GET on its location: 204 with Range)."""
    try:
        resp = reg.request("GET", location, ok=(204,))
    except RemoteUnavailable:
        raise
    except RemoteError as exc:
        raise Dropped(f"the registry forgot the upload ({exc}); starting it over") from None
    resp.close()
    next_url = urljoin(reg.url(""), resp.headers.get("Location") or location)
    return next_url, range_end(resp.headers.get("Range"), 0)


def _put_final(reg: Endpoint, location: str, digest: str, length: int, open_at: OpenAt, offset: int) -> None:
    sep = "&" if "?" in location else "?"
    reg.request(
        "PUT", f"{location}{sep}digest={digest}", ok=(201, 204), retry=False,
        data=Body(open_at, offset, length, reg.count_sent) if length else b"",
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)}).close()


def range_end(header: Optional[str], default: int) -> int:
    """The next offset after a `Range: 0-N` upload status (N inclusive)."""
    match = re.match(r"^(?:bytes=)?0-(\d+)$", (header or "").strip())
    if not match:
        return default
    end = int(match.group(1))
    return end + 1 if end > 0 else (1 if default == 1 else 0)  # "0-0": nothing (or one byte) received


class _Borrowed:
    """A caller's file, read from the start each time and never closed here."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        fh.seek(0)

    def read(self, n: int = -1) -> bytes:
        return self.fh.read(n)

    def seek(self, pos: int) -> None:
        self.fh.seek(pos)

    def close(self) -> None:
        pass


def opener(source: Union[BinaryIO, Callable[[], BinaryIO]]) -> OpenAt:
    """Readers from an offset of `source`: a seekable file (borrowed, never closed) or an opener of
    fresh readers."""

    def open_at(offset: int) -> BinaryIO:
        fh = source() if callable(source) else _Borrowed(source)
        skip_to(fh, offset)
        return fh  # type: ignore[return-value]  # _Borrowed reads like a file

    return open_at


def skip_to(fh: Any, offset: int) -> None:
    """Move a reader `offset` bytes on: seek where it can, else read and drop."""
    if not offset:
        return
    try:
        fh.seek(offset)
        return
    except (AttributeError, OSError, ValueError):
        pass
    left = offset
    while left:
        chunk = fh.read(min(CHUNK, left))
        if not chunk:
            raise RemoteError("the blob is shorter than the offset to resume from")
        left -= len(chunk)
