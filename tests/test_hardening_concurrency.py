"""Concurrency: 8 processes saving distinct images and loading under constant eviction, one build per key under
`pytest -n 4`, two "pods"."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import re
import secrets
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path
from typing import List

import pytest

from pytest_madcache.engines.docker import Engine
from pytest_madcache.store import Store
from tests.images import ImageFactory, write_context
from tests.needs import unavailable
from tests.plugin_helpers import remove_images, tiny_context

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[1]
WORKERS, OPS = 8, 25


def key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


IMAGES, MAX_ENTRIES = 16, 10  # 16 images, each with a layer of its own; ~100 saves into a cache of 10 entries
EVICTED = re.compile(r"Evicted cache entry (run_\S+)")


@pytest.fixture(scope="module")
def distinct_images(engine: Engine, tmp_path_factory) -> List[str]:
    """16 images, each with a 64 KB random layer no other image has; 12 of them share the busybox base."""
    factory = ImageFactory(engine, tmp_path_factory.mktemp("hc-images"))
    ids = []
    for i in range(IMAGES):
        ctx = write_context(factory.workdir / f"img{i}", {f"u{i}.bin": 64 * 1024}, base=i % 4 != 3)
        ids.append(factory.build(ctx).image_id)
    yield ids
    factory.cleanup()
    for image_id in ids:
        engine.remove(image_id)


def _mixed_worker(directory: str, image_ids: List[str], worker: int, out) -> None:
    try:
        rng = random.Random(worker)
        evicted: List[str] = []
        store = Store(directory, engine=Engine(), max_entries=MAX_ENTRIES,
                      log=lambda line: evicted.extend(EVICTED.findall(line)))
        saved, loads = [], 0
        for j in range(OPS):
            entries = store.entries()
            if j % 2 == 0 or not entries:
                image = image_ids[(worker * 5 + j) % len(image_ids)]  # workers save the same images at other times
                saved.append(store.save(image, key(f"m{worker}-{j}"), image_name=f"mix{worker}", image_tag=str(j)).id)
            else:
                store.load(rng.choice(entries))  # the engine has every image: a hit that marks the entry used
                loads += 1
        out.put(("ok", saved, loads, evicted))
    except BaseException:
        out.put(("error", traceback.format_exc(), 0, []))


def test_8_processes_x_25_mixed_saves_and_loads_with_eviction(cache_dir: Path, distinct_images: List[str],
                                                              engine: Engine) -> None:
    """8 processes save distinct images (new layers on most saves) and load into a cache whose limit
    keeps evicting (and collecting blobs) under them: every saved entry is listed or was evicted,
    exactly once; nothing is left in tmp/ or unreferenced; verify is clean."""
    Store(cache_dir)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_mixed_worker, args=(str(cache_dir), distinct_images, w, q)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    results = [q.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    errors = [r[1] for r in results if r[0] == "error"]
    assert not errors, "\n".join(errors)
    saved = [i for r in results for i in r[1]]
    loads = sum(r[2] for r in results)
    evicted = [i for r in results for i in r[3]]
    store = Store(cache_dir, engine=engine, max_entries=MAX_ENTRIES)
    listed = {e.id for e in store.entries()}
    lost = set(saved) - listed - set(evicted)
    dirs = {p.name for p in store.entry_dir.iterdir()}
    index = set(json.loads((cache_dir / "index.json").read_text())["entries"])
    referenced = {d.split(":", 1)[1] for e in store.entries() for d in e.blobs}
    blobs = {p.name.split(".", 1)[0] for p in store.blob_dir.iterdir()}
    orphans = (blobs - referenced) | set(p.name for p in store.tmp_dir.iterdir())
    layers = {layer for e in store.entries() for layer in e.layers}
    print(f"\n{WORKERS}x{OPS} mixed, {IMAGES} distinct images, max {MAX_ENTRIES} entries: {len(saved)} saves, "
          f"{loads} loads, {len(evicted)} evicted, {len(listed)} listed ({len(layers)} distinct layers), "
          f"lost {len(lost)}, orphans {len(orphans)}")
    assert len(saved) + loads == WORKERS * OPS
    assert len(set(saved)) == len(saved) and len(set(evicted)) == len(evicted)  # each evicted once
    assert set(evicted) <= set(saved) and not set(evicted) & listed
    assert len(listed) == MAX_ENTRIES and len(evicted) == len(saved) - MAX_ENTRIES  # every save accounted for
    assert not lost and not orphans
    assert index == dirs == listed
    assert store.verify(repair=False).ok


def test_xdist_4_workers_sharing_one_key_build_once(pytester: pytest.Pytester, engine: Engine, tmp_path: Path) -> None:
    name = f"one{secrets.token_hex(3)}"
    tiny_context(pytester.path, ["RUN echo built > /built"])
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.model("{name}", ignore_params=["n"])
        @pytest.mark.parametrize("n", range(8))
        def test_m(model_image, n):
            assert model_image.image_id.startswith("sha256:")
    """)
    try:
        result = pytester.runpytest("-p", "no:cacheprovider", "-n", "4", "--enable-cache", "--cache-dir",
                                    str(tmp_path / "cache"))
        result.assert_outcomes(passed=8)
        out = result.stdout.str()
        builds = out.count("Cache miss. Will build Docker image and save to cache.")
        saved = re.findall(r"Docker image saved to cache: (run_\S+)", out)
        print(f"\npytest -n 4, 8 tests, one key: {builds} build(s), {len(saved)} save(s)")
        assert builds == 1 and len(saved) == 1, out
        result.stdout.fnmatch_lines(["cache hits: *, misses: 1*"])
        assert len(Store(tmp_path / "cache").entries()) == 1
    finally:
        remove_images(engine, f"madcache.model={name}")


POD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from pytest_madcache.engines.docker import Engine
    from pytest_madcache.core.key import CacheKey
    from pytest_madcache.store import Store
    from pytest_madcache.provide import get_or_build

    cache, ctx, log, go = sys.argv[1:5]
    engine = Engine()
    store = Store(cache, engine=engine)
    while not Path(go).exists():
        time.sleep(0.01)

    def build():
        with open(log, "a") as fh:
            fh.write("build\\n")
        return engine.build(Path(ctx), tag="madcache-pod:latest")

    out = get_or_build(store, CacheKey("ab" * 32, {}), build, image_name="madcache-pod", image_tag="latest")
    info = engine.inspect(out.image_id)
    print(json.dumps({"hit": out.hit, "image_id": out.image_id, "present": info is not None and info.id == out.image_id,
                      "entry": out.entry.id if out.entry else None}))
""")


def test_two_pods_with_separate_engines_share_one_cache_dir(engine: Engine, docker_host: str, tmp_path: Path) -> None:
    from pytest_madcache.devtools.localengine import EngineUnavailable, private_engine

    ctx = tiny_context(tmp_path / "ctx", ["COPY data.bin /data.bin", "RUN echo built > /built"],
                       files={"data.bin": "x" * 100000})
    cache, log, go = tmp_path / "cache", tmp_path / "builds.log", tmp_path / "go"
    try:
        with private_engine() as second_host:
            procs = [subprocess.Popen([sys.executable, "-c", POD, str(cache), str(ctx), str(log), str(go)],
                                      env=dict(os.environ, DOCKER_HOST=host, PYTHONPATH=str(ROOT)),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for host in (docker_host, second_host)]
            go.touch()
            outs = [p.communicate(timeout=300) for p in procs]
            for p, (o, e) in zip(procs, outs):
                assert p.returncode == 0, e
            results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    except EngineUnavailable as exc:
        unavailable(f"no second engine: {exc}")
    finally:
        engine.remove("madcache-pod:latest")
    builds = log.read_text().count("build")
    print(f"\ntwo pods: {builds} build(s), hits {[r['hit'] for r in results]}")
    assert builds == 1
    assert sorted(r["hit"] for r in results) == [False, True]
    assert all(r["present"] for r in results)
    entries = Store(cache).entries()
    assert len(entries) == 1
    # One image: each pod's engine names it its own way (config digest, or a containerd manifest digest).
    assert all(r["image_id"] in entries[0].engine_ids for r in results)


def test_warm_only_fills_the_cache_without_running_models(pytester: pytest.Pytester, engine: Engine,
                                                          tmp_path: Path) -> None:
    """A warm-up job (`--cache-warm-only`) builds and saves; the next job hits without building."""
    name = f"warm{secrets.token_hex(3)}"
    tiny_context(pytester.path)
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.model("{name}")
        def test_model(model_run):
            assert False, "warm-up must not run the model"

        def test_plain():
            assert False, "warm-up must not run other tests"
    """)
    cache = tmp_path / "cache"
    try:
        warm = pytester.runpytest("-p", "no:cacheprovider", "--cache-warm-only", "--cache-dir", str(cache))
        warm.assert_outcomes(passed=1, deselected=1)
        assert "Docker image saved to cache: run_" in warm.stdout.str()
        remove_images(engine, f"madcache.model={name}")
        real = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(cache), "-k", "not plain")
        real.assert_outcomes(failed=1, deselected=1)  # the body runs now (and fails on purpose)
        assert "Cache hit! Loading Docker image from cache: run_" in real.stdout.str()
        assert "Cache miss" not in real.stdout.str()
    finally:
        remove_images(engine, f"madcache.model={name}")
