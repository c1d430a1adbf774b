"""Which form should the cache keep a layer in?  Measured on two engines side by side.

    bash bench/layer_form.sh      (starts a containerd-store and a classic dockerd 26, writes bench/LAYER_FORM.md)

The containerd image store saves layers as the gzip blobs it holds; classic
Docker and Podman save them uncompressed.  The two candidate stored forms:

* "as given": keep each blob as the engine saved it (gzip from the containerd store);
* "uncompressed by diffID" (ours): decompress on save, name the tar by its diffID.

For one image of compressible and random layers built on the containerd
store, --repeat times each, medians: save cost, disk, load into the
containerd store and into classic Docker, and what saving the same
Dockerfile's build from the other engine adds to the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import docker

from pytest_madcache.engines.docker import Engine
from pytest_madcache.devtools.localengine import busybox_path
from pytest_madcache.store import Store

from benchlib import rotate, stamp  # bench/, the script's own directory

MB = 1000 * 1000


def log(message: str) -> None:
    print(f"[layer-form {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def compressible(path: Path, size: int) -> None:
    """Text-like data (source files, JSON, tokenizer vocabularies): gzip -6 gets about 3-4x."""
    words = [os.urandom(6).hex() for _ in range(4096)]
    with open(path, "w") as fh:
        written = 0
        i = 0
        while written < size:
            line = " ".join(words[(i * 7 + k) % 4096] for k in range(12)) + "\n"
            fh.write(line)
            written += len(line)
            i += 1


def build(engine: Engine, ctx: Path, tag: str) -> str:
    return engine.build(ctx, tag=tag, builder="legacy").image_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containerd-host", required=True)
    parser.add_argument("--classic-host", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    ctr = Engine(client=docker.DockerClient(base_url=args.containerd_host, timeout=600))
    cls = Engine(client=docker.DockerClient(base_url=args.classic_host, timeout=600))
    assert ctr.info.image_store == "containerd" and cls.info.image_store == "classic"
    work = Path(tempfile.mkdtemp(prefix="madcache-layer-form-"))
    samples: Dict[str, List[float]] = {}

    def add(name: str, seconds: float) -> None:
        samples.setdefault(name, []).append(seconds)

    try:
        ctx = work / "ctx"
        ctx.mkdir()
        shutil.copy(busybox_path(), ctx / "busybox")
        compressible(ctx / "text.txt", 120 * MB)
        with open(ctx / "weights.bin", "wb") as fh:
            fh.write(os.urandom(60 * MB))
        (ctx / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/busybox\nCOPY text.txt /text.txt\n"
                                        "COPY weights.bin /weights.bin\n")
        tag = "madcache-layer-form:1"
        image_id = build(ctr, ctx, tag)
        classic_id = build(cls, ctx, tag)
        raw_tar = work / "as-given.tar"

        def raw_save() -> None:
            with open(raw_tar, "wb") as fh:
                for chunk in ctr.api.get_image(image_id, chunk_size=1 << 20):
                    fh.write(chunk)

        # Every ratio: both sides in one loop, on one clock, in an order that rotates run by run.
        for i in range(args.repeat):
            for who in rotate(["as_given", "ours"], i):
                if who == "as_given":
                    start = time.perf_counter()
                    raw_save()
                    add("save_as_given", time.perf_counter() - start)
                else:
                    store = Store(work / f"s{i}", engine=ctr, progress=False)
                    start = time.perf_counter()
                    entry = store.save(image_id, "ab" * 32, image_name="madcache-layer-form", image_tag="1")
                    add("save_ours", time.perf_counter() - start)
            if i < args.repeat - 1:
                shutil.rmtree(work / f"s{i}")
        store = Store(work / f"s{args.repeat - 1}", engine=ctr, progress=False)
        # Disk: the gzip blobs as given against our uncompressed blobs (and ours with zstd at rest).
        import tarfile

        with tarfile.open(raw_tar) as tf:
            manifest = json.loads(tf.extractfile("manifest.json").read())[0]
            gzip_bytes = sum(tf.getmember(p).size for p in manifest["Layers"])
        plain_bytes = sum(entry.sizes[d] for d in entry.layers)
        zstd_store = Store(work / "zstd", engine=ctr, progress=False, compress="zstd")
        zentry = zstd_store.save(image_id, "cd" * 32, image_name="madcache-layer-form", image_tag="1")
        zstd_bytes = sum(zentry.disk_bytes(d) for d in zentry.layers)
        # Loads with nothing in the engine: the as-given tar against ours, on both engines.
        for i in range(args.repeat):
            for eng, name in ((ctr, "ctr"), (cls, "classic")):
                for who in rotate(["as_given", "ours"], i):
                    for ref in (tag, image_id, classic_id, *entry.engine_ids):
                        eng.remove(ref, prune_parents=True)
                    start = time.perf_counter()
                    if who == "as_given":
                        with open(raw_tar, "rb") as fh:
                            eng.load(iter(lambda: fh.read(1 << 20), b""))
                    else:
                        result = Store(store.dir, engine=eng, progress=False).load(entry)
                        assert result.how == "full", result
                    add(f"load_{name}_{who}", time.perf_counter() - start)
        # The same Dockerfile built on the classic engine, saved into the same cache.
        before = sum(p.stat().st_size for p in store.blob_dir.iterdir())
        cls.remove(tag)
        classic_id = build(cls, ctx, tag)
        other = Store(store.dir, engine=cls, progress=False).save(classic_id, "ef" * 32, image_name="madcache-layer-form", image_tag="classic")
        added = sum(p.stat().st_size for p in store.blob_dir.iterdir()) - before
        shared_layers = len(set(other.layers) & set(entry.layers))
        # As given, the classic save's uncompressed blobs never match the containerd store's gzip blobs.
        added_as_given = sum(other.sizes[d] for d in other.layers)
        med = {k: statistics.median(v) for k, v in samples.items()}
        data = {
            "measured": stamp(),
            "containerd_engine": ctr.info.name, "classic_engine": cls.info.name, "repeat": args.repeat,
            "layers": len(entry.layers), "plain_layer_bytes": plain_bytes, "gzip_layer_bytes": gzip_bytes,
            "zstd_layer_bytes": zstd_bytes, "medians": med, "samples": samples,
            "cross_engine": {"layers": len(other.layers), "shared_layers": shared_layers,
                             "bytes_added_ours": added, "bytes_added_as_given": added_as_given},
        }
        Path(args.json).write_text(json.dumps(data, indent=1))
        print(json.dumps({k: v for k, v in data.items() if k != "samples"}, indent=1))
    finally:
        for eng in (ctr, cls):
            for ref in ("madcache-layer-form:1", "madcache-layer-form:classic"):
                eng.remove(ref, prune_parents=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
