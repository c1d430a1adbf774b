"""References, parsed in one place: where a remote is (a registry repository or a directory), and the
image and registry names people write.  Pure: no network, no engine."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

__all__ = ["RemoteRef", "is_loopback", "directory_of", "ImageRef", "sha256_hex",
           "split_image_reference", "split_reference",
           "full_reference", "short_names", "OCI_MANIFEST", "OCI_INDEX", "DOCKER_MANIFEST", "DOCKER_MANIFEST_LIST",
           "OCI_CONFIG", "OCI_LAYER", "OCI_LAYER_GZIP", "OCI_LAYER_ZSTD", "DOCKER_LAYER", "DOCKER_CONFIG"]

# The media types of OCI and Docker manifests, configs and layers, named once.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

#: How the engines name an image written without a registry host (containerd's full names, Podman's
#: short-name forms).  A naming convention only: nothing here contacts it.
DEFAULT_DOMAIN = "docker" + ".io"
_LOCAL_PREFIXES = ("localhost/", f"{DEFAULT_DOMAIN}/library/")

_REPO_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.find("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RemoteRef:
    """`[http[s]://]host[:port]/repository`: where to talk and which repository.

    `scheme` is None when none was written: HTTPS, or plain HTTP for a
    loopback registry that does not speak TLS.
    """

    scheme: Optional[str]
    host: str
    repository: str

    @classmethod
    def parse(cls, text: str) -> "RemoteRef":
        raw = text.strip()
        scheme = None
        for prefix in ("http://", "https://"):
            if raw.startswith(prefix):
                scheme, raw = prefix[:-3], raw[len(prefix):]
        host, _, repo = raw.partition("/")
        repo = repo.strip("/")
        if not host or not repo or not _REPO_RE.fullmatch(repo):
            raise ValueError("expected REGISTRY/REPOSITORY such as 127.0.0.1:5000/madcache "
                             "(lower-case repository path)")
        return cls(scheme, host, repo)

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}"


def directory_of(text: str) -> Optional[str]:
    """The directory a `file://PATH` or absolute-path remote names (as written: the caller checks it is
    absolute), or None for a registry."""
    if text.startswith("file://"):
        return text[len("file://"):]
    return text if os.path.isabs(text) else None


@dataclass(frozen=True)
class ImageRef:
    """`[host[:port]/]path[:tag][@digest]`, as the engines read it: the first component is a host when it
    has a dot or a port or is `localhost`; a colon after the last slash starts the tag."""

    host: Optional[str]
    path: str
    tag: Optional[str] = None
    digest: Optional[str] = None

    @classmethod
    def parse(cls, reference: str) -> "ImageRef":
        name, _, digest = reference.partition("@")
        first, slash, rest = name.partition("/")
        host: Optional[str] = None
        if slash and ("." in first or ":" in first or first == "localhost"):
            host, name = first, rest
        path, colon, tag = name.rpartition(":")
        if not colon:
            path, tag = name, ""
        return cls(host, path, tag or None, digest or None)

    @property
    def repository(self) -> str:
        """The name without tag or digest, host included."""
        return f"{self.host}/{self.path}" if self.host else self.path

    @property
    def full_name(self) -> str:
        """The repository as the containerd image store names it (`<default domain>/library/name`)."""
        if self.host:
            return self.repository
        return f"{DEFAULT_DOMAIN}/{self.path}" if "/" in self.path else f"{DEFAULT_DOMAIN}/library/{self.path}"


def sha256_hex(digest: str) -> str:
    """The hex part of a `sha256:<64 lower-case hex>` digest; ValueError for anything else (the hex
    becomes a file name, so nothing else may pass)."""
    algo, _, hexpart = str(digest).partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexpart


def split_image_reference(reference: str) -> Tuple[Optional[str], str, str]:
    """`[host/]path[:tag][@digest]` -> (host or None for the default registry, path, digest or tag or
    `latest`): what a registry is asked for."""
    ref = ImageRef.parse(reference)
    return ref.host, ref.path, ref.digest or ref.tag or "latest"


def split_reference(reference: str) -> Tuple[str, str]:
    """`repo[:tag]` -> (repo, tag or `latest`): what an engine tags; a registry port is not a tag."""
    ref = ImageRef.parse(reference)
    return ref.repository, ref.tag or "latest"


def full_reference(reference: str) -> str:
    """`name[:tag]` as the containerd store names images (`<default domain>/library/name:tag`)."""
    ref = ImageRef.parse(reference)
    return f"{ref.full_name}:{ref.tag or 'latest'}"


def short_names(tags: Iterable[str]) -> List[str]:
    """Tags as users write them: Podman says `localhost/name:tag` for a local `name:tag`."""
    out: List[str] = []
    for tag in tags:
        out.append(tag)
        for prefix in _LOCAL_PREFIXES:
            if tag.startswith(prefix) and "/" not in tag[len(prefix):]:
                out.append(tag[len(prefix):])
    return list(dict.fromkeys(out))
