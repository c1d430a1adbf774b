"""Who the registry client is to one registry: credentials, asked for only when challenged, and the
Authorization header a challenge earned.

A 401 is answered with the challenge's scheme: Basic with the credentials,
or Bearer with the registry token a credential carries or a token from the
realm the challenge names (an identity token from `docker login` is sent
there as an OAuth2 refresh token).  Credentials come from the caller or
`credentials.find_credentials` (looked up once, whichever thread is first
challenged) and never appear in a message.  It sends only the token request:
every other request is registry.py's.
"""

from __future__ import annotations

import base64
import re
import threading
from typing import Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import urlencode

import requests

from pytest_madcache.remote.base import RemoteError, RemoteUnavailable
from pytest_madcache.remote.credentials import Credentials, CredentialsError, find_credentials, hint
from pytest_madcache.remote.retry import short_reason
from pytest_madcache.util.refs import RemoteRef

__all__ = ["Auth"]


class Auth:
    """The credentials for one registry repository and the header they earned; thread-safe (it
    shares the client's lock)."""

    def __init__(self, ref: RemoteRef, env: Mapping[str, str], given: Optional[Credentials],
                 lock: threading.RLock) -> None:
        self.ref = ref
        self.env = env
        self._given = given
        self._creds: Optional[Credentials] = None
        self._creds_looked = False
        self._header: Optional[str] = None
        self._lock = lock

    @property
    def header(self) -> Optional[str]:
        """The Authorization header to send, once a challenge was answered."""
        with self._lock:
            return self._header

    def _set(self, header: str) -> bool:
        with self._lock:
            self._header = header
        return True

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

    def who(self) -> str:
        """Which credentials were used (never their secrets), or where to put some."""
        creds = self._given or self._creds
        return f"used {creds}" if creds is not None else "no credentials found: " + hint(self.ref.host)

    def answer(self, resp: requests.Response, session: Callable[[], requests.Session],
               timeout: Tuple[float, float]) -> bool:
        """Answer a 401 challenge: Basic with our credentials, or a Bearer token from the realm.
        False when the challenge is none we can answer."""
        challenge = resp.headers.get("WWW-Authenticate", "")
        scheme, _, params = challenge.partition(" ")
        creds = self._creds_for_challenge()
        if scheme.lower() == "basic":
            if creds is None or not (creds.username or creds.password):
                raise RemoteError(f"registry {self.ref.host} wants credentials: " + hint(self.ref.host))
            token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            return self._set(f"Basic {token}")
        if scheme.lower() != "bearer":
            return False
        if creds is not None and creds.registry_token:
            return self._set(f"Bearer {creds.registry_token}")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.pop("realm", None)
        if not realm:
            return False
        fields.setdefault("scope", f"repository:{self.ref.repository}:pull,push")
        return self._set(f"Bearer {self._token(realm, fields, creds, session(), timeout)}")

    def _token(self, realm: str, fields: Dict[str, str], creds: Optional[Credentials], session: requests.Session,
               timeout: Tuple[float, float]) -> str:
        """A token from the realm's token service, for our credentials (or anonymous)."""
        try:
            if creds is not None and creds.identity_token:
                # docker login's identity token is an OAuth2 refresh token
                form = dict(fields, grant_type="refresh_token", refresh_token=creds.identity_token,
                            client_id="madcache")
                got = session.post(realm, data=form, timeout=timeout)
            else:
                auth = (creds.username, creds.password) if creds is not None and creds.username else None
                got = session.get(f"{realm}?{urlencode(fields)}", auth=auth, timeout=timeout)
        except requests.RequestException as exc:
            raise RemoteUnavailable(f"cannot reach the token service {realm}: {short_reason(exc)}") from None
        if got.status_code != 200:
            raise RemoteError(f"the token service {realm} answered {got.status_code}: {got.text[:200]}; {self.who()}")
        try:
            data = got.json()
        except ValueError:
            raise RemoteError(f"the token service {realm} did not answer JSON") from None
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RemoteError(f"the token service {realm} returned no token")
        return str(token)
