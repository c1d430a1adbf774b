"""The blob store against a real engine: round trips, sharing, delta loads, limits, repair, tamper detection.

Images are small (busybox plus a few MB of random data) and built once per
module; tests that remove an image from the engine load it back before
they end, so the module's images stay usable.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import secrets
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from pytest_madcache.engines.docker import Engine
from pytest_madcache.core.images import BuildResult
from pytest_madcache.core.key import CacheKey
from pytest_madcache.store import EntryCorrupt, EntryNotFound, Store
from pytest_madcache.provide import get_or_build
from tests.images import ImageFactory, write_context

MB = 1 << 20
BASE_SIZE = 20 * MB
VARIANT_SIZE = 1 * MB

pytestmark = pytest.mark.engine


def key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def cache_key(name: str) -> CacheKey:
    return CacheKey(digest=key(name), components={"image": name})


def blob_bytes(store: Store) -> int:
    return sum(p.stat().st_size for p in store.blob_dir.iterdir())


class Images:
    """The module's images: three variants sharing busybox and a 20 MB base, plus a factory for one-offs."""

    def __init__(self, engine: Engine, factory: ImageFactory, workdir: Path) -> None:
        self.engine = engine
        self.factory = factory
        self.workdir = workdir
        ctx = write_context(workdir / "variants", {"base.bin": os.urandom(BASE_SIZE)})
        lines = (ctx / "Dockerfile").read_text().splitlines()
        self.variants: List[BuildResult] = []
        self.ids: List[str] = []  # every image built here; removed by id (all tags) at teardown
        for i in range(3):
            (ctx / f"v{i}.bin").write_bytes(os.urandom(VARIANT_SIZE))
            df = ctx / f"Dockerfile.v{i}"
            df.write_text("\n".join(lines + [f"COPY v{i}.bin /data/v{i}.bin"]) + "\n")
            tag = f"madcache-test-variant{i}-{secrets.token_hex(3)}:latest"
            factory.tags.append(tag)
            self.variants.append(engine.build(ctx, dockerfile=df, tag=tag))
        self.ids += [v.image_id for v in self.variants]

    def reloaded(self, index: int, image_id: str) -> None:
        """A variant came back through a load: on the containerd store it has a new id."""
        self.variants[index] = BuildResult(image_id=image_id, duration=self.variants[index].duration)
        self.ids.append(image_id)

    def unique(self, size: int = 2 * MB) -> BuildResult:
        """An image sharing no layer with any other: FROM scratch plus random bytes."""
        ctx = write_context(self.workdir / secrets.token_hex(4), {"u.bin": size}, base=False)
        result = self.factory.build(ctx)
        self.ids.append(result.image_id)
        return result

    def cleanup(self) -> None:
        """Remove every image built here with all the tags loads gave it."""
        self.factory.cleanup()
        for image_id in self.ids:
            self.engine.remove(image_id)


@pytest.fixture(scope="module")
def imgs(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    workdir = tmp_path_factory.mktemp("store-images")
    factory = ImageFactory(engine, workdir)
    images = Images(engine, factory, workdir)
    yield images
    images.cleanup()


@pytest.fixture
def store(cache_dir: Path, engine: Engine) -> Store:
    return Store(cache_dir, engine=engine, max_entries=50)


def test_variants_really_share_their_base(imgs: Images, engine: Engine) -> None:
    """Precondition for the sharing tests: the variants differ only in their top layer."""
    chains = [engine.inspect(v.image_id).diff_ids for v in imgs.variants]
    assert len({tuple(c[:-1]) for c in chains}) == 1
    assert len({c[-1] for c in chains}) == 3


def test_round_trip_save_remove_load(store: Store, imgs: Images, engine: Engine) -> None:
    """save -> remove the image from the engine -> load gives back the same image id and tag."""
    img = imgs.unique()
    entry = store.save(img.image_id, key("rt"), image_name="madcache-rt", image_tag="v1", model_tags=["m"])
    assert entry.image_id == img.image_id and entry.id.startswith("run_")
    assert store.lookup(key("rt")).id == entry.id
    assert (store.entry_dir / entry.id / "meta.json").is_file()

    engine.remove(img.image_id)
    assert engine.inspect(img.image_id) is None

    result = Store(store.dir, engine=engine).load(store.lookup(key("rt")))
    assert result.how == "full"
    assert result.layers_sent == len(entry.layers)
    assert result.bytes_sent >= entry.own_bytes
    info = engine.inspect(result.image_id)
    assert info is not None and info.diff_ids == entry.layers
    # Classic Docker and Podman give the image its id back; the containerd store names it
    # by the manifest of the archive we loaded, which the entry can compute.
    expected = img.image_id if engine.info.image_store != "containerd" else entry.oci_id
    assert info.id == expected
    assert "madcache-rt:v1" in info.repo_tags
    engine.remove("madcache-rt:v1")


def test_shared_base_is_stored_once(store: Store, imgs: Images) -> None:
    """Three variants sharing a 20 MB base take about one base on disk, not three."""
    entries = [store.save(v.image_id, key(f"variant{i}"), image_name=f"v{i}")
               for i, v in enumerate(imgs.variants)]
    on_disk = blob_bytes(store)
    separate = sum(e.own_bytes for e in entries)  # what three separate tars would hold
    one_image = entries[0].own_bytes
    print(f"\nshared base: {on_disk / MB:.1f} MB on disk for 3 variants; "
          f"{separate / MB:.1f} MB as separate images; one image {one_image / MB:.1f} MB; "
          f"ratio {on_disk / one_image:.2f}x of one image")
    assert separate > 2.9 * BASE_SIZE
    assert on_disk < one_image + 2 * (VARIANT_SIZE + 64 * 1024)
    assert on_disk < 1.2 * one_image
    stats = store.stats()
    assert stats.entries == 3 and stats.total_bytes == on_disk
    assert stats.shared_bytes_saved == separate - on_disk
    # Unique bytes: each variant owns only its top layer and config.
    unique = store.unique_bytes()
    assert all(VARIANT_SIZE <= unique[e.id] < VARIANT_SIZE + 64 * 1024 for e in entries)


def test_delta_load_sends_only_missing_layers(store: Store, imgs: Images, engine: Engine) -> None:
    """With the base still in the engine (through another variant the cache loaded), a load sends
    only the top layer; Podman, which refuses archives that leave layers out, gets them all."""
    v0, v1 = imgs.variants[0], imgs.variants[1]
    e0 = store.save(v0.image_id, key("d0"), image_name="madcache-delta", image_tag="v0")
    e1 = store.save(v1.image_id, key("d1"), image_name="madcache-delta", image_tag="v1")
    # v1 reaches the engine through the cache, as on a runner the cache filled: the containerd
    # store then holds its blobs in the form our archives name them (a build leaves gzip blobs).
    engine.remove("madcache-delta:v1")
    engine.remove(v1.image_id)
    imgs.reloaded(1, store.load(e1).image_id)
    engine.remove("madcache-delta:v0")
    engine.remove(v0.image_id)
    assert engine.inspect(v0.image_id) is None and engine.inspect(imgs.variants[1].image_id) is not None

    result = store.load(e0)
    imgs.reloaded(0, result.image_id)
    print(f"\n{engine.info.name}: {result.how} load: {result.bytes_sent / MB:.2f} MB sent of "
          f"{e0.own_bytes / MB:.2f} MB ({result.layers_sent} layers, {result.seconds * 1000:.0f} ms)")
    assert engine.inspect(result.image_id).diff_ids == e0.layers
    if engine.info.delta == "none":
        assert result.how == "full" and result.layers_sent == len(set(e0.layers))
        return
    assert result.how == "delta"
    assert result.layers_sent == 1
    assert result.bytes_sent < e0.own_bytes / 10
    assert VARIANT_SIZE < result.bytes_sent < VARIANT_SIZE + 64 * 1024


def test_presence_short_cut_loads_nothing_and_retags(store: Store, imgs: Images, engine: Engine) -> None:
    """An image the engine already has is not loaded at all; a missing tag is put back."""
    v2 = imgs.variants[2]
    entry = store.save(v2.image_id, key("p"), image_name="madcache-present", image_tag="t")
    result = store.load(entry)
    assert (result.how, result.bytes_sent, result.layers_sent) == ("present", 0, 0)
    assert "madcache-present:t" in engine.inspect(v2.image_id).repo_tags

    engine.remove("madcache-present:t")  # untag only: the variant's own tag keeps the image
    assert engine.inspect(v2.image_id) is not None
    result = store.load(entry)
    assert result.how == "present" and result.bytes_sent == 0
    assert "madcache-present:t" in engine.inspect(v2.image_id).repo_tags
    engine.remove("madcache-present:t")


def test_save_of_known_blobs_writes_nothing_new(store: Store, imgs: Images) -> None:
    """Saving an image whose blobs are all stored adds an entry but no bytes."""
    v0 = imgs.variants[0]
    store.save(v0.image_id, key("k1"), image_name="a")
    before = blob_bytes(store), len(list(store.blob_dir.iterdir()))
    entry = store.save(v0.image_id, key("k2"), image_name="b")
    assert (blob_bytes(store), len(list(store.blob_dir.iterdir()))) == before
    assert {e.id for e in store.entries()} >= {entry.id}
    assert store.total_bytes(store.entries()) == before[0]


def test_lru_by_count_evicts_least_recently_used_not_oldest(cache_dir: Path, imgs: Images, engine: Engine) -> None:
    """With max_entries=2, the third save evicts the least recently used entry, not the oldest created."""
    store = Store(cache_dir, engine=engine, max_entries=2)
    img = imgs.variants[0].image_id
    first = store.save(img, key("first"), image_name="lru")
    second = store.save(img, key("second"), image_name="lru")
    time.sleep(0.01)
    assert store.load(first).how == "present"  # using `first` makes `second` the least recently used
    third = store.save(img, key("third"), image_name="lru")
    remaining = {e.id for e in store.entries()}
    assert remaining == {first.id, third.id}
    assert store.lookup(key("second")) is None
    assert not (store.entry_dir / second.id).exists()
    assert [e.id for e in store.entries()][0] == third.id  # listing is most recently used first


def test_lru_by_size(cache_dir: Path, imgs: Images, engine: Engine) -> None:
    """max_size_bytes counts unique blob bytes; the least recently used entries go until the rest fit."""
    big = Store(cache_dir, engine=engine, max_entries=50)
    a = big.save(imgs.unique().image_id, key("size-a"), image_name="size")
    b = big.save(imgs.unique().image_id, key("size-b"), image_name="size")
    two = big.total_bytes(big.entries())
    assert two == a.own_bytes + b.own_bytes  # no shared blobs

    small = Store(cache_dir, engine=engine, max_entries=50, max_size_bytes=two + 1000)
    c = small.save(imgs.unique().image_id, key("size-c"), image_name="size")
    assert {e.id for e in small.entries()} == {b.id, c.id}
    assert small.stats().total_bytes <= two + 1000
    assert blob_bytes(small) == small.stats().total_bytes  # a's blobs were collected

    evicted = small.prune(max_size_bytes=c.own_bytes)
    assert [e.id for e in evicted] == [b.id]
    assert [e.id for e in small.entries()] == [c.id]


def test_lru_by_ttl(store: Store, imgs: Images) -> None:
    """Entries unused for longer than the TTL are evicted by prune; recently used ones stay."""
    img = imgs.variants[1].image_id
    old = store.save(img, key("ttl-old"), image_name="ttl")
    fresh = store.save(img, key("ttl-fresh"), image_name="ttl")
    past = time.time() - 3 * 3600
    os.utime(store.entry_dir / old.id / "used", (past, past))
    assert store.get(old.id).last_used == pytest.approx(past, abs=1)

    assert store.prune(ttl=4 * 3600) == []  # not yet expired under a 4h TTL
    evicted = Store(store.dir, engine=store.engine, ttl=2 * 3600).prune()  # the store's own 2h TTL
    assert [e.id for e in evicted] == [old.id]
    assert [e.id for e in store.entries()] == [fresh.id]


@pytest.mark.parametrize("damage", ["garbage", "deleted", "stale"])
def test_corrupt_index_repairs_itself(store: Store, imgs: Images, engine: Engine, damage: str) -> None:
    """A garbage, missing or stale index.json is rebuilt from entry metadata at the next open; nothing is lost."""
    saved = [store.save(v.image_id, key(f"idx{i}"), image_name=f"idx{i}") for i, v in enumerate(imgs.variants)]
    index = store.dir / "index.json"
    if damage == "garbage":
        index.write_bytes(os.urandom(200))
    elif damage == "deleted":
        index.unlink()
    else:  # an index written before the last entry was added
        data = json.loads(index.read_text())
        del data["entries"][saved[-1].id]
        index.write_text(json.dumps(data))

    reopened = Store(store.dir, engine=engine, max_entries=50)
    assert {e.id for e in reopened.entries()} == {e.id for e in saved}
    data = json.loads(index.read_text())
    assert set(data["entries"]) == {e.id for e in saved}
    assert reopened.lookup(key("idx2")).image_id == imgs.variants[2].image_id
    assert reopened.load(reopened.lookup(key("idx0"))).how == "present"
    assert reopened.verify().ok


def test_unreadable_entry_metadata_is_dropped_on_repair(store: Store, imgs: Images) -> None:
    """An entry whose meta.json is garbage is dropped at the rebuild; the others survive."""
    good = store.save(imgs.variants[0].image_id, key("meta-good"), image_name="m")
    bad = store.save(imgs.variants[1].image_id, key("meta-bad"), image_name="m")
    (store.entry_dir / bad.id / "meta.json").write_text("{not json")
    (store.dir / "index.json").unlink()
    assert [e.id for e in Store(store.dir).entries()] == [good.id]
    assert not (store.entry_dir / bad.id).exists()


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_blob_is_detected_on_load(store: Store, imgs: Images, engine: Engine) -> None:
    """A flipped byte in a layer blob fails the load with EntryCorrupt; the entry and the bad blob are dropped."""
    img = imgs.unique()
    entry = store.save(img.image_id, key("tamper"), image_name="madcache-tamper")
    flip_a_byte(store.blob_path(entry.layers[-1]))
    engine.remove(img.image_id)

    with pytest.raises(EntryCorrupt, match="corrupt"):
        store.load(entry)
    assert store.lookup(key("tamper")) is None
    assert not (store.entry_dir / entry.id).exists()
    assert not store.blob_path(entry.layers[-1]).exists()
    assert engine.inspect(img.image_id) is None  # the engine took nothing
    assert store.verify().ok
    engine.ping()  # the connection survived the aborted upload


def test_tampered_blob_makes_get_or_build_build(store: Store, imgs: Images, engine: Engine) -> None:
    """get_or_build falls back to building when the cached entry is corrupt, and saves a good entry."""
    ctx = write_context(imgs.workdir / secrets.token_hex(4), {"u.bin": 2 * MB}, base=False)
    tag = f"madcache-test-{secrets.token_hex(4)}:latest"
    imgs.factory.tags.append(tag)
    first = engine.build(ctx, tag=tag)
    imgs.ids.append(first.image_id)
    k = cache_key("tamper-gob")
    entry = store.save(first.image_id, k, image_name="madcache-gob")
    flip_a_byte(store.blob_path(entry.layers[0]))
    engine.remove(first.image_id)

    builds: List[int] = []

    def build() -> BuildResult:
        builds.append(1)
        result = engine.build(ctx, tag=tag)
        imgs.ids.append(result.image_id)
        return result

    outcome = get_or_build(store, k, build, image_name="madcache-gob")
    assert builds == [1]
    assert outcome.hit is False and outcome.saved is True
    assert outcome.entry.id != entry.id
    assert [e.id for e in store.entries()] == [outcome.entry.id]
    assert store.verify().ok
    engine.remove(outcome.image_id)
    assert store.load(outcome.entry).how == "full"


def test_verify_reports_and_drops_tampered_and_missing_blobs(store: Store, imgs: Images) -> None:
    """verify() hashes every blob, reports a bad and a missing one, drops their entries and then is clean."""
    a = store.save(imgs.unique().image_id, key("verify-a"), image_name="va")
    b = store.save(imgs.unique().image_id, key("verify-b"), image_name="vb")
    c = store.save(imgs.variants[0].image_id, key("verify-c"), image_name="vc")
    flip_a_byte(store.blob_path(a.layers[0]))
    store.blob_path(b.layers[0]).unlink()

    report = store.verify(repair=False)
    assert report.bad_blobs == [a.layers[0]] and report.missing_blobs == [b.layers[0]]
    assert sorted(report.broken_entries) == sorted([a.id, b.id]) and report.dropped_entries == []
    assert len(store.entries()) == 3  # repair=False changes nothing

    report = store.verify()
    assert not report.ok and sorted(report.dropped_entries) == sorted([a.id, b.id])
    assert report.blobs_checked >= len(set(a.blobs) | set(b.blobs) | set(c.blobs)) - 1
    assert [e.id for e in store.entries()] == [c.id]
    assert store.verify().ok
    assert blob_bytes(store) == store.stats().total_bytes  # nothing left behind


def test_get_or_build_miss_then_hit(store: Store, imgs: Images) -> None:
    """The first call builds and saves; the second hits without building."""
    img = imgs.variants[1]
    calls: List[int] = []

    def build() -> BuildResult:
        calls.append(1)
        return BuildResult(image_id=img.image_id, duration=1.5)

    k = cache_key("gob")
    first = get_or_build(store, k, build, image_name="gob", model_tags=["t"], run_config={"gpu": "x"})
    assert (first.hit, first.saved, first.build_duration, calls) == (False, True, 1.5, [1])
    assert first.entry.build_duration == 1.5 and first.entry.key_components == {"image": "gob"}
    second = get_or_build(store, k, build, image_name="gob")
    assert (second.hit, second.load.how, calls) == (True, "present", [1])
    assert second.entry.id == first.entry.id and second.build_duration == 1.5


def test_force_rebuild_replaces_the_entry(store: Store, imgs: Images) -> None:
    """force_rebuild builds even on a hit, and the new entry replaces the old one for that key."""
    k = cache_key("force")
    old = store.save(imgs.variants[0].image_id, k, image_name="force")
    other = store.save(imgs.variants[0].image_id, key("unrelated"), image_name="keep")
    outcome = get_or_build(store, k, lambda: imgs.variants[2].image_id, image_name="force", force_rebuild=True)
    assert outcome.hit is False and outcome.saved
    assert outcome.entry.image_id == imgs.variants[2].image_id
    assert store.lookup(k).id == outcome.entry.id
    assert {e.id for e in store.entries()} == {outcome.entry.id, other.id}
    assert not (store.entry_dir / old.id).exists()


def _single_flight_worker(directory: str, image_id: str, digest: str, log: str, out: "multiprocessing.Queue") -> None:
    """Child process: get_or_build with a build that records that it ran and then holds the key
    until both other processes have said they wait for it (events in `log`, not a timer)."""
    def note(line: str) -> None:
        with open(log, "a") as fh:
            fh.write(f"{line} {os.getpid()}\n")

    store = Store(directory, engine=Engine(), max_entries=50,
                  log=lambda message: note("waiting") if message.startswith("Waiting for another process") else None)

    def build() -> str:
        note("build")
        deadline = time.monotonic() + 120
        while sum(line.startswith("waiting ") for line in open(log)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        note("built")
        return image_id

    outcome = get_or_build(store, CacheKey(digest, {}), build, image_name="single")
    out.put((outcome.hit, outcome.waited, outcome.entry.id, os.getpid()))


def test_get_or_build_is_single_flight(store: Store, imgs: Images, tmp_path: Path) -> None:
    """Three processes asking for the same key at once: one builds, the others wait and hit."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    log = tmp_path / "events.log"
    procs = [ctx.Process(target=_single_flight_worker,
                         args=(str(store.dir), imgs.variants[1].image_id, key("single"), str(log), queue))
             for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    events = [line.split() for line in log.read_text().splitlines()]
    kinds = [kind for kind, _ in events]
    assert kinds.count("build") == 1 and kinds.count("built") == 1, events
    builder = next(pid for kind, pid in events if kind == "build")
    waiters = sorted(pid for kind, pid in events if kind == "waiting")
    # the order: the build began, both others waited for it, and only then did it end
    assert kinds.index("build") < kinds.index("built") and kinds[-1] == "built", events
    assert len(waiters) == 2 and builder not in waiters, events
    assert sorted(str(pid) for hit, _, _, pid in results if hit) == waiters
    assert [str(pid) for hit, _, _, pid in results if not hit] == [builder]
    assert all(waited > 0 for hit, waited, _, _ in results if hit)
    assert len({entry_id for _, _, entry_id, _ in results}) == 1
    assert len(store.entries()) == 1


def test_unknown_entry_names_the_available_ones(store: Store, imgs: Images) -> None:
    """get/evict of an unknown id raise EntryNotFound listing what exists and the `madcache list` tip."""
    e = store.save(imgs.variants[0].image_id, key("nf"), image_name="nf")
    with pytest.raises(EntryNotFound) as info:
        store.evict("run_0_deadbeef")
    text = str(info.value)
    assert "Cache entry 'run_0_deadbeef' not found" in text and e.id in text and "madcache list" in text
    assert store.evict(e.id).id == e.id
    assert store.entries() == [] and blob_bytes(store) == 0


def test_everything_stays_inside_the_cache_dir(store: Store, imgs: Images, tmp_path: Path) -> None:
    """After saves, loads, evictions and a prune, tmp/ is empty and no file lies outside the layout."""
    img = imgs.variants[0].image_id
    entries = [store.save(img, key(f"in{i}"), image_name="in") for i in range(3)]
    store.load(entries[0])
    store.evict(entries[1].id)
    store.prune(max_entries=1)
    assert list(store.tmp_dir.iterdir()) == []
    top = {p.name for p in store.dir.iterdir()}
    assert top <= {"madcache.json", "index.json", "lock", "blobs", "entries", "keys", "tmp"}


def test_a_corrupt_shared_blob_drops_every_entry_that_needs_it(store: Store, imgs: Images, engine: Engine,
                                                                tmp_path: Path) -> None:
    """A load that reads a bad base blob drops every entry sharing it; the others stay."""
    backup = Store(tmp_path / "backup", engine=engine, max_entries=10)
    kept = [backup.save(v.image_id, key(f"shared-bad-backup{i}"), image_name=f"sbb{i}")
            for i, v in enumerate(imgs.variants)]
    v0 = store.save(imgs.variants[0].image_id, key("shared-bad-0"), image_name="sb0")
    v1 = store.save(imgs.variants[1].image_id, key("shared-bad-1"), image_name="sb1")
    other = store.save(imgs.unique().image_id, key("shared-bad-other"), image_name="sbo")
    base = max((d for d in v0.layers if d in v1.layers), key=lambda d: v0.sizes[d])
    flip_a_byte(store.blob_path(base))
    for v in imgs.variants:  # the engine must lack the base (parents too) for the load to read it
        engine.remove(v.image_id, prune_parents=True)
    try:
        with pytest.raises(EntryCorrupt):
            store.load(v0)
        assert [e.id for e in store.entries()] == [other.id]
        assert store.verify().ok
    finally:
        for i, entry in enumerate(kept):  # the module's images come back (on containerd, under new ids)
            imgs.reloaded(i, backup.load(entry).image_id)
    assert all(engine.has_image(v.image_id) for v in imgs.variants)
