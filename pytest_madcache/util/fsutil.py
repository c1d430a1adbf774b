"""The one atomic file write: readers see the old file or the new one, never half of one, and a
failed write leaves no temp file behind."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Any, BinaryIO, Iterator, Optional, TextIO, Union

__all__ = ["atomic_write", "fsync_dir", "replacing", "replacing_bytes"]


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (ignored where the filesystem refuses to open a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp_beside(path: Path) -> Path:
    return path.parent / f".tmp-{path.name}-{os.getpid()}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def _replaced(path: Path, text: bool, mode: Optional[int], durable: bool) -> Iterator[IO[Any]]:
    """A temp file beside `path`, flushed (and with `durable`, fsynced) and renamed over it when the
    block ends; removed when the block fails."""
    tmp = _temp_beside(path)
    try:
        fh: IO[Any]
        with (open(tmp, "w", newline="", encoding="utf-8") if text else open(tmp, "wb")) as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: Union[str, Path], data: Union[bytes, str], mode: Optional[int] = None,
                 durable: bool = True) -> None:
    """Write via a temp file in the same directory, fsync, rename, fsync the directory.  `mode`: the
    file's permissions exactly (not masked by the umask), e.g. group-writable in a shared cache.
    `durable=False` leaves out both fsyncs, for files whose loss in a crash costs only time (a memo,
    a journal of work to redo): readers still never see half a file."""
    path = Path(path)
    with _replaced(path, False, mode, durable) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    if durable:
        fsync_dir(path.parent)


@contextlib.contextmanager
def replacing(path: Union[str, Path]) -> Iterator[TextIO]:
    """A text file that replaces `path` in one rename when the block ends (a report, a CSV): readers
    never see half a file, as with `atomic_write(durable=False)`, for writers that stream."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _replaced(path, True, None, durable=False) as fh:
        yield fh  # type: ignore[misc]  # opened in text mode


@contextlib.contextmanager
def replacing_bytes(path: Union[str, Path]) -> Iterator[BinaryIO]:
    """`replacing` for binary writers (a plot)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _replaced(path, False, None, durable=False) as fh:
        yield fh  # type: ignore[misc]  # opened in binary mode
