"""The cache directory: content-addressed blobs, entries, an index, limits.

Layout (everything, temp files included, stays inside the directory, so a
read-only root filesystem with one writable cache volume is enough)::

    madcache.json            layout marker and format version
    index.json               derived from entries/*/meta.json; rebuilt if missing or corrupt
    lock                     serialises changes to entries, index and blobs
    blobs/sha256/<hex>       image layers (uncompressed tar, named by diffID) and configs
    entries/<id>/meta.json   one entry: key, image, the manifest (blob digests), sizes
    entries/<id>/used        its mtime is the entry's last use (touched without a lock)
    keys/<key>.lock          single-flight: one build per key at a time
    tmp/                     partial blobs and leases of saves in progress

Why this shape: `docker load` is CPU-bound in dockerd (~100-190 MB/s here)
while presence checks cost ~1 ms, and the engine accepts a load tar that
omits layers it already has.  So entries share layer blobs, a hit with the
image present loads nothing, and a hit with a partial engine sends only the
missing layers, streamed from blobs without a temporary tar.

Concurrency: the source of truth is the set of entry directories, each
created by one atomic rename; the index is a derived view written
atomically under the lock.  A save in progress holds a lease (a lock file
under tmp/ listing the blobs it has published) so garbage collection never
removes a blob that a running save is about to reference; a dead process's
lease is free and is collected.  A crash at any point leaves the old or the
new state.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import secrets
import stat
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import (TYPE_CHECKING, Any, BinaryIO, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set,
                    Tuple, Union)

from filelock import FileLock, Timeout

from . import archive
from .archive import ArchiveError
from .key import CacheKey
from .progress import Progress
from .tarstream import Prefetch, ReadAhead

if TYPE_CHECKING:
    from .engine import ImageInfo

__all__ = [
    "Store", "Entry", "LoadResult", "Stats", "VerifyReport",
    "StoreError", "EntryNotFound", "EntryCorrupt", "LockTimeout", "CacheUnwritable",
    "new_entry_id",
]

STORE_FORMAT = 1
CHUNK = 1 << 20
GB = 1024**3
DEFAULT_LOCK_TIMEOUT = 600.0
ZSTD_SUFFIX = ".zst"
COMPRESSIONS = ("none", "zstd")
# zstd level 1 compresses model layers ~3x at 300-550 MB/s and decompresses at >1 GB/s here;
# a layer whose first MiB shrinks by less than this factor is stored raw (random weights, archives).
MIN_COMPRESSION_GAIN = 1.1


class StoreError(RuntimeError):
    """The cache cannot do what was asked; the message says why."""


class CacheUnwritable(StoreError):
    """The cache directory cannot be written (read-only, permission denied, disk full)."""


class LockTimeout(StoreError):
    pass


class EntryNotFound(StoreError, KeyError):
    def __init__(self, entry_id: str, available: Sequence["Entry"] = ()) -> None:
        self.entry_id = entry_id
        self.available = list(available)
        super().__init__(f"Cache entry '{entry_id}' not found")

    def __str__(self) -> str:
        lines = [f"Cache entry '{self.entry_id}' not found"]
        if self.available:
            lines += ["", "Available cache entries:"]
            lines += [f"  - {e.id}: {e.image_ref} (tags: {', '.join(e.model_tags) or '-'})" for e in self.available]
        else:
            lines += ["", "The cache is empty."]
        lines += ["", "Tip: Use 'madcache list' to see all available cache entries"]
        return "\n".join(lines)


class EntryCorrupt(StoreError):
    """An entry's data is missing or does not match its digests; it has been dropped."""


class _SaveConflict(StoreError):
    """A blob vanished between publish and commit (collected by a concurrent prune)."""


def new_entry_id(now: Optional[float] = None) -> str:
    """madengine's id form: run_<unix time>_<8 hex>."""
    return f"run_{int(now if now is not None else time.time())}_{secrets.token_hex(4)}"


def _hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise StoreError(f"not a sha256 digest: {digest!r}")
    return hexpart


_ENTRY_ID = re.compile(r"run_[0-9]{1,20}_[0-9a-f]{1,64}")
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")


def _validate_entry(entry: "Entry") -> None:
    """Metadata read back from a cache others may write: types, ids, digests, sizes, tags.

    Everything here later becomes a path, a tar header, a size we trust, or a
    tag the engine applies, so anything odd is refused (the entry is then
    treated as unreadable and dropped by the next repair).
    """
    if not _ENTRY_ID.fullmatch(entry.id):
        raise StoreError(f"bad entry id {entry.id!r}")
    if not isinstance(entry.layers, list) or not isinstance(entry.sizes, dict):
        raise StoreError(f"entry {entry.id}: malformed layers or sizes")
    if not isinstance(entry.repo_tags, list) or not all(isinstance(t, str) and _REF.fullmatch(t)
                                                         for t in entry.repo_tags):
        raise StoreError(f"entry {entry.id}: malformed image tags {entry.repo_tags!r}")
    _hex(entry.image_id)  # the config digest, or a manifest digest on the containerd image store
    for digest, size in entry.sizes.items():
        _hex(digest)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 1 << 50:
            raise StoreError(f"entry {entry.id}: bad size {size!r} for blob {digest}")
    for digest in entry.blobs:
        if digest not in entry.sizes:
            raise StoreError(f"entry {entry.id}: no size for blob {digest}")


def _no_symlink(path: Path) -> str:
    """A lock file path, refused when it is a symbolic link.

    Whoever can write the cache directory could plant `lock -> ~/.bashrc`;
    older filelock versions open lock files with O_TRUNC and follow links.
    """
    if os.path.islink(path):
        raise StoreError(f"refusing to use lock file {path}: it is a symbolic link (the cache directory may have "
                         "been tampered with); remove it if you trust the directory")
    return str(path)


# -- entries -----------------------------------------------------------------


@dataclass
class Entry:
    """One cached image: metadata plus the manifest that references blobs."""

    id: str
    key: str
    image_name: str
    image_tag: str
    image_id: str  # the building engine's id: the config digest, or a manifest digest (containerd store)
    config: str  # config blob digest
    layers: List[str]  # layer blob digests (diffIDs), lowest first
    sizes: Dict[str, int]  # blob digest -> bytes
    repo_tags: List[str] = field(default_factory=list)
    model_tags: List[str] = field(default_factory=list)
    nodes: int = 1
    created: float = 0.0
    last_used: float = 0.0
    build_duration: Optional[float] = None
    key_components: Dict[str, Any] = field(default_factory=dict)
    run_config: Dict[str, Any] = field(default_factory=dict)
    stored: Dict[str, int] = field(default_factory=dict)  # blob digest -> bytes on disk (compressed or not)
    format: int = STORE_FORMAT

    @property
    def image_ref(self) -> str:
        return f"{self.image_name}:{self.image_tag}"

    @property
    def blobs(self) -> List[str]:
        return [self.config, *self.layers]

    @property
    def oci_id(self) -> str:
        """The id a containerd image store gives this image after loading our OCI archive."""
        return archive.oci_image_id(self.config, self.layers, self.sizes)

    @property
    def engine_ids(self) -> List[str]:
        """Every id this image goes by in an engine: as built; as classic Docker and
        Podman name it after a load (the config digest); as the containerd store
        names it after a load (`oci_id`)."""
        return list(dict.fromkeys([self.image_id, self.config, self.oci_id]))

    @property
    def own_bytes(self) -> int:
        """Bytes on disk of every blob the entry references, shared or not."""
        return sum(self.disk_bytes(d) for d in set(self.blobs))

    def disk_bytes(self, digest: str) -> int:
        return self.stored.get(digest, self.sizes.get(digest, 0))

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data.pop("last_used")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], last_used: Optional[float] = None) -> "Entry":
        known = {f for f in cls.__dataclass_fields__}
        fields = {k: v for k, v in data.items() if k in known}
        entry = cls(**fields)
        entry.last_used = last_used if last_used is not None else entry.created
        # Validate what we will later turn into paths.
        for digest in entry.blobs:
            _hex(digest)
        if not entry.id.startswith("run_") or "/" in entry.id or entry.id in (".", ".."):
            raise StoreError(f"bad entry id {entry.id!r}")
        _validate_entry(entry)
        return entry


@dataclass
class LoadResult:
    """How a hit reached the engine."""

    how: str  # "present": nothing loaded; "delta": only missing layers; "full": everything
    bytes_sent: int = 0
    layers_sent: int = 0
    seconds: float = 0.0
    image_id: str = ""  # the id the engine has the image under now


@dataclass
class Stats:
    directory: str
    entries: int
    max_entries: int
    total_bytes: int  # unique blob bytes referenced by entries
    max_bytes: int
    ttl: Optional[float]
    blobs: int
    shared_bytes_saved: int  # what separate tars would have cost on top

    @property
    def usage(self) -> float:
        return 100.0 * self.total_bytes / self.max_bytes if self.max_bytes else 0.0


@dataclass
class VerifyReport:
    blobs_checked: int = 0
    bytes_checked: int = 0
    bad_blobs: List[str] = field(default_factory=list)
    missing_blobs: List[str] = field(default_factory=list)
    broken_entries: List[str] = field(default_factory=list)  # reference a bad or missing blob
    dropped_entries: List[str] = field(default_factory=list)  # removed because of that (repair=True)

    @property
    def ok(self) -> bool:
        return not (self.bad_blobs or self.missing_blobs or self.broken_entries)


# -- file helpers --------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory, fsync, rename: readers see old or new."""
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _unwritable(exc: OSError, directory: Path) -> CacheUnwritable:
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied"}.get(exc.errno or 0, exc.strerror or str(exc))
    return CacheUnwritable(f"cannot write to the cache directory {directory}: {reason}")


# -- the store -------------------------------------------------------------------


class Store:
    """A cache directory with limits.  Safe to share between processes.

    `engine` is a `pytest_madcache.engine.Engine`; only save/load need it, so
    listing and pruning work where no engine runs.
    """

    def __init__(
        self,
        directory: Union[str, Path],
        max_entries: int = 5,
        max_size_bytes: int = 100 * GB,
        ttl: Optional[float] = None,
        engine: Any = None,
        progress: Optional[bool] = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        log: Optional[Callable[[str], None]] = None,
        remote: Any = None,
        compress: Optional[str] = None,
        shared: bool = False,
    ) -> None:
        self.dir = Path(directory).expanduser()
        self.shared = bool(shared) or _looks_shared(self.dir)
        if self.shared:
            _group_writable_umask()
        self.max_entries = max_entries
        self.max_size_bytes = max_size_bytes
        self.ttl = ttl
        self.engine = engine
        self.progress = progress
        self.lock_timeout = lock_timeout
        self.log = log or (lambda message: None)
        self.compress = _check_compression(compress)
        self.remote = remote  # a remote.RemoteCache, consulted on a local miss
        if remote is not None and getattr(remote, "log", None) is None:
            remote.log = lambda message: self.log(message)  # follows later changes of self.log
        self._index_memo: Optional[Tuple[Tuple[int, int, int], Dict[str, Entry]]] = None
        self._lock_depth = 0
        self._ensure_layout()

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> "Store":
        """A store as the settings describe it, with its remote cache when one is set."""
        if getattr(settings, "remote", None) and "remote" not in kwargs:
            from .remote import RemoteCache

            kwargs["remote"] = RemoteCache.from_setting(settings.remote, log=kwargs.get("log"))
        kwargs.setdefault("compress", getattr(settings, "compress", None))
        kwargs.setdefault("shared", bool(getattr(settings, "shared", False)))
        return cls(settings.dir, max_entries=settings.max_entries, max_size_bytes=settings.max_size_bytes,
                   ttl=settings.ttl, **kwargs)

    # -- layout ----------------------------------------------------------------

    @property
    def blob_dir(self) -> Path:
        return self.dir / "blobs" / "sha256"

    @property
    def entry_dir(self) -> Path:
        return self.dir / "entries"

    @property
    def tmp_dir(self) -> Path:
        return self.dir / "tmp"

    def blob_path(self, digest: str) -> Path:
        """Where the blob lives uncompressed (see `blob_file` for the file that exists)."""
        return self.blob_dir / _hex(digest)

    def blob_file(self, digest: str) -> Optional[Path]:
        """The stored file of a blob, raw or zstd-compressed, or None."""
        raw = self.blob_dir / _hex(digest)
        if raw.is_file():
            return raw
        packed = self.blob_dir / (_hex(digest) + ZSTD_SUFFIX)
        return packed if packed.is_file() else None

    def has_blob(self, digest: str) -> bool:
        return self.blob_file(digest) is not None

    def open_blob(self, digest: str) -> BinaryIO:
        """A reader of the blob's uncompressed bytes (FileNotFoundError when absent)."""
        path = self.blob_file(digest)
        if path is None:
            raise FileNotFoundError(f"blob {digest} is not in {self.blob_dir}")
        return _open_stored(path)

    def _known_sizes(self) -> Dict[str, int]:
        sizes: Dict[str, int] = {}
        for e in self._index().values():
            sizes.update(e.sizes)
        return sizes

    def _ensure_layout(self) -> None:
        marker = self.dir / "madcache.json"
        try:
            present = marker.is_file()
        except OSError as exc:  # a cache we may not even look into (another user's, 0700)
            raise _unwritable(exc, self.dir) from None
        if present:
            try:
                fmt = json.loads(marker.read_text()).get("format")
            except (OSError, ValueError):
                fmt = STORE_FORMAT  # a torn marker is rewritten below
            if fmt != STORE_FORMAT:
                raise StoreError(f"{self.dir} holds a madcache store of format {fmt}; this version reads {STORE_FORMAT}")
            if all(d.is_dir() for d in (self.blob_dir, self.entry_dir, self.tmp_dir, self.dir / "keys")):
                return
        try:
            self._make_dirs()
            if not marker.is_file():
                with self.lock():  # GC removes stray .tmp-* files under this lock
                    if not marker.is_file():
                        atomic_write(marker, json.dumps({"format": STORE_FORMAT, "tool": "pytest-madcache"}).encode())
        except OSError as exc:
            if self.dir.is_dir() and (self.dir / "index.json").exists():
                return  # readable but not writable: listing still works
            raise _unwritable(exc, self.dir) from None

    def _make_dirs(self) -> None:
        """Create the layout.  What we create is private to the user (0700); a shared
        cache's directories are group-writable with the setgid bit (2770), so files
        created in them belong to the directory's group."""
        mode = 0o2770 if self.shared else 0o700
        for d in (self.dir, self.dir / "blobs", self.blob_dir, self.entry_dir, self.tmp_dir, self.dir / "keys"):
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

        Re-entrant within one Store, so locked code may call helpers that lock.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        try:
            lock = FileLock(_no_symlink(self.dir / "lock"), timeout=self.lock_timeout)
            with lock:
                self._lock_depth = 1
                try:
                    yield
                finally:
                    self._lock_depth = 0
        except Timeout:
            raise LockTimeout(f"timed out after {self.lock_timeout:.0f}s waiting for {self.dir / 'lock'}") from None
        except OSError as exc:
            raise _unwritable(exc, self.dir) from None

    @contextlib.contextmanager
    def key_lock(self, key: str, timeout: Optional[float] = None) -> Iterator[float]:
        """Single-flight per key; yields the seconds spent waiting for it."""
        start = time.monotonic()
        lock = FileLock(_no_symlink(self.dir / "keys" / f"{_hex('sha256:' + key)}.lock"),
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
            raise _unwritable(exc, self.dir) from None
        try:
            yield time.monotonic() - start
        finally:
            lock.release()

    # -- index -----------------------------------------------------------------

    def _read_meta(self, entry_id: str) -> Optional[Entry]:
        path = self.entry_dir / entry_id / "meta.json"
        try:
            data = json.loads(path.read_text())
            try:
                used = os.stat(self.entry_dir / entry_id / "used").st_mtime
            except FileNotFoundError:
                used = None
            return Entry.from_json(data, used)
        except (OSError, ValueError, TypeError, StoreError):
            return None

    def _entry_ids(self) -> List[str]:
        try:
            return sorted(n for n in os.listdir(self.entry_dir) if n.startswith("run_"))
        except FileNotFoundError:
            return []

    def _index(self) -> Dict[str, Entry]:
        """The index, read without a lock (it is replaced atomically), or rebuilt."""
        path = self.dir / "index.json"
        ids = self._entry_ids()
        try:
            st = os.stat(path)
            memo_key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._index_memo and self._index_memo[0] == memo_key and sorted(self._index_memo[1]) == ids:
                entries = self._index_memo[1]
            else:
                data = json.loads(path.read_bytes())
                if data.get("format") != STORE_FORMAT:
                    raise ValueError("format")
                entries = {i: Entry.from_json(e) for i, e in data["entries"].items()}
                self._index_memo = (memo_key, entries)
            if sorted(entries) != ids:
                raise ValueError("index does not match the entry directories")
        except (OSError, ValueError, TypeError, KeyError, AttributeError, StoreError):
            return self._rebuild_index()
        return entries

    def _rebuild_index(self) -> Dict[str, Entry]:
        """Rebuild from entries/*/meta.json; drop entries whose metadata is unreadable."""
        try:
            with self.lock():
                return self._write_index_locked(repair=True)
        except CacheUnwritable:
            # Read-only cache: serve what the metadata says, change nothing.
            return {i: e for i in self._entry_ids() if (e := self._read_meta(i)) is not None}

    def _write_index_locked(self, repair: bool = False) -> Dict[str, Entry]:
        entries: Dict[str, Entry] = {}
        for entry_id in self._entry_ids():
            entry = self._read_meta(entry_id)
            if entry is None or entry.id != entry_id:
                if repair:
                    self.log(f"Dropping cache entry {entry_id}: its metadata is unreadable")
                    self._remove_entry_dir(entry_id)
                continue
            entries[entry_id] = entry
        data = {"format": STORE_FORMAT, "entries": {i: e.to_json() for i, e in entries.items()}}
        path = self.dir / "index.json"
        try:
            atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode())
            st = os.stat(path)
        except OSError as exc:
            raise _unwritable(exc, self.dir) from None
        # What we just wrote is what the next read would parse.
        self._index_memo = ((st.st_ino, st.st_mtime_ns, st.st_size), dict(entries))
        return entries

    def _with_last_used(self, entry: Entry) -> Entry:
        try:
            entry.last_used = os.stat(self.entry_dir / entry.id / "used").st_mtime
        except OSError:
            entry.last_used = entry.created
        return entry

    # -- queries -----------------------------------------------------------------

    def entries(self) -> List[Entry]:
        """All entries, most recently used first."""
        out = [self._with_last_used(e) for e in self._index().values()]
        return sorted(out, key=lambda e: (e.last_used, e.created), reverse=True)

    def get(self, entry_id: str) -> Entry:
        entry = self._index().get(entry_id)
        if entry is None:
            raise EntryNotFound(entry_id, self.entries())
        return self._with_last_used(entry)

    def lookup(self, key: Union[str, CacheKey]) -> Optional[Entry]:
        """The newest entry saved under `key`, or None."""
        digest = str(key)
        found = [e for e in self._index().values() if e.key == digest]
        if not found:
            return None
        return self._with_last_used(max(found, key=lambda e: e.created))

    def unique_bytes(self, entries: Optional[Sequence[Entry]] = None) -> Dict[str, int]:
        """Per entry, the bytes of blobs no other entry references."""
        entries = list(self._index().values()) if entries is None else list(entries)
        users: Dict[str, int] = {}
        for e in entries:
            for d in set(e.blobs):
                users[d] = users.get(d, 0) + 1
        return {e.id: sum(e.disk_bytes(d) for d in set(e.blobs) if users[d] == 1) for e in entries}

    @staticmethod
    def total_bytes(entries: Iterable[Entry]) -> int:
        sizes: Dict[str, int] = {}
        for e in entries:
            for d in e.blobs:
                sizes[d] = e.disk_bytes(d)
        return sum(sizes.values())

    def stats(self) -> Stats:
        entries = list(self._index().values())
        try:
            blobs = sum(1 for n in os.listdir(self.blob_dir) if not n.startswith("."))
        except FileNotFoundError:
            blobs = 0
        total = self.total_bytes(entries)
        return Stats(
            directory=str(self.dir), entries=len(entries), max_entries=self.max_entries,
            total_bytes=total, max_bytes=self.max_size_bytes, ttl=self.ttl, blobs=blobs,
            shared_bytes_saved=sum(e.own_bytes for e in entries) - total,
        )

    def touch(self, entry: Entry) -> None:
        """Mark an entry used now; lock-free (utime is atomic), silent on a read-only cache."""
        path = self.entry_dir / entry.id / "used"
        try:
            os.utime(path)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                path.touch()
        except OSError:
            pass
        entry.last_used = time.time()

    # -- save ------------------------------------------------------------------

    def save(
        self,
        image_id: str,
        key: Union[str, CacheKey],
        *,
        image_name: str,
        image_tag: str = "latest",
        model_tags: Sequence[str] = (),
        nodes: int = 1,
        build_duration: Optional[float] = None,
        run_config: Optional[Mapping[str, Any]] = None,
        replace: bool = True,
    ) -> Entry:
        """Store an engine image under `key`; stream `docker save` straight into blobs.

        A blob already in the store is streamed to a temp file and dropped
        (its digest is known only at its end), so it is never stored twice;
        when every blob is already there the engine is not asked to save at all.  With `replace`,
        older entries of the same key are evicted in the same commit.
        """
        if self.engine is None:
            raise StoreError("saving needs an engine")
        for attempt in range(3):
            try:
                return self._save_once(image_id, key, image_name=image_name, image_tag=image_tag,
                                       model_tags=model_tags, nodes=nodes, build_duration=build_duration,
                                       run_config=run_config, replace=replace)
            except _SaveConflict:
                if attempt == 2:
                    raise StoreError("a concurrent prune kept removing blobs this save needs; try again") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _save_once(self, image_id: str, key: Union[str, CacheKey], *, image_name: str, image_tag: str,
                   model_tags: Sequence[str], nodes: int, build_duration: Optional[float],
                   run_config: Optional[Mapping[str, Any]], replace: bool) -> Entry:
        info = self.engine.inspect(image_id)
        if info is None:
            raise StoreError(f"the engine has no image {image_id}")
        with self._lease() as lease:
            known_config = self._config_going_by(info.id)
            wanted = [known_config, *info.diff_ids] if known_config else []
            sizes = None
            if wanted and all(self.has_blob(d) for d in wanted):
                for d in wanted:
                    lease.publish(d)
                # A concurrent GC may have collected a blob before it saw our lease: save instead.
                with contextlib.suppress(FileNotFoundError, KeyError):
                    known = self._known_sizes()
                    sizes = {d: _logical_size(self.blob_file(d), known.get(d)) for d in wanted}
                    config, layers = wanted[0], list(info.diff_ids)
            if sizes is None:
                config, layers, sizes = self._ingest(info.id, lease)
                wanted = [config, *layers]
            by_config = self.engine.info.image_store != "containerd"
            if (by_config and config != info.id) or layers != list(info.diff_ids):
                raise StoreError(f"the engine's save of {image_id} does not match its own layer digests")
            now = time.time()
            repo_tags = [f"{image_name}:{image_tag}"]
            entry = Entry(
                id=new_entry_id(now), key=str(key), image_name=image_name, image_tag=image_tag,
                image_id=info.id, config=config, layers=layers, sizes=sizes, repo_tags=repo_tags,
                model_tags=[str(t) for t in model_tags], nodes=nodes, created=now, last_used=now,
                build_duration=build_duration,
                key_components=dict(key.components) if isinstance(key, CacheKey) else {},
                run_config=dict(run_config or {}),
                stored=self._stored_sizes(wanted),
            )
            self._commit(entry, lease, replace)
            return entry

    def _stored_sizes(self, digests: Iterable[str]) -> Dict[str, int]:
        out = {}
        for d in digests:
            path = self.blob_file(d)
            if path is not None:
                with contextlib.suppress(OSError):
                    out[d] = path.stat().st_size
        return out

    def _commit(self, entry: Entry, lease: "_Lease", replace: bool) -> None:
        """Make a staged entry visible with one rename, then apply the limits."""
        staged = lease.dir / "entry"
        staged.mkdir()
        atomic_write(staged / "meta.json", json.dumps(entry.to_json(), indent=1, sort_keys=True).encode())
        (staged / "used").touch()
        if entry.last_used and entry.last_used != entry.created:
            os.utime(staged / "used", (entry.last_used, entry.last_used))
        with self.lock():
            missing = [d for d in entry.blobs if not self.has_blob(d)]
            if missing:
                raise _SaveConflict(missing)
            os.rename(staged, self.entry_dir / entry.id)
            _fsync_dir(self.entry_dir)
            entries = self._write_index_locked()
            stale = [i for i, e in entries.items() if e.key == entry.key and i != entry.id] if replace else []
            evicted = self._prune_locked(self.max_entries, self.max_size_bytes, self.ttl, protect={entry.id},
                                         exclude_lease=lease.dir, drop=stale)
        for e in evicted:
            self.log(f"Evicted cache entry {e.id} ({e.image_ref}) to stay within the limits")

    def import_entry(self, meta: Mapping[str, Any], open_blob: Callable[[str], BinaryIO],
                     last_used: Optional[float] = None) -> Tuple[Entry, int]:
        """Add an entry whose blobs come from elsewhere (a registry); fetch only the missing ones.

        `open_blob(digest)` returns a readable stream; each blob is hashed
        while it is written and refused when it does not match.  Returns the
        entry and the bytes fetched.
        """
        entry = Entry.from_json(meta, last_used)
        if entry.id in self._index():
            return self.get(entry.id), 0
        fetched = 0
        for attempt in range(3):
            try:
                with self._lease() as lease:
                    progress = Progress(f"Fetching {entry.id}", total=entry.own_bytes, enabled=self.progress)
                    try:
                        for digest in dict.fromkeys(entry.blobs):
                            lease.publish(digest)
                            if self.has_blob(digest):
                                continue
                            stream = open_blob(digest)
                            try:
                                got, size = lease.write_blob(stream, progress, expect=digest,
                                                             size=entry.sizes.get(digest))
                            finally:
                                close = getattr(stream, "close", None)
                                if close:
                                    close()
                            fetched += size
                    finally:
                        progress.close()
                    entry.stored = self._stored_sizes(entry.blobs)
                    self._commit(entry, lease, replace=True)
                return entry, fetched
            except _SaveConflict:
                if attempt == 2:
                    raise StoreError("a concurrent prune kept removing blobs this import needs; try again") from None
            except OSError as exc:
                raise _unwritable(exc, self.dir) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _config_going_by(self, image_id: str) -> Optional[str]:
        """The config digest of an image the engine calls `image_id`, when the store knows it
        without a save: the id itself (classic Docker, Podman), or an entry's config whose
        image goes by that id (a manifest digest on the containerd store)."""
        if self.has_blob(image_id):
            return image_id
        for entry in self._index().values():
            if image_id in entry.engine_ids:
                return entry.config
        return None

    def _ingest(self, image_id: str, lease: "_Lease") -> Tuple[str, List[str], Dict[str, int]]:
        """Read the engine's save stream, whatever its layout, into blobs (see archive.py)."""
        progress = Progress(f"Saving {image_id[7:19]}", enabled=self.progress)
        reader = io.BufferedReader(Prefetch(self.engine.save(image_id)), CHUNK)
        sink = _LeaseSink(lease, progress)
        try:
            with reader:
                image = archive.read_image(reader, sink, want=[image_id], on_bytes=progress.update)
        except ArchiveError as exc:
            raise StoreError(f"the engine's save of {image_id} cannot be read: {exc}") from None
        except OSError as exc:
            raise _unwritable(exc, self.dir) from None
        finally:
            progress.close()
        return image.config, list(image.layers), dict(image.sizes)

    @contextlib.contextmanager
    def _lease(self) -> Iterator["_Lease"]:
        try:
            lease = _Lease(self)
        except OSError as exc:
            raise _unwritable(exc, self.dir) from None
        try:
            yield lease
        finally:
            lease.close()

    # -- load ------------------------------------------------------------------

    def load(self, entry: Entry) -> LoadResult:
        """Get an entry's image into the engine as cheaply as that engine allows.

        Present already (under any id it goes by): tag it, load nothing.
        Otherwise stream a load archive in the engine's layout holding only
        what it lacks (see EngineInfo.delta), every blob checked against its
        digest while it streams.  The engine must then have the image: the
        containerd store accepts some archives without loading anything.  A
        corrupt or missing blob drops the entry and raises EntryCorrupt.
        """
        if self.engine is None:
            raise StoreError("loading needs an engine")
        start = time.monotonic()
        present = self._find_in_engine(entry)
        if present is not None:
            for ref in entry.repo_tags:
                if ref not in present.repo_tags:
                    self.engine.tag(present.id, ref)
            self.touch(entry)
            return LoadResult("present", seconds=time.monotonic() - start, image_id=present.id)
        info = self.engine.info
        have = self._present_layers(entry, info.delta)
        try:
            result = self._stream_load(entry, have, info.load_layout)
            loaded = self._find_in_engine(entry)
            if loaded is None:
                raise StoreError(f"the engine reported loading {entry.id} but has no image {entry.config}")
        except EntryCorrupt:
            raise
        except Exception as exc:
            if not have:
                raise StoreError(f"loading {entry.id} into the engine failed: {exc}") from None
            # The engine may have dropped layers since we looked: send everything.
            self.log(f"Partial load of {entry.id} was refused ({exc}); sending all layers")
            result = self._stream_load(entry, set(), info.load_layout)
            loaded = self._find_in_engine(entry)
            if loaded is None:
                raise StoreError(f"the engine reported loading {entry.id} but has no image {entry.config}") from None
        self.touch(entry)
        result.seconds = time.monotonic() - start
        result.image_id = loaded.id
        return result

    def _find_in_engine(self, entry: Entry) -> Optional["ImageInfo"]:
        """The entry's image in the engine under any id it goes by, and only if its layers
        are the entry's: metadata others can write must not point us at another image."""
        found = self.engine.find(entry.engine_ids)
        return found if found is not None and list(found.diff_ids) == list(entry.layers) else None

    def _present_layers(self, entry: Entry, delta: str) -> Set[str]:
        """Layers a load may leave out: the lower chain the engine has ("chain"), or
        blobs of images we loaded into a containerd store before ("blobs")."""
        if delta == "chain":
            hints = [i for e in self._index().values() if e.id != entry.id and e.layers[:1] == entry.layers[:1]
                     for i in e.engine_ids]
            return set(entry.layers[:self.engine.present_prefix(entry.layers, hints)])
        if delta == "blobs":
            wanted = set(entry.layers)
            have: Set[str] = set()
            for other in self._index().values():
                shared = wanted & set(other.layers) - have
                if other.id == entry.id or not shared:
                    continue
                if self.engine.find([other.oci_id]) is not None:
                    have |= shared
            return have
        return set()

    def _stream_load(self, entry: Entry, have: Set[str], layout: str) -> LoadResult:
        send = [d for d in dict.fromkeys(entry.layers) if d not in have]
        files: Dict[str, BinaryIO] = {}
        try:
            # Open every blob before streaming: an eviction after this point
            # cannot pull data from under the load (unlinked files stay readable).
            for digest in [entry.config, *send]:
                try:
                    files[digest] = self.open_blob(digest)
                except FileNotFoundError:
                    self._drop_corrupt(entry, f"blob {digest} is missing")
            total = sum(entry.sizes.get(d, 0) for d in files)
            progress = Progress(f"Loading {entry.id}", total=total, enabled=self.progress)
            stream = archive.LoadArchive(entry.config, entry.layers, entry.sizes, entry.repo_tags, files,
                                         layout=layout, on_bytes=progress.update)
            ahead = ReadAhead(stream, depth=16)  # read, decompress and hash on a thread; send on this one
            try:
                self.engine.load(ahead)
            except Exception as exc:
                if stream.bad:
                    self._drop_corrupt(entry, stream.bad)
                raise StoreError(str(exc)) from None
            finally:
                ahead.close()
                progress.close()
            if stream.bad:
                self._drop_corrupt(entry, stream.bad)
            how = "delta" if have else "full"
            return LoadResult(how, bytes_sent=stream.sent, layers_sent=len(send))
        finally:
            for fh in files.values():
                fh.close()

    def _drop_corrupt(self, entry: Entry, why: str) -> None:
        """Drop the entry, its bad blobs, and every other entry that needs a bad blob."""
        with contextlib.suppress(StoreError):
            with self.lock():
                bad = set()
                for digest in entry.blobs:
                    path = self.blob_file(digest)
                    if path is None:
                        bad.add(digest)
                    elif not _blob_ok(path, digest, entry.sizes.get(digest)):
                        bad.add(digest)
                        with contextlib.suppress(OSError):
                            path.unlink()
                sharing = [other.id for other in self._index().values() if other.id != entry.id and bad & set(other.blobs)]
                for other_id in sharing:
                    self.log(f"Dropping cache entry {other_id}: it shares a corrupt blob with {entry.id}")
                self._drop_locked([entry.id, *sharing])
        raise EntryCorrupt(f"cache entry {entry.id} is corrupt ({why}); it has been dropped")

    # -- eviction ----------------------------------------------------------------

    def evict(self, entry_id: str) -> Entry:
        with self.lock():
            entry = self._index().get(entry_id)
            if entry is None:
                raise EntryNotFound(entry_id, self.entries())
            self._drop_locked([entry_id])
        return entry

    def clear(self) -> List[Entry]:
        with self.lock():
            entries = list(self._index().values())
            self._drop_locked([e.id for e in entries])
        return entries

    def over_limits(self) -> bool:
        """Whether the entries break a limit (count, size, age), read without the lock: a cheap
        check before `prune` for sessions that only hit, which never went through a save's eviction."""
        entries = [self._with_last_used(e) for e in self._index().values()]
        now = time.time()
        return (len(entries) > self.max_entries or self.total_bytes(entries) > self.max_size_bytes
                or (self.ttl is not None and any(now - e.last_used > self.ttl for e in entries)))

    def prune(self, max_entries: Optional[int] = None, max_size_bytes: Optional[int] = None,
              ttl: Optional[float] = None) -> List[Entry]:
        """Apply limits now (the store's own where not given); return what was evicted."""
        with self.lock():
            self._write_index_locked(repair=True)
            return self._prune_locked(
                self.max_entries if max_entries is None else max_entries,
                self.max_size_bytes if max_size_bytes is None else max_size_bytes,
                self.ttl if ttl is None else ttl,
            )

    def _prune_locked(self, max_entries: int, max_bytes: int, ttl: Optional[float],
                      protect: Set[str] = frozenset(), exclude_lease: Optional[Path] = None,
                      drop: Sequence[str] = ()) -> List[Entry]:
        """Evict to the limits, least recently used first; `drop` (entries a save replaced) go too, in
        the same removal.  Returns the evicted entries."""
        entries = sorted((self._with_last_used(e) for e in self._index().values() if e.id not in drop),
                         key=lambda e: (e.last_used, e.created))
        evicted: List[Entry] = []
        now = time.time()
        if ttl is not None:
            for e in list(entries):
                if e.id not in protect and now - e.last_used > ttl:
                    evicted.append(e)
                    entries.remove(e)
        for e in list(entries):  # oldest first
            if len(entries) <= max_entries and self.total_bytes(entries) <= max_bytes:
                break
            if e.id in protect:
                continue
            evicted.append(e)
            entries.remove(e)
        self._drop_locked([*drop, *(e.id for e in evicted)], exclude_lease)
        return evicted

    def _drop_locked(self, entry_ids: Sequence[str], exclude_lease: Optional[Path] = None) -> None:
        """The one way entries leave (evict, clear, prune, a save's replaced entries, corrupt blobs,
        verify's repair), under the store lock: each entry dir disappears by one rename, the index
        is written once, then the blobs nothing references any more are collected."""
        for entry_id in entry_ids:
            self._remove_entry_dir(entry_id)
        if entry_ids:
            self._write_index_locked()
        self._gc_locked(exclude_lease)

    def _remove_entry_dir(self, entry_id: str) -> None:
        src = self.entry_dir / entry_id
        trash = self.tmp_dir / f"trash-{entry_id}-{secrets.token_hex(4)}"
        try:
            os.rename(src, trash)  # the entry disappears atomically
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def _gc_locked(self, exclude_lease: Optional[Path] = None) -> Tuple[int, int]:
        """Remove blobs no entry or live save references, and dead saves' leftovers."""
        try:
            on_disk = [n for n in os.listdir(self.blob_dir)]
        except FileNotFoundError:
            return 0, 0
        referenced: Set[str] = set()
        for entry_id in self._entry_ids():
            entry = self._read_meta(entry_id)
            if entry is not None:
                referenced.update(_hex(d) for d in entry.blobs)
        referenced |= self._live_lease_digests(exclude_lease)
        removed = freed = 0
        for name in on_disk:
            if name.split(".", 1)[0] in referenced:
                continue
            path = self.blob_dir / name
            with contextlib.suppress(OSError):
                size = path.stat().st_size
                path.unlink()
                removed += 1
                freed += size
        for name in os.listdir(self.dir):
            if name.startswith(".tmp-"):  # torn atomic writes: writers hold this lock
                with contextlib.suppress(OSError):
                    os.unlink(self.dir / name)
        return removed, freed

    def _live_lease_digests(self, exclude: Optional[Path]) -> Set[str]:
        """Digests published by saves still running; dead saves' leases are removed."""
        live: Set[str] = set()
        try:
            names = os.listdir(self.tmp_dir)
        except FileNotFoundError:
            return live
        for name in names:
            path = self.tmp_dir / name
            if name.startswith("trash-"):
                shutil.rmtree(path, ignore_errors=True)
                continue
            if name.startswith(("new-", "buildx-")):  # a lease killed before its rename; a killed build's dir
                with contextlib.suppress(OSError):
                    if time.time() - path.stat().st_mtime > 3600:
                        shutil.rmtree(path, ignore_errors=True)
                continue
            if not name.startswith("save-"):
                continue
            if exclude is not None and path == exclude:
                live |= _read_lines(path / "digests")
                continue
            if os.path.islink(path / "lock") or os.path.islink(path):
                continue  # not ours: never follow a planted link
            probe = FileLock(str(path / "lock"), timeout=0)
            try:
                probe.acquire()
            except Timeout:
                live |= _read_lines(path / "digests")
                continue
            except OSError:
                continue
            try:
                shutil.rmtree(path, ignore_errors=True)  # its process is gone
            finally:
                probe.release()
        return live

    # -- verify ------------------------------------------------------------------

    def verify(self, repair: bool = True) -> VerifyReport:
        """Hash every blob; drop entries that reference a bad or missing blob."""
        report = VerifyReport()
        entries = list(self._index().values())
        bad: Set[str] = set()
        paths: Dict[str, Path] = {}
        for name in sorted(os.listdir(self.blob_dir)):
            if name.startswith("."):
                continue
            path = self.blob_dir / name
            digest = "sha256:" + name.split(".", 1)[0]
            paths[digest] = path
            report.blobs_checked += 1
            with contextlib.suppress(OSError):
                report.bytes_checked += path.stat().st_size
            if not _blob_ok(path, digest, None):
                report.bad_blobs.append(digest)
                bad.add(digest)
        for e in entries:
            for d in e.blobs:
                if d not in bad and not self.has_blob(d):
                    report.missing_blobs.append(d)
                    bad.add(d)
        broken = [e for e in entries if bad & set(e.blobs)]
        report.broken_entries = [e.id for e in broken]
        if repair and (broken or report.bad_blobs):
            with self.lock():
                for d in report.bad_blobs:
                    with contextlib.suppress(OSError):
                        paths[d].unlink()
                report.dropped_entries = [e.id for e in broken]
                self._drop_locked(report.dropped_entries)
        return report


def _looks_shared(directory: Path) -> bool:
    """An existing cache created shared (setgid, group-writable) stays shared for every user."""
    try:
        mode = os.stat(directory).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_ISGID and mode & stat.S_IWGRP)


def _group_writable_umask() -> None:
    """Shared caches: let the group read and write what this process creates (process-wide)."""
    old = os.umask(0)
    os.umask(old & ~0o070)


def _read_lines(path: Path) -> Set[str]:
    try:
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}
    except OSError:
        return set()


def _check_compression(value: Optional[str]) -> str:
    """The settings' own parser, so `off` (and `0`, `false`) mean `none` here as on the command line."""
    from .settings import parse_compress

    try:
        value = parse_compress(value or "none")
    except ValueError:
        raise StoreError(f"unknown blob compression {value!r}: use one of {', '.join(COMPRESSIONS)} (or off)") from None
    if value == "zstd":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise StoreError("compression 'zstd' needs the zstandard package: pip install 'pytest-madcache[zstd]'") from None
    return value


def _open_stored(path: Path) -> BinaryIO:
    fh = open(path, "rb")
    if path.name.endswith(ZSTD_SUFFIX):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(fh, read_size=CHUNK, closefd=True)  # type: ignore[return-value]
    return fh


def _logical_size(path: Optional[Path], known: Optional[int]) -> int:
    """A blob's uncompressed size: from metadata, or the raw file's size."""
    if path is None:
        raise FileNotFoundError("blob vanished")
    if known is not None:
        return known
    if path.name.endswith(ZSTD_SUFFIX):
        raise KeyError("size of a compressed blob no entry describes")
    return path.stat().st_size


def _blob_ok(path: Path, digest: str, size: Optional[int]) -> bool:
    h = hashlib.sha256()
    n = 0
    try:
        with _open_stored(path) as fh:
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                h.update(chunk)
                n += len(chunk)
    except Exception:  # OSError, or zstd's own error for a damaged frame
        return False
    return h.hexdigest() == _hex(digest) and (size is None or size == n)


class _Lease:
    """A save in progress: its lock is held while the process lives; its
    `digests` file lists blobs it has published, which GC must keep."""

    def __init__(self, store: Store) -> None:
        self.store = store
        token = f"{os.getpid()}-{secrets.token_hex(6)}"
        # Lock first, under a name GC ignores, then rename into view: GC never
        # sees a save-* lease whose lock is free while its owner lives.
        young = store.tmp_dir / f"new-{token}"
        young.mkdir(parents=True)
        self._lock = FileLock(str(young / "lock"), timeout=0)
        self._lock.acquire()
        self.dir = store.tmp_dir / f"save-{token}"
        os.rename(young, self.dir)
        self._digests = open(self.dir / "digests", "a")

    def publish(self, digest: str) -> None:
        # Record before the blob appears (or is reused), so a concurrent GC keeps it.
        self._digests.write(_hex(digest) + "\n")
        self._digests.flush()

    def _place(self, tmp: Path, digest: str, suffix: str = "") -> None:
        self.publish(digest)
        existing = self.store.blob_file(digest)
        if existing is not None:
            os.unlink(tmp)
            with contextlib.suppress(OSError):
                os.utime(existing)
        else:
            os.replace(tmp, self.store.blob_dir / (_hex(digest) + suffix))

    def write_blob(self, fh: BinaryIO, progress: Progress, expect: Optional[str] = None,
                   size: Optional[int] = None) -> Tuple[str, int]:
        """Copy a stream into a blob, hashing as it goes; refuse it if it is not `expect`.

        With zstd compression on, the first MiB decides: a blob that does not
        shrink by MIN_COMPRESSION_GAIN is stored raw, so random weights cost
        no CPU on load.  `size` (when known) goes into the zstd frame header.
        """
        tmp = self.dir / f"blob-{secrets.token_hex(6)}"
        h = hashlib.sha256()
        n = 0
        suffix = ""
        first = fh.read(CHUNK)
        with open(tmp, "wb") as raw_out:
            out: Any = raw_out
            if self.store.compress == "zstd" and first:
                import zstandard

                probe = zstandard.ZstdCompressor(level=1).compress(first)
                if len(first) >= MIN_COMPRESSION_GAIN * len(probe):
                    suffix = ZSTD_SUFFIX
                    out = zstandard.ZstdCompressor(level=1, write_content_size=size is not None).stream_writer(
                        raw_out, size=size if size is not None else -1, closefd=False)
            chunk = first
            while chunk:
                h.update(chunk)
                out.write(chunk)
                n += len(chunk)
                progress.update(len(chunk))
                chunk = fh.read(CHUNK)
            if out is not raw_out:
                out.close()
        digest = "sha256:" + h.hexdigest()
        if expect is not None and digest != expect:
            os.unlink(tmp)
            raise StoreError(f"fetched data for {expect} hashes to {digest}; refused")
        self._place(tmp, digest, suffix)
        return digest, n

    def write_small_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        tmp = self.dir / f"blob-{secrets.token_hex(6)}"
        tmp.write_bytes(data)
        self._place(tmp, digest)
        return digest

    def close(self) -> None:
        self._digests.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        self._lock.release()


class _LeaseSink:
    """archive.BlobSink over a save's lease: blobs land in the store, published for GC."""

    def __init__(self, lease: _Lease, progress: Progress) -> None:
        self.lease = lease
        self.progress = progress

    def write_blob(self, fh: BinaryIO, size: Optional[int]) -> Tuple[str, int]:
        return self.lease.write_blob(fh, self.progress, size=size)

    def write_small_blob(self, data: bytes) -> str:
        return self.lease.write_small_blob(data)

