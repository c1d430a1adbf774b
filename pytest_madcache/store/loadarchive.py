"""Writing the archive an engine loads: a tar assembled on the fly from the store's blobs.

`LoadArchive` streams a docker-archive (classic Docker, Podman) or an OCI
layout (the containerd image store) and checks every blob against its digest
as it goes; `oci_manifest` and `oci_image_id` name the image the containerd
store will see.  It knows tar and image formats only: the store hands it open
blob readers and the engine the stream; it never talks to an engine and
writes no file (reading a save is archive.py's).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

from pytest_madcache.store.imageformat import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, ArchiveError, Descriptor
from pytest_madcache.store.tarstream import CHUNK
from pytest_madcache.util.refs import full_reference

__all__ = ["LoadArchive", "oci_manifest", "oci_image_id"]

def oci_manifest(config: str, config_size: int, layers: Sequence[str], sizes: Mapping[str, int],
                 names: Optional[Mapping[str, Descriptor]] = None) -> bytes:
    """The OCI manifest we write for an image of uncompressed layers: same bytes every time.  `names`:
    layers the archive leaves out, named as the engine's content store holds them (compressed)."""
    names = names or {}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": config_size},
        "layers": [names[d].to_json() if d in names else {"mediaType": OCI_LAYER, "digest": d, "size": sizes[d]}
                   for d in layers],
    }
    return json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()


def oci_image_id(config: str, layers: Sequence[str], sizes: Mapping[str, int],
                 names: Optional[Mapping[str, Descriptor]] = None) -> str:
    """The id a containerd image store gives the image after loading our OCI archive."""
    data = oci_manifest(config, sizes[config], layers, sizes, names)
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class LoadArchive:
    """A load tar assembled on the fly from blobs, each checked against its digest as it streams.

    `layout` is "docker-archive" (classic Docker, Podman) or "oci" (the
    containerd image store).  The manifest lists every layer; the archive
    holds only `files` (config and the layers being sent): classic engines
    check the lower chain by chain id, the containerd store by blob digest.
    On a mismatch the stream stops, so the engine's load fails rather than
    take bad data; `bad` says why.
    """

    config: str
    layers: Sequence[str]
    sizes: Mapping[str, int]
    repo_tags: Sequence[str]
    files: Mapping[str, BinaryIO]  # digest -> reader of uncompressed bytes
    layout: str = "docker-archive"
    names: Mapping[str, Descriptor] = field(default_factory=dict)  # oci: left-out layers as the engine names them
    on_bytes: Optional[Callable[[int], None]] = None
    sent: int = 0
    bad: Optional[str] = None

    def __iter__(self) -> Iterator[bytes]:
        for name, data in self._metadata():
            yield from self._member(name, io.BytesIO(data), len(data), None)
        for digest, fh in self.files.items():
            yield from self._member(self._path(digest), fh, self.sizes[digest], digest)
        yield b"\0" * 1024

    def _path(self, digest: str) -> str:
        hexpart = digest.split(":", 1)[1]
        if self.layout == "oci":
            return f"blobs/sha256/{hexpart}"
        return f"{hexpart}.json" if digest == self.config else f"{hexpart}/layer.tar"

    def _metadata(self) -> Iterable[Tuple[str, bytes]]:
        if self.layout == "oci":
            manifest = oci_manifest(self.config, self.sizes[self.config], self.layers, self.sizes, self.names)
            digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
            manifests = [{
                "mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
                "annotations": {"io.containerd.image.name": full_reference(ref),
                                "org.opencontainers.image.ref.name": full_reference(ref).rsplit(":", 1)[1]},
            } for ref in self.repo_tags] or [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)}]
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
            return [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                    ("index.json", json.dumps(index, separators=(",", ":")).encode()),
                    (f"blobs/sha256/{digest[7:]}", manifest)]
        manifest_json = [{
            "Config": self._path(self.config),
            "RepoTags": list(self.repo_tags),
            "Layers": [self._path(d) for d in self.layers],
        }]
        return [("manifest.json", json.dumps(manifest_json).encode())]

    def _member(self, name: str, fh: BinaryIO, size: int, digest: Optional[str]) -> Iterator[bytes]:
        info = tarfile.TarInfo(name)
        info.size = size  # the header goes out first; the data must match it
        info.mode = 0o644
        info.mtime = 0
        header = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
        self.sent += len(header)
        yield header
        h = hashlib.sha256() if digest else None
        left = size
        while True:
            try:
                chunk = fh.read(min(CHUNK, left) if left > 0 else 1)
            except Exception as exc:  # a damaged zstd frame
                self.bad = f"blob {digest} cannot be read: {exc}"
                raise ArchiveError(self.bad) from None
            if not chunk:
                break
            if len(chunk) > left:
                self.bad = f"blob {digest} is longer than the {size} bytes recorded"
                raise ArchiveError(self.bad)
            left -= len(chunk)
            if h is not None:
                h.update(chunk)
            self.sent += len(chunk)
            if self.on_bytes:
                self.on_bytes(len(chunk))
            yield chunk
        if left:
            self.bad = f"blob {digest} has {size - left} bytes, expected {size}"
            raise ArchiveError(self.bad)
        if h is not None and "sha256:" + h.hexdigest() != digest:
            self.bad = f"blob {digest} does not match its digest"
            raise ArchiveError(self.bad)
        pad = (-size) % 512
        if pad:
            yield b"\0" * pad
