"""zstd-compressed blobs: smaller on disk, loaded by decompressing while streaming, checked like raw ones."""

from __future__ import annotations

import hashlib
import os

import pytest

from pytest_madcache.core.key import CacheKey
from pytest_madcache.remote.oci import Registry, RemoteCache
from pytest_madcache.util.refs import RemoteRef
from pytest_madcache.store import EntryCorrupt, Store, StoreError, ZSTD_SUFFIX
from pytest_madcache.provide import get_or_build
from tests.remote_helpers import text_like

import zstandard  # noqa: E402,F401 - the test extra installs it


def key(name: str) -> CacheKey:
    return CacheKey(hashlib.sha256(name.encode()).hexdigest(), {"image": name})


@pytest.fixture
def mixed(images):
    """An image with a compressible 6 MB layer on top of a random 3 MB layer."""
    return images.make({"weights.bin": os.urandom(3_000_000), "vocab.txt": text_like(6_000_000)})


@pytest.mark.engine
def test_compressible_layers_are_stored_compressed_random_ones_raw(engine, mixed, cache_dir):
    store = Store(cache_dir, engine=engine, compress="zstd")
    entry = store.save(mixed.image_id, key("zstd-a"), image_name="zstd-a")
    files = {p.name for p in store.blob_dir.iterdir()}
    packed = [d for d in entry.layers if d[7:] + ZSTD_SUFFIX in files]
    raw = [d for d in entry.layers if d[7:] in files]
    assert packed and raw, "the text layer is packed, the random layer stays raw"
    vocab_layer = max(packed, key=lambda d: entry.sizes[d])
    assert entry.sizes[vocab_layer] > 2.5 * entry.stored[vocab_layer]
    assert store.stats().total_bytes == sum(p.stat().st_size for p in store.blob_dir.iterdir())
    assert store.verify().ok

    engine.remove(mixed.image_id)
    result = store.load(entry)
    assert result.how in ("full", "delta")
    assert engine.inspect(result.image_id).diff_ids == entry.layers  # the id is new on the containerd store


@pytest.mark.engine
def test_a_damaged_compressed_blob_is_never_loaded(engine, mixed, cache_dir):
    store = Store(cache_dir, engine=engine, compress="zstd")
    entry = store.save(mixed.image_id, key("zstd-bad"), image_name="zstd-bad")
    target = store.blob_file(entry.layers[-1])  # the vocab layer on top: always sent when the image is missing
    assert target.name.endswith(ZSTD_SUFFIX)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    engine.remove(mixed.image_id, prune_parents=True)
    with pytest.raises(EntryCorrupt):
        store.load(entry)
    assert store.entries() == []
    assert not engine.has_image(mixed.image_id)


@pytest.mark.engine
def test_compressed_and_raw_stores_share_through_a_registry(engine, second_engine, mixed, registry, tmp_path):
    remote_a = RemoteCache(Registry(RemoteRef.parse(f"{registry}/zstd-share")))
    a = Store(tmp_path / "a", engine=engine, compress="zstd")
    k = key("zstd-share")
    entry = a.save(mixed.image_id, k, image_name="zstd-share")
    assert remote_a.push(entry, a.open_blob) > 0, "the registry gets uncompressed layers (real OCI images)"
    b = Store(tmp_path / "b", engine=second_engine)
    got = get_or_build(b, k, lambda: pytest.fail("no build on machine B"),
                       remote=RemoteCache(Registry(RemoteRef.parse(f"{registry}/zstd-share"))), image_name="zstd-share")
    assert got.hit and second_engine.inspect(got.image_id).diff_ids == entry.layers
    assert not any(p.name.endswith(ZSTD_SUFFIX) for p in b.blob_dir.iterdir())


@pytest.mark.engine
def test_one_directory_can_mix_compressed_and_raw_blobs(engine, mixed, cache_dir):
    Store(cache_dir, engine=engine, compress="zstd").save(mixed.image_id, key("mix-1"), image_name="mix")
    raw_store = Store(cache_dir, engine=engine)
    entry = raw_store.save(mixed.image_id, key("mix-2"), image_name="mix")  # every blob already there
    assert entry.stored == raw_store.get(entry.id).stored
    engine.remove(mixed.image_id)
    assert raw_store.load(entry).how in ("full", "delta")
    assert raw_store.verify().ok


def test_unknown_compression_is_refused(cache_dir):
    with pytest.raises(StoreError, match="unknown blob compression 'lz4'"):
        Store(cache_dir, compress="lz4")


@pytest.mark.parametrize("value", ["off", "OFF", "0", "false", "none", None])
def test_off_means_none_in_the_store_as_in_the_settings(cache_dir, value):
    assert Store(cache_dir, compress=value).compress == "none"
