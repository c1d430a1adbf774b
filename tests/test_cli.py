"""The `madcache` command, as a user types it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from pytest_madcache.cli import main
from pytest_madcache.core.key import KeySpec, key_files, key_for
from pytest_madcache.store import Store


def run(*argv: str, env=None, stdin: str = "") -> tuple:
    out = io.StringIO()
    code = main(list(argv), env=env if env is not None else {"HOME": os.environ.get("HOME", "/root")},
                stdout=out, stdin=io.StringIO(stdin))
    return code, out.getvalue()


@pytest.fixture
def filled(engine, images, cache_dir):
    """A cache with two entries of two small images sharing the busybox base."""
    store = Store(cache_dir, engine=engine)
    ids = []
    for name in ("alpha", "beta"):
        ctx = images.context({f"{name}.bin": 200_000}, name=name)
        built = images.build(ctx)
        key = key_for(KeySpec(image=name, model_tags=[name], context=ctx))
        ids.append(store.save(built.image_id, key, image_name=name, model_tags=[name],
                              files=key_files(key).to_json()).id)
    return store, ids


@pytest.mark.engine
def test_list_and_stats_use_madengine_wording(filled, cache_dir):
    """`list` shows each entry; `stats` shows entries and bytes against the limits."""
    store, ids = filled
    code, out = run("list", "--cache-dir", str(cache_dir))
    assert code == 0
    assert out.startswith("2 cache entries:")
    assert all(f"ID: {i}" in out for i in ids)
    assert "Image: alpha:latest" in out and "Tags: beta" in out
    code, out = run("stats", "--cache-dir", str(cache_dir), "--cache-max-entries", "7")
    assert code == 0
    assert "Cache Statistics:" in out
    assert "Total Entries: 2 / 7" in out
    assert "/ 100.00 GB" in out


@pytest.mark.engine
def test_json_output_is_machine_readable(filled, cache_dir):
    store, ids = filled
    code, out = run("list", "--cache-dir", str(cache_dir), "--json")
    data = json.loads(out)
    assert code == 0
    assert {e["id"] for e in data} == set(ids)
    assert all(e["unique_bytes"] < e["own_bytes"] for e in data), "the busybox base is shared"
    code, out = run("stats", "--cache-dir", str(cache_dir), "--json")
    stats = json.loads(out)
    assert stats["entries"] == 2 and stats["shared_bytes_saved"] > 0


@pytest.mark.engine
def test_info_shows_key_components(filled, cache_dir):
    store, ids = filled
    code, out = run("info", ids[0], "--cache-dir", str(cache_dir))
    assert code == 0
    assert f"Cache Entry: {ids[0]}" in out
    assert "Key Components:" in out and "context_sha256" in out
    assert "Docker Image: alpha:latest" in out


@pytest.mark.engine
def test_unknown_id_lists_available_entries(filled, cache_dir, capsys):
    store, ids = filled
    code, _ = run("info", "run_0_deadbeef", "--cache-dir", str(cache_dir))
    err = capsys.readouterr().err
    assert code == 1
    assert "Cache entry 'run_0_deadbeef' not found" in err
    assert f"  - {ids[0]}: alpha:latest (tags: alpha)" in err
    assert "Tip: Use 'madcache list'" in err
    code, _ = run("evict", "run_0_deadbeef", "--cache-dir", str(cache_dir))
    assert code == 1
    assert len(store.entries()) == 2


@pytest.mark.engine
def test_evict_and_clear(filled, cache_dir):
    store, ids = filled
    code, out = run("evict", ids[0], "--cache-dir", str(cache_dir))
    assert code == 0 and f"Evicted cache entry {ids[0]}" in out
    assert [e.id for e in store.entries()] == [ids[1]]
    code, out = run("clear", "--cache-dir", str(cache_dir), stdin="n\n")
    assert code == 1 and "nothing removed" in out
    assert len(store.entries()) == 1
    code, out = run("clear", "-y", "--cache-dir", str(cache_dir))
    assert code == 0 and "Cleared 1 cache entry" in out
    assert store.entries() == []
    assert os.listdir(store.blob_dir) == [], "clearing collects every blob"


@pytest.mark.engine
def test_prune_evicts_least_recently_used(filled, cache_dir):
    store, ids = filled
    store.touch(store.get(ids[0]))  # alpha is now the most recently used
    code, out = run("prune", "--max-entries", "1", "--cache-dir", str(cache_dir))
    assert code == 0
    assert f"Evicted {ids[1]}" in out
    assert [e.id for e in store.entries()] == [ids[0]]


@pytest.mark.engine
def test_verify_finds_a_tampered_blob(filled, cache_dir):
    store, ids = filled
    code, out = run("verify", "--cache-dir", str(cache_dir))
    assert code == 0 and "All blobs match" in out
    entry = store.get(ids[0])
    blob = store.blob_path(entry.layers[-1])
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    code, out = run("verify", "--cache-dir", str(cache_dir))
    assert code == 1
    assert f"corrupt blob: {entry.layers[-1]}" in out
    assert f"dropped entry: {ids[0]}" in out
    assert [e.id for e in store.entries()] == [ids[1]]


@pytest.mark.engine
def test_load_brings_an_evicted_image_back(filled, cache_dir, engine):
    store, ids = filled
    entry = store.get(ids[1])
    engine.remove(entry.image_id)  # every tag, forced
    assert not engine.has_image(entry.image_id)
    code, out = run("load", ids[1], "--cache-dir", str(cache_dir), env=dict(os.environ))
    assert code == 0, out
    assert "loaded from cache successfully" in out
    loaded = engine.inspect("beta:latest")  # the build's id, or (containerd store) our load manifest's
    assert loaded.id in entry.engine_ids and list(loaded.diff_ids) == list(entry.layers)
    code, out = run("load", ids[1], "--cache-dir", str(cache_dir), env=dict(os.environ))
    assert "already exists locally" in out


@pytest.mark.engine
def test_key_explains_a_miss(filled, cache_dir, images):
    """`madcache key` names the components that differ from the nearest entry."""
    store, ids = filled
    ctx = images.workdir / "alpha"
    code, out = run("key", "--image", "alpha", "--tag", "alpha", "--context", str(ctx), "--cache-dir", str(cache_dir))
    assert code == 0 and f"Cached as {ids[0]}" in out
    with open(ctx / "Dockerfile", "a") as fh:
        fh.write("ENV EDITED=1\n")
    code, out = run("key", "--image", "alpha", "--tag", "alpha", "--context", str(ctx), "--cache-dir", str(cache_dir))
    assert code == 0
    assert "Not cached." in out
    assert "differs in: context_sha256, dockerfile_sha256" in out
    assert f"Cache miss (Dockerfile changed since {ids[0]}: 1 line)" in out  # the line the plugin prints
    (ctx / "new.txt").write_text("generated\n")
    code, out = run("key", "--image", "alpha", "--tag", "alpha", "--context", str(ctx), "--cache-dir", str(cache_dir),
                    "--json")
    assert json.loads(out)["miss_reason"] == (f"Cache miss (context changed since {ids[0]}: +new.txt; add generated "
                                              "files to .dockerignore; Dockerfile changed: 1 line)")


@pytest.mark.engine
def test_stats_shows_the_last_session(filled, cache_dir):
    """What the last test session evicted and needed, as the plugin recorded it."""
    store, _ = filled
    store.record_session({"ended": 200_000, "evicted": 2, "hits": 5, "misses": 2, "needed_entries": 7,
                          "needed_bytes": 3 * 1024**2})
    code, out = run("stats", "--cache-dir", str(cache_dir))
    assert code == 0
    assert "Last Session (1970-01-0" in out and "): 5 hits, 2 misses, 2 evicted; it needed 7 entries, 3.00 MB" in out
    code, out = run("stats", "--cache-dir", str(cache_dir), "--json")
    assert json.loads(out)["last_session"]["needed_entries"] == 7


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        (["stats"], {"MADCACHE_MAX_ENTRIES": "abc"}, "invalid value 'abc' for max entries from environment variable MADCACHE_MAX_ENTRIES"),
        (["stats", "--cache-max-size-gb", "-3"], {}, "invalid value '-3' for max size gb from option --cache-max-size-gb"),
        (["prune", "--ttl", "7q"], {}, "invalid value '7q' for ttl from option --ttl"),
        (["stats"], {"MADENGINE_CACHE_MAX_SIZE_GB": "lots"},
         "invalid value 'lots' for max size gb from environment variable MADENGINE_CACHE_MAX_SIZE_GB"),
    ],
)
def test_bad_values_name_value_and_source(argv, env, expected, cache_dir, capsys):
    env = {"HOME": os.environ.get("HOME", "/root"), "MADCACHE_DIR": str(cache_dir), **env}
    with pytest.raises(SystemExit) as exc:
        run(*argv, env=env)
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err


def test_ini_file_is_read(tmp_path, monkeypatch):
    """Outside pytest, `madcache` reads madcache_* keys from pytest's ini file."""
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nmadcache_dir = {tmp_path / 'c'}\nmadcache_max_entries = 9\n")
    monkeypatch.chdir(tmp_path)
    code, out = run("stats", "--json", env={"HOME": "/nonexistent"})
    data = json.loads(out)
    assert code == 0
    assert data["directory"] == str(tmp_path / "c") and data["max_entries"] == 9


def test_console_script_is_installed(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from pytest_madcache.cli import main; sys.exit(main())",
         "stats", "--json", "--cache-dir", str(tmp_path / "c")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["entries"] == 0
    import shutil

    exe = shutil.which("madcache")
    assert exe, "the madcache console script is on PATH after installing the package"
    proc = subprocess.run([exe, "list", "--cache-dir", str(tmp_path / "c")], capture_output=True, text=True)
    assert proc.returncode == 0 and "No cache entries" in proc.stdout


def test_the_core_needs_no_pytest(tmp_path):
    """Store, keys, settings, remote, engine and the command import and run with pytest unavailable."""
    code = (
        "import sys\n"
        "sys.modules['pytest'] = sys.modules['_pytest'] = sys.modules['pluggy'] = None\n"
        "import pytest_madcache.store, pytest_madcache.core.key, pytest_madcache.remote.oci, pytest_madcache.engines.docker\n"
        "import pytest_madcache.provide, pytest_madcache.engines.runner, pytest_madcache.core.model\n"
        "from pytest_madcache.cli import main\n"
        f"sys.exit(main(['stats', '--json', '--cache-dir', {str(tmp_path / 'c')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["entries"] == 0


def test_the_command_reads_only_cache_settings(tmp_path):
    """Settings only the plugin uses (--live-output, --output...) are not the command's business: a value the
    plugin would refuse does not stop `madcache stats`."""
    env = {"HOME": str(tmp_path), "MADCACHE_DIR": str(tmp_path / "c"), "MADCACHE_LIVE_OUTPUT": "sometimes"}
    out = io.StringIO()
    assert main(["stats"], env=env, stdout=out) == 0
    assert "Total Entries: 0" in out.getvalue()
