"""A hit leaves out the base layers the engine got elsewhere (pulled, or loaded by another cache).

A fresh CI runner holds the model's base image because the job pulled it; a
hit then needs to send only the model's own layers.  Classic Docker finds the
base by its layer chain.  The containerd image store finds blobs by digest:
a pulled base is kept under its compressed digests, which the entry records
from the engine that saved it, and the load's manifest names them so.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pytest_madcache.core.images import ImageInfo
from pytest_madcache.engines.docker import Engine
from pytest_madcache.store import Store
from pytest_madcache.store.entries import Entry
from pytest_madcache.store.imageformat import Descriptor
from pytest_madcache.store.loading import Loader
from tests.images import ImageFactory

MODEL_SIZE = 1_000_000


def _key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _base_got_elsewhere(engine: Engine, images: ImageFactory, registry: str, tmp_path: Path, how: str) -> str:
    """A 3 MB base in the engine, `how` it came: pulled from a registry, or loaded by another cache."""
    built = images.make({"base.bin": 3_000_000})
    if how == "pulled":
        ref = f"{registry}/foreign-base:{os.urandom(3).hex()}"
        engine.tag(built.image_id, ref)
        repo, tag = ref.rsplit(":", 1)
        for line in engine.api.push(repo, tag=tag, stream=True, decode=True):
            assert "error" not in line, line
        engine.remove(ref)
        engine.remove(built.image_id)
        engine.api.pull(repo, tag=tag)
    else:
        other = Store(tmp_path / "other-cache", engine=engine)
        ref = f"foreign-base:{os.urandom(3).hex()}"
        entry = other.save(built.image_id, _key(ref), image_name=ref.split(":")[0], image_tag=ref.split(":")[1])
        engine.remove(built.image_id)
        assert engine.inspect(ref) is None
        other.load(entry)
    images.tags.append(ref)
    return ref


@pytest.mark.engine
@pytest.mark.parametrize("how", ["pulled", "loaded"])
def test_a_hit_sends_only_the_layers_above_a_base_the_engine_got_elsewhere(
        engine: Engine, images: ImageFactory, registry: str, tmp_path: Path, how: str) -> None:
    base = _base_got_elsewhere(engine, images, registry, tmp_path, how)
    ctx = tmp_path / "model"
    ctx.mkdir()
    (ctx / "model.bin").write_bytes(os.urandom(MODEL_SIZE))
    (ctx / "Dockerfile").write_text(f"FROM {base}\nCOPY model.bin /model.bin\n")
    model = images.build(ctx, tag=f"foreign-built:{how}")
    store = Store(tmp_path / "cache", engine=engine)
    entry = store.save(model.image_id, _key("model" + how), image_name="foreign-model", image_tag=how)
    engine.remove(f"foreign-built:{how}")
    engine.remove(model.image_id)
    assert engine.inspect(entry.image_ref) is None

    result = store.load(entry)
    images.tags.append(entry.image_ref)
    print(f"\n{engine.info.name}, base {how}: {result.how} load, {result.layers_sent} of {len(entry.layers)} "
          f"layers, {result.bytes_sent} bytes")
    loaded = engine.inspect(result.image_id)
    assert loaded is not None and loaded.diff_ids == entry.layers
    if engine.info.delta == "none":  # Podman takes only whole archives
        assert result.how == "full"
    else:
        assert (result.how, result.layers_sent) == ("delta", 1)
        assert MODEL_SIZE < result.bytes_sent < MODEL_SIZE + 64 * 1024
    # The image is whole: it saves, and a build on top of it runs and saves.
    assert sum(len(chunk) for chunk in engine.save(result.image_id)) > MODEL_SIZE
    (ctx / "Dockerfile").write_text(f"FROM {entry.image_ref}\nRUN test -s /model.bin\n")
    derived = images.build(ctx)
    assert sum(len(chunk) for chunk in engine.save(derived.image_id)) > MODEL_SIZE
    # The next hit finds it under the id that load gave it.
    assert store.load(entry).how == "present"


class _OneImage:
    """An engine holding one image, found by its id or its tag."""

    def __init__(self, info: ImageInfo, tag: str) -> None:
        self.image, self.tag = info, tag

    def find(self, ids: list) -> "ImageInfo | None":
        return self.image if self.image.id in ids or self.tag in ids else None


def test_an_image_a_named_load_gave_is_found_by_its_id_and_a_tag_proves_nothing() -> None:
    """The id a load naming a pulled base's layers gives is one the entry goes by; another image
    under the entry's tag, with the same layers, is not the entry's (its config may differ)."""
    layers = ["sha256:" + "1" * 64, "sha256:" + "2" * 64]
    pulled = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + "9" * 64, 123)
    entry = Entry(id="run_1_00000000", key=_key("k"), image_name="m", image_tag="1", image_id="sha256:" + "a" * 64,
                  config="sha256:" + "c" * 64, layers=layers, sizes={"sha256:" + "c" * 64: 10, **{d: 1000 for d in layers}},
                  repo_tags=["m:1"], descriptors={layers[0]: pulled.to_json()})
    loader = Loader(None, None, None, False, print)  # type: ignore[arg-type]  # find_in_engine asks the engine only
    named = entry.named_id({layers[0]: pulled})
    assert entry.named_ids() == [named] and named in entry.engine_ids and named != entry.oci_id
    ours = _OneImage(ImageInfo(named, layers, ["m:1"], 0), "m:1")
    assert loader.find_in_engine(ours, entry).id == named  # type: ignore[arg-type, union-attr]
    other = _OneImage(ImageInfo("sha256:" + "e" * 64, layers, ["m:1"], 0), "m:1")
    assert loader.find_in_engine(other, entry) is None  # type: ignore[arg-type]
