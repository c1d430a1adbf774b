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

It must not know cache entries (remote.py), compression (transfer.py) or the
local store.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlencode, urljoin

import requests

from pytest_madcache.remote.base import RemoteError, RemoteUnavailable
from pytest_madcache.remote.credentials import Credentials, CredentialsError, find_credentials, hint
from pytest_madcache.remote.tls import TLSAdapter, TLSSetupError, certs_dirs, not_tls, tls_context
from pytest_madcache.util.refs import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    RemoteRef,
    is_loopback,
    split_image_reference,
)

__all__ = ["RemoteRef", "Registry", "RemoteError", "RemoteUnavailable", "RetryPolicy", "MANIFEST_TYPE",
           "certs_dirs", "is_loopback", "skip_to", "registry_digest"]

MANIFEST_TYPE = OCI_MANIFEST
CHUNK = 1 << 20
UPLOAD_CHUNK = 32 << 20  # blobs above this go up in PATCH chunks of this size
_RETRY_STATUS = (429, 500, 502, 503, 504)


class _Dropped(RemoteUnavailable):
    """A request that is not retried in place (an upload body) failed in a way worth resuming."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried: `attempts` tries in all,
    waits of `base` * 2**n seconds (full jitter) capped at `cap`."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 8.0

    def wait(self, attempt: int, retry_after: Optional[str] = None) -> float:
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), 4 * self.cap)
            except ValueError:
                pass
        return random.uniform(0.5, 1.0) * min(self.cap, self.base * (2 ** attempt))


def _short(exc: BaseException) -> str:
    text = str(exc)
    match = re.search(r"\[(?:Errno [^\]]+|SSL: [^\]]+)\] [^'\")]+", text)
    return match.group(0) if match else text[:200]


# -- the client ----------------------------------------------------------------------


class _Body:
    """An upload body: `length` bytes from `open_at(offset)`, counted as they go out.  Each
    iteration opens a fresh reader, so a request sent again (after a 401) sends it whole."""

    def __init__(self, open_at: "OpenAt", offset: int, length: int, count: Callable[[int], None]) -> None:
        self.open_at = open_at
        self.offset = offset
        self.len = length
        self._count = count

    def __iter__(self) -> Iterator[bytes]:
        fh = self.open_at(self.offset)
        try:
            left = self.len
            while left > 0:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    raise RemoteError(f"the blob ended {left} bytes early while it was sent")
                left -= len(chunk)
                self._count(len(chunk))
                yield chunk
        finally:
            fh.close()


OpenAt = Callable[[int], BinaryIO]  # a reader of a blob's bytes from an offset


class Registry:
    """One repository on one registry; safe to use from several threads (a session each)."""

    def __init__(self, ref: RemoteRef, username: Optional[str] = None, password: Optional[str] = None,
                 timeout: Tuple[float, float] = (10.0, 120.0), session: Optional[requests.Session] = None, *,
                 env: Optional[Mapping[str, str]] = None, retry: RetryPolicy = RetryPolicy(),
                 upload_chunk: int = UPLOAD_CHUNK) -> None:
        self.ref = ref
        self.env: Mapping[str, str] = dict(os.environ if env is None else env)
        self.timeout = timeout
        self.retry = retry
        self.upload_chunk = upload_chunk
        self._given: Optional[Credentials] = (
            Credentials(username or "", password or "", source="the caller") if (username or password) else None)
        self._creds: Optional[Credentials] = None
        self._creds_looked = False
        self._auth_header: Optional[str] = None
        self._lock = threading.RLock()
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

    def _count_sent(self, n: int) -> None:
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
                resp = self._request(method, self._url(f"manifests/{tag}"), ok=(200, 404), headers={"Accept": accept})
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

    def _url(self, path: str) -> str:
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

    def _creds_for_challenge(self) -> Optional[Credentials]:
        if self._given is not None:
            return self._given
        with self._lock:  # one look (a credential helper runs once), whichever thread is challenged first
            if not self._creds_looked:
                try:
                    self._creds = find_credentials(self.ref.host, self.env)
                except CredentialsError as exc:
                    raise RemoteError(f"registry {self.ref.host} wants credentials, but {exc}") from None
                self._creds_looked = True
            return self._creds

    def _request(self, method: str, url: str, ok: Tuple[int, ...] = (200,), *, retry: bool = True,
                 **kwargs: Any) -> requests.Response:
        """One request, answered with one of `ok`.

        Transient failures (dropped connections, 429, 5xx) are retried with
        backoff when `retry`; without it they raise _Dropped for the caller to
        resume.  A 401 is answered once per request with the challenge's scheme
        (a body is sent again: bytes, or a _Body, which rereads its source).
        """
        headers = dict(kwargs.pop("headers", {}) or {})
        attempts = self.retry.attempts if retry else 1
        authed_here = False
        attempt = 0
        while True:
            with self._lock:
                auth = self._auth_header
            if auth:
                headers["Authorization"] = auth
            try:
                resp = self._session().request(method, url, headers=headers, timeout=self.timeout, **kwargs)
            except requests.exceptions.SSLError as exc:
                raise RemoteError(self._tls_message(exc)) from None
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                attempt += 1
                why = (f"registry {self.ref.host} did not answer in time" if isinstance(exc, requests.Timeout)
                       else f"cannot reach registry {self.ref.host}: {_short(exc)}")
                if not self._reached and isinstance(exc, requests.ConnectionError) and not isinstance(
                        exc, requests.exceptions.ChunkedEncodingError):
                    raise RemoteUnavailable(why) from None  # never answered: no point waiting
                if attempt >= attempts:
                    raise (_Dropped if not retry else RemoteUnavailable)(why) from None
                time.sleep(self.retry.wait(attempt - 1))
                continue
            except requests.RequestException as exc:
                raise RemoteError(f"{method} {url} failed: {_short(exc)}") from None
            self._reached = True
            if resp.status_code == 401 and not authed_here and self._authenticate(resp):
                resp.close()
                authed_here = True
                continue
            if resp.status_code in _RETRY_STATUS and resp.status_code not in ok:
                attempt += 1
                retry_after = resp.headers.get("Retry-After")
                detail = f"{method} {url} answered {resp.status_code} {resp.reason}"
                resp.close()
                if attempt >= attempts:
                    raise (_Dropped if not retry else RemoteUnavailable)(detail) from None
                time.sleep(self.retry.wait(attempt - 1, retry_after))
                continue
            if resp.status_code not in ok:
                detail = resp.text[:300] if not kwargs.get("stream") else ""
                resp.close()
                message = f"{method} {url} answered {resp.status_code} {resp.reason}: {detail}".strip()
                if resp.status_code == 401:
                    message += "; " + self._who()
                raise RemoteError(message)
            return resp

    def _tls_message(self, exc: BaseException) -> str:
        trust = ", ".join(self.tls_files) or "none beyond the system's"
        return (f"TLS with registry {self.ref.host} failed: {_short(exc)} (CAs trusted in addition to the system's: "
                f"{trust}; add the registry's CA with REQUESTS_CA_BUNDLE or SSL_CERT_FILE, or as "
                f"certs.d/{self.ref.host}/ca.crt under /etc/docker or $DOCKER_CONFIG)")

    def _who(self) -> str:
        creds = self._given or self._creds
        return f"used {creds}" if creds is not None else "no credentials found: " + hint(self.ref.host)

    def _authenticate(self, resp: requests.Response) -> bool:
        """Answer a 401 challenge: Basic with our credentials, or a Bearer token from the realm."""
        challenge = resp.headers.get("WWW-Authenticate", "")
        scheme, _, params = challenge.partition(" ")
        creds = self._creds_for_challenge()
        if scheme.lower() == "basic":
            if creds is None or not (creds.username or creds.password):
                raise RemoteError(f"registry {self.ref.host} wants credentials: " + hint(self.ref.host))
            token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            with self._lock:
                self._auth_header = f"Basic {token}"
            return True
        if scheme.lower() != "bearer":
            return False
        if creds is not None and creds.registry_token:
            with self._lock:
                self._auth_header = f"Bearer {creds.registry_token}"
            return True
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.pop("realm", None)
        if not realm:
            return False
        fields.setdefault("scope", f"repository:{self.ref.repository}:pull,push")
        try:
            if creds is not None and creds.identity_token:
                # docker login's identity token is an OAuth2 refresh token
                form = dict(fields, grant_type="refresh_token", refresh_token=creds.identity_token,
                            client_id="madcache")
                got = self._session().post(realm, data=form, timeout=self.timeout)
            else:
                auth = (creds.username, creds.password) if creds is not None and creds.username else None
                got = self._session().get(f"{realm}?{urlencode(fields)}", auth=auth, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RemoteUnavailable(f"cannot reach the token service {realm}: {_short(exc)}") from None
        if got.status_code != 200:
            raise RemoteError(f"the token service {realm} answered {got.status_code}: {got.text[:200]}; {self._who()}")
        try:
            data = got.json()
        except ValueError:
            raise RemoteError(f"the token service {realm} did not answer JSON") from None
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RemoteError(f"the token service {realm} returned no token")
        with self._lock:
            self._auth_header = f"Bearer {token}"
        return True

    # -- API -----------------------------------------------------------------------

    def ping(self) -> None:
        self._request("GET", f"{self.origin}/v2/", ok=(200, 401)).close()

    def blob_size(self, digest: str) -> Optional[int]:
        resp = self._request("HEAD", self._url(f"blobs/{digest}"), ok=(200, 404))
        resp.close()
        if resp.status_code == 404:
            return None
        return int(resp.headers.get("Content-Length", "0") or 0)

    def upload_blob(self, digest: str, source: Union[BinaryIO, Callable[[], BinaryIO]], size: int) -> bool:
        """Upload unless present; True if sent.  `source` is a seekable file or an opener of fresh readers."""
        if self.blob_size(digest) is not None:
            return False

        def open_at(offset: int) -> BinaryIO:
            fh = source() if callable(source) else _Borrowed(source)
            skip_to(fh, offset)
            return fh  # type: ignore[return-value]

        self.push_blob(digest, size, open_at)
        return True

    def push_blob(self, digest: str, size: int, open_at: OpenAt) -> None:
        """Send a blob the registry lacks: one PUT, or POST + PATCH chunks + PUT above `upload_chunk`.

        An interrupted chunk resumes from the offset the registry reports; an
        upload the registry forgot (restarted without a fixed http.secret)
        starts over.  Raises RemoteUnavailable when the registry stays away.
        """
        restarts = 0
        while True:
            try:
                self._push_once(digest, size, open_at)
                return
            except _Dropped:
                restarts += 1
                if restarts >= self.retry.attempts:
                    raise RemoteUnavailable(f"registry {self.ref.host} kept failing while {digest[:19]} was sent") \
                        from None
                time.sleep(self.retry.wait(restarts - 1))
                if self.blob_size(digest) == size:  # the last attempt got through after all
                    return

    def _start_upload(self) -> str:
        resp = self._request("POST", self._url("blobs/uploads/"), ok=(202,))
        resp.close()
        location = resp.headers.get("Location")
        if not location:
            raise RemoteError(f"registry {self.ref.host} gave no upload location")
        return urljoin(self._url(""), location)

    def _push_once(self, digest: str, size: int, open_at: OpenAt) -> None:
        location = self._start_upload()
        octet = {"Content-Type": "application/octet-stream"}
        if size <= self.upload_chunk:
            self._put_final(location, digest, size, open_at, 0)
            return
        offset = 0
        failures = 0
        while offset < size:
            n = min(self.upload_chunk, size - offset)
            try:
                resp = self._request(
                    "PATCH", location, ok=(202,), retry=False, data=_Body(open_at, offset, n, self._count_sent),
                    headers=dict(octet, **{"Content-Range": f"{offset}-{offset + n - 1}", "Content-Length": str(n)}))
                resp.close()
                location = urljoin(self._url(""), resp.headers.get("Location") or location)
                offset = _range_end(resp.headers.get("Range"), offset + n)
                failures = 0
            except _Dropped:
                failures += 1
                if failures >= self.retry.attempts:
                    raise
                time.sleep(self.retry.wait(failures - 1))
                location, offset = self._upload_status(location)  # raises _Dropped when the upload is gone
        self._put_final(location, digest, 0, open_at, size)

    def _upload_status(self, location: str) -> Tuple[str, int]:
        """Where an interrupted upload stands (GET on its location: 204 with Range)."""
        try:
            resp = self._request("GET", location, ok=(204,))
        except RemoteUnavailable:
            raise
        except RemoteError as exc:
            raise _Dropped(f"the registry forgot the upload ({exc}); starting it over") from None
        resp.close()
        next_url = urljoin(self._url(""), resp.headers.get("Location") or location)
        return next_url, _range_end(resp.headers.get("Range"), 0)

    def _put_final(self, location: str, digest: str, length: int, open_at: OpenAt, offset: int) -> None:
        sep = "&" if "?" in location else "?"
        self._request(
            "PUT", f"{location}{sep}digest={digest}", ok=(201, 204), retry=False,
            data=_Body(open_at, offset, length, self._count_sent) if length else b"",
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)}).close()

    def download(self, digest: str, size: Optional[int], write: Callable[[bytes], None], offset: int = 0,
                 on_resume: Optional[Callable[[int], None]] = None) -> int:
        """Write a blob's bytes from `offset` to `write`; resume with Range when the connection drops.

        Returns the bytes written.  The caller checks the digest.
        """
        failures = 0
        done = offset
        while True:
            headers = {"Range": f"bytes={done}-"} if done else {}
            resp = self._request("GET", self._url(f"blobs/{digest}"), ok=(200, 206), stream=True, headers=headers)
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
                                            f"{_short(exc)}") from None
                time.sleep(self.retry.wait(failures - 1))
                if on_resume is not None:
                    on_resume(done)
                continue
            finally:
                resp.close()
            if size is not None and done < size:
                failures += 1
                if failures >= self.retry.attempts:
                    raise RemoteUnavailable(f"the download of {digest[:19]} from {self.ref.host} kept ending early")
                time.sleep(self.retry.wait(failures - 1))
                continue
            return done - offset

    def open_blob(self, digest: str) -> requests.Response:
        """A streaming response for a whole blob (no resume; the caller verifies the digest)."""
        return self._request("GET", self._url(f"blobs/{digest}"), stream=True)

    def get_manifest(self, reference: str, accept: Sequence[str] = (MANIFEST_TYPE,)) -> Optional[Tuple[bytes, str]]:
        """(body, digest) or None when the reference does not exist."""
        resp = self._request("GET", self._url(f"manifests/{reference}"), ok=(200, 404),
                             headers={"Accept": ", ".join(accept)})
        if resp.status_code == 404:
            resp.close()
            return None
        body = resp.content
        digest = resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
        return body, digest

    def put_manifest(self, reference: str, body: bytes, media_type: str = MANIFEST_TYPE) -> str:
        resp = self._request("PUT", self._url(f"manifests/{reference}"), ok=(201,), data=body,
                             headers={"Content-Type": media_type})
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
            url = urljoin(self.origin, match.group(1)) if match else None
        return out


def _range_end(header: Optional[str], default: int) -> int:
    """The next offset after a `Range: 0-N` upload status (N inclusive)."""
    match = re.match(r"^(?:bytes=)?0-(\d+)$", (header or "").strip())
    if not match:
        return default
    end = int(match.group(1))
    return end + 1 if end > 0 else (1 if default == 1 else 0)  # "0-0": nothing (or one byte) received


class _Borrowed:
    """A caller's file, read from the start each time and never closed here."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        fh.seek(0)

    def read(self, n: int = -1) -> bytes:
        return self.fh.read(n)

    def seek(self, pos: int) -> None:
        self.fh.seek(pos)

    def close(self) -> None:
        pass


def skip_to(fh: Any, offset: int) -> None:
    """Move a reader `offset` bytes on: seek where it can, else read and drop."""
    if not offset:
        return
    try:
        fh.seek(offset)
        return
    except (AttributeError, OSError, ValueError):
        pass
    left = offset
    while left:
        chunk = fh.read(min(CHUNK, left))
        if not chunk:
            raise RemoteError("the blob is shorter than the offset to resume from")
        left -= len(chunk)


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
