"""Image archives in every flavour engines write, read into blobs by diffID; load archives written back.

Crafted here, byte for byte in the shapes measured on real engines (docs/engines.md): dockerd 20.10's
legacy docker-archive, Docker 26's OCI layout with a manifest.json into blobs/, the containerd store's
gzip blobs, Podman's `<diffid>.tar` files with `layer.tar` links (in either order).  Real engines'
archives are covered by tests/test_store.py and tests/test_engines.py on every engine kind.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from typing import Dict, List, Optional, Tuple

import pytest

from pytest_madcache.store import archive
from pytest_madcache.store.archive import ArchiveError, LoadArchive, read_image
from pytest_madcache.store.imageformat import Descriptor
from pytest_madcache.util.refs import full_reference


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(name: str, size: int) -> bytes:
    """A real tar holding one file: what a layer is."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(range(256)) * (size // 256) + b"x" * (size % 256)))
    return buf.getvalue()


LAYERS = [layer("bin/tool", 3 << 20), layer("small.txt", 100), layer("weights.bin", 2 << 20)]
DIFF_IDS = [sha(d) for d in LAYERS]
CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": DIFF_IDS}}).encode()


class Sink:
    """A BlobSink in memory."""

    def __init__(self) -> None:
        self.blobs: Dict[str, bytes] = {}

    def write_blob(self, fh, size: Optional[int]) -> Tuple[str, int]:
        parts = []
        while True:
            chunk = fh.read(1 << 16)
            if not chunk:
                break
            parts.append(chunk)
        data = b"".join(parts)
        self.blobs[sha(data)] = data
        return sha(data), len(data)

    def write_small_blob(self, data: bytes) -> str:
        self.blobs[sha(data)] = data
        return sha(data)


def tar_of(members: List[Tuple[str, object]]) -> io.BytesIO:
    """members: (name, bytes) files, or (name, ("sym"|"hard", target)) links, in this order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type = tarfile.SYMTYPE if content[0] == "sym" else tarfile.LNKTYPE
                info.linkname = content[1]
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    buf.seek(0)
    return buf


def legacy() -> io.BytesIO:
    """dockerd 20.10: <id>/layer.tar, <config hex>.json, manifest.json last."""
    ids = [f"{i:064x}" for i in range(len(LAYERS))]
    manifest = [{"Config": sha(CONFIG)[7:] + ".json", "RepoTags": ["m:1"], "Layers": [f"{i}/layer.tar" for i in ids]}]
    members = [(f"{i}/layer.tar", d) for i, d in zip(ids, LAYERS)]
    return tar_of(members + [(sha(CONFIG)[7:] + ".json", CONFIG), ("manifest.json", json.dumps(manifest).encode())])


def oci(compress: bool, nested: bool = False, with_manifest_json: bool = True) -> io.BytesIO:
    """Docker 26: OCI layout (gzip blobs on the containerd store) plus a manifest.json into blobs/."""
    blobs = [gzip.compress(d, mtime=0) if compress else d for d in LAYERS]
    media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": archive.OCI_MANIFEST,
                           "config": {"mediaType": archive.OCI_CONFIG, "digest": sha(CONFIG), "size": len(CONFIG)},
                           "layers": [{"mediaType": media, "digest": sha(b), "size": len(b)} for b in blobs]}).encode()
    entry = {"mediaType": archive.OCI_MANIFEST, "digest": sha(manifest), "size": len(manifest),
             "annotations": {"io.containerd.image.name": "docker.io/library/m:1"}}
    members = [(f"blobs/sha256/{sha(b)[7:]}", b) for b in blobs]
    members += [(f"blobs/sha256/{sha(CONFIG)[7:]}", CONFIG), (f"blobs/sha256/{sha(manifest)[7:]}", manifest)]
    index = {"schemaVersion": 2, "mediaType": archive.OCI_INDEX, "manifests": [entry]}
    if nested:
        inner = json.dumps(index).encode()
        members.append((f"blobs/sha256/{sha(inner)[7:]}", inner))
        index = {"schemaVersion": 2, "mediaType": archive.OCI_INDEX,
                 "manifests": [{"mediaType": archive.OCI_INDEX, "digest": sha(inner), "size": len(inner)}]}
    members += [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", json.dumps(index).encode())]
    if with_manifest_json:
        legacy_manifest = [{"Config": f"blobs/sha256/{sha(CONFIG)[7:]}", "RepoTags": ["m:1"],
                            "Layers": [f"blobs/sha256/{sha(b)[7:]}" for b in blobs]}]
        members.append(("manifest.json", json.dumps(legacy_manifest).encode()))
    return tar_of(members)


def podman(links_first: bool) -> io.BytesIO:
    """Podman 4.3: <diffid>.tar at the root and <id>/layer.tar symlinks to them."""
    ids = [f"{i + 7:064x}" for i in range(len(LAYERS))]
    files = [(f"{sha(d)[7:]}.tar", d) for d in LAYERS]
    links = [(f"{i}/layer.tar", ("sym", f"../{sha(d)[7:]}.tar")) for i, d in zip(ids, LAYERS)]
    manifest = [{"Config": sha(CONFIG)[7:] + ".json", "RepoTags": ["localhost/m:1"],
                 "Layers": [f"{i}/layer.tar" for i in ids]}]
    order = links + files if links_first else files + links
    return tar_of(order + [(sha(CONFIG)[7:] + ".json", CONFIG), ("manifest.json", json.dumps(manifest).encode())])


FLAVOURS = {
    "dockerd 20.10 docker-archive": legacy,
    "Docker 26 OCI layout, classic store": lambda: oci(compress=False),
    "Docker 26 OCI layout, containerd store (gzip)": lambda: oci(compress=True),
    "OCI layout only, nested index": lambda: oci(compress=True, nested=True, with_manifest_json=False),
    "Podman, files before links": lambda: podman(links_first=False),
    "Podman, links before files": lambda: podman(links_first=True),
}


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_every_flavour_reads_into_uncompressed_blobs_by_diff_id(flavour) -> None:
    sink = Sink()
    image = read_image(FLAVOURS[flavour](), sink, want=[sha(CONFIG)])
    assert image.config == sha(CONFIG)
    assert image.layers == DIFF_IDS
    assert image.sizes == {sha(CONFIG): len(CONFIG), **{sha(d): len(d) for d in LAYERS}}
    for digest in [image.config, *image.layers]:
        assert sha(sink.blobs[digest]) == digest  # stored uncompressed, named by what it hashes to


@pytest.mark.parametrize("with_manifest_json", [True, False])
def test_the_engines_own_descriptors_of_compressed_layers_are_kept(with_manifest_json) -> None:
    """The containerd store keeps a pulled layer as it came (gzip): the save names it so, and a load that
    leaves the layer out must name it so too (loading.py)."""
    image = read_image(oci(compress=True, with_manifest_json=with_manifest_json), Sink())
    gz = [gzip.compress(d, mtime=0) for d in LAYERS]
    assert image.descriptors == {
        diff_id: Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", sha(blob), len(blob))
        for diff_id, blob in zip(DIFF_IDS, gz)}
    # layers the engine keeps uncompressed are named by their diffIDs: nothing to keep
    assert read_image(oci(compress=False), Sink()).descriptors == {}
    assert read_image(legacy(), Sink()).descriptors == {}


def test_zstd_layers_are_decompressed() -> None:
    import zstandard  # the test extra installs it

    blob = zstandard.ZstdCompressor().compress(LAYERS[0])
    config = json.dumps({"rootfs": {"diff_ids": [DIFF_IDS[0]]}}).encode()
    manifest = [{"Config": "c.json", "Layers": [f"blobs/sha256/{sha(blob)[7:]}"]}]
    sink = Sink()
    image = read_image(tar_of([(f"blobs/sha256/{sha(blob)[7:]}", blob), ("c.json", config),
                               ("manifest.json", json.dumps(manifest).encode())]), sink)
    assert image.layers == [DIFF_IDS[0]] and sink.blobs[DIFF_IDS[0]] == LAYERS[0]


def test_a_blob_that_does_not_match_its_name_is_refused() -> None:
    data = oci(compress=True).getvalue()
    good = gzip.compress(LAYERS[0], mtime=0)
    tampered = io.BytesIO(data.replace(good[-40:], bytes(40)))  # same name, other bytes
    with pytest.raises(ArchiveError):
        read_image(tampered, Sink())


def test_layers_that_do_not_hash_to_the_configs_diff_ids_are_refused() -> None:
    other = json.dumps({"rootfs": {"diff_ids": list(reversed(DIFF_IDS))}}).encode()
    data = legacy().getvalue().replace(CONFIG, other.ljust(len(CONFIG)))
    with pytest.raises(ArchiveError, match="diffIDs"):
        read_image(io.BytesIO(data), Sink())


def test_a_dangling_link_is_refused_naming_the_member() -> None:
    ids = "a" * 64
    manifest = [{"Config": "c.json", "Layers": [f"{ids}/layer.tar"]}]
    bad = tar_of([(f"{ids}/layer.tar", ("sym", "../missing.tar")), ("c.json", CONFIG),
                  ("manifest.json", json.dumps(manifest).encode())])
    with pytest.raises(ArchiveError, match="missing.tar"):
        read_image(bad, Sink())


@pytest.mark.parametrize("layout", ["docker-archive", "oci"])
def test_load_archives_read_back_as_the_same_image(layout) -> None:
    """What we send an engine is an archive we can read ourselves, layers left out included."""
    sizes = {sha(CONFIG): len(CONFIG), **{d: len(b) for d, b in zip(DIFF_IDS, LAYERS)}}
    files = {sha(CONFIG): io.BytesIO(CONFIG), **{d: io.BytesIO(b) for d, b in zip(DIFF_IDS, LAYERS)}}
    stream = LoadArchive(sha(CONFIG), DIFF_IDS, sizes, ["m:1"], files, layout=layout)
    data = b"".join(stream)
    assert stream.bad is None and stream.sent > sum(len(b) for b in LAYERS)
    image = read_image(io.BytesIO(data), Sink())
    assert (image.config, image.layers, image.layout) == (sha(CONFIG), DIFF_IDS, layout)
    if layout == "oci":
        index = json.loads(tarfile.open(fileobj=io.BytesIO(data)).extractfile("index.json").read())
        assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/library/m:1"
        assert index["manifests"][0]["digest"] == archive.oci_image_id(sha(CONFIG), DIFF_IDS, sizes)


def test_a_load_archive_stops_at_a_blob_that_does_not_match() -> None:
    sizes = {sha(CONFIG): len(CONFIG), DIFF_IDS[0]: len(LAYERS[0])}
    bad = bytearray(LAYERS[0])
    bad[1000] ^= 1
    stream = LoadArchive(sha(CONFIG), DIFF_IDS[:1], sizes, [], {sha(CONFIG): io.BytesIO(CONFIG),
                                                                DIFF_IDS[0]: io.BytesIO(bytes(bad))})
    with pytest.raises(ArchiveError):
        b"".join(stream)
    assert stream.bad == f"blob {DIFF_IDS[0]} does not match its digest"


@pytest.mark.parametrize("ref, full", [("m:1", "docker.io/library/m:1"), ("org/m", "docker.io/org/m:latest"),
                                       ("reg.example:5000/m:2", "reg.example:5000/m:2"),
                                       ("localhost/m:3", "localhost/m:3")])
def test_references_are_named_as_the_containerd_store_names_them(ref, full) -> None:
    assert full_reference(ref) == full
