"""Adding entries: an engine image saved into blobs, or an entry whose blobs come from elsewhere.

A save streams the engine's save archive (any layout: see archive.py)
straight into blobs under a lease; a blob already stored is not stored
twice, and when every blob is already there the engine is not asked to save
at all.  The entry becomes visible with one rename under the store lock,
and the limits are applied in the same transaction.

This module adds; it must not decide whether to build, or load images.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from typing import Any, BinaryIO, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from pytest_madcache.core.key import CacheKey
from pytest_madcache.store import archive
from pytest_madcache.store.archive import ArchiveError
from pytest_madcache.store.blobs import CHUNK, Blobs, Lease, LeaseSink, logical_size
from pytest_madcache.store.entries import Entry, new_entry_id
from pytest_madcache.store.errors import SaveConflict, StoreError, unwritable
from pytest_madcache.store.evict import Evictor, Limits, Session
from pytest_madcache.store.imageformat import Descriptor
from pytest_madcache.store.index import Index
from pytest_madcache.store.layout import FILES, Layout
from pytest_madcache.store.protocols import StoreEngine
from pytest_madcache.store.tarstream import Prefetch
from pytest_madcache.util.fsutil import fsync_dir
from pytest_madcache.util.progress import Progress

__all__ = ["Saver"]

ATTEMPTS = 3  # a concurrent prune may collect a blob between publish and commit: start again


class Saver:
    def __init__(self, layout: Layout, index: Index, blobs: Blobs, evictor: Evictor,
                 progress: Optional[bool], log: Callable[[str], None]) -> None:
        self.layout = layout
        self.index = index
        self.blobs = blobs
        self.evictor = evictor
        self.progress = progress
        self.log = log
        self.session: Optional[Session] = None  # the running test session, whose entries a save never evicts
        self.evicted: List[Entry] = []  # every entry this process's saves evicted for the limits

    def save(self, engine: StoreEngine, image_id: str, key: Union[str, CacheKey], limits: Limits, *,
             image_name: str, image_tag: str, model_tags: Sequence[str], nodes: int,
             build_duration: Optional[float], run_config: Optional[Mapping[str, Any]], replace: bool,
             files: Optional[Mapping[str, Any]] = None) -> Entry:
        """Store an engine image under `key`; with `replace`, older entries of the key go in the same commit.
        `files` (the key's file list, JSON) is kept beside the entry for explaining later misses."""
        for attempt in range(ATTEMPTS):
            try:
                return self._save_once(engine, image_id, key, limits, image_name=image_name, image_tag=image_tag,
                                       model_tags=model_tags, nodes=nodes, build_duration=build_duration,
                                       run_config=run_config, replace=replace, files=files)
            except SaveConflict:
                if attempt == ATTEMPTS - 1:
                    raise StoreError("a concurrent prune kept removing blobs this save needs; try again") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _save_once(self, engine: StoreEngine, image_id: str, key: Union[str, CacheKey], limits: Limits, *,
                   image_name: str, image_tag: str, model_tags: Sequence[str], nodes: int,
                   build_duration: Optional[float], run_config: Optional[Mapping[str, Any]], replace: bool,
                   files: Optional[Mapping[str, Any]]) -> Entry:
        info = engine.inspect(image_id)
        if info is None:
            raise StoreError(f"the engine has no image {image_id}")
        with self.blobs.lease() as lease:
            known_config = self._config_going_by(info.id)
            wanted = [known_config, *info.diff_ids] if known_config else []
            sizes = None
            if wanted and all(self.blobs.has(d) for d in wanted):
                for d in wanted:
                    lease.publish(d)
                # A concurrent GC may have collected a blob before it saw our lease: save instead.
                with contextlib.suppress(FileNotFoundError, KeyError):
                    known = self.index.known_sizes()
                    sizes = {d: logical_size(self.blobs.file(d), known.get(d)) for d in wanted}
                    config, layers = wanted[0], list(info.diff_ids)
            descriptors: Dict[str, Descriptor] = {}
            if sizes is None:
                config, layers, sizes, descriptors = self._ingest(engine, info.id, lease)
                wanted = [config, *layers]
            by_config = engine.info.image_store != "containerd"
            if (by_config and config != info.id) or layers != list(info.diff_ids):
                raise StoreError(f"the engine's save of {image_id} does not match its own layer digests")
            now = time.time()
            entry = Entry(
                id=new_entry_id(now), key=str(key), image_name=image_name, image_tag=image_tag,
                image_id=info.id, config=config, layers=layers, sizes=sizes, repo_tags=[f"{image_name}:{image_tag}"],
                model_tags=[str(t) for t in model_tags], nodes=nodes, created=now, last_used=now,
                build_duration=build_duration,
                key_components=dict(key.components) if isinstance(key, CacheKey) else {},
                run_config=dict(run_config or {}),
                stored=self.blobs.stored_sizes(wanted),
                descriptors={d: desc.to_json() for d, desc in descriptors.items()},
            )
            self._commit(entry, lease, limits, replace, files)
            return entry

    def import_entry(self, meta: Mapping[str, Any], open_blob: Callable[[str], BinaryIO], limits: Limits,
                     last_used: Optional[float] = None) -> Tuple[Entry, int]:
        """Add an entry whose blobs come from elsewhere (a registry); fetch only the missing ones.

        `open_blob(digest)` returns a readable stream; each blob is hashed
        while it is written and refused when it does not match.  Returns the
        entry and the bytes fetched.
        """
        entry = Entry.from_json(meta, last_used)
        if entry.id in self.index.current():
            return self.index.get(entry.id), 0
        fetched = 0
        for attempt in range(ATTEMPTS):
            try:
                with self.blobs.lease() as lease:
                    progress = Progress(f"Fetching {entry.id}", total=entry.own_bytes, enabled=self.progress)
                    try:
                        for digest in dict.fromkeys(entry.blobs):
                            lease.publish(digest)
                            if self.blobs.has(digest):
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
                    entry.stored = self.blobs.stored_sizes(entry.blobs)
                    self._commit(entry, lease, limits, replace=True)
                return entry, fetched
            except SaveConflict:
                if attempt == ATTEMPTS - 1:
                    raise StoreError("a concurrent prune kept removing blobs this import needs; try again") from None
            except OSError as exc:
                raise unwritable(exc, self.layout.dir) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def commit_import(self, entry: Entry, lease: Lease, limits: Limits) -> None:
        """Commit a remote entry whose blobs streaming.py put under `lease` (SaveConflict when one went)."""
        self._commit(entry, lease, limits, replace=True)

    def _commit(self, entry: Entry, lease: Lease, limits: Limits, replace: bool,
                files: Optional[Mapping[str, Any]] = None) -> None:
        """Make a staged entry visible with one rename, then apply the limits."""
        staged = lease.dir / "entry"
        staged.mkdir()
        self.layout.share(staged)
        self.layout.write(staged / "meta.json", json.dumps(entry.to_json(), indent=1, sort_keys=True).encode())
        if files is not None:
            self.layout.write(staged / FILES, json.dumps(files, separators=(",", ":"), sort_keys=True).encode())
        (staged / "used").touch()
        self.layout.share(staged / "used")
        if entry.last_used and entry.last_used != entry.created:
            os.utime(staged / "used", (entry.last_used, entry.last_used))
        with self.layout.lock():
            if (self.layout.entry_dir / entry.id).is_dir():
                return  # a remote entry another process (an xdist worker's prefetch) imported meanwhile
            missing = [d for d in entry.blobs if not self.blobs.has(d)]
            if missing:
                raise SaveConflict(missing)
            os.rename(staged, self.layout.entry_dir / entry.id)
            fsync_dir(self.layout.entry_dir)
            entries = self.index.write_locked()
            stale = [i for i, e in entries.items() if e.key == entry.key and i != entry.id] if replace else []
            evicted = self.evictor.prune_locked(limits, protect={entry.id}, exclude_lease=lease.dir, drop=stale,
                                                session=self.session)
        self.evicted.extend(evicted)
        for e in evicted:
            self.log(f"Evicted cache entry {e.id} ({e.image_ref}) to stay within the limits")

    def _config_going_by(self, image_id: str) -> Optional[str]:
        """The config digest of an image the engine calls `image_id`, when the store knows it
        without a save: the id itself (classic Docker, Podman), or an entry's config whose
        image goes by that id (a manifest digest on the containerd store)."""
        if self.blobs.has(image_id):
            return image_id
        for entry in self.index.current().values():
            if image_id in entry.engine_ids:
                return entry.config
        return None

    def _ingest(self, engine: StoreEngine, image_id: str,
                lease: Lease) -> Tuple[str, List[str], Dict[str, int], Dict[str, Descriptor]]:
        """Read the engine's save stream, whatever its layout, into blobs (see archive.py)."""
        progress = Progress(f"Saving {image_id[7:19]}", enabled=self.progress)
        reader = io.BufferedReader(Prefetch(engine.save(image_id)), CHUNK)
        sink = LeaseSink(lease, progress)
        try:
            with reader:
                image = archive.read_image(reader, sink, want=[image_id], on_bytes=progress.update)
        except ArchiveError as exc:
            raise StoreError(f"the engine's save of {image_id} cannot be read: {exc}") from None
        except OSError as exc:
            raise unwritable(exc, self.layout.dir) from None
        finally:
            progress.close()
        return image.config, list(image.layers), dict(image.sizes), dict(image.descriptors)
