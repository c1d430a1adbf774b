"""What a cache remembers about its registry (`<cache>/remote/`): the pending-push journal and the
layer map.

A push writes its manifest last; until then its entry waits in
`pending/<registry+repository>/<key>.json`, so the next push from that
cache completes it.  `layers/<diffID>.<codec>.json` remembers the registry
blob a layer became, so a layer the registry has is not compressed again to
learn its digest.  Files only: it never talks to a registry, and losing them
costs only time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from pytest_madcache.remote.transfer import RemoteBlob
from pytest_madcache.util.fsutil import atomic_write
from pytest_madcache.util.refs import RemoteRef

__all__ = ["RemoteState"]


class RemoteState:
    """`<cache>/remote/`: pushes not yet completed (per registry repository) and, per layer and
    compression, the registry blob it became (so a layer the registry has is not compressed again
    to learn its digest).  Written atomically; losing it costs only time."""

    def __init__(self, directory: Optional[Path]) -> None:
        self.dir = directory

    def _write(self, path: Path, data: Mapping[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data, sort_keys=True), durable=False)

    def _pending_file(self, ref: RemoteRef, key: str) -> Path:
        assert self.dir is not None
        name = f"{ref.host}/{ref.repository}".replace("/", "+").replace(":", "_")
        return self.dir / "pending" / name / f"{key}.json"

    def add_pending(self, ref: RemoteRef, meta: Mapping[str, Any]) -> None:
        if self.dir is not None:
            try:
                self._write(self._pending_file(ref, str(meta["key"])), {"meta": dict(meta)})
            except OSError:
                pass  # a read-only cache: the push simply is not resumed

    def done(self, ref: RemoteRef, key: str) -> None:
        if self.dir is not None:
            try:
                self._pending_file(ref, key).unlink()
            except OSError:
                pass

    def pending(self, ref: RemoteRef) -> List[Dict[str, Any]]:
        if self.dir is None:
            return []
        folder = self._pending_file(ref, "x").parent
        out = []
        try:
            files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return []
        for path in files:
            try:
                out.append(json.loads(path.read_text())["meta"])
            except (OSError, ValueError, KeyError):
                continue
        return out

    def _layer_file(self, diff_id: str, codec: str) -> Path:
        assert self.dir is not None
        return self.dir / "layers" / f"{diff_id.split(':', 1)[-1]}.{codec}.json"

    def layer(self, diff_id: str, codec: str) -> Optional[RemoteBlob]:
        if self.dir is None:
            return None
        try:
            data = json.loads(self._layer_file(diff_id, codec).read_text())
            return RemoteBlob(str(data["digest"]), int(data["size"]), str(data["media_type"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def remember(self, diff_id: str, codec: str, blob: RemoteBlob) -> None:
        if self.dir is not None:
            try:
                self._write(self._layer_file(diff_id, codec),
                            {"digest": blob.digest, "size": blob.size, "media_type": blob.media_type})
            except OSError:
                pass
