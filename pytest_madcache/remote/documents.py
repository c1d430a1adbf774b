"""Small named documents beside the remote's entries (the performance history, perf/history.py).

In a registry a document is an OCI artifact tagged with its name (`perf-history`, outside the
entries' `mc-` tags, so listing and pruning never see it): an empty config and one layer holding the
JSON, digest-checked on the way back.  In a directory remote it is `documents/NAME.json`, replaced
atomically.  Both raise OSError when the remote cannot be reached (the caller says so and goes on
with its local copy).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Union

from pytest_madcache.remote.base import RemoteBackend, RemoteError
from pytest_madcache.util.fsutil import atomic_write
from pytest_madcache.util.refs import OCI_CONFIG, OCI_MANIFEST

__all__ = ["documents_of", "RegistryDocuments", "DirectoryDocuments", "DOCUMENT_TYPE"]

DOCUMENT_TYPE = "application/vnd.madcache.document.v1+json"
_EMPTY = b"{}"

if TYPE_CHECKING:
    from pytest_madcache.remote.registry import Registry


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class RegistryDocuments:
    def __init__(self, registry: "Registry") -> None:
        self.registry = registry

    def get_document(self, name: str) -> Optional[bytes]:
        try:
            got = self.registry.get_manifest(name)
            if got is None:
                return None
            layers = json.loads(got[0]).get("layers") or []
            if len(layers) != 1 or layers[0].get("mediaType") != DOCUMENT_TYPE:
                raise OSError(f"{self.registry.ref}:{name} is not a madcache document")
            digest, size = str(layers[0]["digest"]), int(layers[0]["size"])
            chunks: List[bytes] = []
            self.registry.download(digest, size, chunks.append)
        except RemoteError as exc:
            raise OSError(str(exc)) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise OSError(f"{self.registry.ref}:{name}: unreadable manifest ({exc})") from None
        body = b"".join(chunks)
        if _digest(body) != digest:
            raise OSError(f"{self.registry.ref}:{name}: the document does not match its digest {digest}")
        return body

    def put_document(self, name: str, body: bytes) -> None:
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _digest(_EMPTY), "size": len(_EMPTY)},
            "layers": [{"mediaType": DOCUMENT_TYPE, "digest": _digest(body), "size": len(body)}],
            "annotations": {"org.opencontainers.image.title": name},
        }
        try:
            for blob in (_EMPTY, body):
                self.registry.upload_blob(_digest(blob), io.BytesIO(blob), len(blob))
            self.registry.put_manifest(name, json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
        except RemoteError as exc:
            raise OSError(str(exc)) from None


class DirectoryDocuments:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory) / "documents"

    def get_document(self, name: str) -> Optional[bytes]:
        try:
            return (self.dir / f"{name}.json").read_bytes()
        except FileNotFoundError:
            return None

    def put_document(self, name: str, body: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / f"{name}.json", body)


def documents_of(remote: RemoteBackend) -> Union[RegistryDocuments, DirectoryDocuments]:
    """The document store of an opened remote (remote.open_remote); OSError when it is off."""
    from pytest_madcache.remote.directory import DirectoryRemote
    from pytest_madcache.remote.oci import RemoteCache

    if isinstance(remote, DirectoryRemote):
        return DirectoryDocuments(remote.dir)
    if isinstance(remote, RemoteCache):
        if remote.disabled:
            raise OSError(f"remote cache {remote} is off for this process ({remote.disabled})")
        return RegistryDocuments(remote.registry)
    raise OSError(f"remote cache {remote} keeps no documents")
