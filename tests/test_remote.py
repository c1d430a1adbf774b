"""Sharing a cache across machines through an OCI registry.

Two machines are two cache directories and two Docker engines; the registry
is Debian's CNCF distribution server on loopback.
"""

from __future__ import annotations

import hashlib
import io
import json
import time

import pytest

from pytest_madcache.core.key import KeySpec, key_for
from pytest_madcache.remote.oci import MANIFEST_TYPE, Registry, RemoteCache, key_tag
from pytest_madcache.remote.base import RemoteUnavailable
from pytest_madcache.util.refs import RemoteRef
from pytest_madcache.store import Store
from pytest_madcache.provide import get_or_build


def _remote(registry: str, repo: str, log=None) -> RemoteCache:
    return RemoteCache(Registry(RemoteRef.parse(f"{registry}/{repo}")), log=log)


def test_remote_ref_parsing():
    ref = RemoteRef.parse("127.0.0.1:5000/team/madcache")
    assert (ref.host, ref.repository, ref.scheme) == ("127.0.0.1:5000", "team/madcache", None)  # HTTPS first
    assert RemoteRef.parse("https://registry.example.com/madcache").scheme == "https"
    assert RemoteRef.parse("http://ci-cache:5000/m").scheme == "http"
    for bad in ("nohost", "host/", "host/UPPER", "host/a//b"):
        with pytest.raises(ValueError, match="REGISTRY/REPOSITORY"):
            RemoteRef.parse(bad)


def test_blob_and_manifest_round_trip(registry):
    reg = Registry(RemoteRef.parse(f"{registry}/roundtrip"))
    data = b"layer bytes " * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert reg.blob_size(digest) is None
    assert reg.upload_blob(digest, io.BytesIO(data), len(data)) is True
    assert reg.upload_blob(digest, io.BytesIO(data), len(data)) is False, "present blobs are not sent again"
    assert reg.blob_size(digest) == len(data)
    assert reg.open_blob(digest).content == data
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest]}}).encode()
    cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
    reg.upload_blob(cdigest, io.BytesIO(config), len(config))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": len(data)}],
    }).encode()
    mdigest = reg.put_manifest("t1", manifest)
    assert reg.get_manifest("t1") == (manifest, mdigest)
    assert "t1" in reg.tags()
    reg.delete_manifest(mdigest)
    assert reg.get_manifest("t1") is None


@pytest.mark.engine
def test_unreachable_registry_degrades_to_local_only(engine, images, cache_dir):
    """One warning, then the local cache works as if no remote were set."""
    messages = []
    remote = RemoteCache(Registry(RemoteRef.parse("127.0.0.1:9/nothing"), timeout=(1, 5)), log=messages.append)
    store = Store(cache_dir, engine=engine, log=messages.append)
    ctx = images.context({"x.bin": 10_000})
    key = key_for(KeySpec(image="offline", context=ctx))
    first = get_or_build(store, key, lambda: images.build(ctx), remote=remote, image_name="offline")
    assert not first.hit and first.saved
    second = get_or_build(store, key_for(KeySpec(image="offline2", context=ctx)), lambda: images.build(ctx),
                          remote=remote, image_name="offline2")
    assert second.saved
    warnings = [m for m in messages if "unavailable" in m]
    assert len(warnings) == 1 and "using the local cache only" in warnings[0]
    assert remote.disabled
    with pytest.raises(RemoteUnavailable):
        remote.registry.ping()


@pytest.mark.engine
def test_second_machine_hits_through_the_registry(engine, second_engine, images, registry, tmp_path):
    """Machine A builds and pushes; machine B's first run hits and gets an identical image."""
    ctx = images.context({"weights.bin": 8_000_000, "model.py": b"print('hi')\n"})
    key = key_for(KeySpec(image="shared-model", model_tags=["bert"], nodes=2, context=ctx))
    remote_a = _remote(registry, "two-machines")
    a = Store(tmp_path / "a", engine=engine)
    t0 = time.monotonic()
    built = get_or_build(a, key, lambda: images.build(ctx, tag="shared-model:latest"), remote=remote_a,
                         image_name="shared-model",
                           model_tags=["bert"], nodes=2)
    build_seconds = time.monotonic() - t0
    assert not built.hit and built.pushed_bytes > 8_000_000

    remote_b = _remote(registry, "two-machines")
    b = Store(tmp_path / "b", engine=second_engine)
    t0 = time.monotonic()
    got = get_or_build(b, key, lambda: pytest.fail("machine B must not build"), remote=remote_b,
                       image_name="shared-model")
    fetch_seconds = time.monotonic() - t0
    assert got.hit and got.fetched_bytes >= 8_000_000
    assert got.entry.id == built.entry.id and got.entry.nodes == 2
    loaded = second_engine.inspect("shared-model:latest")
    assert loaded.diff_ids == built.entry.layers
    assert loaded.id in built.entry.engine_ids  # the build's id, or (containerd store) our load manifest's
    print(f"\nbuild on A: {build_seconds:.2f}s; fetch+load on B: {fetch_seconds:.2f}s")

    # A later push of an entry sharing the base sends only the new layers.
    ctx2 = images.context({"weights.bin": 8_000_000, "model.py": b"print('v2')\n"})
    (ctx2 / "weights.bin").write_bytes((ctx / "weights.bin").read_bytes())
    key2 = key_for(KeySpec(image="shared-model", model_tags=["bert-v2"], context=ctx2))
    built2 = get_or_build(a, key2, lambda: images.build(ctx2), remote=remote_a, image_name="shared-model",
                          image_tag="v2")
    assert not built2.hit
    assert built2.pushed_bytes < 1_000_000, "busybox and weights layers are already in the registry"
    got2 = get_or_build(b, key2, lambda: pytest.fail("machine B must not build"), remote=remote_b,
                        image_name="shared-model",
                          image_tag="v2")
    assert got2.hit and got2.fetched_bytes < 1_000_000, "machine B fetched only the blobs it lacked"


@pytest.mark.engine
def test_entries_are_real_images_docker_can_pull(engine, second_engine, images, registry, tmp_path):
    ctx = images.context({"a.bin": 100_000})
    key = key_for(KeySpec(image="pullable", context=ctx))
    store = Store(tmp_path / "c", engine=engine)
    out = get_or_build(store, key, lambda: images.build(ctx), remote=_remote(registry, "pullable"),
                       image_name="pullable")
    ref = f"{registry}/pullable:{key_tag(key.digest)}"
    second_engine.client.api.pull(f"{registry}/pullable", tag=key_tag(key.digest))
    pulled = second_engine.client.api.inspect_image(ref)
    assert pulled["RootFS"]["Layers"] == out.entry.layers
    # Classic Docker and Podman name it by its config; the containerd store by the registry's manifest.
    assert pulled["Id"] in out.entry.engine_ids or f"{registry}/pullable@{pulled['Id']}" in pulled["RepoDigests"]
    second_engine.remove(ref)


@pytest.mark.engine
def test_prune_remote_by_count_and_ttl(engine, images, registry, tmp_path):
    remote = _remote(registry, "prune")
    store = Store(tmp_path / "p", engine=engine, max_entries=10)
    ctx = images.context({"p.bin": 10_000})
    built = images.build(ctx)
    ids = []
    for i in range(3):
        key = key_for(KeySpec(image="pruned", params={"i": i}, context=ctx))
        entry = store.save(built.image_id, key, image_name="pruned")
        remote.push(entry, store.open_blob)
        ids.append(entry.id)
        time.sleep(1.1)  # distinct last-used seconds
    assert len(remote.entries()) == 3
    evicted = remote.prune(max_entries=2, ttl=None)
    assert [m.id for m in evicted] == [ids[0]], "the least recently used manifest goes first"
    assert sorted(m.id for m in remote.entries()) == sorted(ids[1:])
    evicted = remote.prune(max_entries=10, ttl=60, now=time.time() + 3600)
    assert sorted(m.id for m in evicted) == sorted(ids[1:])
    assert remote.entries() == []


NODE_SCRIPT = r"""
import json, os, sys, time
import docker
from pathlib import Path
from pytest_madcache.engines.docker import Engine
from pytest_madcache.core.key import CacheKey
from pytest_madcache.devtools.localengine import private_engine
from pytest_madcache.remote.oci import RemoteCache
from pytest_madcache.store import Store
from pytest_madcache.provide import get_or_build

registry, key, cache_dir = sys.argv[1:4]
with private_engine(kind=os.environ.get("MADCACHE_ENGINE_KIND") or "debian12") as host:  # the session's kind
    engine = Engine(client=docker.DockerClient(base_url=host, timeout=600))
    store = Store(cache_dir, engine=engine)
    t0 = time.monotonic()
    def build():
        raise SystemExit("node had to build")
    out = get_or_build(store, CacheKey(key, {}), build, remote=RemoteCache.from_setting(registry + "/nodes"),
                       image_name="multi")
    print(json.dumps({"hit": out.hit, "image_id": out.image_id, "nodes": out.entry.nodes,
                      "present": engine.inspect(out.image_id) is not None, "seconds": time.monotonic() - t0}))
"""


@pytest.mark.engine
def test_every_node_gets_the_image_through_the_remote(engine, images, registry, tmp_path):
    """nodes=2 is recorded; each node (own process, engine, cache dir) loads without building."""
    import subprocess
    import sys

    ctx = images.context({"shard.bin": 2_000_000})
    key = key_for(KeySpec(image="multi", nodes=2, context=ctx))
    head = Store(tmp_path / "head", engine=engine)
    built = get_or_build(head, key, lambda: images.build(ctx), remote=_remote(registry, "nodes"), image_name="multi",
                         nodes=2)
    assert built.entry.nodes == 2
    procs = [subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, registry, key.digest, str(tmp_path / f"node{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    for r in results:
        assert r["hit"] and r["present"] and r["nodes"] == 2
        assert r["image_id"] in built.entry.engine_ids  # a containerd store names a load by our manifest


@pytest.mark.engine
def test_madcache_list_and_prune_remote(engine, images, registry, tmp_path, capsys):
    from pytest_madcache.cli import main

    remote = _remote(registry, "cli")
    store = Store(tmp_path / "cli", engine=engine, max_entries=10)
    ctx = images.context({"c.bin": 10_000})
    built = images.build(ctx)
    for i in range(2):
        entry = store.save(built.image_id, key_for(KeySpec(image="clitest", params={"i": i}, context=ctx)),
                           image_name="clitest", nodes=3)
        remote.push(entry, store.open_blob)
    env = {"HOME": "/root", "MADCACHE_REMOTE": f"{registry}/cli", "MADCACHE_DIR": str(tmp_path / "cli")}
    out = io.StringIO()
    assert main(["list", "--remote"], env=env, stdout=out) == 0
    assert out.getvalue().startswith(f"2 cache entries in {registry}/cli:")
    assert "Nodes: 3" in out.getvalue()
    out = io.StringIO()
    assert main(["prune", "--remote", "--max-entries", "1"], env=env, stdout=out) == 0
    assert "Deleted 1 manifest(s)" in out.getvalue() and "garbage collection" in out.getvalue()
    assert len(remote.entries()) == 1
    env["MADCACHE_REMOTE"] = "127.0.0.1:9/none"
    assert main(["list", "--remote"], env=env, stdout=io.StringIO()) == 1
    assert "cannot reach registry 127.0.0.1:9" in capsys.readouterr().err
