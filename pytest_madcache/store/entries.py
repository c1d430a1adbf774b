"""What an entry is: the metadata of one cached image, and the values the store hands back.

Plain data and validation only: no files, no locks, no engine.  Metadata is
read back from a directory others may write, so `Entry.from_json` refuses
anything that would later become a bad path, size or tag.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from pytest_madcache.store import archive
from pytest_madcache.store.errors import StoreError
from pytest_madcache.store.imageformat import Descriptor
from pytest_madcache.util.refs import sha256_hex

__all__ = ["Entry", "LoadResult", "Stats", "VerifyReport", "new_entry_id", "hex_of", "STORE_FORMAT"]

STORE_FORMAT = 1


def new_entry_id(now: Optional[float] = None) -> str:
    """madengine's id form: run_<unix time>_<8 hex>."""
    return f"run_{int(now if now is not None else time.time())}_{secrets.token_hex(4)}"


def hex_of(digest: str) -> str:
    """The hex part of a sha256 digest, refused when it is anything else (it becomes a file name)."""
    try:
        return sha256_hex(digest)
    except ValueError as exc:
        raise StoreError(str(exc)) from None


_ENTRY_ID = re.compile(r"run_[0-9]{1,20}_[0-9a-f]{1,64}")
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
_MEDIA_TYPE = re.compile(r"application/vnd\.[A-Za-z0-9.+-]{1,200}")


def _validate_entry(entry: "Entry") -> None:
    """Metadata read back from a cache others may write: types, ids, digests, sizes, tags.

    Everything here later becomes a path, a tar header, a size we trust, or a
    tag the engine applies, so anything odd is refused (the entry is then
    treated as unreadable and dropped by the next repair).
    """
    if not _ENTRY_ID.fullmatch(entry.id):
        raise StoreError(f"bad entry id {entry.id!r}")
    if not isinstance(entry.layers, list) or not isinstance(entry.sizes, dict):
        raise StoreError(f"entry {entry.id}: malformed layers or sizes")
    if not isinstance(entry.repo_tags, list) or not all(isinstance(t, str) and _REF.fullmatch(t)
                                                         for t in entry.repo_tags):
        raise StoreError(f"entry {entry.id}: malformed image tags {entry.repo_tags!r}")
    hex_of(entry.image_id)  # the config digest, or a manifest digest on the containerd image store
    for digest, size in entry.sizes.items():
        hex_of(digest)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 1 << 50:
            raise StoreError(f"entry {entry.id}: bad size {size!r} for blob {digest}")
    for digest in entry.blobs:
        if digest not in entry.sizes:
            raise StoreError(f"entry {entry.id}: no size for blob {digest}")
    _validate_descriptors(entry)


def _validate_descriptors(entry: "Entry") -> None:
    """They become a load manifest's layer descriptors: one per layer of the entry, well formed."""
    if not isinstance(entry.descriptors, dict):
        raise StoreError(f"entry {entry.id}: malformed layer descriptors")
    for diff_id, d in entry.descriptors.items():
        if diff_id not in entry.layers or not _well_formed(d):
            raise StoreError(f"entry {entry.id}: bad layer descriptor {d!r} for {diff_id}")


def _well_formed(d: object) -> bool:
    if not isinstance(d, dict) or not isinstance(d.get("mediaType"), str) or not _MEDIA_TYPE.fullmatch(d["mediaType"]):
        return False
    size = d.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 1 << 50:
        return False
    try:
        sha256_hex(str(d.get("digest")))
    except ValueError:
        return False
    return True


@dataclass
class Entry:
    """One cached image: metadata plus the manifest that references blobs."""

    id: str
    key: str
    image_name: str
    image_tag: str
    image_id: str  # the building engine's id: the config digest, or a manifest digest (containerd store)
    config: str  # config blob digest
    layers: List[str]  # layer blob digests (diffIDs), lowest first
    sizes: Dict[str, int]  # blob digest -> bytes
    repo_tags: List[str] = field(default_factory=list)
    model_tags: List[str] = field(default_factory=list)
    nodes: int = 1
    created: float = 0.0
    last_used: float = 0.0
    build_duration: Optional[float] = None
    key_components: Dict[str, Any] = field(default_factory=dict)
    run_config: Dict[str, Any] = field(default_factory=dict)
    stored: Dict[str, int] = field(default_factory=dict)  # blob digest -> bytes on disk (compressed or not)
    # diffID -> the saving engine's descriptor of that layer where it is not the diffID (a layer the
    # containerd store pulled, kept compressed): what a load names a layer it leaves out by (loading.py)
    descriptors: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    format: int = STORE_FORMAT

    @property
    def image_ref(self) -> str:
        return f"{self.image_name}:{self.image_tag}"

    @property
    def blobs(self) -> List[str]:
        return [self.config, *self.layers]

    @property
    def oci_id(self) -> str:
        """The id a containerd image store gives this image after loading our OCI archive."""
        return archive.oci_image_id(self.config, self.layers, self.sizes)

    @property
    def engine_ids(self) -> List[str]:
        """Every id this image goes by in an engine: as built; as classic Docker and
        Podman name it after a load (the config digest); as the containerd store
        names it after a load (`oci_id`, or a `named_id` when the load left out
        layers the engine got elsewhere)."""
        return list(dict.fromkeys([self.image_id, self.config, self.oci_id, *self.named_ids()]))

    @property
    def own_bytes(self) -> int:
        """Bytes on disk of every blob the entry references, shared or not."""
        return sum(self.disk_bytes(d) for d in set(self.blobs))

    def descriptor(self, diff_id: str) -> Optional[Descriptor]:
        d = self.descriptors.get(diff_id)
        return Descriptor(d["mediaType"], d["digest"], d["size"]) if d else None

    def named_id(self, names: Mapping[str, Descriptor]) -> str:
        """The id a containerd store gives a load of ours whose manifest names left-out layers `names`."""
        return archive.oci_image_id(self.config, self.layers, self.sizes, names)

    def named_ids(self) -> List[str]:
        """The ids of loads that left out the lowest k layers, named by their recorded descriptors."""
        ids: List[str] = []
        names: Dict[str, Descriptor] = {}
        for diff_id in self.layers:
            d = self.descriptor(diff_id)
            if d is not None:
                names[diff_id] = d
                ids.append(self.named_id(names))
        return ids

    def disk_bytes(self, digest: str) -> int:
        return self.stored.get(digest, self.sizes.get(digest, 0))

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data.pop("last_used")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], last_used: Optional[float] = None) -> "Entry":
        known = {f for f in cls.__dataclass_fields__}
        fields = {k: v for k, v in data.items() if k in known}
        entry = cls(**fields)
        entry.last_used = last_used if last_used is not None else entry.created
        _validate_entry(entry)  # what later becomes paths, sizes and tags
        return entry


@dataclass
class LoadResult:
    """How a hit reached the engine."""

    how: str  # "present": nothing loaded; "delta": only missing layers; "full": everything
    bytes_sent: int = 0
    layers_sent: int = 0
    seconds: float = 0.0
    image_id: str = ""  # the id the engine has the image under now


@dataclass
class Stats:
    directory: str
    entries: int
    max_entries: int
    total_bytes: int  # unique blob bytes referenced by entries
    max_bytes: int
    ttl: Optional[float]
    blobs: int
    shared_bytes_saved: int  # what separate tars would have cost on top

    @property
    def usage(self) -> float:
        return 100.0 * self.total_bytes / self.max_bytes if self.max_bytes else 0.0


@dataclass
class VerifyReport:
    blobs_checked: int = 0
    bytes_checked: int = 0
    bad_blobs: List[str] = field(default_factory=list)
    missing_blobs: List[str] = field(default_factory=list)
    broken_entries: List[str] = field(default_factory=list)  # reference a bad or missing blob
    dropped_entries: List[str] = field(default_factory=list)  # removed because of that (repair=True)

    @property
    def ok(self) -> bool:
        return not (self.bad_blobs or self.missing_blobs or self.broken_entries)
