"""A remote cache in an OCI registry: the far cache behind the local directory.

Each entry is pushed as a real OCI image (config + uncompressed layer blobs,
the same blobs the local store holds) tagged `mc-<key>` in one repository,
with the entry's metadata in a manifest annotation.  So `docker pull
REGISTRY/REPO:mc-<key>` works, blobs shared by entries are uploaded once,
and a second machine fetches only the blobs its local store lacks.

Only the OCI distribution HTTP API is used (blob HEAD/GET/upload, manifest
GET/PUT/DELETE, tag list), with basic and bearer-token auth, so any
registry serves: the CNCF distribution server, a cloud registry, Harbor.

It must not touch the local store: it returns metadata and blob readers
(remotes.RemoteEntry) and pushes what it is given.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Mapping, Optional, Tuple
from urllib.parse import urlencode, urljoin

import requests

from .remotes import RemoteEntry, RemoteError, RemoteUnavailable

__all__ = [
    "RemoteRef", "Registry", "RemoteError", "RemoteUnavailable",
    "MANIFEST_TYPE", "key_tag", "entry_manifest", "entry_from_manifest",
]

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
ENTRY_ANNOTATION = "io.madcache.entry"
USED_ANNOTATION = "io.madcache.last-used"
TAG_PREFIX = "mc-"
CHUNK = 1 << 20
_LOCAL_HOSTS = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$")


@dataclass(frozen=True)
class RemoteRef:
    """`[http[s]://]host[:port]/repository` -> where to talk and which repository."""

    scheme: str
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
        if not host or not repo or not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*", repo):
            raise ValueError("expected REGISTRY/REPOSITORY such as 127.0.0.1:5000/madcache (lower-case repository path)")
        if scheme is None:
            scheme = "http" if _LOCAL_HOSTS.match(host) else "https"
        return cls(scheme, host, repo)

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}/v2/{self.repository}/"

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}"


def key_tag(key: str) -> str:
    return TAG_PREFIX + key


class Registry:
    """A small OCI distribution client over one requests session."""

    def __init__(self, ref: RemoteRef, username: Optional[str] = None, password: Optional[str] = None,
                 timeout: Tuple[float, float] = (5.0, 300.0), session: Optional[requests.Session] = None) -> None:
        self.ref = ref
        self.username = username
        self.password = password
        self.timeout = timeout
        self.session = session or requests.Session()
        self._auth_header: Optional[str] = None

    @classmethod
    def from_env(cls, ref: RemoteRef, env: Mapping[str, str] = os.environ) -> "Registry":
        """Credentials from MADCACHE_REMOTE_USER / MADCACHE_REMOTE_PASSWORD (never stored)."""
        return cls(ref, env.get("MADCACHE_REMOTE_USER") or None, env.get("MADCACHE_REMOTE_PASSWORD") or None)

    # -- transport -------------------------------------------------------------

    def _url(self, path: str) -> str:
        return urljoin(self.ref.base, path)

    def _request(self, method: str, url: str, ok: Tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        for attempt in range(2):
            if self._auth_header:
                headers["Authorization"] = self._auth_header
            body = kwargs.get("data")
            if attempt and hasattr(body, "seek"):
                body.seek(0)
            try:
                resp = self.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
            except requests.ConnectionError as exc:
                raise RemoteUnavailable(f"cannot reach registry {self.ref.host}: {_short(exc)}") from None
            except requests.Timeout:
                raise RemoteUnavailable(f"registry {self.ref.host} did not answer in time") from None
            except requests.RequestException as exc:
                raise RemoteError(f"{method} {url} failed: {_short(exc)}") from None
            if resp.status_code == 401 and attempt == 0 and self._authenticate(resp):
                resp.close()
                continue
            if resp.status_code not in ok:
                detail = resp.text[:300] if not kwargs.get("stream") else ""
                resp.close()
                raise RemoteError(f"{method} {url} answered {resp.status_code} {resp.reason}: {detail}".strip())
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _authenticate(self, resp: requests.Response) -> bool:
        """Answer a 401 challenge: Basic with our credentials, or fetch a Bearer token."""
        challenge = resp.headers.get("WWW-Authenticate", "")
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if not self.username:
                raise RemoteError(f"registry {self.ref.host} wants credentials: set MADCACHE_REMOTE_USER and MADCACHE_REMOTE_PASSWORD")
            token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
            self._auth_header = f"Basic {token}"
            return True
        if scheme.lower() == "bearer":
            fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
            realm = fields.pop("realm", None)
            if not realm:
                return False
            if "scope" not in fields:
                fields["scope"] = f"repository:{self.ref.repository}:pull,push"
            auth = (self.username, self.password or "") if self.username else None
            try:
                token_resp = self.session.get(f"{realm}?{urlencode(fields)}", auth=auth, timeout=self.timeout)
            except requests.RequestException as exc:
                raise RemoteUnavailable(f"cannot reach the token service {realm}: {_short(exc)}") from None
            if token_resp.status_code != 200:
                raise RemoteError(f"the token service {realm} answered {token_resp.status_code}: {token_resp.text[:200]}")
            data = token_resp.json()
            token = data.get("token") or data.get("access_token")
            if not token:
                raise RemoteError(f"the token service {realm} returned no token")
            self._auth_header = f"Bearer {token}"
            return True
        return False

    # -- API ---------------------------------------------------------------------

    def ping(self) -> None:
        self._request("GET", f"{self.ref.scheme}://{self.ref.host}/v2/", ok=(200, 401)).close()

    def blob_size(self, digest: str) -> Optional[int]:
        resp = self._request("HEAD", self._url(f"blobs/{digest}"), ok=(200, 404))
        resp.close()
        if resp.status_code == 404:
            return None
        return int(resp.headers.get("Content-Length", "0") or 0)

    def upload_blob(self, digest: str, source: Any, size: int) -> bool:
        """Upload unless present; a monolithic PUT streamed from `source`.  True if sent.

        `source` is a seekable file or a callable returning a fresh reader
        (for compressed blobs), so an auth retry can send the body again.
        """
        if self.blob_size(digest) is not None:
            return False
        start = self._request("POST", self._url("blobs/uploads/"), ok=(202,))
        location = start.headers.get("Location")
        start.close()
        if not location:
            raise RemoteError(f"registry {self.ref.host} gave no upload location")
        location = urljoin(self._url(""), location)
        sep = "&" if "?" in location else "?"
        body = _FileBody(source, size)
        try:
            self._request(
                "PUT", f"{location}{sep}digest={digest}", ok=(201, 204), data=body,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            ).close()
        finally:
            body.close()
        return True

    def open_blob(self, digest: str) -> requests.Response:
        """A streaming response for a blob (the caller verifies the digest)."""
        return self._request("GET", self._url(f"blobs/{digest}"), stream=True)

    def get_manifest(self, reference: str) -> Optional[Tuple[bytes, str]]:
        """(body, digest) or None when the reference does not exist."""
        resp = self._request("GET", self._url(f"manifests/{reference}"), ok=(200, 404),
                             headers={"Accept": MANIFEST_TYPE})
        if resp.status_code == 404:
            resp.close()
            return None
        body = resp.content
        digest = resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
        return body, digest

    def put_manifest(self, reference: str, body: bytes) -> str:
        resp = self._request("PUT", self._url(f"manifests/{reference}"), ok=(201,), data=body,
                             headers={"Content-Type": MANIFEST_TYPE})
        resp.close()
        return resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()

    def delete_manifest(self, digest: str) -> None:
        self._request("DELETE", self._url(f"manifests/{digest}"), ok=(202, 404)).close()

    def tags(self) -> List[str]:
        out: List[str] = []
        url: Optional[str] = self._url("tags/list?n=1000")
        while url:
            resp = self._request("GET", url, ok=(200, 404))
            if resp.status_code == 404:
                return out
            out += resp.json().get("tags") or []
            link = resp.headers.get("Link", "")
            match = re.match(r"<([^>]+)>", link)
            url = urljoin(f"{self.ref.scheme}://{self.ref.host}", match.group(1)) if match else None
        return out


class _FileBody:
    """A sized body that requests streams in 1 MB chunks; `seek(0)` starts it over."""

    def __init__(self, source: Any, size: int) -> None:
        self.opener = source if callable(source) else None
        self.fh = source() if callable(source) else source
        if self.opener is None:
            self.fh.seek(0)
        self.len = size

    def __iter__(self) -> Iterator[bytes]:
        while True:
            chunk = self.fh.read(CHUNK)
            if not chunk:
                return
            yield chunk

    def seek(self, pos: int) -> None:
        if self.opener is not None:
            self.fh.close()
            self.fh = self.opener()
        else:
            self.fh.seek(pos)

    def close(self) -> None:
        if self.opener is not None:
            self.fh.close()


def _short(exc: BaseException) -> str:
    text = str(exc)
    match = re.search(r"\[Errno [^\]]+\] [^'\")]+", text)
    return match.group(0) if match else text[:200]


# -- entries as OCI images -------------------------------------------------------


def entry_manifest(entry: Any, last_used: Optional[float] = None) -> bytes:
    """The OCI manifest of a store entry; its metadata rides in an annotation."""
    meta = entry.to_json()
    created = _dt.datetime.fromtimestamp(entry.created, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": entry.config, "size": entry.sizes[entry.config]},
        "layers": [{"mediaType": LAYER_TYPE, "digest": d, "size": entry.sizes[d]} for d in entry.layers],
        "annotations": {
            "org.opencontainers.image.created": created,
            "org.opencontainers.image.ref.name": entry.image_ref,
            ENTRY_ANNOTATION: json.dumps(meta, sort_keys=True, separators=(",", ":")),
            USED_ANNOTATION: str(int(last_used if last_used is not None else time.time())),
        },
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def entry_from_manifest(body: bytes) -> Tuple[Dict[str, Any], float]:
    """Entry metadata (checked against the manifest's own blob list) and last use."""
    try:
        manifest = json.loads(body)
        annotations = manifest.get("annotations") or {}
        meta = json.loads(annotations[ENTRY_ANNOTATION])
        used = float(annotations.get(USED_ANNOTATION) or meta.get("created") or 0)
        blobs = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteError(f"not a madcache manifest: {exc}") from None
    if blobs != [meta.get("config"), *(meta.get("layers") or [])]:
        raise RemoteError("manifest and entry metadata disagree about the blobs")
    sizes = {manifest["config"]["digest"]: manifest["config"]["size"]}
    sizes.update({layer["digest"]: layer["size"] for layer in manifest["layers"]})
    if any(meta.get("sizes", {}).get(d) != s for d, s in sizes.items()):
        raise RemoteError("manifest and entry metadata disagree about blob sizes")
    return meta, used


class _RawStream:
    """A blob response as a plain readable stream (what Store.import_entry copies from)."""

    def __init__(self, resp: requests.Response) -> None:
        self.resp = resp

    def read(self, n: int = -1) -> bytes:
        return self.resp.raw.read(n if n and n > 0 else None, decode_content=True)

    def close(self) -> None:
        self.resp.close()


class RemoteCache:
    """The registry behind a local store: fetch on a local miss, push after a build.

    An unreachable registry turns it off for the rest of the process with one
    warning; the local cache goes on working.
    """

    def __init__(self, registry: Registry, log: Any = None) -> None:
        self.registry = registry
        self.log = log
        self.disabled: Optional[str] = None

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    @classmethod
    def from_setting(cls, remote: str, log: Any = None, env: Mapping[str, str] = os.environ) -> "RemoteCache":
        return cls(Registry.from_env(RemoteRef.parse(remote), env), log)

    def _off(self, exc: Exception) -> None:
        if self.disabled is None:
            self.disabled = str(exc)
            self._say(f"Warning: remote cache {self.registry.ref} unavailable ({exc}); using the local cache only")

    def find(self, key: str) -> Optional[RemoteEntry]:
        """The entry the registry holds for `key`: its metadata and a reader of its blobs (the
        caller imports what it lacks), or None (also when the registry fails: warned)."""
        if self.disabled:
            return None
        try:
            got = self.registry.get_manifest(key_tag(key))
            if got is None:
                return None
            meta, used = entry_from_manifest(got[0])
            if meta.get("key") != key:
                raise RemoteError(f"the manifest tagged {key_tag(key)} belongs to key {meta.get('key')!r}")
            return RemoteEntry(meta, lambda d: _RawStream(self.registry.open_blob(d)))
        except RemoteError as exc:
            self.failed(key, exc)
        return None

    def failed(self, key: str, exc: RemoteError) -> None:
        """A fetch of `key` broke (also while its blobs were read): turn off, or warn."""
        if isinstance(exc, RemoteUnavailable):
            self._off(exc)
        else:
            self._say(f"Warning: could not fetch key {key[:12]} from {self.registry.ref}: {exc}")

    def push(self, entry: Any, open_blob: Callable[[str], BinaryIO]) -> int:
        """Upload the entry's blobs the registry lacks, read through `open_blob`, then its manifest;
        bytes sent."""
        if self.disabled:
            return 0
        sent = 0
        try:
            for digest in dict.fromkeys(entry.blobs):
                if self.registry.upload_blob(digest, lambda d=digest: open_blob(d), entry.sizes[digest]):
                    sent += entry.sizes[digest]
            self.registry.put_manifest(key_tag(entry.key), entry_manifest(entry))
        except RemoteUnavailable as exc:
            self._off(exc)
        except (RemoteError, OSError) as exc:
            self._say(f"Warning: could not push {entry.id} to {self.registry.ref}: {exc}")
        return sent

    def mark_used(self, entry: Any) -> None:
        """Re-tag with a fresh last-used annotation: the registry's LRU sees machines that fetch."""
        try:
            self.registry.put_manifest(key_tag(entry.key), entry_manifest(entry, time.time()))
        except RemoteError:
            pass

    def __str__(self) -> str:
        return str(self.registry.ref)

    def pull_hint(self, tag: str) -> str:
        """Entries are real images: the reference to pull one with the engine."""
        return f"(pull: {self.registry.ref}:{tag})"

    def entries(self) -> List[Tuple[str, Dict[str, Any], float, str]]:
        """(tag, entry metadata, last used, manifest digest) for every madcache tag."""
        out = []
        for tag in self.registry.tags():
            if not tag.startswith(TAG_PREFIX):
                continue
            got = self.registry.get_manifest(tag)
            if got is None:
                continue
            try:
                meta, used = entry_from_manifest(got[0])
            except RemoteError:
                continue
            out.append((tag, meta, used, got[1]))
        return out

    def prune(self, max_entries: int, ttl: Optional[float], now: Optional[float] = None) -> List[Dict[str, Any]]:
        """Delete manifests by the local rules (TTL, then least recently used beyond the count).

        The registry frees the blobs at its own garbage collection
        (`registry garbage-collect` for the CNCF distribution server).
        """
        now = time.time() if now is None else now
        entries = sorted(self.entries(), key=lambda e: e[2])
        doomed = []
        for item in list(entries):
            if ttl is not None and now - item[2] > ttl:
                doomed.append(item)
                entries.remove(item)
        while len(entries) > max_entries:
            doomed.append(entries.pop(0))
        for tag, meta, used, digest in doomed:
            self.registry.delete_manifest(digest)
        return [meta for _, meta, _, _ in doomed]
