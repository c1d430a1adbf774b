"""Many processes, one cache directory, a real engine: nothing lost, nothing orphaned, crashes survived."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Iterator, List, Set

import pytest

from pytest_madcache.engines.docker import Engine
from pytest_madcache.store import Store
from tests.images import ImageFactory, write_context

MB = 1 << 20
WORKERS = 8
SAVES_PER_WORKER = 25

pytestmark = pytest.mark.engine


def key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@pytest.fixture(scope="module")
def image_ids(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[List[str]]:
    """Five distinct small images: three share busybox (shared blobs), two share nothing."""
    workdir = tmp_path_factory.mktemp("conc-images")
    factory = ImageFactory(engine, workdir)
    ids = [factory.make({"data.bin": 1 * MB}).image_id for _ in range(3)]
    for _ in range(2):
        ctx = write_context(workdir / secrets.token_hex(4), {"u.bin": 1 * MB}, base=False)
        ids.append(factory.build(ctx).image_id)
    yield ids
    factory.cleanup()
    for image_id in ids:  # with the tags loads gave them
        engine.remove(image_id)


def reload_through_the_engine(store: Store, entry, engine: Engine, image_ids: List[str]) -> None:
    """Remove the entry's image (under every id it goes by) and load it back from the cache; the
    module's images follow it, since a containerd store names the reloaded image anew."""
    for image_id in entry.engine_ids:  # force the blobs through the engine, not the presence short-cut
        engine.remove(image_id)
    result = store.load(entry)
    assert result.how in ("full", "delta")
    assert result.image_id in entry.engine_ids and engine.inspect(result.image_id).diff_ids == entry.layers
    image_ids[:] = [result.image_id if i == entry.image_id else i for i in image_ids]


def _save_worker(directory: str, image_ids: List[str], worker: int, count: int, max_entries: int,
                 out: "multiprocessing.Queue") -> None:
    """Child process: `count` saves under distinct keys; reports ids or the traceback."""
    try:
        store = Store(directory, engine=Engine(), max_entries=max_entries)
        ids = []
        for j in range(count):
            image = image_ids[(worker + j) % len(image_ids)]
            entry = store.save(image, key(f"w{worker}-s{j}"), image_name=f"conc-w{worker}", image_tag=f"s{j}")
            ids.append(entry.id)
        out.put(("ok", worker, ids))
    except BaseException:
        out.put(("error", worker, traceback.format_exc()))


def run_workers(directory: Path, image_ids: List[str], count: int, max_entries: int) -> List[str]:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_save_worker, args=(str(directory), image_ids, w, count, max_entries, queue))
             for w in range(WORKERS)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [r[2] for r in results if r[0] == "error"]
    assert not errors, "worker failed:\n" + "\n".join(errors)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    return [entry_id for r in results for entry_id in r[2]]


def referenced_blobs(store: Store) -> Set[str]:
    return {d.split(":", 1)[1] for e in store.entries() for d in e.blobs}


def assert_consistent(store: Store) -> None:
    """Index == entry dirs == what entries() lists; every blob is referenced and present."""
    dirs = {p.name for p in store.entry_dir.iterdir()}
    index = set(json.loads((store.dir / "index.json").read_text())["entries"])
    listed = {e.id for e in store.entries()}
    assert index == dirs == listed
    on_disk = {p.name for p in store.blob_dir.iterdir()}
    assert on_disk == referenced_blobs(store), "orphaned or missing blobs"


def test_8_processes_x_25_saves_lose_nothing(cache_dir: Path, image_ids: List[str], engine: Engine) -> None:
    """8 processes saving 25 entries each into one directory at once: 200 entries, a consistent index, no orphans."""
    Store(cache_dir)  # create the layout once, as a CI job's first step would
    start = time.monotonic()
    ids = run_workers(cache_dir, image_ids, SAVES_PER_WORKER, max_entries=1000)
    elapsed = time.monotonic() - start
    print(f"\n{WORKERS}x{SAVES_PER_WORKER} concurrent saves: {elapsed:.1f} s")

    store = Store(cache_dir, engine=engine, max_entries=1000)
    assert len(ids) == len(set(ids)) == WORKERS * SAVES_PER_WORKER
    assert {e.id for e in store.entries()} == set(ids)
    assert len({e.key for e in store.entries()}) == WORKERS * SAVES_PER_WORKER
    assert_consistent(store)
    assert store.prune() == []
    assert list(store.tmp_dir.iterdir()) == []
    assert store.verify().ok
    # Every image's blobs are stored exactly once however many entries point at them.
    distinct = {d for e in store.entries() for d in e.blobs}
    assert len(list(store.blob_dir.iterdir())) == len(distinct)


def test_eviction_and_gc_racing_with_saves_leave_a_loadable_cache(
    cache_dir: Path, image_ids: List[str], engine: Engine
) -> None:
    """With max_entries=3 every save evicts and collects while others save: what remains loads and verifies."""
    Store(cache_dir)
    ids = run_workers(cache_dir, image_ids, 10, max_entries=3)
    assert len(ids) == WORKERS * 10

    store = Store(cache_dir, engine=engine, max_entries=3)
    remaining = store.entries()
    assert 1 <= len(remaining) <= 3
    assert {e.id for e in remaining} <= set(ids)
    assert_consistent(store)
    assert store.verify().ok
    for entry in remaining:
        reload_through_the_engine(store, entry, engine, image_ids)
    assert store.prune() == []
    assert list(store.tmp_dir.iterdir()) == []


SAVE_SCRIPT = """
import sys
from pytest_madcache.engines.docker import Engine
from pytest_madcache.store import Store
Store(sys.argv[1], engine=Engine(), max_entries=50).save(sys.argv[2], sys.argv[3], image_name="madcache-big")
"""


def _kill_mid_save(directory: Path, image_id: str, digest: str) -> bool:
    """Start a save in a subprocess and SIGKILL it once it is writing a blob; False if it finished first."""
    proc = subprocess.Popen([sys.executable, "-c", SAVE_SCRIPT, str(directory), image_id, digest],
                            env=dict(os.environ), cwd=str(Path(__file__).resolve().parents[1]))
    tmp = directory / "tmp"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            for lease in tmp.glob("save-*"):
                partial = [p for p in lease.glob("blob-*") if p.stat().st_size > 4 * MB] if lease.is_dir() else []
                if partial:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return True
            time.sleep(0.002)
    except FileNotFoundError:
        pass  # the lease vanished while we looked: the save completed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return False


def test_kill_9_mid_save_leaves_a_usable_cache(cache_dir: Path, image_ids: List[str], engine: Engine,
                                               tmp_path: Path) -> None:
    """SIGKILL during a 100 MB save: earlier entries still load, verify is clean, the leftovers are collected."""
    factory = ImageFactory(engine, tmp_path / "big")
    big = factory.make({"big.bin": 100 * MB}).image_id
    try:
        store = Store(cache_dir, engine=engine, max_entries=50)
        earlier = [store.save(image_ids[i], key(f"earlier{i}"), image_name=f"earlier{i}") for i in (0, 3)]
        blobs_before = {p.name for p in store.blob_dir.iterdir()}

        for attempt in range(3):
            if _kill_mid_save(cache_dir, big, key(f"big{attempt}")):
                break
        else:
            pytest.fail("the save finished before it could be killed, three times")

        leftovers = list(store.tmp_dir.glob("save-*"))
        assert leftovers, "the dead save's lease should still be there before anything collects it"

        reopened = Store(cache_dir, engine=engine, max_entries=50)
        assert {e.id for e in reopened.entries()} == {e.id for e in earlier}
        assert reopened.verify().ok
        for entry in earlier:
            reload_through_the_engine(reopened, entry, engine, image_ids)

        # The next save collects the dead lease, its partial blob and anything it had published.
        after = reopened.save(image_ids[1], key("after-kill"), image_name="after")
        assert list(reopened.tmp_dir.iterdir()) == []
        assert_consistent(reopened)
        assert {p.name for p in reopened.blob_dir.iterdir()} == blobs_before | {
            d.split(":", 1)[1] for d in after.blobs}

        # And a save of the big image now completes normally.
        entry = reopened.save(big, key("big-again"), image_name="madcache-big")
        assert reopened.lookup(key("big-again")).id == entry.id
        assert reopened.verify().ok
    finally:
        factory.cleanup()
        engine.remove(big)


def test_save_survives_gc_collecting_its_blobs_between_check_and_commit(
    cache_dir: Path, image_ids: List[str], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save that finds every blob stored, while another process evicts their last entry and collects
    them, still stores a complete entry (it saves the image again instead of failing)."""
    from pytest_madcache.store.blobs import Lease

    store = Store(cache_dir, engine=engine, max_entries=50)
    victim = store.save(image_ids[0], key("gc-victim"), image_name="victim")
    other = Store(cache_dir, engine=engine, max_entries=50)  # stands for another process
    original = Lease.publish
    raced: List[bool] = []

    def publish_after_a_concurrent_evict(self, digest: str) -> None:
        if not raced:
            raced.append(True)
            other.evict(victim.id)  # its blobs have no other user: GC removes them now
        original(self, digest)

    monkeypatch.setattr(Lease, "publish", publish_after_a_concurrent_evict)
    entry = store.save(image_ids[0], key("gc-racer"), image_name="racer")
    assert raced
    assert [e.id for e in store.entries()] == [entry.id]
    assert all(store.blob_path(d).is_file() for d in entry.blobs)
    assert_consistent(store)
    assert store.verify().ok
