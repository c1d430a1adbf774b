"""Prefetch on a real engine (`--cache-prefetch`, on by default): a suite of models hits with its images
obtained ahead and says how much loading it hid; a prefetched load that fails is said under its test,
which then builds; Ctrl-C during prefetch leaves the cache whole; xdist workers prefetch their own."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import List

import pytest

from pytest_madcache.store import Store
from tests.plugin_helpers import remove_images, tiny_context

pytestmark = pytest.mark.engine

HIT = re.compile(r"Cache hit! Loading Docker image from cache: (run_\d+_[0-9a-f]{8})")
PREFETCHED = re.compile(r"prefetched: (\d+) images? obtained before their tests asked, in [\d.]+ s; "
                        r"[\d.]+ s of it hidden behind tests, [\d.]+ s waited for")


@pytest.fixture
def suite(engine, pytester: pytest.Pytester):
    """A suite of 4 models, each with its own context (a few MB of its own), in one file; their images
    are removed afterwards."""
    prefix = f"pf{secrets.token_hex(3)}"
    models = [f"{prefix}{n}" for n in range(4)]
    for n, name in enumerate(models):
        size = 40 if n == 1 else 4  # the second model's image takes a while to load
        tiny_context(pytester.path / name, [f'RUN ["/bin/busybox", "sh", "-c", "head -c {size}000000 /dev/urandom '
                                            f'> /blob; echo {name} > /name"]'])
    body = ["import os, signal, pytest", ""]
    for name in models:
        body += [f'@pytest.mark.model("{name}", context="{name}")',
                 f"def test_{name}(model_image):",
                 "    if os.environ.get('INTERRUPT_AT') == " + repr(name) + ":",
                 "        # a suite started in the background (`cmd &`, nohup) gets SIGINT ignored: Ctrl-C acts anyway",
                 "        signal.signal(signal.SIGINT, signal.default_int_handler)",
                 "        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C",
                 "    assert model_image.image_id", ""]
    pytester.makepyfile(test_models="\n".join(body))
    yield models
    for name in models:
        remove_images(engine, f"madcache.model={name}")


def _run(pytester: pytest.Pytester, cache: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-v", "--enable-cache", "--cache-dir", str(cache), *args)


def _fresh_runner(engine, models: List[str]) -> None:
    for name in models:
        remove_images(engine, f"madcache.model={name}")


def test_a_suite_hits_with_its_images_obtained_ahead(pytester, engine, suite, tmp_path) -> None:
    cache = tmp_path / "cache"
    _run(pytester, cache).assert_outcomes(passed=4)  # fills the cache; nothing to prefetch
    _fresh_runner(engine, suite)
    result = _run(pytester, cache, "--cache-summary-json", str(tmp_path / "s.json"))
    result.assert_outcomes(passed=4)
    out = result.stdout.str()
    assert len(HIT.findall(out)) == 4 and "Cache miss" not in out
    assert [int(n) for n in PREFETCHED.findall(out)] == [4]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["prefetched"] == 4 and summary["hits"] == 4
    assert summary["prefetch_waited_seconds"] <= summary["prefetch_seconds"]
    # each test's lines under that test: the hit of the third model after its test began
    third = out.index(f"test_models.py::test_{suite[2]}")
    assert out.index("Cache hit! Loading", third) < out.index(f"test_models.py::test_{suite[3]}")

    _fresh_runner(engine, suite)
    off = _run(pytester, cache, "--cache-prefetch", "off")
    off.assert_outcomes(passed=4)
    assert len(HIT.findall(off.stdout.str())) == 4 and not PREFETCHED.search(off.stdout.str())


def test_a_prefetched_load_that_fails_is_said_under_its_test_which_builds(pytester, engine, suite, tmp_path) -> None:
    cache = tmp_path / "cache"
    _run(pytester, cache).assert_outcomes(passed=4)
    store = Store(cache)
    entry = next(e for e in store.entries() if e.model_tags and e.model_tags[0] == suite[2])
    own = [d for d in entry.layers if sum(d in e.layers for e in store.entries()) == 1]
    blob = store.blob_dir / own[-1].split(":", 1)[1]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the third model's own layer no longer matches its digest
    blob.write_bytes(bytes(data))
    _fresh_runner(engine, suite)
    result = _run(pytester, cache)
    result.assert_outcomes(passed=4)
    out = result.stdout.str()
    said = re.search(r".*; its test asks again", out)
    assert said is not None, out
    assert out.index(f"test_models.py::test_{suite[2]}") < said.start() < out.index(f"test_models.py::test_{suite[3]}")
    assert out.count("Cache miss. Will build Docker image and save to cache.") == 1
    assert len(HIT.findall(out)) == 3
    assert Store(cache).verify().ok


def test_ctrl_c_during_prefetch_leaves_the_cache_whole(pytester, engine, suite, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    _run(pytester, cache).assert_outcomes(passed=4)
    before = sorted(e.id for e in Store(cache).entries())
    _fresh_runner(engine, suite)
    monkeypatch.setenv("INTERRUPT_AT", suite[0])  # the first test ends the session while the others load
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(cache))
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    assert "KeyboardInterrupt" in result.stdout.str()
    store = Store(cache)
    assert sorted(e.id for e in store.entries()) == before
    assert store.verify().ok
    assert list((cache / "tmp").iterdir()) == []


def test_xdist_workers_prefetch_their_own_next_tests(pytester, engine, suite, tmp_path) -> None:
    cache = tmp_path / "cache"
    _run(pytester, cache).assert_outcomes(passed=4)
    _fresh_runner(engine, suite)
    result = _run(pytester, cache, "-n", "2")
    result.assert_outcomes(passed=4)
    out = result.stdout.str()
    assert len(HIT.findall(out)) == 4, out
    found = PREFETCHED.search(out)
    assert found is not None and 1 <= int(found.group(1)) <= 4, out


def test_each_base_image_line_is_said_under_the_first_test_that_uses_it(pytester, engine, images, tmp_path) -> None:
    """The prefetch computes every test's key at the first test; what that says about a base image
    is said under the first test built on it, as without the prefetch."""
    tag = secrets.token_hex(3)
    bases = [f"pfbase{n}-{tag}:1" for n in range(2)]
    for base in bases:
        images.make({"base.bin": 1000}, tag=base)
    models = [f"pfb{n}{tag}" for n in range(2)]
    body = ["import pytest", ""]
    for name, base in zip(models, bases):
        (pytester.path / name).mkdir()
        (pytester.path / name / "Dockerfile").write_text(f"FROM {base}\nRUN echo {name} > /name\n")
        body += [f'@pytest.mark.model("{name}", context="{name}")', f"def test_{name}(model_image):",
                 "    assert model_image.image_id", ""]
    pytester.makepyfile(test_bases="\n".join(body))
    try:
        result = _run(pytester, tmp_path / "cache", "--cache-base-key", "local")  # the base's image id: said
        result.assert_outcomes(passed=2)
        out = result.stdout.str()
        second = out.index(f"test_bases.py::test_{models[1]}")
        assert out.index(f"Base image {bases[0]}") < second < out.index(f"Base image {bases[1]}"), out
    finally:
        for name in models:
            remove_images(engine, f"madcache.model={name}")
