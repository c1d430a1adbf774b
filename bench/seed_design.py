"""The reference: the cache design madengine documents, for side-by-side figures.

One full `docker save` tar per entry (`<dir>/<id>/docker_image.tar`), a full
`docker load` on every hit, and one JSON index rewritten whole on every
change.  Only the benchmark uses it; it is not part of the product.

It saves and loads through the engine client it is given (the Docker SDK,
as ours and the raw figures do), so a comparison measures the design, not
the client that carried the bytes.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any, Dict, Optional

from benchlib import raw_load, raw_save
from pytest_madcache.engines.docker import Engine


class SeedDesignCache:
    def __init__(self, directory: Path, engine: Engine) -> None:
        self.engine = engine
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index_path = self.dir / "cache_index.json"

    def _index(self) -> Dict[str, Any]:
        if not self.index_path.exists():
            return {"entries": {}}
        return json.loads(self.index_path.read_text())

    def _write_index(self, index: Dict[str, Any]) -> None:
        self.index_path.write_text(json.dumps(index, indent=2))  # rewritten whole, not atomically

    def lookup(self, key: str) -> Optional[Dict[str, Any]]:
        for entry in self._index()["entries"].values():
            if entry["cache_key"] == key:
                return entry
        return None

    def lookup_any(self) -> str:
        """The key of an entry (the benchmark's caches hold one)."""
        return next(iter(self._index()["entries"].values()))["cache_key"]

    def save(self, image: str, key: str) -> Dict[str, Any]:
        entry_id = f"run_{int(time.time())}_{secrets.token_hex(3)}"
        entry_dir = self.dir / entry_id
        entry_dir.mkdir()
        tar = entry_dir / "docker_image.tar"
        raw_save(self.engine, [image], tar)
        entry = {"cache_id": entry_id, "cache_key": key, "docker_image": image, "docker_tar": str(tar),
                 "size": tar.stat().st_size, "created": time.time(), "last_used": time.time()}
        index = self._index()
        index["entries"][entry_id] = entry
        self._write_index(index)
        return entry

    def hit(self, key: str) -> Dict[str, Any]:
        """Every hit loads the full tar, whatever the engine already has."""
        entry = self.lookup(key)
        assert entry is not None
        raw_load(self.engine, Path(entry["docker_tar"]))
        entry["last_used"] = time.time()
        index = self._index()
        index["entries"][entry["cache_id"]] = entry
        self._write_index(index)
        return entry

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file())
