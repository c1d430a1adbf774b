"""Trust for registry connections, as Docker has it.

The CAs a connection to registry `host[:port]` trusts are the system's, the
bundles named by `REQUESTS_CA_BUNDLE`, `SSL_CERT_FILE`, `CURL_CA_BUNDLE` and
`SSL_CERT_DIR`, and the `*.crt` files of Docker's per-registry directories
`certs.d/<host[:port]>/` (a `*.cert` + `*.key` pair there is the client
certificate), all merged, as Docker merges certs.d with the system's roots.
It builds SSL contexts and must not make connections or read credentials.
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path
from typing import Any, List, Mapping, Tuple

import requests
from requests.adapters import HTTPAdapter

from pytest_madcache.remote.credentials import docker_config_dir

__all__ = ["TLSSetupError", "certs_dirs", "tls_context", "TLSAdapter", "not_tls"]


class TLSSetupError(RuntimeError):
    """A CA bundle or certificate named by the configuration cannot be used."""


def certs_dirs(env: Mapping[str, str]) -> List[Path]:
    """Docker's per-registry certificate directories, in the order they are read:
    `$DOCKER_CONFIG/certs.d` (default ~/.docker/certs.d, Docker Desktop's), the
    rootless daemon's `$XDG_CONFIG_HOME/docker/certs.d` (default ~/.config/...),
    and the daemon's `/etc/docker/certs.d`."""
    home = env.get("HOME") or os.path.expanduser("~")
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    out = [docker_config_dir(env) / "certs.d", Path(xdg) / "docker" / "certs.d", Path("/etc/docker/certs.d")]
    return list(dict.fromkeys(out))


def tls_context(host: str, env: Mapping[str, str]) -> Tuple[ssl.SSLContext, List[str]]:
    """The trust for `host`: system CAs + the usual variables + certs.d; and the files used (for messages)."""
    ctx = ssl.create_default_context()
    used: List[str] = []
    try:
        import certifi  # what requests trusts by default

        ctx.load_verify_locations(certifi.where())
    except (ImportError, OSError, ssl.SSLError):
        pass
    for var in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        path = env.get(var, "").strip()
        if path:
            try:
                if os.path.isdir(path):
                    ctx.load_verify_locations(capath=path)
                else:
                    ctx.load_verify_locations(cafile=path)
            except (OSError, ssl.SSLError) as exc:
                raise TLSSetupError(f"cannot read the CA bundle {path} named by {var}: {exc}") from None
            used.append(f"{var}={path}")
    cert_dir = env.get("SSL_CERT_DIR", "").strip()
    if cert_dir and os.path.isdir(cert_dir):
        ctx.load_verify_locations(capath=cert_dir)
    for base in certs_dirs(env):
        here = base / host
        if not here.is_dir():
            continue
        for crt in sorted(here.glob("*.crt")):
            try:
                ctx.load_verify_locations(cafile=str(crt))
            except (OSError, ssl.SSLError) as exc:
                raise TLSSetupError(f"cannot read the CA certificate {crt}: {exc}") from None
            used.append(str(crt))
        for cert in sorted(here.glob("*.cert")):
            key = cert.with_suffix(".key")
            if key.is_file():
                try:
                    ctx.load_cert_chain(str(cert), str(key))
                except (OSError, ssl.SSLError) as exc:
                    raise TLSSetupError(f"cannot use the client certificate {cert}: {exc}") from None
                used.append(str(cert))
                break
    return ctx, used


class TLSAdapter(HTTPAdapter):
    """Connections whose trust is our SSLContext, not requests' default bundle."""

    def __init__(self, ctx: ssl.SSLContext, **kwargs: Any) -> None:
        self._ctx = ctx
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._ctx
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["ssl_context"] = self._ctx
        return super().proxy_manager_for(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None


def not_tls(exc: BaseException) -> bool:
    """An HTTPS attempt failed because the server does not speak TLS (not because its certificate is untrusted)."""
    text = str(exc)
    return isinstance(exc, requests.exceptions.SSLError) and not re.search(
        r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|hostname|doesn't match|IP address mismatch", text)
