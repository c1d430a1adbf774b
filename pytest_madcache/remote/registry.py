"""An OCI distribution client: HTTPS as Docker does it, auth, retries, resumable transfers.

Only the distribution HTTP API is used (ping, blob HEAD/GET/upload,
manifest GET/PUT/DELETE, tag list), so any registry serves.  What this
module owns:

* **where**: `[http[s]://]host[:port]/repository`.  Without a scheme,
  HTTPS first; plain HTTP only for a loopback host whose port does not
  speak TLS (Docker's rule for registries it treats as insecure); an
  explicit `http://` or `https://` is used as written.
* **trust**: the system's CAs, `REQUESTS_CA_BUNDLE` / `SSL_CERT_FILE` /
  `SSL_CERT_DIR`, and Docker's per-registry `certs.d/<host[:port]>/`
  directories (`*.crt` CAs, a `*.cert`/`*.key` client pair), merged.
* **who**: credentials from `credentials.find_credentials`, asked for only
  when the registry challenges (Basic, or a Bearer token from the realm it
  names, with an identity token as OAuth2 refresh token).
* **faults**: 429/5xx and dropped connections are retried with
  exponential backoff (Retry-After honoured); uploads resume from the
  offset the registry reports; downloads resume with `Range`.

This module holds the client (`Registry`) and its requests; the answers to a
401 are auth.py's, chunked and resumed uploads upload.py's, the retry policy
retry.py's.  It must not know cache entries (oci.py), compression
(transfer.py) or the local store.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import Any, BinaryIO, Callable, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urljoin

import requests

from pytest_madcache.remote import upload
from pytest_madcache.remote.auth import Auth
from pytest_madcache.remote.base import RemoteError, RemoteUnavailable
from pytest_madcache.remote.credentials import Credentials
from pytest_madcache.remote.retry import RETRY_STATUS, Dropped, RetryPolicy, pause, short_reason
from pytest_madcache.remote.tls import TLSAdapter, TLSSetupError, certs_dirs, not_tls, tls_context
from pytest_madcache.remote.upload import CHUNK, OpenAt, skip_to
from pytest_madcache.util.refs import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    RemoteRef,
    is_loopback,
    split_image_reference,
)

__all__ = ["RemoteRef", "Registry", "RemoteError", "RemoteUnavailable", "RetryPolicy", "MANIFEST_TYPE", "CHUNK",
           "UPLOAD_CHUNK", "OpenAt", "certs_dirs", "is_loopback", "skip_to", "registry_digest"]

MANIFEST_TYPE = OCI_MANIFEST
UPLOAD_CHUNK = 32 << 20  # blobs above this go up in PATCH chunks of this size
DEFAULT_RETRY = RetryPolicy()


class Registry:
    """One repository on one registry; safe to use from several threads (a session each)."""

    def __init__(self, ref: RemoteRef, username: Optional[str] = None, password: Optional[str] = None,
                 timeout: Tuple[float, float] = (10.0, 120.0), session: Optional[requests.Session] = None, *,
                 env: Optional[Mapping[str, str]] = None, retry: RetryPolicy = DEFAULT_RETRY,
                 upload_chunk: int = UPLOAD_CHUNK) -> None:
        self.ref = ref
        self.env: Mapping[str, str] = dict(os.environ if env is None else env)
        self.timeout = timeout
        self.retry = retry
        self.upload_chunk = upload_chunk
        given = Credentials(username or "", password or "", source="the caller") if (username or password) else None
        self._lock = threading.RLock()
        self._auth = Auth(ref, self.env, given, self._lock)
        self._local = threading.local()
        self._first_session = session
        self._scheme: Optional[str] = ref.scheme
        self._reached = False
        self.bytes_sent = 0
        self.bytes_received = 0
        self.tls_files: List[str] = []

    @classmethod
    def from_env(cls, ref: RemoteRef, env: Mapping[str, str] = os.environ, **kwargs: Any) -> "Registry":
        """Credentials are found when the registry asks (see credentials.py); never stored."""
        return cls(ref, env=env, **kwargs)

    # -- plumbing ------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            with self._lock:
                session, self._first_session = self._first_session, None
            session = session or requests.Session()
            try:
                ctx, self.tls_files = tls_context(self.ref.host, self.env)
            except TLSSetupError as exc:
                raise RemoteError(str(exc)) from None
            session.mount("https://", TLSAdapter(ctx))
            self._local.session = session
        return session

    def count_sent(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n

    def _count_received(self, n: int) -> None:
        with self._lock:
            self.bytes_received += n

    @property
    def origin(self) -> str:
        return f"{self._resolve_scheme()}://{self.ref.host}"

    def manifest_digest(self, tag: str) -> Optional[str]:
        """The digest of the manifest (or index) served under `tag`, or None (unknown, unreachable)."""
        accept = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
        for method in ("HEAD", "GET"):
            try:
                resp = self.request(method, self.url(f"manifests/{tag}"), ok=(200, 404), headers={"Accept": accept})
            except RemoteError:
                return None
            resp.close()
            if resp.status_code == 404:
                return None
            digest = resp.headers.get("Docker-Content-Digest")
            if digest:
                return str(digest)
            if method == "GET" and resp.content:
                return "sha256:" + hashlib.sha256(resp.content).hexdigest()
        return None

    def url(self, path: str) -> str:
        return f"{self.origin}/v2/{self.ref.repository}/{path}"

    def _resolve_scheme(self) -> str:
        """HTTPS unless written otherwise; plain HTTP for a loopback registry whose port is not TLS.
        Decided once an answer (or a TLS handshake failure) says which; HTTPS until then."""
        if self._scheme is not None:
            return self._scheme
        with self._lock:
            if self._scheme is None:
                try:
                    self._session().get(f"https://{self.ref.host}/v2/", timeout=self.timeout).close()
                    self._scheme = "https"
                except requests.exceptions.SSLError as exc:
                    self._scheme = "http" if is_loopback(self.ref.host) and not_tls(exc) else "https"
                except requests.RequestException:
                    return "https"  # no answer: the request itself reports what is wrong
            return self._scheme

    def request(self, method: str, url: str, ok: Tuple[int, ...] = (200,), *, retry: bool = True,
                **kwargs: Any) -> requests.Response:
        """One request, answered with one of `ok`.

        Transient failures (dropped connections, 429, 5xx) are retried with
        backoff when `retry`; without it they raise Dropped for the caller to
        resume.  A 401 is answered once per request with the challenge's scheme
        (a body is sent again: bytes, or an upload.Body, which rereads its source).
        """
        headers = dict(kwargs.pop("headers", {}) or {})
        attempts = self.retry.attempts if retry else 1
        authed_here = False
        attempt = 0
        while True:
            auth = self._auth.header
            if auth:
                headers["Authorization"] = auth
            try:
                resp = self._session().request(method, url, headers=headers, timeout=self.timeout, **kwargs)
            except requests.exceptions.SSLError as exc:
                raise RemoteError(self._tls_message(exc)) from None
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                attempt += 1
                why = (f"registry {self.ref.host} did not answer in time" if isinstance(exc, requests.Timeout)
                       else f"cannot reach registry {self.ref.host}: {short_reason(exc)}")
                if not self._reached and isinstance(exc, requests.ConnectionError) and not isinstance(
                        exc, requests.exceptions.ChunkedEncodingError):
                    raise RemoteUnavailable(why) from None  # never answered: no point waiting
                if attempt >= attempts:
                    raise (Dropped if not retry else RemoteUnavailable)(why) from None
                pause(self.retry.wait(attempt - 1))
                continue
            except requests.RequestException as exc:
                raise RemoteError(f"{method} {url} failed: {short_reason(exc)}") from None
            self._reached = True
            if resp.status_code == 401 and not authed_here and self._auth.answer(resp, self._session, self.timeout):
                resp.close()
                authed_here = True
                continue
            if resp.status_code in RETRY_STATUS and resp.status_code not in ok:
                attempt += 1
                retry_after = resp.headers.get("Retry-After")
                detail = f"{method} {url} answered {resp.status_code} {resp.reason}"
                resp.close()
                if attempt >= attempts:
                    raise (Dropped if not retry else RemoteUnavailable)(detail) from None
                pause(self.retry.wait(attempt - 1, retry_after))
                continue
            if resp.status_code not in ok:
                detail = resp.text[:300] if not kwargs.get("stream") else ""
                resp.close()
                message = f"{method} {url} answered {resp.status_code} {resp.reason}: {detail}".strip()
                if resp.status_code == 401:
                    message += "; " + self._auth.who()
                raise RemoteError(message)
            return resp

    def _tls_message(self, exc: BaseException) -> str:
        trust = ", ".join(self.tls_files) or "none beyond the system's"
        return (f"TLS with registry {self.ref.host} failed: {short_reason(exc)} "
                f"(CAs trusted in addition to the system's: {trust}; "
                f"add the registry's CA with REQUESTS_CA_BUNDLE or SSL_CERT_FILE, or as "
                f"certs.d/{self.ref.host}/ca.crt under /etc/docker or $DOCKER_CONFIG)")

    # -- API -----------------------------------------------------------------------

    def ping(self) -> None:
        self.request("GET", f"{self.origin}/v2/", ok=(200, 401)).close()

    def blob_size(self, digest: str) -> Optional[int]:
        resp = self.request("HEAD", self.url(f"blobs/{digest}"), ok=(200, 404))
        resp.close()
        if resp.status_code == 404:
            return None
        return int(resp.headers.get("Content-Length", "0") or 0)

    def upload_blob(self, digest: str, source: Union[BinaryIO, Callable[[], BinaryIO]], size: int) -> bool:
        """Upload unless present; True if sent.  `source` is a seekable file or an opener of fresh readers."""
        if self.blob_size(digest) is not None:
            return False
        self.push_blob(digest, size, upload.opener(source))
        return True

    def push_blob(self, digest: str, size: int, open_at: OpenAt) -> None:
        """Send a blob the registry lacks, in chunks above `upload_chunk`, resumed where it broke
        (see upload.py).  Raises RemoteUnavailable when the registry stays away."""
        upload.push_blob(self, digest, size, open_at)

    def download(self, digest: str, size: Optional[int], write: Callable[[bytes], None], offset: int = 0,
                 on_resume: Optional[Callable[[int], None]] = None) -> int:
        """Write a blob's bytes from `offset` to `write`; resume with Range when the connection drops.

        Returns the bytes written.  The caller checks the digest.
        """
        failures = 0
        done = offset
        while True:
            headers = {"Range": f"bytes={done}-"} if done else {}
            resp = self.request("GET", self.url(f"blobs/{digest}"), ok=(200, 206), stream=True, headers=headers)
            try:
                if done and resp.status_code == 200:  # the registry ignored Range: skip what we have
                    skip = done
                else:
                    skip = 0
                for chunk in resp.iter_content(CHUNK):
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                        if not chunk:
                            continue
                    write(chunk)
                    done += len(chunk)
                    self._count_received(len(chunk))
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    ConnectionError) as exc:
                failures += 1
                if failures >= self.retry.attempts:
                    raise RemoteUnavailable(f"the download of {digest[:19]} from {self.ref.host} kept breaking: "
                                            f"{short_reason(exc)}") from None
                pause(self.retry.wait(failures - 1))
                if on_resume is not None:
                    on_resume(done)
                continue
            finally:
                resp.close()
            if size is not None and done < size:
                failures += 1
                if failures >= self.retry.attempts:
                    raise RemoteUnavailable(f"the download of {digest[:19]} from {self.ref.host} kept ending early")
                pause(self.retry.wait(failures - 1))
                continue
            return done - offset

    def open_blob(self, digest: str) -> requests.Response:
        """A streaming response for a whole blob (no resume; the caller verifies the digest)."""
        return self.request("GET", self.url(f"blobs/{digest}"), stream=True)

    def get_manifest(self, reference: str, accept: Sequence[str] = (MANIFEST_TYPE,)) -> Optional[Tuple[bytes, str]]:
        """(body, digest) or None when the reference does not exist."""
        resp = self.request("GET", self.url(f"manifests/{reference}"), ok=(200, 404),
                             headers={"Accept": ", ".join(accept)})
        if resp.status_code == 404:
            resp.close()
            return None
        body = resp.content
        digest = resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
        return body, digest

    def put_manifest(self, reference: str, body: bytes, media_type: str = MANIFEST_TYPE) -> str:
        resp = self.request("PUT", self.url(f"manifests/{reference}"), ok=(201,), data=body,
                             headers={"Content-Type": media_type})
        resp.close()
        return resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()

    def delete_manifest(self, digest: str) -> None:
        self.request("DELETE", self.url(f"manifests/{digest}"), ok=(202, 404)).close()

    def tags(self) -> List[str]:
        out: List[str] = []
        url: Optional[str] = self.url("tags/list?n=1000")
        while url:
            resp = self.request("GET", url, ok=(200, 404))
            if resp.status_code == 404:
                return out
            out += resp.json().get("tags") or []
            link = resp.headers.get("Link", "")
            match = re.match(r"<([^>]+)>", link)
            url = urljoin(self.origin, match.group(1)) if match else None
        return out



def registry_digest(reference: str, timeout: float = 5.0) -> Optional[str]:
    """The digest the registry serves for an image `reference`, asked directly (HEAD, then GET, on
    /v2/<repo>/manifests/<tag> with the OCI and Docker manifest types), with the remote's credential
    lookup; what base resolution asks where the engine cannot (Podman).  None when the registry does
    not know it or cannot be reached."""
    host, path, tag = split_image_reference(reference)
    if host is None:
        return None  # the default registry is not reachable here; and we never name it
    try:
        registry = Registry.from_env(RemoteRef.parse(f"{host}/{path}"))
    except ValueError:
        return None
    registry.timeout = (timeout, timeout)
    return registry.manifest_digest(tag)
