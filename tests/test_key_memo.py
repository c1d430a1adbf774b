"""Context digests remembered between sessions in the cache directory (`key.DigestMemo`).

An unchanged context costs a stat per file; a touched or changed file is hashed again;
the key is the same with and without the memo, and never depends on mtimes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_madcache.core import key as keymod
from pytest_madcache.core.key import DIGESTS_FILE, KeySpec, key_for


@pytest.fixture
def hashed(monkeypatch):
    """The files read for their content, as a new session would read them (no process memory)."""
    reads: list = []
    real = keymod._hash_file
    monkeypatch.setattr(keymod, "_hash_file", lambda path: reads.append(Path(path).name) or real(path))
    monkeypatch.setattr(keymod, "SETTLE_SECONDS", 0.0)  # the test's files were all written just now
    return reads


def new_session() -> None:
    keymod._FILE_DIGESTS.clear()
    keymod._CONTEXTS.clear()
    keymod._MEMOS.clear()


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    c = tmp_path / "ctx"
    (c / "weights").mkdir(parents=True)
    (c / "Dockerfile").write_text("FROM scratch\nCOPY . /m\n")
    for i in range(3):
        (c / "weights" / f"w{i}.bin").write_bytes(bytes([i]) * 4096)
    return c


def key(ctx: Path, cache: Path = None) -> str:
    new_session()
    return key_for(KeySpec(image="ci-m", context=ctx), cache).digest


def test_an_unchanged_context_is_not_read_again_and_the_key_is_the_same(ctx, tmp_path, hashed) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    without = key(ctx)
    hashed.clear()
    first = key(ctx, cache)
    assert sorted(hashed) == ["Dockerfile", "w0.bin", "w1.bin", "w2.bin"]
    assert (cache / DIGESTS_FILE).is_file()
    hashed.clear()
    assert key(ctx, cache) == first == without
    assert hashed == []  # a stat per file, no read


def test_a_touched_file_is_hashed_again_and_a_changed_one_changes_the_key(ctx, tmp_path, hashed) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    first = key(ctx, cache)
    os.utime(ctx / "weights" / "w1.bin", ns=(1, 1))  # touched: same bytes, another mtime
    hashed.clear()
    assert key(ctx, cache) == first
    assert hashed == ["w1.bin"]
    (ctx / "weights" / "w2.bin").write_bytes(b"\x09" * 4096)  # same size, new bytes
    hashed.clear()
    changed = key(ctx, cache)
    assert changed != first and hashed == ["w2.bin"]
    assert key(ctx) == changed  # the memo never changes a key


def test_a_damaged_memo_or_an_unwritable_cache_only_costs_the_hashing(ctx, tmp_path, hashed) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / DIGESTS_FILE).write_text("{not json")
    assert key(ctx, cache) == key(ctx)
    assert json.loads((cache / DIGESTS_FILE).read_text())["version"] == 1  # rewritten whole
    missing = tmp_path / "no-such-dir"
    hashed.clear()
    assert key(ctx, missing) == key(ctx)
    assert not missing.exists()


def test_a_remembered_digest_needs_the_whole_stat_tuple(ctx, tmp_path, hashed) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    key(ctx, cache)
    memo = json.loads((cache / DIGESTS_FILE).read_text())
    name = str((ctx / "weights" / "w0.bin").resolve())
    memo["files"][name][2] += 1  # another inode: a replaced file with the same size and times
    for tree in memo["trees"].values():
        tree.pop("whole")  # the whole context's fingerprint would catch it first (next test)
    (cache / DIGESTS_FILE).write_text(json.dumps(memo))
    hashed.clear()
    key(ctx, cache)
    assert hashed == ["w0.bin"]


def test_an_unchanged_context_costs_a_stat_per_entry_and_a_replaced_file_is_read(ctx, tmp_path, hashed) -> None:
    """The memo keeps the whole context's digest with a fingerprint of every entry's stat tuple."""
    cache = tmp_path / "cache"
    cache.mkdir()
    first = key(ctx, cache)
    trees = json.loads((cache / DIGESTS_FILE).read_text())["trees"]
    assert [len(tree["whole"]) for tree in trees.values()] == [3]
    new_session()
    hashed.clear()
    assert key(ctx, cache) == first and hashed == []
    w0 = ctx / "weights" / "w0.bin"
    st = w0.stat()
    replacement = ctx / "weights" / "w0.new"
    replacement.write_bytes(w0.read_bytes())
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    replacement.rename(w0)  # same name, size, bytes and mtime; another inode
    new_session()
    assert key(ctx, cache) == first and hashed == ["w0.bin"]


def test_files_written_just_now_are_not_remembered(ctx, tmp_path, hashed, monkeypatch) -> None:
    monkeypatch.setattr(keymod, "SETTLE_SECONDS", 3600.0)  # as if every file had been written this second
    cache = tmp_path / "cache"
    cache.mkdir()
    key(ctx, cache)
    hashed.clear()
    key(ctx, cache)
    assert len(hashed) == 4  # a write within the timestamp granularity could hide behind the same stat tuple


def test_a_file_added_deep_in_an_unchanged_tree_is_seen(ctx, tmp_path, hashed) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    first = key(ctx, cache)
    assert json.loads((cache / DIGESTS_FILE).read_text())["trees"]  # the path list is remembered too
    (ctx / "weights" / "w3.bin").write_bytes(b"new")
    hashed.clear()
    added = key(ctx, cache)
    assert added != first and hashed == ["w3.bin"]
    (ctx / "weights" / "w3.bin").unlink()
    assert key(ctx, cache) == first


def test_dockerignore_exceptions_always_walk_the_tree(ctx, tmp_path, hashed) -> None:
    (ctx / ".dockerignore").write_text("weights\n!weights/w1.bin\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    first = key(ctx, cache)
    assert json.loads((cache / DIGESTS_FILE).read_text())["trees"] == {}
    (ctx / "weights" / "w1.bin").write_bytes(b"changed")
    changed = key(ctx, cache)
    assert changed != first and changed == key(ctx)


def test_docs_quote_the_key_benchmark_record() -> None:
    root = Path(__file__).resolve().parents[1]
    table = (root / "bench" / "results" / "key-cold-warm.md").read_text().split("\n", 1)[1].strip()
    assert table in (root / "docs" / "performance.md").read_text()
