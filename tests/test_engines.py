"""The plugin on whichever engine kind the session runs (CI runs this module on every kind:
Debian 12's dockerd 20.10, Debian 13's dockerd 26 on the classic and the containerd image
store, and Podman): a suite nobody tuned misses, hits present, loads after `docker rmi`
and verifies clean; BuildKit-only Dockerfiles build; no secret value is ever stored."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_madcache.engines.buildkit import buildx_binary
from tests.needs import unavailable
from tests.plugin_helpers import remove_images, tiny_context

pytestmark = pytest.mark.engine

SAVED = re.compile(r"Docker image saved to cache: (run_\d+_[0-9a-f]{8})")
LOADED = "Docker image loaded from cache successfully: run_"
PRESENT = "Docker image already present in the engine; nothing loaded: run_"

SUITE = '''
import pytest

@pytest.mark.model("{name}", dockerfile="Dockerfile", context=".", builder="{builder}", {extra})
@pytest.mark.parametrize("batch_size", [1, 4])
def test_model(model_run, batch_size):
    result = model_run(command=["sh", "-c", "cat /data/*.txt; echo performance: $((batch_size * 10)) samples/s"],
                       env={{"batch_size": str(batch_size)}})
    print(result.logs)
    assert result.exit_code == 0, result.logs
    assert result.performance == batch_size * 10
'''


@pytest.fixture
def model_name(engine):
    name = f"eng{secrets.token_hex(3)}"
    yield name
    remove_images(engine, f"madcache.model={name}")


def _suite(pytester: pytest.Pytester, name: str, lines, builder: str = "auto", extra: str = "",
           files=None) -> None:
    tiny_context(pytester.path, lines, files=files)
    pytester.makepyfile(test_suite=SUITE.format(name=name, builder=builder, extra=extra))


def _run(pytester: pytest.Pytester, cache: Path, *args: str, env=None) -> pytest.RunResult:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--enable-cache",
            f"--cache-dir={cache}", "-rw", *args]
    proc = subprocess.run(argv, cwd=pytester.path, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=900)
    return proc


def _needs_buildkit(engine) -> None:
    """Docker kinds build RUN --mount through buildx; in CI its absence is a failure, not a skip."""
    if engine.info.product == "docker" and buildx_binary() is None:
        message = ("no buildx binary for BuildKit builds (python -m pytest_madcache.localengine --engine KIND "
                   "sets MADCACHE_BUILDX; or install docker-buildx)")
        unavailable(message)


def test_untuned_suite_misses_hits_present_then_loads_after_rmi(pytester, engine, model_name, tmp_path) -> None:
    _suite(pytester, model_name, ["COPY a.txt /data/a.txt", "RUN echo built > /data/b.txt"],
           files={"a.txt": "hello\n"})
    cache = tmp_path / "cache"

    first = _run(pytester, cache)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Cache miss. Will build Docker image and save to cache." in first.stdout
    assert len(SAVED.findall(first.stdout)) == 1  # untuned: the batch size reaches no build arg, one image
    assert f"madcache engine: {engine.info.name}" in first.stdout  # after collection
    assert any(line.startswith(f"engine: {engine.info.name}") for line in first.stdout.splitlines())  # summary

    second = _run(pytester, cache)
    assert second.returncode == 0, second.stdout
    assert PRESENT in second.stdout and "Building Docker image" not in second.stdout

    remove_images(engine, f"madcache.model={model_name}")
    third = _run(pytester, cache)
    assert third.returncode == 0, third.stdout
    assert LOADED in third.stdout, third.stdout
    assert "Cache miss" not in third.stdout and "Building Docker image" not in third.stdout
    print(f"\n{engine.info.name}: " + next(ln for ln in third.stdout.splitlines() if LOADED in ln))

    verify = subprocess.run([sys.executable, "-m", "pytest_madcache", "verify", "--cache-dir", str(cache)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "All blobs match their digests." in verify.stdout, verify.stdout


def test_a_cache_mount_dockerfile_builds_and_is_cached(pytester, engine, model_name, tmp_path) -> None:
    """`RUN --mount=type=cache` (the usual pip cache) needs BuildKit on Docker; Podman's builder has it."""
    _needs_buildkit(engine)
    _suite(pytester, model_name, ["RUN --mount=type=cache,target=/root/.cache "
                                  "echo cached > /root/.cache/x && mkdir -p /data && ls /root/.cache > /data/seen.txt"])
    cache = tmp_path / "cache"
    first = _run(pytester, cache)
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(SAVED.findall(first.stdout)) == 1  # the sweep shares one image
    remove_images(engine, f"madcache.model={model_name}")
    second = _run(pytester, cache)
    assert second.returncode == 0, second.stdout
    assert LOADED in second.stdout and "Building Docker image" not in second.stdout


def _files_containing(root: Path, needle: bytes):
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_secret_mount_is_cached_and_its_value_stored_nowhere(pytester, engine, model_name, tmp_path) -> None:
    """BuildKit gets secrets= as a secret mount: the image is cached, the value is in no cache file.
    Podman builds with its own builder, so builder='buildkit' there is an error that says so."""
    value = "tok-" + secrets.token_hex(12)
    _suite(pytester, model_name, ["RUN --mount=type=secret,id=HF_TOKEN mkdir -p /data && "
                                  "echo secret-bytes=$(wc -c < /run/secrets/HF_TOKEN) > /data/len.txt"],
           builder="buildkit", extra=f'build_args={{"HF_TOKEN": "{value}"}}, secrets=["HF_TOKEN"]')
    cache = tmp_path / "cache"
    if engine.info.product == "podman":
        run = _run(pytester, cache)
        assert run.returncode == 1
        assert "builder='buildkit' cannot be used: Podman builds with its own builder" in run.stdout, run.stdout
        return
    _needs_buildkit(engine)
    run = _run(pytester, cache, "-s")
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(SAVED.findall(run.stdout)) == 1  # the sweep shares one image
    assert f"secret-bytes={len(value)}" in run.stdout  # the build read the secret
    assert value not in run.stdout + run.stderr
    remove_images(engine, f"madcache.model={model_name}")
    again = _run(pytester, cache, "-s")  # loaded from the cache: the file the secret mount wrote is there
    assert LOADED in again.stdout and f"secret-bytes={len(value)}" in again.stdout
    assert value not in again.stdout + again.stderr
    assert _files_containing(cache, value.encode()) == []
    assert _files_containing(cache, value.encode()) == []


def test_a_secret_build_arg_recorded_in_the_image_is_never_cached(pytester, engine, model_name, tmp_path) -> None:
    """The classic builder (and Podman's) keep build args used by RUN in the history: no cache, one warning."""
    value = "tok-" + secrets.token_hex(12)
    _suite(pytester, model_name, ["ARG HF_TOKEN", 'RUN mkdir -p /data && echo "${#HF_TOKEN}" > /data/len.txt'],
           builder="legacy", extra=f'build_args={{"HF_TOKEN": "{value}"}}, secrets=["HF_TOKEN"]')
    cache = tmp_path / "cache"
    run = _run(pytester, cache)
    assert run.returncode == 0, run.stdout + run.stderr  # the tests still run
    assert SAVED.findall(run.stdout) == []
    assert "secret build arg 'HF_TOKEN'" in run.stdout
    assert "RUN --mount=type=secret,id=HF_TOKEN" in run.stdout
    assert value not in run.stdout + run.stderr
    assert _files_containing(cache, value.encode()) == []


def test_a_session_that_only_hits_leaves_the_cache_within_lowered_limits(pytester, engine, model_name,
                                                                          tmp_path) -> None:
    """Limits are applied at the end of every session that used the cache, not only after a save."""
    from pytest_madcache.store import Store

    tiny_context(pytester.path, ["RUN echo limits > /limits"])
    pytester.makepyfile(test_suite=SUITE.replace("[1, 4]", "[1, 2, 3]").format(name=model_name, builder="auto",
                                                                               extra='key_params=["batch_size"]'))
    cache = tmp_path / "cache"
    first = _run(pytester, cache)
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(Store(cache).entries()) == 3  # one per batch size, within the default 5

    second = _run(pytester, cache, "--cache-max-entries", "2")
    assert second.returncode == 0, second.stdout
    assert "Cache miss" not in second.stdout and second.stdout.count(PRESENT) == 3  # hits only
    assert "Evicted cache entry" in second.stdout
    assert "this suite needs 3 entries, but the cache keeps 2 (option --cache-max-entries)" in second.stdout
    assert len(Store(cache).entries()) == 2
