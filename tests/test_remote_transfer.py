"""How entries travel to and from a registry: compressed, in parallel, in chunks, through faults.

No engine: entries are crafted blobs in a real store; the registry is Debian's
docker-registry, behind a proxy that injects 429/5xx and dropped connections,
or killed outright mid-transfer.
"""

from __future__ import annotations

import io
import json
import os
import time

import pytest

from pytest_madcache.remote.oci import LAYER_TYPE, Registry, RemoteCache, RetryPolicy, key_tag, parse_manifest
from pytest_madcache.remote.base import RemoteError, RemoteUnavailable
from pytest_madcache.util.refs import RemoteRef
from pytest_madcache.store import Store
from tests.faultproxy import Fault, FaultProxy
from tests.registries import LocalRegistry
from tests.remote_helpers import put_entry, sha, text_like

FAST = RetryPolicy(attempts=6, base=0.05, cap=0.4)


def remote(address: str, repo: str, tmp_path=None, **kwargs) -> RemoteCache:
    registry_kwargs = {k: kwargs.pop(k) for k in ("upload_chunk",) if k in kwargs}
    reg = Registry(RemoteRef.parse(f"{address}/{repo}"), retry=kwargs.pop("retry", FAST), **registry_kwargs)
    messages = kwargs.pop("messages", None)
    return RemoteCache(reg, log=messages.append if messages is not None else None,
                       state_dir=(tmp_path / "state") if tmp_path is not None else None, **kwargs)


def fetch(rc: RemoteCache, store: Store, key: str):
    """What provide does on a local miss, with the store's `has_blob` lent to the remote."""
    rc.have_blob = store.has_blob
    found = rc.find(key)
    assert found is not None, "the registry holds the entry"
    return store.import_entry(found.meta, found.open_blob)


@pytest.fixture
def proxy(registry):
    p = FaultProxy(registry)
    yield p
    p.close()


def test_compressible_layers_travel_gzipped_and_come_back_as_the_store_keeps_them(registry, tmp_path):
    text, weights = text_like(3_000_000), os.urandom(2_000_000)
    a = Store(tmp_path / "a")
    entry = put_entry(a, "gz", [weights, text])
    rc = remote(registry, "gz", tmp_path / "ra")
    sent = rc.push(entry, a.open_blob)
    assert sent < 2_000_000 + 0.5 * 3_000_000, "the text layer went up compressed (this text: ~0.45x)"

    manifest = parse_manifest(rc.registry.get_manifest(key_tag(entry.key))[0])
    media = [b.media_type for b in manifest.layers]
    assert media == [LAYER_TYPE, LAYER_TYPE + "+gzip"], "random weights go up as they are, text gzipped"
    assert manifest.layers[0].digest == entry.layers[0]
    assert manifest.layers[1].digest != entry.layers[1] and manifest.layers[1].size < 0.5 * len(text)
    assert manifest.meta["layers"] == entry.layers, "the entry metadata keeps the diffIDs"

    b = Store(tmp_path / "b")
    got, fetched = fetch(remote(registry, "gz"), b, entry.key)
    assert got.id == entry.id and fetched == sum(entry.sizes.values())
    assert b.open_blob(entry.layers[1]).read() == text, "decompressed and checked on the way back"
    assert b.blob_file(entry.layers[1]).name == entry.layers[1][7:], "stored in the store's own (raw) form"
    assert b.verify().ok


def test_zstd_where_chosen(registry, tmp_path):
    text = text_like(2_000_000, seed=3)
    a = Store(tmp_path / "a")
    entry = put_entry(a, "zs", [text])
    rc = remote(registry, "zs", compress="zstd")
    rc.push(entry, a.open_blob)
    manifest = parse_manifest(rc.registry.get_manifest(key_tag(entry.key))[0])
    assert manifest.layers[0].media_type == LAYER_TYPE + "+zstd"
    got, _ = fetch(remote(registry, "zs"), Store(tmp_path / "b"), entry.key)
    assert got.layers == entry.layers


def test_an_entry_pushed_uncompressed_by_an_older_version_still_reads(registry, tmp_path):
    text = text_like(1_000_000, seed=5)
    a = Store(tmp_path / "a")
    entry = put_entry(a, "old", [text])
    remote(registry, "old", compress="none").push(entry, a.open_blob)  # the layout of earlier versions
    manifest = parse_manifest(remote(registry, "old").registry.get_manifest(key_tag(entry.key))[0])
    assert [b.digest for b in manifest.layers] == entry.layers and manifest.layers[0].media_type == LAYER_TYPE
    b = Store(tmp_path / "b")
    got, fetched = fetch(remote(registry, "old"), b, entry.key)
    assert got.id == entry.id and b.open_blob(entry.layers[0]).read() == text
    # A new push of an entry sharing that layer reuses the uncompressed blob rather than sending it again.
    entry2 = put_entry(a, "old2", [text, b"top layer"])
    assert remote(registry, "old").push(entry2, a.open_blob) < 10_000


def test_a_layer_the_registry_has_is_not_sent_or_compressed_again(registry, tmp_path):
    base = text_like(2_000_000, seed=11)
    a = Store(tmp_path / "a")
    first = put_entry(a, "shared", [base, b"one"])
    rc = remote(registry, "shared", tmp_path)
    rc.push(first, a.open_blob)
    remembered = rc.state.layer(first.layers[0], "gzip")
    assert remembered is not None and remembered.media_type.endswith("+gzip")
    second = put_entry(a, "shared", [base, b"two"])
    assert rc.push(second, a.open_blob) < 5_000, "the base layer is there: only the config and top layer go"


def test_large_blobs_go_up_in_chunks(proxy, tmp_path):
    data = os.urandom(3_000_000)
    a = Store(tmp_path / "a")
    entry = put_entry(a, "chunks", [data])
    rc = remote(proxy.address, "chunks", upload_chunk=1 << 20)
    rc.push(entry, a.open_blob)
    patches = proxy.requests("PATCH", "/blobs/uploads/")
    assert len(patches) == 3, "POST, 3 PATCHes of at most 1 MiB, then PUT"
    assert [p.headers["content-range"] for p in patches] == ["0-1048575", "1048576-2097151", "2097152-2999999"]
    got, _ = fetch(remote(proxy.address, "chunks"), Store(tmp_path / "b"), entry.key)
    assert got.layers == entry.layers


def test_429_and_5xx_are_retried_with_backoff(proxy, tmp_path):
    a = Store(tmp_path / "a")
    entry = put_entry(a, "retry", [os.urandom(100_000)])
    proxy.add(Fault("HEAD", "/blobs/", "status", status=503, times=2))
    proxy.add(Fault("POST", "/blobs/uploads/", "status", status=429, retry_after="1"))
    proxy.add(Fault("PUT", "/manifests/", "status", status=502))
    rc = remote(proxy.address, "retry")
    t0 = time.monotonic()
    assert rc.push(entry, a.open_blob) >= 100_000
    assert time.monotonic() - t0 >= 1.0, "Retry-After was honoured"
    assert not rc.disabled and rc.find(entry.key) is not None
    statuses = [r.status for r in proxy.requests("PUT", "/manifests/")]
    assert statuses == [502, 201]


def test_an_interrupted_download_resumes_with_range(proxy, tmp_path):
    data = os.urandom(3_000_000)
    a = Store(tmp_path / "a")
    entry = put_entry(a, "resume", [data])
    remote(proxy.address, "resume").push(entry, a.open_blob)
    proxy.add(Fault("GET", f"/blobs/{entry.layers[0]}", "cut_response", after=1_200_000))
    rc = remote(proxy.address, "resume")
    got, _ = fetch(rc, Store(tmp_path / "b"), entry.key)
    gets = proxy.requests("GET", f"/blobs/{entry.layers[0]}")
    assert len(gets) == 2 and gets[0].fault == "cut_response"
    start = int(gets[1].headers["range"].split("=")[1].rstrip("-"))
    assert 1_000_000 <= start <= 1_200_000, "the second request asked for the rest only"
    assert rc.registry.bytes_received < len(data) + 300_000


def test_an_interrupted_chunk_upload_resumes_where_the_registry_stands(proxy, tmp_path):
    data = os.urandom(3_000_000)
    a = Store(tmp_path / "a")
    entry = put_entry(a, "upresume", [data])
    proxy.add(Fault("PATCH", "/blobs/uploads/", "cut_request", after=500_000))
    rc = remote(proxy.address, "upresume", upload_chunk=1 << 20)
    rc.push(entry, a.open_blob)
    assert rc.find(entry.key) is not None and not rc.disabled
    assert proxy.requests("GET", "/blobs/uploads/"), "it asked the registry where the upload stands"
    assert rc.registry.bytes_sent < len(data) + (1 << 20) + 100_000, "no restart from zero"
    got, _ = fetch(remote(proxy.address, "upresume"), Store(tmp_path / "b"), entry.key)
    assert got.layers == entry.layers


def test_blobs_move_a_few_at_a_time(proxy, tmp_path):
    layers = [os.urandom(1_500_000) for _ in range(5)]
    a = Store(tmp_path / "a")
    entry = put_entry(a, "parallel", layers)
    proxy.delay = 0.3
    remote(proxy.address, "parallel").push(entry, a.open_blob)
    assert 2 <= proxy.max_concurrency("PUT", "/blobs/uploads/") <= 3
    b = Store(tmp_path / "b")
    got, fetched = fetch(remote(proxy.address, "parallel"), b, entry.key)
    assert fetched == sum(entry.sizes.values())
    assert 2 <= proxy.max_concurrency("GET", "/blobs/sha256:") <= 3
    # A store that has some layers is asked only for the others, ahead or not.
    c = Store(tmp_path / "c")
    put_entry(c, "partial", layers[:3])
    before = len(proxy.requests("GET", "/blobs/sha256:"))
    got, fetched = fetch(remote(proxy.address, "parallel"), c, entry.key)
    assert len(proxy.requests("GET", "/blobs/sha256:")) - before == 3, "the config and the two missing layers"


def test_a_corrupt_blob_is_refused_and_leaves_no_entry(registry, tmp_path):
    a = Store(tmp_path / "a")
    entry = put_entry(a, "corrupt", [text_like(500_000, seed=9)])
    rc = remote(registry, "corrupt")
    rc.push(entry, a.open_blob)
    # Re-tag the entry with a manifest that points the layer at another (valid gzip) blob.
    body, _ = rc.registry.get_manifest(key_tag(entry.key))
    manifest = json.loads(body)
    other = put_entry(a, "other", [text_like(500_000, seed=10)])
    rc.push(other, a.open_blob)
    manifest["layers"] = json.loads(rc.registry.get_manifest(key_tag(other.key))[0])["layers"]
    rc.registry.put_manifest(key_tag(entry.key), json.dumps(manifest).encode())
    b = Store(tmp_path / "b")
    found = remote(registry, "corrupt").find(entry.key)
    with pytest.raises(Exception, match="hashes to"):
        b.import_entry(found.meta, found.open_blob)
    assert b.entries() == [] and b.verify().ok


@pytest.fixture
def crashy(tmp_path):
    reg = LocalRegistry(tmp_path / "crashy").start()
    yield reg
    reg.stop()


def test_a_registry_killed_mid_push_leaves_no_entry_and_the_next_push_completes_it(crashy, tmp_path):
    a = Store(tmp_path / "a")
    entry = put_entry(a, "killed", [os.urandom(4_000_000) for _ in range(4)])
    messages = []
    rc = remote(crashy.address, "killed", tmp_path, upload_chunk=1 << 20, messages=messages,
                retry=RetryPolicy(attempts=3, base=0.05, cap=0.1))
    read = []

    class Crashing:  # the registry dies once 6 of the 16 MB have been read for sending
        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            data = self.fh.read(n)
            read.append(len(data))
            if sum(read) > 6_000_000 and crashy.proc is not None:
                crashy.kill()
            return data

        def close(self):
            self.fh.close()

    rc.push(entry, lambda d: Crashing(a.open_blob(d)))
    assert rc.disabled and any("unavailable" in m for m in messages)
    crashy.start()
    fresh = remote(crashy.address, "killed", tmp_path)
    assert fresh.registry.get_manifest(key_tag(entry.key)) is None, "no manifest: no half entry"
    assert fresh.state.pending(fresh.registry.ref), "the cache remembers the unfinished push"

    later = put_entry(a, "later", [b"another image"])
    fresh.push(later, a.open_blob)  # the next push from this cache completes the earlier one
    assert fresh.state.pending(fresh.registry.ref) == []
    got, _ = fetch(remote(crashy.address, "killed"), Store(tmp_path / "b"), entry.key)
    assert got.id == entry.id


def test_a_registry_killed_mid_fetch_leaves_no_local_entry(crashy, tmp_path):
    a = Store(tmp_path / "a")
    entry = put_entry(a, "fetchkill", [os.urandom(6_000_000) for _ in range(4)])
    remote(crashy.address, "fetchkill").push(entry, a.open_blob)
    b = Store(tmp_path / "b")
    rc = remote(crashy.address, "fetchkill", retry=RetryPolicy(attempts=3, base=0.05, cap=0.1))
    found = rc.find(entry.key)
    rc.have_blob = b.has_blob
    blobs = iter(entry.blobs)

    def open_blob(digest):
        if digest == entry.layers[1]:
            crashy.kill()
        return found.open_blob(digest)

    with pytest.raises(RemoteError):
        b.import_entry(found.meta, open_blob)
    assert b.entries() == [] and b.verify().ok
    crashy.start()
    got, _ = fetch(remote(crashy.address, "fetchkill"), b, entry.key)
    assert got.id == entry.id and b.verify().ok


def test_an_unreachable_registry_is_given_up_at_once_on_first_contact(tmp_path, monkeypatch):
    """At once: no back-off wait and no request sent twice (counted, not timed: a shared machine
    may be slow), though the policy would retry 6 times."""
    import requests

    sleeps, requests_sent = [], []
    monkeypatch.setattr(RetryPolicy, "wait", lambda self, attempt, retry_after=None: sleeps.append(attempt) or 0.0)
    real_request = requests.Session.request

    def counting(self, method, url, *a, **k):
        requests_sent.append((method, url))
        return real_request(self, method, url, *a, **k)

    monkeypatch.setattr(requests.Session, "request", counting)
    rc = remote("127.0.0.1:9", "nothing", retry=RetryPolicy(attempts=6, base=1.0, cap=5.0))
    assert rc.find("0" * 64) is None
    assert rc.disabled
    assert requests_sent and len(set(requests_sent)) == len(requests_sent) and sleeps == [], (requests_sent, sleeps)
    monkeypatch.undo()
    with pytest.raises(RemoteUnavailable):
        rc.registry.ping()


def test_a_registry_that_refuses_pushes_as_to_a_fork_warns_and_still_serves_fetches(registry, proxy, tmp_path):
    """A fork's pull request: its token can read the registry and not write it (403 on every
    write).  Each refused push is one warning, nothing is left half-pushed, the cache goes on,
    and fetches of what the registry holds still work (docs/github.md, docs/gitlab.md)."""
    a = Store(tmp_path / "a")
    held = put_entry(a, "held", [os.urandom(300_000)])
    remote(registry, "fork").push(held, a.open_blob)  # pushed earlier from the main branch
    for method in ("POST", "PUT", "PATCH"):
        proxy.faults.append(Fault(method, r"/v2/", "status", status=403, times=10_000))
    messages: list = []
    rc = remote(proxy.address, "fork", tmp_path / "fork", messages=messages)
    mine = [put_entry(a, f"mine{i}", [os.urandom(200_000), f"top {i}".encode()]) for i in range(2)]
    assert [rc.push(entry, a.open_blob) for entry in mine] == [0, 0]
    warnings = [m for m in messages if m.startswith("Warning:")]
    assert len(warnings) == len(mine), messages  # one per refused push, nothing more
    assert all("could not push" in w and "403" in w for w in warnings), warnings
    assert not rc.disabled, "a refused push does not turn fetches off"
    assert all(remote(registry, "fork").registry.get_manifest(key_tag(e.key)) is None for e in mine)
    b = Store(tmp_path / "b")
    got, _ = fetch(rc, b, held.key)
    assert got.id == held.id and b.verify().ok
    assert {r.method for r in proxy.records if r.status == 403} <= {"POST", "PUT", "PATCH"}
