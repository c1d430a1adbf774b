"""docs/engines.md: after every load the store checks that the engine has the image, and falls back
to a full load, so neither an engine that silently loads nothing nor one that refuses a partial
archive can pass for a hit.  The engine's load is wrapped to misbehave once, on every kind."""

from __future__ import annotations

import pytest

from pytest_madcache.store import Store, StoreError

pytestmark = pytest.mark.engine


def _misbehave_once(engine, how: str, calls: list):
    real_load = engine.load

    def load(data):
        calls.append(how if not calls else "real")
        if len(calls) == 1:
            sent = sum(len(chunk) for chunk in data)  # the engine reads the archive...
            calls.append(sent)
            if how == "refused":
                raise RuntimeError("the engine refused the archive")  # ...and refuses it
            return []  # ...and loads nothing, with no error
        return real_load(data)

    return load


@pytest.mark.parametrize("how", ["silent", "refused"])
def test_a_load_that_brings_no_image_is_retried_in_full_or_fails(engine, images, cache_dir, how):
    messages: list = []
    store = Store(cache_dir, engine=engine, max_entries=50, log=messages.append)
    a = images.make({"a.bin": 300_000})
    b = images.make({"b.bin": 300_000})
    entry_a = store.save(a.image_id, "a" * 64, image_name="fallback-a")
    entry_b = store.save(b.image_id, "b" * 64, image_name="fallback-b")
    assert entry_a.layers[:2] == entry_b.layers[:2], "both share the busybox layers"
    for image_id in (a.image_id, b.image_id):
        engine.remove(image_id)
    store.load(entry_a)  # from the cache: the shared layers are now ones every kind can leave out
    calls: list = []
    engine.load = _misbehave_once(engine, how, calls)
    try:
        if engine.info.delta == "none":  # Podman: every load is full, there is nothing to fall back to
            with pytest.raises(StoreError):
                store.load(entry_b)
            assert calls[0] == how and calls[2:] == [], calls
            assert store.load(entry_b).how == "full"  # the next load works
        else:
            result = store.load(entry_b)
            assert calls[0] == how and calls[2] == "real", calls  # a delta, then everything
            assert result.how == "full" and result.layers_sent == len(entry_b.layers)
            assert any(m.startswith(f"Partial load of {entry_b.id} was refused") for m in messages), messages
    finally:
        del engine.load
    loaded = engine.find(entry_b.engine_ids)
    assert loaded is not None and list(loaded.diff_ids) == list(entry_b.layers)
