"""Entries made of crafted blobs for the remote-cache tests: no engine, real store, real registry."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import time
from typing import Dict, Sequence

from pytest_madcache.store import Entry, Store, new_entry_id


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def text_like(size: int, seed: int = 7) -> bytes:
    """Compressible bytes, like source trees, configs and vocabularies."""
    rng = random.Random(seed)
    vocab = [rng.randbytes(4).hex().encode() for _ in range(4000)]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(vocab) for _ in range(1000)) + b"\n"
    return bytes(out[:size])


def crafted_meta(name: str, layers: Sequence[bytes], key: str = "") -> Dict[str, object]:
    """Entry metadata for an image whose layers are `layers` (lowest first)."""
    diff_ids = [sha(layer) for layer in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}, sort_keys=True).encode()
    sizes = {sha(config): len(config), **{sha(layer): len(layer) for layer in layers}}
    return {"id": new_entry_id(), "key": key or hashlib.sha256(name.encode() + os.urandom(8)).hexdigest(),
            "image_name": name, "image_tag": "latest", "image_id": sha(config), "config": sha(config),
            "layers": diff_ids, "sizes": sizes, "created": time.time(), "_blobs": {sha(config): config,
                                                                                 **{sha(l): l for l in layers}}}


def put_entry(store: Store, name: str, layers: Sequence[bytes], key: str = "") -> Entry:
    """A store entry holding `layers`, as if an engine had saved it."""
    meta = crafted_meta(name, layers, key)
    blobs = meta.pop("_blobs")
    entry, _ = store.import_entry(meta, lambda d: io.BytesIO(blobs[d]))  # type: ignore[index]
    return entry
