"""The standalone `madcache` executable works without Python or this package installed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pytest_madcache.core.key import KeySpec, key_for
from pytest_madcache.perf.history import HistoryFile, HistoryRun, Point, record
from pytest_madcache.remote import open_remote
from pytest_madcache.remote.documents import documents_of
from pytest_madcache.store import Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def executable(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build_executable.sh"), str(dist)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exe = dist / "madcache"
    assert exe.is_file()
    return exe


def _clean_run(exe: Path, *args: str, docker_host: str = "") -> subprocess.CompletedProcess:
    """env -i: no PATH to any Python, no PYTHONPATH, no HOME; only DOCKER_HOST when loading."""
    env = ["env", "-i", "PATH=/nonexistent"] + ([f"DOCKER_HOST={docker_host}"] if docker_host else [])
    return subprocess.run([*env, str(exe), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.engine
def test_executable_lists_shows_and_loads(executable, engine, images, docker_host, tmp_path):
    ctx = images.context({"model.bin": 300_000})
    key = key_for(KeySpec(image="standalone", model_tags=["bert"], nodes=2, context=ctx))
    store = Store(tmp_path / "cache", engine=engine)
    built = images.build(ctx)
    entry = store.save(built.image_id, key, image_name="standalone", model_tags=["bert"], nodes=2)
    cache = str(tmp_path / "cache")

    listed = _clean_run(executable, "list", "--cache-dir", cache)
    assert listed.returncode == 0, listed.stderr
    assert f"ID: {entry.id}" in listed.stdout and "Nodes: 2" in listed.stdout
    info = _clean_run(executable, "info", entry.id, "--cache-dir", cache, "--json")
    assert json.loads(info.stdout)["key"] == key.digest

    engine.remove(built.image_id)
    loaded = _clean_run(executable, "load", entry.id, "--cache-dir", cache, docker_host=docker_host)
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded from cache successfully" in loaded.stdout
    loaded = engine.inspect("standalone:latest")  # the build's id, or (containerd store) our load manifest's
    assert loaded.id in entry.engine_ids and list(loaded.diff_ids) == list(entry.layers)

    missing = _clean_run(executable, "info", "run_1_00000000", "--cache-dir", cache)
    assert missing.returncode == 1 and "Tip: Use 'madcache list'" in missing.stderr


@pytest.mark.engine
def test_executable_has_every_command(executable, engine, images, registry, tmp_path):
    """docs/remote.md: every `madcache` command, `list --remote` and `prune --remote` included, with
    an empty environment (the registry is a plain-HTTP one on loopback)."""
    import argparse

    from pytest_madcache.cli import build_parser

    (subparsers,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = set(subparsers.choices)
    ctx = images.context({"model.bin": 200_000})
    key = key_for(KeySpec(image="every", model_tags=["every"], context=ctx))
    store = Store(tmp_path / "cache", engine=engine)
    entry = store.save(images.build(ctx).image_id, key, image_name="every", model_tags=["every"])
    cache = ["--cache-dir", str(tmp_path / "cache")]
    remote = ["--cache-remote", f"{registry}/standalone-every"]
    ran = {}

    def ok(*args: str) -> str:
        proc = _clean_run(executable, *args)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        ran[args[0]] = True
        return proc.stdout

    assert "Total Entries: 1" in ok("stats", *cache)
    assert ok("verify", *cache, "--json")
    assert f"Cached as {entry.id}" in ok("key", *cache, "--image", "every", "--tag", "every", "--context", str(ctx))
    ok("push", *cache, *remote)
    assert entry.id in ok("list", *cache, *remote, "--remote")
    ok("prune", *cache, *remote, "--remote")
    ok("prune", *cache)
    assert f"{entry.id}" in ok("evict", entry.id, *cache)
    store.save(entry.image_id, key, image_name="every", model_tags=["every"])
    ok("clear", "-y", *cache)
    assert Store(tmp_path / "cache").entries() == []

    run = HistoryRun(id="run_1700000000_0000abcd", time=1700000000.0,
                     points=(Point(model="every", params='{"batch_size": 8}', performance=12.5,
                                   metric="samples_per_second", direction="higher"),))
    record(HistoryFile(tmp_path / "elsewhere.json"), documents_of(open_remote(remote[1])), "the registry", run, 20)
    history = ok("perf", "history", *cache, *remote, "--json")  # read from the registry: none kept here
    assert [r["id"] for r in json.loads(history)["runs"]] == [run.id]
    report = tmp_path / "perf.md"
    report.write_text("| model | change |\n")
    assert "no performance note: not a merge request pipeline" in ok("perf", "note", str(report))  # said, exit 0
    tested_in_the_test_above = {"list", "info", "load"}
    assert commands - tested_in_the_test_above - set(ran) == set(), commands
