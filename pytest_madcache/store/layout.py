"""Where the cache's files go, and the locks that guard them.

Layout (everything, temp files included, stays inside the directory, so a
read-only root filesystem with one writable cache volume is enough)::

    madcache.json            layout marker and format version
    index.json               derived from entries/*/meta.json; rebuilt if missing or corrupt
    lock                     serialises changes to entries, index and blobs
    blobs/sha256/<hex>       image layers (uncompressed tar, named by diffID) and configs
    entries/<id>/meta.json   one entry: key, image, the manifest (blob digests), sizes
    entries/<id>/used        its mtime is the entry's last use (touched without a lock)
    entries/<id>/files.json  the key's file list (paths and short digests): read only to explain a miss
    last-session.json        what the last test session evicted and needed (for `madcache stats`)
    keys/<key>.lock          single-flight: one build per key at a time
    tmp/                     partial blobs, leases of saves in progress, trash

This module knows paths, permissions and locks; it must not know what an
entry or a blob means.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from filelock import FileLock, Timeout

from pytest_madcache.store.entries import STORE_FORMAT, hex_of
from pytest_madcache.store.errors import LockTimeout, StoreError, unwritable
from pytest_madcache.util.fsutil import atomic_write, fsync_dir

__all__ = ["Layout", "atomic_write", "fsync_dir", "DEFAULT_LOCK_TIMEOUT", "FILES", "LAST_SESSION"]

#: Beside an entry's meta.json: the file list its key was made from (see key.KeyFiles).
FILES = "files.json"
#: In the cache directory: what the last test session evicted and needed.
LAST_SESSION = "last-session.json"

DEFAULT_LOCK_TIMEOUT = 600.0


class Layout:
    """The cache directory's paths and locks; creates the layout on first use."""

    def __init__(self, directory: Path, *, shared: bool, lock_timeout: float, log: Callable[[str], None]) -> None:
        self.dir = directory
        self.shared = bool(shared) or _looks_shared(self.dir)
        self.lock_timeout = lock_timeout
        self.log = log
        self._lock_depth = 0
        self._ensure()

    @property
    def blob_dir(self) -> Path:
        return self.dir / "blobs" / "sha256"

    @property
    def entry_dir(self) -> Path:
        return self.dir / "entries"

    @property
    def tmp_dir(self) -> Path:
        return self.dir / "tmp"

    @property
    def last_session_path(self) -> Path:
        return self.dir / LAST_SESSION

    @property
    def keys_dir(self) -> Path:
        return self.dir / "keys"

    @property
    def index_path(self) -> Path:
        return self.dir / "index.json"

    def _ensure(self) -> None:
        marker = self.dir / "madcache.json"
        try:
            present = marker.is_file()
        except OSError as exc:  # a cache we may not even look into (another user's, 0700)
            raise unwritable(exc, self.dir) from None
        if present:
            try:
                fmt = json.loads(marker.read_text()).get("format")
            except (OSError, ValueError):
                fmt = STORE_FORMAT  # a torn marker is rewritten below
            if fmt != STORE_FORMAT:
                raise StoreError(f"{self.dir} holds a madcache store of format {fmt}; "
                                 f"this version reads {STORE_FORMAT}")
            if all(d.is_dir() for d in (self.blob_dir, self.entry_dir, self.tmp_dir, self.keys_dir)):
                return
        try:
            self._make_dirs()
            if not marker.is_file():
                with self.lock():  # GC removes stray .tmp-* files under this lock
                    if not marker.is_file():
                        self.write(marker, json.dumps({"format": STORE_FORMAT, "tool": "pytest-madcache"}).encode())
        except OSError as exc:
            if self.dir.is_dir() and self.index_path.exists():
                return  # readable but not writable: listing still works
            raise unwritable(exc, self.dir) from None

    @property
    def file_mode(self) -> Optional[int]:
        """The mode of the files the store writes: group read-write in a shared cache, else what
        the umask gives.  Set per file, never through the process's umask (user code shares it)."""
        return 0o660 if self.shared else None

    def share(self, path: Path) -> None:
        """A file or directory just created: in a shared cache, the group may read and write it."""
        if self.shared:
            with contextlib.suppress(OSError):
                os.chmod(path, 0o2770 if path.is_dir() else 0o660)

    def write(self, path: Path, data: bytes) -> None:
        """The store's one way to write a small file: atomic, and shared when the cache is."""
        atomic_write(path, data, mode=self.file_mode)

    def file_lock(self, path: str, timeout: float) -> FileLock:
        return FileLock(path, timeout=timeout, mode=self.file_mode or 0o644)

    def _make_dirs(self) -> None:
        """Create the layout.  What we create is private to the user (0700); a shared
        cache's directories are group-writable with the setgid bit (2770), so files
        created in them belong to the directory's group."""
        mode = 0o2770 if self.shared else 0o700
        for d in (self.dir, self.dir / "blobs", self.blob_dir, self.entry_dir, self.tmp_dir, self.keys_dir):
            if d.is_dir():
                continue
            d.parent.mkdir(parents=True, exist_ok=True)
            try:
                d.mkdir()
            except FileExistsError:
                continue
            with contextlib.suppress(OSError):
                os.chmod(d, mode)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The store lock: held for index, entry and blob-set changes, never for builds.

        Re-entrant within one Layout, so locked code may call helpers that lock.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        try:
            lock = self.file_lock(no_symlink(self.dir / "lock"), timeout=self.lock_timeout)
            with lock:
                self._lock_depth = 1
                try:
                    yield
                finally:
                    self._lock_depth = 0
        except Timeout:
            raise LockTimeout(f"timed out after {self.lock_timeout:.0f}s waiting for {self.dir / 'lock'}") from None
        except OSError as exc:
            raise unwritable(exc, self.dir) from None

    @contextlib.contextmanager
    def key_lock(self, key: str, timeout: Optional[float] = None) -> Iterator[float]:
        """Single-flight per key; yields the seconds spent waiting for it."""
        start = time.monotonic()
        lock = self.file_lock(no_symlink(self.keys_dir / f"{hex_of('sha256:' + key)}.lock"),
                              timeout=self.lock_timeout * 6 if timeout is None else timeout)
        try:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                self.log(f"Waiting for another process building the same image (key {key[:12]})...")
                lock.acquire()
        except Timeout:
            raise LockTimeout(f"timed out waiting for the build of key {key[:12]} in another process") from None
        except OSError as exc:
            raise unwritable(exc, self.dir) from None
        try:
            yield time.monotonic() - start
        finally:
            lock.release()


def no_symlink(path: Path) -> str:
    """A lock file path, refused when it is a symbolic link.

    Whoever can write the cache directory could plant `lock -> ~/.bashrc`;
    older filelock versions open lock files with O_TRUNC and follow links.
    """
    if os.path.islink(path):
        raise StoreError(f"refusing to use lock file {path}: it is a symbolic link (the cache directory may have "
                         "been tampered with); remove it if you trust the directory")
    return str(path)


def _looks_shared(directory: Path) -> bool:
    """An existing cache created shared (setgid, group-writable) stays shared for every user."""
    try:
        mode = os.stat(directory).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_ISGID and mode & stat.S_IWGRP)
