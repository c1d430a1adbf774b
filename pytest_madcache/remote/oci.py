"""A remote cache in an OCI registry: the far cache behind the local directory.

Each entry is pushed as a real OCI image tagged `mc-<key>` in one
repository: its config, its layers compressed (gzip by default, zstd or
none by choice; a layer that does not compress goes up as it is), and the
entry's metadata in a manifest annotation.  The metadata keeps the store's
names for the layers (diffIDs, uncompressed sizes); the manifest lists the
registry's (compressed digests), position by position, as OCI images do.
So `docker pull REGISTRY/REPO:mc-<key>` works, blobs shared by entries go
up once, and a second machine fetches only the blobs its store lacks,
decompressed and checked on the way in.  Entries pushed uncompressed by
earlier versions read as before.

The manifest goes last, so a push that breaks leaves blobs but never an
entry; a small journal (`<cache>/remote/pending/`) remembers it, as it does
an entry saved while the registry was down, and the next push from that cache
completes it (as does `RemoteCache.push_pending`, at a session's end too).
The manifest codec is manifest.py's and the journal journal.py's; HTTP, TLS,
auth and retries are registry.py's; compression and parallel fetches are
transfer.py's.  It must not touch the local store: the store hands it blob
readers and takes back metadata and readers (base.RemoteEntry); its own files
are the journal and the layer map under `<cache>/remote/`.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

from pytest_madcache.remote.base import RemoteEntry, RemoteError, RemoteListing, RemoteUnavailable
from pytest_madcache.remote.journal import RemoteState
from pytest_madcache.remote.manifest import (
    CONFIG_TYPE,
    LAYER_TYPE,
    MANIFEST_TYPE,
    RemoteManifest,
    manifest_body,
    parse_manifest,
)
from pytest_madcache.remote.registry import Registry, RetryPolicy, skip_to
from pytest_madcache.remote.transfer import COMPRESSIONS, BlobFetcher, RemoteBlob, encode
from pytest_madcache.util.refs import RemoteRef, is_loopback

__all__ = [
    "RemoteRef", "Registry", "RemoteError", "RemoteUnavailable", "RetryPolicy", "RemoteCache", "RemoteEntry",
    "RemoteManifest", "RemoteState", "MANIFEST_TYPE", "CONFIG_TYPE", "LAYER_TYPE", "key_tag", "parse_manifest",
    "is_loopback",
]

TAG_PREFIX = "mc-"
PARALLEL = 3  # blobs moving at once, each way


class EntryLike(Protocol):
    """What the remote needs of a store entry."""

    key: str
    id: str
    config: str
    layers: List[str]
    sizes: Dict[str, int]

    def to_json(self) -> Dict[str, Any]: ...


OpenBlob = Callable[[str], BinaryIO]


def key_tag(key: str) -> str:
    return TAG_PREFIX + key


class _SpoolAt:
    """A reader of a spool file from an offset (pread: several readers share one file)."""

    def __init__(self, spool: BinaryIO, offset: int) -> None:
        self.fd = spool.fileno()
        self.pos = offset

    def read(self, n: int = -1) -> bytes:
        data = os.pread(self.fd, n if n and n > 0 else 1 << 30, self.pos)
        self.pos += len(data)
        return data

    def close(self) -> None:
        pass


# -- the remote cache ------------------------------------------------------------------------


class RemoteCache:
    """The registry behind a local store: `find` on a local miss, `push` after a build.

    An unreachable registry (after retries) turns it off for the rest of the
    process with one warning; the local cache goes on working.  `have_blob`
    (the store's `has_blob`), when set, lets a fetch download the next few
    missing blobs while the store takes in the current one.
    """

    def __init__(self, registry: Registry, log: Optional[Callable[[str], None]] = None, *, compress: str = "gzip",
                 parallel: int = PARALLEL, state_dir: Optional[Union[str, Path]] = None,
                 spool_dir: Optional[Union[str, Path]] = None,
                 have_blob: Optional[Callable[[str], bool]] = None) -> None:
        if compress not in COMPRESSIONS:
            raise ValueError(f"unknown remote compression {compress!r}: use one of {', '.join(COMPRESSIONS)}")
        if compress == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError:
                raise ValueError("remote compression 'zstd' needs the zstandard package: "
                                 "pip install 'pytest-madcache[zstd]'") from None
        self.registry = registry
        self.log = log
        self.compress = compress
        self.parallel = max(1, parallel)
        self.state = RemoteState(Path(state_dir) if state_dir is not None else None)
        self.spool_dir = str(spool_dir) if spool_dir is not None else None
        self.have_blob = have_blob
        self.disabled: Optional[str] = None
        self._manifests: Dict[str, RemoteManifest] = {}

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    @classmethod
    def from_setting(cls, remote: str, log: Optional[Callable[[str], None]] = None,
                     env: Mapping[str, str] = os.environ, **kwargs: Any) -> "RemoteCache":
        return cls(Registry.from_env(RemoteRef.parse(remote), env), log, **kwargs)

    @classmethod
    def from_settings(cls, settings: Any, log: Optional[Callable[[str], None]] = None,
                      env: Mapping[str, str] = os.environ, **kwargs: Any) -> "RemoteCache":
        """The remote the settings name, remembering its pending pushes in the cache directory."""
        cache_dir = Path(settings.dir)
        kwargs.setdefault("compress", getattr(settings, "remote_compress", "gzip"))
        kwargs.setdefault("state_dir", cache_dir / "remote")
        kwargs.setdefault("spool_dir", cache_dir / "tmp")
        return cls.from_setting(settings.remote, log, env, **kwargs)

    def __str__(self) -> str:
        return str(self.registry.ref)

    def pull_hint(self, tag: str) -> str:
        """Entries are real images: the reference to pull one with the engine."""
        return f"(pull: {self.registry.ref}:{tag})"

    def _off(self, exc: Exception) -> None:
        if self.disabled is None:
            self.disabled = str(exc)
            self._say(f"Warning: remote cache {self.registry.ref} unavailable ({exc}); using the local cache only")

    @property
    def _spool(self) -> Optional[str]:
        return self.spool_dir if self.spool_dir and os.path.isdir(self.spool_dir) else None

    # -- fetch --------------------------------------------------------------------------

    def find(self, key: str, have: Optional[Callable[[str], bool]] = None) -> Optional[RemoteEntry]:
        """The entry the registry holds for `key`: its metadata and a reader of its blobs (the
        caller imports what it lacks), or None (also when the registry fails: warned)."""
        if self.disabled:
            return None
        try:
            got = self.registry.get_manifest(key_tag(key))
            if got is None:
                return None
            manifest = parse_manifest(got[0])
            if manifest.meta.get("key") != key:
                raise RemoteError(f"the manifest tagged {key_tag(key)} belongs to key {manifest.meta.get('key')!r}")
        except RemoteError as exc:
            self.failed(key, exc)
            return None
        self._manifests[key] = manifest
        for diff_id, blob in manifest.blobs.items():
            if blob.codec != "none":
                self.state.remember(diff_id, blob.codec, blob)
        order = [manifest.meta["config"], *manifest.meta["layers"]]
        fetcher = BlobFetcher(self.registry, manifest.blobs, order, have=have or self.have_blob, parallel=self.parallel,
                              spool_dir=self._spool)
        return RemoteEntry(manifest.meta, fetcher)

    def failed(self, key: str, exc: RemoteError) -> None:
        """A fetch of `key` broke (also while its blobs were read): turn off, or warn."""
        if isinstance(exc, RemoteUnavailable):
            self._off(exc)
        else:
            self._say(f"Warning: could not fetch key {key[:12]} from {self.registry.ref}: {exc}")

    def mark_used(self, entry: EntryLike) -> None:
        """Re-tag with a fresh last-used annotation: the registry's LRU sees machines that fetch."""
        if self.disabled:
            return
        try:
            manifest = self._manifests.get(entry.key)
            if manifest is None:
                got = self.registry.get_manifest(key_tag(entry.key))
                if got is None:
                    return
                manifest = parse_manifest(got[0])
            self.registry.put_manifest(key_tag(entry.key), manifest_body(manifest.meta, manifest.layers, time.time()))
        except RemoteError:
            pass

    # -- push ----------------------------------------------------------------------------

    def push(self, entry: EntryLike, open_blob: OpenBlob) -> int:
        """Upload the entry's blobs the registry lacks (read through `open_blob`, compressed on the
        way), then its manifest; then complete pushes that broke earlier.  Bytes sent.  With the
        registry found down earlier in this run, the entry joins the journal instead: the next push,
        session end or `madcache push` sends it."""
        meta = entry.to_json()
        if self.disabled:
            self.state.add_pending(self.registry.ref, meta)
            return 0
        before = self.registry.bytes_sent
        if self._push_meta(meta, open_blob, what=entry.id):
            self.push_pending(open_blob)
        return self.registry.bytes_sent - before

    def push_pending(self, open_blob: OpenBlob) -> int:
        """Complete the pushes from this cache that broke before their manifest (bytes sent)."""
        before = self.registry.bytes_sent
        for meta in self.state.pending(self.registry.ref):
            if self.disabled:
                break
            self._push_meta(meta, open_blob, what=str(meta.get("id")), resumed=True)
        return self.registry.bytes_sent - before

    def _push_meta(self, meta: Mapping[str, Any], open_blob: OpenBlob, what: str, resumed: bool = False) -> bool:
        try:
            self.upload(meta, open_blob)
        except FileNotFoundError:
            self.state.done(self.registry.ref, str(meta.get("key")))  # evicted locally since: nothing to complete
            return False
        except RemoteUnavailable as exc:
            self._off(exc)
            return False
        except (RemoteError, OSError, ValueError) as exc:
            self._say(f"Warning: could not push {what} to {self.registry.ref}: {exc}")
            return False
        if resumed:
            self._say(f"Completed the push of {what} to {self.registry.ref}, which an earlier run left unfinished")
        return True

    def upload(self, meta: Mapping[str, Any], open_blob: OpenBlob) -> None:
        """Push one entry (its metadata, as `Entry.to_json` gives it), raising what goes wrong."""
        key = str(meta.get("key"))
        self.state.add_pending(self.registry.ref, meta)
        layers = self._push_blobs(meta, open_blob)
        self.registry.put_manifest(key_tag(key), manifest_body(meta, layers, None))  # last: the entry appears
        self.state.done(self.registry.ref, key)

    def sync(self, entries: Sequence[EntryLike], open_blob: OpenBlob,
             every: bool = False) -> Tuple[List[str], int, int]:
        """`madcache push`: complete the unfinished pushes, then push `entries` the registry lacks (all
        of them with `every`), raising what goes wrong.  Returns (ids pushed, pushes completed, bytes sent)."""
        before = self.registry.bytes_sent
        waiting = len(self.state.pending(self.registry.ref))
        self.push_pending(open_blob)
        if self.disabled:
            raise RemoteUnavailable(self.disabled)
        completed = waiting - len(self.state.pending(self.registry.ref))
        pushed = []
        for entry in entries:
            if every or not self.has(entry.key):
                self.upload(entry.to_json(), open_blob)
                pushed.append(entry.id)
        return pushed, completed, self.registry.bytes_sent - before

    def has(self, key: str) -> bool:
        """Whether the registry holds an entry for `key` (raises RemoteError when it cannot say)."""
        return self.registry.get_manifest(key_tag(key)) is not None

    def _push_blobs(self, meta: Mapping[str, Any], open_blob: OpenBlob) -> List[RemoteBlob]:
        sizes = meta["sizes"]
        layers = list(meta["layers"])
        pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="madcache-push")
        try:
            config = pool.submit(self._push_raw, meta["config"], sizes[meta["config"]], open_blob)
            jobs = {d: pool.submit(self._push_layer, d, sizes[d], open_blob) for d in dict.fromkeys(layers)}
            config.result()
            done = {d: job.result() for d, job in jobs.items()}
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return [done[d] for d in layers]

    def _push_raw(self, digest: str, size: int, open_blob: OpenBlob) -> RemoteBlob:
        if self.registry.blob_size(digest) != size:
            def open_at(offset: int) -> BinaryIO:
                fh = open_blob(digest)
                skip_to(fh, offset)
                return fh

            self.registry.push_blob(digest, size, open_at)
        return RemoteBlob(digest, size, LAYER_TYPE)

    def _push_layer(self, diff_id: str, size: int, open_blob: OpenBlob) -> RemoteBlob:
        codec = self.compress
        if codec != "none":
            known = self.state.layer(diff_id, codec)
            if known is not None and self.registry.blob_size(known.digest) == known.size:
                return known
        if codec == "none" or self.registry.blob_size(diff_id) == size:
            return self._push_raw(diff_id, size, open_blob)  # asked for, or there already (an older push)
        reader = open_blob(diff_id)
        try:
            encoded = encode(reader, codec, self._spool)
        finally:
            reader.close()
        if encoded is None:  # does not compress: the store's own bytes go up
            blob = self._push_raw(diff_id, size, open_blob)
            self.state.remember(diff_id, codec, blob)
            return blob
        spool, blob = encoded
        try:
            self.state.remember(diff_id, codec, blob)
            if self.registry.blob_size(blob.digest) != blob.size:
                self.registry.push_blob(blob.digest, blob.size, lambda offset: _SpoolAt(spool, offset))  # type: ignore[arg-type,return-value]  # reads like a file
        finally:
            spool.close()
        return blob

    # -- the registry as a whole -----------------------------------------------------------

    def entries(self) -> List[RemoteListing]:
        """Every madcache tag's entry; its `ref` is the manifest digest."""
        out = []
        for tag in self.registry.tags():
            if not tag.startswith(TAG_PREFIX):
                continue
            got = self.registry.get_manifest(tag)
            if got is None:
                continue
            try:
                manifest = parse_manifest(got[0])
            except RemoteError:
                continue
            out.append(RemoteListing(tag, manifest.meta, manifest.used, got[1]))
        return out

    def prune(self, max_entries: int, ttl: Optional[float], now: Optional[float] = None) -> List[RemoteListing]:
        """Delete manifests by the local rules (TTL, then least recently used beyond the count).

        The registry frees the blobs at its own garbage collection
        (`registry garbage-collect` for the CNCF distribution server).
        """
        from pytest_madcache.store import Entry, Limits, StoreError, choose_evictions

        now = time.time() if now is None else now
        listed: Dict[str, RemoteListing] = {}
        entries: List[Entry] = []
        for item in self.entries():
            try:
                entry = Entry.from_json(item.meta, last_used=item.last_used)
            except (StoreError, ValueError, KeyError, TypeError):
                continue  # not an entry this version reads: left to whoever wrote it
            entries.append(entry)
            listed[entry.id] = item
        # The store's one policy; a registry has no size limit of ours (it counts entries only).
        doomed = choose_evictions(entries, Limits(max_entries=max_entries, max_bytes=sys.maxsize, ttl=ttl), now)
        for entry in doomed:
            self.registry.delete_manifest(listed[entry.id].ref)
        return [listed[entry.id] for entry in doomed]
