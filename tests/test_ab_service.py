"""`ImageService.baseline_image` (--perf-ab) with a fake engine and store: where the baseline's image
comes from, in which order, what is said, and that it is never built."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_madcache.core.model import spec_from_marks
from pytest_madcache.provide import ImageService, ModelImage
from pytest_madcache.store import Entry, LoadResult

OLD = "sha256:" + "0a" * 32  # the image the baseline ran
NEW = "sha256:" + "0b" * 32  # this test's


class Mark:
    args, kwargs = ("m",), {}


class FakeEngine:
    def __init__(self, has=()) -> None:
        self.has, self.asked, self.tagged = set(has), [], []

    def has_image(self, image_id):
        self.asked.append(image_id)
        return image_id in self.has

    def inspect(self, ref):  # every image has lost its tag: loading the baseline's entry may have moved it
        return SimpleNamespace(repo_tags=[])

    def tag(self, image_id, ref):
        self.tagged.append((image_id, ref))


class FakeStore:
    log = staticmethod(print)

    def __init__(self, entries=()) -> None:
        self._entries, self.loaded = list(entries), []

    def entries(self):
        return list(self._entries)

    def lookup(self, key):
        digest = getattr(key, "digest", key)
        return next((e for e in self._entries if e.key == digest), None)

    def load(self, entry):
        self.loaded.append(entry.id)
        return LoadResult("full", 1024, 1, 0.1, image_id=entry.image_id)


def _entry(key: str, image_id: str) -> Entry:
    return Entry(id="run_1_0000beef", key=key, image_name="ci-m", image_tag="old", image_id=image_id,
                 config=image_id, layers=[], sizes={}, build_duration=3.0)


@pytest.fixture
def image(tmp_path: Path) -> ModelImage:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    return ModelImage(spec_from_marks([Mark()], tmp_path, "t"), "ci-m:new", NEW, "k-new")


def _service(engine: FakeEngine, store: FakeStore, enabled: bool = True):
    said: list = []

    class Listening:
        say, warn = staticmethod(said.append), staticmethod(said.append)

    def never(*args, **kwargs):
        raise AssertionError("a baseline's image is never built")

    service = ImageService(enabled=enabled, store_factory=lambda engine, log: store, reporter=Listening(),
                           decide=never)
    service._engine = engine
    return service, said


def test_the_engines_copy_comes_first(image) -> None:
    store = FakeStore([_entry("k-old", OLD)])
    service, said = _service(FakeEngine(has=[OLD]), store)
    found = service.baseline_image(image, "k-old", OLD)
    assert found is not None and found.image_id == OLD and found.load == "present" and not found.cache_hit
    assert store.loaded == [] and said == [f"A/B: the baseline's image {OLD[:19]} (present in the engine)"]


def test_else_the_cache_by_key_and_this_tests_tag_stays_put(image) -> None:
    engine, store = FakeEngine(), FakeStore([_entry("k-old", OLD)])
    service, said = _service(engine, store)
    found = service.baseline_image(image, "k-old", OLD)
    assert found is not None and found.image_id == OLD and found.cache_id == "run_1_0000beef"
    assert said == ["A/B: the baseline's image ci-m:old (from cache entry run_1_0000beef)"]
    assert engine.tagged == [(NEW, "ci-m:new")]
    assert service.baseline_image(image, "k-old", OLD) is not None and store.loaded == ["run_1_0000beef"]  # once


def test_a_row_without_a_key_finds_its_entry_by_image_id(image) -> None:
    store = FakeStore([_entry("k-old", OLD)])
    service, _ = _service(FakeEngine(), store)
    found = service.baseline_image(image, "", OLD)
    assert found is not None and found.key == "k-old" and store.loaded == ["run_1_0000beef"]


def test_an_entry_rebuilt_under_the_same_key_is_said(image) -> None:
    other = "sha256:" + "0c" * 32
    service, said = _service(FakeEngine(), FakeStore([_entry("k-old", other)]))
    assert service.baseline_image(image, "k-old", OLD).image_id == other
    assert said[0].endswith(f"; the baseline ran {OLD[:19]}: the same inputs, built again or on another engine kind)")


def test_with_the_cache_off_only_the_engine_is_asked_and_a_miss_is_asked_once(image) -> None:
    engine, store = FakeEngine(), FakeStore([_entry("k-old", OLD)])
    service, said = _service(engine, store, enabled=False)
    assert service.baseline_image(image, "k-old", OLD) is None
    assert service.baseline_image(image, "k-old", OLD) is None
    assert engine.asked == [OLD] and store.loaded == [] and said == []
