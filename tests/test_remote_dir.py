"""A cache directory as the remote: a network volume shared by runners whose local disks hold the near cache.

`--cache-remote file:///PATH` (or an absolute path) picks this backend; a
registry value picks the registry.  Both sit behind the one interface that
provide.py asks on a local miss.
"""

from __future__ import annotations

import io

import pytest

from pytest_madcache.cli import main
from pytest_madcache.core.key import KeySpec, key_for
from pytest_madcache.provide import get_or_build
from pytest_madcache.remote.oci import RemoteCache
from pytest_madcache.remote.directory import DirectoryRemote
from pytest_madcache.remote import open_remote
from pytest_madcache.core.settings import SettingsError, resolve
from pytest_madcache.store import Store


def test_the_value_picks_the_backend(tmp_path):
    assert isinstance(open_remote(f"file://{tmp_path}/far"), DirectoryRemote)
    assert isinstance(open_remote(str(tmp_path / "far")), DirectoryRemote)
    assert isinstance(open_remote("127.0.0.1:5000/team/madcache"), RemoteCache)


@pytest.mark.parametrize("value", ["file://relative/dir", "file://"])
def test_a_directory_remote_must_be_absolute(value):
    with pytest.raises(SettingsError, match=f"invalid value '{value}' for remote from environment variable "
                                            "MADCACHE_REMOTE: expected file:///ABSOLUTE/PATH"):
        resolve({}, {"MADCACHE_REMOTE": value}, {})


@pytest.mark.engine
def test_second_machine_hits_through_a_shared_directory(engine, second_engine, images, tmp_path):
    """Machine A builds and pushes into the shared directory; machine B's first run copies only what it lacks."""
    far = f"file://{tmp_path / 'shared'}"
    ctx = images.context({"weights.bin": 4_000_000})
    key = key_for(KeySpec(image="dir-shared", context=ctx))
    a = Store(tmp_path / "a", engine=engine)
    built = get_or_build(a, key, lambda: images.build(ctx), remote=open_remote(far), image_name="dir-shared")
    assert built.saved and built.pushed_bytes > 4_000_000

    b = Store(tmp_path / "b", engine=second_engine)
    got = get_or_build(b, key, lambda: pytest.fail("machine B must not build"), remote=open_remote(far),
                       image_name="dir-shared")
    assert got.hit and got.fetched_bytes > 4_000_000 and got.entry.id == built.entry.id
    assert second_engine.inspect(got.image_id).diff_ids == built.entry.layers

    # The shared directory is a cache like any other: listed and pruned by the same commands.
    later = a.save(built.image_id, key_for(KeySpec(image="dir-shared", params={"v": 2}, context=ctx)),
                   image_name="dir-shared", image_tag="v2")
    assert open_remote(far).push(later, a.open_blob) == 0, "every blob is already in the shared directory"
    env = {"HOME": str(tmp_path), "MADCACHE_REMOTE": far, "MADCACHE_DIR": str(tmp_path / "b")}
    out = io.StringIO()
    assert main(["list", "--remote"], env=env, stdout=out) == 0
    assert out.getvalue().startswith(f"2 cache entries in {far}:") and built.entry.id in out.getvalue()
    out = io.StringIO()
    assert main(["prune", "--remote", "--max-entries", "1"], env=env, stdout=out) == 0
    assert f"Evicted {built.entry.id}" in out.getvalue(), "the least recently used entry goes first"
    assert [e.id for e in Store(tmp_path / "shared").entries()] == [later.id]
    assert [e.id for e in b.entries()] == [built.entry.id], "pruning the remote leaves the local cache alone"
