"""A remote entry loads into the engine while its blobs arrive (store/streaming.py), with a fake engine
that reads the load archive the way classic Docker does: nothing is loaded unless the whole stream came.

The real engines and a real registry are tests/test_plugin_remote.py's and the fault campaign's."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import pytest

from pytest_madcache.core.images import EngineInfo, ImageInfo
from pytest_madcache.remote.base import RemoteError
from pytest_madcache.store import Store, StoreError
from tests.remote_helpers import crafted_meta


class ArchiveEngine:
    """Loads a docker-archive from its chunks; an image exists only once a whole archive was read."""

    info = EngineInfo("docker", "20.10", "1.41", "classic")

    def __init__(self, refuse: int = 0) -> None:
        self.images: Dict[str, ImageInfo] = {}
        self.received: List[str] = []  # archive members, as they arrive
        self.got_first_layer = threading.Event()
        self.refuse = refuse  # refuse this many whole loads (the engine's own error)

    def load(self, data: Iterable[bytes]) -> List[str]:
        buf = io.BytesIO()
        for chunk in data:
            buf.write(chunk)
            if b"layer.tar" in chunk:
                self.received.append("layer")
                self.got_first_layer.set()
        if self.refuse:
            self.refuse -= 1
            raise RuntimeError("no space left on the engine's device")
        buf.seek(0)
        with tarfile.open(fileobj=buf) as tar:
            manifest = json.loads(tar.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]
            config_name = manifest["Config"]
            config = json.loads(tar.extractfile(config_name).read())  # type: ignore[union-attr]
        image_id = "sha256:" + config_name.split(".")[0]
        self.images[image_id] = ImageInfo(image_id, config["rootfs"]["diff_ids"], manifest["RepoTags"], 0)
        return [f"Loaded image ID: {image_id}"]

    def find(self, ids: Iterable[str]) -> Optional[ImageInfo]:
        return next((self.images[i] for i in ids if i in self.images), None)

    def inspect(self, ref: str) -> Optional[ImageInfo]:
        return self.images.get(ref)

    def tag(self, image_id: str, reference: str) -> None:
        self.images[image_id].repo_tags.append(reference)

    def present_prefix(self, diff_ids, hints=()) -> int:
        return 0

    def save(self, image_id, chunk_size=0):  # pragma: no cover - not used by loads
        raise NotImplementedError


class Source(io.RawIOBase):
    """A blob arriving from a registry: `before_end` runs before its last bytes come."""

    def __init__(self, data: bytes, before_end: Callable[[], None] = lambda: None) -> None:
        self.data, self.pos, self.before_end = data, 0, before_end

    def read(self, n: int = -1) -> bytes:
        if self.pos >= len(self.data):
            return b""
        take = len(self.data) - self.pos if n is None or n < 0 else min(n, len(self.data) - self.pos)
        if self.pos + take >= len(self.data) and take > 1:
            take -= 1  # the last byte comes alone, after before_end
        elif self.pos + take >= len(self.data):
            self.before_end()
        out = self.data[self.pos:self.pos + take]
        self.pos += take
        return out


LAYERS = [b"base layer " * 5000, b"model weights " * 9000]


def _store(tmp_path: Path, engine: ArchiveEngine) -> Store:
    return Store(tmp_path / "cache", engine=engine)


def _remote(meta: dict, opener: Callable[[str, bytes], io.RawIOBase]) -> Callable[[str], io.RawIOBase]:
    blobs = meta.pop("_blobs")
    return lambda digest: opener(digest, blobs[digest])


def test_the_engine_reads_the_first_layer_while_the_last_is_still_arriving(tmp_path: Path) -> None:
    engine = ArchiveEngine()
    meta = crafted_meta("m", LAYERS)
    last = meta["layers"][-1]

    def opener(digest: str, data: bytes) -> io.RawIOBase:
        if digest != last:
            return Source(data)
        # the last layer's final byte waits until the engine has begun reading layers: with
        # fetch-then-load this would time out
        return Source(data, before_end=lambda: engine.got_first_layer.wait(10) or pytest.fail("not streamed"))

    store = _store(tmp_path, engine)
    entry, fetched, load = store.import_and_load(meta, _remote(meta, opener))
    assert load.how == "full" and load.image_id == entry.config
    assert fetched == sum(entry.sizes.values())
    assert [e.id for e in store.entries()] == [entry.id]
    assert store.verify().ok


def test_a_fetch_that_breaks_mid_stream_leaves_no_entry_no_image_and_no_temp_file(tmp_path: Path) -> None:
    engine = ArchiveEngine()
    meta = crafted_meta("m", LAYERS)
    last = meta["layers"][-1]

    def broken() -> None:
        raise RemoteError("connection reset by the registry")

    def opener(digest: str, data: bytes) -> io.RawIOBase:
        return Source(data, before_end=broken) if digest == last else Source(data)

    store = _store(tmp_path, engine)
    with pytest.raises(RemoteError, match="connection reset"):
        store.import_and_load(meta, _remote(meta, opener))
    assert store.entries() == [] and engine.images == {}
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_bytes_that_do_not_match_their_digest_are_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    engine = ArchiveEngine()
    meta = crafted_meta("m", LAYERS)
    last = meta["layers"][-1]
    store = _store(tmp_path, engine)
    opener = _remote(meta, lambda d, data: Source(data[:-1] + b"X" if d == last else data))
    with pytest.raises(StoreError, match=f"fetched data for {last} hashes to"):
        store.import_and_load(meta, opener)
    assert store.entries() == [] and engine.images == {}
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_a_load_the_engine_refuses_is_done_again_from_the_store(tmp_path: Path) -> None:
    engine = ArchiveEngine(refuse=1)
    meta = crafted_meta("m", LAYERS)
    store = _store(tmp_path, engine)
    said: List[str] = []
    store.log = said.append
    entry, fetched, load = store.import_and_load(meta, _remote(meta, lambda d, data: Source(data)))
    assert load.how == "full" and entry.config in engine.images
    assert fetched == sum(entry.sizes.values())
    assert any("did not take the streamed load" in line for line in said), said
    assert store.verify().ok


def test_an_entry_already_cached_loads_from_the_store_and_fetches_nothing(tmp_path: Path) -> None:
    engine = ArchiveEngine()
    meta = crafted_meta("m", LAYERS)
    blobs = dict(meta["_blobs"])  # type: ignore[arg-type]
    store = _store(tmp_path, engine)
    store.import_and_load(dict(meta), _remote(dict(meta), lambda d, data: Source(data)))
    engine.images.clear()

    def nothing(digest: str) -> io.RawIOBase:
        raise AssertionError(f"fetched {digest} again")

    meta.pop("_blobs")
    entry, fetched, load = store.import_and_load(meta, nothing)
    assert fetched == 0 and load.how == "full" and entry.config in engine.images and blobs


def test_two_processes_importing_the_same_remote_entry_both_succeed(tmp_path: Path, monkeypatch) -> None:
    """Two xdist workers (one prefetching) fetch one entry at once: the second to commit finds the
    first's entry and takes it, rather than reporting the cache unwritable and building."""
    meta = crafted_meta("m", LAYERS)
    blobs = meta.pop("_blobs")
    first, second = _store(tmp_path, ArchiveEngine()), _store(tmp_path, ArchiveEngine())
    entry, _, _ = first.import_and_load(dict(meta), lambda d: Source(blobs[d]))
    monkeypatch.setattr(second._index, "current", lambda: {})  # it looked before the first committed
    again, _, load = second.import_and_load(dict(meta), lambda d: Source(blobs[d]))
    assert again.id == entry.id and load.how == "full"
    assert [e.id for e in first.entries()] == [entry.id] and first.verify().ok
