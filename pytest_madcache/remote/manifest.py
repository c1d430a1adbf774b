"""A cache entry as an OCI manifest, and back: the codec of the registry backend (oci.py).

The entry's metadata rides in a manifest annotation beside the registry's
blobs (compressed or not, position by position with the store's diffIDs);
`parse_manifest` reads one back and checks the two agree.  Pure: it builds
and reads bytes, and never talks to a registry or touches a file.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from pytest_madcache.remote.base import RemoteError
from pytest_madcache.remote.transfer import RemoteBlob
from pytest_madcache.util.refs import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST

__all__ = ["MANIFEST_TYPE", "CONFIG_TYPE", "LAYER_TYPE", "ENTRY_ANNOTATION", "USED_ANNOTATION", "manifest_body",
           "RemoteManifest", "parse_manifest"]

MANIFEST_TYPE = OCI_MANIFEST
CONFIG_TYPE = OCI_CONFIG
LAYER_TYPE = OCI_LAYER
ENTRY_ANNOTATION = "io.madcache.entry"
USED_ANNOTATION = "io.madcache.last-used"


def manifest_body(meta: Mapping[str, Any], layers: Sequence[RemoteBlob], last_used: Optional[float]) -> bytes:
    """The manifest of an entry (`meta` as `Entry.to_json` gives it) whose layers went up as `layers`;
    last used `last_used` (now when None)."""
    created = _dt.datetime.fromtimestamp(float(meta.get("created") or 0), _dt.timezone.utc)
    config = meta["config"]
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config, "size": meta["sizes"][config]},
        "layers": [{"mediaType": b.media_type, "digest": b.digest, "size": b.size} for b in layers],
        "annotations": {
            "org.opencontainers.image.created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "org.opencontainers.image.ref.name": f"{meta.get('image_name')}:{meta.get('image_tag')}",
            ENTRY_ANNOTATION: json.dumps(meta, sort_keys=True, separators=(",", ":")),
            USED_ANNOTATION: str(int(last_used if last_used is not None else time.time())),
        },
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class RemoteManifest:
    """A madcache manifest read back: the entry's metadata, its last use, and the registry's blob
    for each digest the store names (config and diffIDs)."""

    meta: Dict[str, Any]
    used: float
    layers: List[RemoteBlob]
    blobs: Dict[str, RemoteBlob] = field(default_factory=dict)


def parse_manifest(body: bytes) -> RemoteManifest:
    """Read and check a madcache manifest: the annotation's blobs must be the manifest's, position by
    position (an uncompressed layer by digest and size; a compressed one by position)."""
    try:
        manifest = json.loads(body)
        annotations = manifest.get("annotations") or {}
        meta = json.loads(annotations[ENTRY_ANNOTATION])
        used = float(annotations.get(USED_ANNOTATION) or meta.get("created") or 0)
        config = manifest["config"]
        layers = [RemoteBlob(layer["digest"], int(layer["size"]), layer.get("mediaType") or LAYER_TYPE)
                  for layer in manifest["layers"]]
        sizes = meta["sizes"]
        diff_ids = list(meta.get("layers") or [])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RemoteError(f"not a madcache manifest: {exc}") from None
    if config.get("digest") != meta.get("config") or sizes.get(config.get("digest")) != config.get("size"):
        raise RemoteError("manifest and entry metadata disagree about the config")
    if len(layers) != len(diff_ids):
        raise RemoteError("manifest and entry metadata disagree about the number of layers")
    blobs = {meta["config"]: RemoteBlob(config["digest"], int(config["size"]), CONFIG_TYPE)}
    for diff_id, blob in zip(diff_ids, layers):
        if blob.codec == "none" and (blob.digest != diff_id or blob.size != sizes.get(diff_id)):
            raise RemoteError("manifest and entry metadata disagree about an uncompressed layer")
        if diff_id not in sizes:
            raise RemoteError("the entry metadata has no size for a layer")
        blobs[diff_id] = blob
    return RemoteManifest(meta, used, layers, blobs)
