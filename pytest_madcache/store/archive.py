"""Image archives: read what any engine's save writes, write what each engine loads.

Engines save in three shapes, all handled by one streaming reader:

- the legacy docker-archive (`manifest.json`, `<id>/layer.tar`, `<config>.json`),
  as dockerd 20.10 writes it;
- the OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`, possibly
  nested indexes), which Docker 25+ writes beside a `manifest.json` whose paths
  point into `blobs/`; on the containerd image store its layers are gzip blobs;
- Podman's docker-archive: layers as `<diffid>.tar` at the root with
  `<id>/layer.tar` links to them.

Whatever the shape, each layer is stored once, uncompressed, named by its
diffID (the canonical form: see docs/engines.md for the measurements), and
every blob an archive names by digest is checked against that digest.  This
module knows tar and image formats only: where blobs go is the caller's
business (a `BlobSink`), and it never talks to an engine.  Writing the
archive an engine loads is loadarchive.py's (its names are re-exported here).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Dict, List, Optional, Protocol, Sequence, Set, Tuple

from pytest_madcache.store.imageformat import (
    DOCKER_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    ArchiveError,
    Descriptor,
)
from pytest_madcache.store.loadarchive import LoadArchive, oci_image_id, oci_manifest
from pytest_madcache.store.tarstream import CHUNK, ReadAhead, TarError, iter_tar, read_exact, safe_member
from pytest_madcache.util.codecs import CodecMissing, CorruptStream, Readable, decompressing, sniff
from pytest_madcache.util.refs import sha256_hex

__all__ = [
    "ArchiveError", "ArchiveImage", "BlobSink", "read_image", "LoadArchive", "oci_manifest", "oci_image_id",
    "OCI_INDEX", "OCI_MANIFEST", "DOCKER_LIST", "OCI_CONFIG", "OCI_LAYER",
]

KEEP_IN_MEMORY = 1 << 20  # members up to this size are kept until the manifest says what they are


def _safe(name: str) -> str:
    try:
        return safe_member(name)
    except TarError as exc:
        raise ArchiveError(str(exc)) from None


class BlobSink(Protocol):
    """Where the reader puts blobs: it hashes what it is given and returns (digest, bytes)."""

    def write_blob(self, fh: Readable, size: Optional[int]) -> Tuple[str, int]: ...

    def write_small_blob(self, data: bytes) -> str: ...


@dataclass(frozen=True)
class ArchiveImage:
    """One image read from an archive, its layers stored in the sink by diffID."""

    config: str  # config digest
    layers: List[str]  # diffIDs, lowest first
    sizes: Dict[str, int]  # digest -> uncompressed bytes, config and layers
    repo_tags: List[str] = field(default_factory=list)
    layout: str = "docker-archive"  # or "oci"
    # diffID -> how the saving engine's manifest names that layer, where not by its diffID (the
    # containerd store keeps a pulled layer as the registry sent it: compressed)
    descriptors: Dict[str, Descriptor] = field(default_factory=dict)


# -- layers: compressed or not, hashed on the way in ---------------------------------


class _Inflating:
    """A compressed layer's uncompressed bytes, produced `depth` chunks ahead on a thread.

    Inflating gzip runs at 210-270 MB/s here and releases the GIL, as do
    sha256 and file writes: on its own thread it overlaps with hashing and
    writing what it produced before.
    """

    def __init__(self, reader: BinaryIO, depth: int = 8) -> None:
        self._chunks = ReadAhead(iter(lambda: reader.read(CHUNK), b""), depth)
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        if not self._buf:
            self._buf = next(self._chunks, b"")
        if n is None or n < 0 or n >= len(self._buf):
            data, self._buf = self._buf, b""
        else:
            data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def close(self) -> None:
        self._chunks.close()


class _Hashing:
    """Passes reads through, hashing the raw bytes (a blob's digest as the archive names it).

    With `hashing=False` it only puts the sniffed head back in front: an
    uncompressed layer's raw digest is its diffID, which the blob writer
    computes anyway, and hashing every byte twice cost a save 0.7 s of one
    core per 776 MB here.
    """

    def __init__(self, fh: Readable, head: bytes = b"", hashing: bool = True) -> None:
        self.fh = fh
        self.head = head
        self.hash = hashlib.sha256(head) if hashing else None
        self.count = len(head)

    def read(self, n: int = -1) -> bytes:
        if self.head:  # the sniffed bytes, topped up to a full read (callers judge the first chunk)
            if 0 <= n < len(self.head):
                data, self.head = self.head[:n], self.head[n:]
                return data
            data, self.head = self.head, b""
            more = self.fh.read(-1 if n < 0 else n - len(data))
            if self.hash is not None:
                self.hash.update(more)
            self.count += len(more)
            return data + more
        data = self.fh.read(n)
        if self.hash is not None:
            self.hash.update(data)
        self.count += len(data)
        return data

    @property
    def digest(self) -> str:
        if self.hash is None:
            raise AssertionError("a pass-through reader has no digest")
        return "sha256:" + self.hash.hexdigest()


def _uncompressed(fh: _Hashing, head: bytes) -> BinaryIO:
    """The layer's tar bytes, whatever compression its first bytes announce."""
    try:
        return decompressing(fh, sniff(head))  # type: ignore[arg-type]  # _Hashing reads like a file
    except CodecMissing as exc:
        raise ArchiveError(f"the engine saved a zstd-compressed layer: {exc}") from None


@dataclass
class _Member:
    name: str
    data: Optional[bytes] = None  # small members, kept until the manifest says what they are
    raw_digest: Optional[str] = None  # streamed members: digest of the bytes as archived
    diff_id: Optional[str] = None  # streamed members: digest of the uncompressed bytes, stored
    size: int = 0  # uncompressed bytes stored


class _Members:
    """What an archive held, by path, with links resolved in any order."""

    def __init__(self) -> None:
        self.files: Dict[str, _Member] = {}
        self.links: Dict[str, str] = {}

    def get(self, name: str) -> _Member:
        seen: Set[str] = set()
        name = _safe(name)
        while name in self.links and name not in self.files:
            if name in seen:
                raise ArchiveError(f"archive member {name!r} is part of a link loop")
            seen.add(name)
            name = self.links[name]
        member = self.files.get(name)
        if member is None:
            raise ArchiveError(f"the archive names {name!r} but does not contain it")
        return member

    def has(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except ArchiveError:
            return False

    def small(self, name: str) -> bytes:
        member = self.get(name)
        if member.data is None:
            raise ArchiveError(f"archive member {name!r} is too large for image metadata")
        return member.data


def _read_members(fh: BinaryIO, sink: BlobSink, on_bytes=None) -> _Members:
    members = _Members()
    for info, reader in iter_tar(fh):
        name = _safe(info.name)
        if info.isdir():
            continue
        if info.issym() or info.islnk():
            target = info.linkname if info.islnk() else str(PurePosixPath(name).parent / info.linkname)
            members.links[name] = _safe(os.path.normpath(target))
            members.files.pop(name, None)
            continue
        if not info.isfile():
            raise ArchiveError(f"refusing image archive member {name!r} of type {info.type!r}")
        members.links.pop(name, None)
        if info.size <= KEEP_IN_MEMORY:
            data = read_exact(reader, info.size)
            members.files[name] = _Member(name, data=data)
            if on_bytes:
                on_bytes(len(data))
            continue
        head = read_exact(reader, 4)
        compressed = sniff(head) != "none"
        raw = _Hashing(reader, head, hashing=compressed)
        layer = _Inflating(_uncompressed(raw, head)) if compressed else raw
        try:
            diff_id, size = sink.write_blob(layer, None if compressed else info.size)
        except CorruptStream as exc:
            raise ArchiveError(f"archive member {name!r} cannot be decompressed: {exc}") from None
        finally:
            if isinstance(layer, _Inflating):
                layer.close()
        raw.read(-1)  # what a decompressor left unread still counts for the raw digest
        members.files[name] = _Member(name, raw_digest=raw.digest if compressed else diff_id, diff_id=diff_id,
                                      size=size)
    return members


def _json(members: _Members, name: str) -> Any:
    try:
        return json.loads(members.small(name))
    except ValueError:
        raise ArchiveError(f"archive member {name!r} is not valid JSON") from None


def _blob_name(digest: str) -> str:
    try:
        return f"blobs/sha256/{sha256_hex(digest)}"
    except ValueError as exc:
        raise ArchiveError(str(exc)) from None


def _checked_small(members: _Members, name: str, digest: Optional[str]) -> bytes:
    data = members.small(name)
    if digest is not None and "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise ArchiveError(f"archive blob {name!r} does not match its digest {digest}")
    return data


_Layer = Tuple[str, Optional[str], Optional[Descriptor]]  # path, the digest it must hash to, the manifest's descriptor
_Image = Tuple[str, List[_Layer], List[str]]  # config path, layers, names


def _images_from_index(members: _Members) -> List[_Image]:
    """(config path, [(layer path, blob digest)], names) per manifest, walking nested indexes."""
    out = []
    todo: List[Tuple[dict, List[str]]] = [(_json(members, "index.json"), [])]
    seen: Set[str] = set()
    while todo:
        index, names = todo.pop(0)
        for desc in index.get("manifests") or []:
            digest = desc.get("digest", "")
            if digest in seen:
                continue
            seen.add(digest)
            ref = (desc.get("annotations") or {}).get("io.containerd.image.name")
            here = names + ([ref] if ref else [])
            data = json.loads(_checked_small(members, _blob_name(digest), digest))
            media = desc.get("mediaType") or data.get("mediaType")
            if media in (OCI_INDEX, DOCKER_LIST) or "manifests" in data:
                todo.append((data, here))
                continue
            config = data["config"]["digest"]
            if not members.has(_blob_name(config)):
                continue  # a platform the save left out
            layers = [(_blob_name(layer["digest"]), layer["digest"], _descriptor(layer))
                      for layer in data.get("layers") or []]
            out.append((_blob_name(config), layers, here))
    return out


def _descriptor(layer: Any) -> Optional[Descriptor]:
    media, digest, size = layer.get("mediaType"), layer.get("digest"), layer.get("size")
    if not isinstance(media, str) or not isinstance(digest, str) or isinstance(size, bool) or not isinstance(size, int):
        return None
    return Descriptor(media, digest, size)


def _images_from_manifest(members: _Members) -> List[_Image]:
    manifest = _json(members, "manifest.json")
    if not isinstance(manifest, list):
        raise ArchiveError("manifest.json is not a list of images")
    out = []
    for item in manifest:
        layers: List[_Layer] = []
        for path in item.get("Layers") or []:
            path = _safe(path)
            digest = "sha256:" + path.rsplit("/", 1)[1] if path.startswith("blobs/sha256/") else None
            layers.append((path, digest, None))
        out.append((_safe(item["Config"]), layers, list(item.get("RepoTags") or [])))
    return out




def read_image(fh: BinaryIO, sink: BlobSink, want: Sequence[str] = (), on_bytes=None) -> ArchiveImage:
    """Read an engine's save stream into `sink`; return the image it holds.

    `want` are ids the image may go by (config digest, or a manifest digest on
    the containerd store); an archive of several images is searched for it,
    one of a single image is taken as it is.  The diffIDs of the stored
    layers must be those the image's config lists.
    """
    members = _members_of(fh, sink, on_bytes)
    layout, images = _images(members)
    config_path, layer_paths, names = _choose(members, images, want)
    config_data = members.small(config_path)
    config = "sha256:" + hashlib.sha256(config_data).hexdigest()
    if config_path.startswith("blobs/sha256/") and config_path[len("blobs/sha256/"):] != config[7:]:
        raise ArchiveError(f"archive blob {config_path!r} does not match its digest")
    sizes = {config: len(config_data)}
    sink.write_small_blob(config_data)
    layers: List[str] = []
    descriptors: Dict[str, Descriptor] = {}
    for path, digest, descriptor in layer_paths:
        diff_id, size = _layer(members, sink, path, digest)
        layers.append(diff_id)
        sizes[diff_id] = size
        if descriptor is not None and descriptor.digest != diff_id:
            descriptors[diff_id] = descriptor
    _check_diff_ids(config_data, layers)
    tags = [t for t in names if isinstance(t, str)]
    return ArchiveImage(config=config, layers=layers, sizes=sizes, repo_tags=tags, layout=layout,
                        descriptors=descriptors)


def _members_of(fh: BinaryIO, sink: BlobSink, on_bytes) -> _Members:
    try:
        return _read_members(fh, sink, on_bytes)
    except TarError as exc:
        raise ArchiveError(str(exc)) from None
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise ArchiveError(f"not a valid tar: {exc}") from None


def _images(members: _Members) -> Tuple[str, List[_Image]]:
    """The archive's layout and the images its manifest lists."""
    if members.has("manifest.json"):
        layout, images = "docker-archive", _images_from_manifest(members)
        if members.has("index.json"):
            images = _with_descriptors(images, members)
    elif members.has("index.json"):
        layout, images = "oci", _images_from_index(members)
    else:
        raise ArchiveError("the archive has neither manifest.json nor index.json")
    if not images:
        raise ArchiveError("the archive's manifest lists no image")
    return layout, images


def _with_descriptors(images: List[_Image], members: _Members) -> List[_Image]:
    """Docker 25+ writes index.json beside manifest.json; its manifests say how the engine names each
    layer (manifest.json gives paths only)."""
    try:
        named = {config: layers for config, layers, _ in _images_from_index(members)}
    except (ArchiveError, ValueError, KeyError, TypeError):
        return images
    out = []
    for config, layers, names in images:
        theirs = named.get(config, [])
        if len(theirs) == len(layers) and all(ours[0] == t[0] for ours, t in zip(layers, theirs)):
            layers = [(path, digest, t[2]) for (path, digest, _), t in zip(layers, theirs)]
        out.append((config, layers, names))
    return out


def _choose(members: _Members, images: List[_Image], want: Sequence[str]) -> _Image:
    """The one image, or among several the one whose config digest is wanted."""
    wanted = set(want)
    if len(images) == 1 or not wanted:
        return images[0]
    for image in images:
        config_digest = "sha256:" + hashlib.sha256(members.small(image[0])).hexdigest()
        if config_digest in wanted:
            return image
    raise ArchiveError(f"the archive holds {len(images)} images, none of them {', '.join(sorted(wanted))}")


def _layer(members: _Members, sink: BlobSink, path: str, digest: Optional[str]) -> Tuple[str, int]:
    """(diffID, uncompressed size) of the layer at `path`, stored in the sink; its raw bytes checked
    against `digest` when the archive names one."""
    member = members.get(path)
    if member.data is not None:
        raw_digest = "sha256:" + hashlib.sha256(member.data).hexdigest()
        head = member.data[:4]
        plain = member.data
        if sniff(head) != "none":
            try:
                plain = _decompress_bytes(member.data)
            except CorruptStream as exc:
                raise ArchiveError(f"archive member {path!r} cannot be decompressed: {exc}") from None
        diff_id = sink.write_small_blob(plain)
        size = len(plain)
    else:
        if member.raw_digest is None or member.diff_id is None:
            raise ArchiveError(f"archive layer {path!r} was not read whole")
        raw_digest, diff_id, size = member.raw_digest, member.diff_id, member.size
    if digest is not None and raw_digest != digest:
        raise ArchiveError(f"archive blob {path!r} hashes to {raw_digest}, not {digest}")
    return diff_id, size


def _check_diff_ids(config_data: bytes, layers: List[str]) -> None:
    try:
        listed = json.loads(config_data)["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        raise ArchiveError("the image config has no rootfs.diff_ids") from None
    if layers != listed:
        raise ArchiveError("the archive's layers do not hash to the diffIDs its config lists")


def _decompress_bytes(data: bytes) -> bytes:
    reader = _uncompressed(_Hashing(io.BytesIO(data)), data[:4])
    parts: List[bytes] = []
    while True:
        chunk = reader.read(CHUNK)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
