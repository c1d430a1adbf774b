"""`madcache push` completes what a failed push left and sends what the registry lacks; the remote's
compression is a setting like the others.  Crafted entries, a real registry, no engine."""

from __future__ import annotations

import io
import json

import pytest

from pytest_madcache.cli import main
from pytest_madcache.remote.oci import RemoteCache
from pytest_madcache.core.settings import resolve
from pytest_madcache.store import Store
from tests.registries import LocalRegistry
from tests.remote_helpers import put_entry, text_like


def test_push_completes_an_unfinished_push_and_sends_what_the_registry_lacks(registry, tmp_path):
    reg = LocalRegistry(tmp_path / "registry")  # not started yet: the first push fails
    env = {"HOME": str(tmp_path), "MADCACHE_DIR": str(tmp_path / "cache"), "MADCACHE_REMOTE": f"{reg.address}/cli"}
    store = Store(tmp_path / "cache")
    first = put_entry(store, "first", [text_like(300_000)])
    settings = resolve({}, env, {})
    messages = []
    remote = RemoteCache.from_settings(settings, log=messages.append, env=env)
    remote.push(first, store.open_blob)
    assert remote.disabled and any("unavailable" in m for m in messages)
    assert [m["id"] for m in remote.state.pending(remote.registry.ref)] == [first.id]
    assert (tmp_path / "cache" / "remote" / "pending").is_dir(), "the journal lives in the cache directory"
    second = put_entry(store, "second", [b"another layer"])

    with reg:
        out = io.StringIO()
        assert main(["push"], env=env, stdout=out) == 0
        text = out.getvalue()
        assert "1 unfinished push(es) completed" in text
        assert f"Pushed {second.id}" in text and f"Pushed {first.id}" not in text
        fresh = RemoteCache.from_settings(settings, env=env)
        assert fresh.state.pending(fresh.registry.ref) == []
        assert fresh.has(first.key) and fresh.has(second.key)
        out = io.StringIO()
        assert main(["push", "--json"], env=env, stdout=out) == 0
        assert json.loads(out.getvalue())["pushed"] == [], "nothing left to send"


def test_remote_compression_is_a_setting_with_its_source_in_errors(tmp_path, capsys):
    env = {"HOME": str(tmp_path), "MADCACHE_DIR": str(tmp_path / "c"), "MADCACHE_REMOTE_COMPRESS": "lz4"}
    with pytest.raises(SystemExit) as info:
        main(["list"], env=env, stdout=io.StringIO())
    assert info.value.code == 2
    assert "invalid value 'lz4' for remote compress from environment variable MADCACHE_REMOTE_COMPRESS" in \
        capsys.readouterr().err
    assert resolve({}, {"MADCACHE_REMOTE_COMPRESS": "off"}, {}).remote_compress == "none"
    settings = resolve({"remote_compress": "zstd", "remote": "127.0.0.1:1/x"}, {"MADCACHE_DIR": str(tmp_path)}, {})
    assert RemoteCache.from_settings(settings).compress == "zstd"
    assert RemoteCache.from_settings(resolve({"remote": "127.0.0.1:1/x"}, {"MADCACHE_DIR": str(tmp_path)}, {})
                                     ).compress == "gzip", "gzip unless chosen"


def test_push_to_a_directory_remote_copies_what_it_lacks(tmp_path):
    store = Store(tmp_path / "cache")
    entry = put_entry(store, "dir", [b"a layer"])
    env = {"HOME": str(tmp_path), "MADCACHE_DIR": str(tmp_path / "cache"),
           "MADCACHE_REMOTE": f"file://{tmp_path / 'shared'}"}
    out = io.StringIO()
    assert main(["push"], env=env, stdout=out) == 0
    assert f"Pushed {entry.id}" in out.getvalue()
    assert [e.id for e in Store(tmp_path / "shared").entries()] == [entry.id]
    out = io.StringIO()
    assert main(["push"], env=env, stdout=out) == 0 and "0 entries pushed" in out.getvalue()
