"""Registries for the remote-cache tests and benchmarks, as teams run them.

`LocalRegistry` is Debian's `docker-registry` (the CNCF distribution server)
on a port of its own, optionally with TLS from a private CA made here and
htpasswd (bcrypt) auth; it can be killed and started again on the same port
and storage, as a registry that crashes mid-transfer.  `docker_login` writes
credentials where and how `docker login` does; `credential_helper` puts a
`docker-credential-NAME` script on a PATH directory.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

import requests


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class PKI:
    """A private CA and a server certificate it signed."""

    ca: Path  # the CA certificate (PEM): what clients must trust
    cert: Path
    key: Path


def make_pki(directory: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> PKI:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"madcache test CA {secrets.token_hex(3)}")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pki = PKI(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return pki


def htpasswd_line(user: str, password: str) -> str:
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"


class LocalRegistry:
    """One `docker-registry serve` on `host:port`; kill() and start() keep port and storage.

    `http.secret` is fixed, so upload sessions survive a restart, as on a
    registry deployed with one.
    """

    def __init__(self, root: Path, host: str = "127.0.0.1", port: Optional[int] = None, pki: Optional[PKI] = None,
                 users: Optional[Dict[str, str]] = None, netns: Optional[str] = None) -> None:
        self.root = root
        self.host = host
        self.port = port or free_port(host if netns is None else "127.0.0.1")
        self.pki = pki
        self.users = dict(users or {})
        self.netns = netns
        self.proc: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        lines = [
            "version: 0.1",
            "log: {level: warn}",
            "storage:",
            f"  filesystem: {{rootdirectory: {root / 'data'}}}",
            "  delete: {enabled: true}",
            "http:",
            f"  addr: '{host}:{self.port}'",
            f"  secret: {secrets.token_hex(16)}",
        ]
        if pki is not None:
            lines += ["  tls:", f"    certificate: {pki.cert}", f"    key: {pki.key}"]
        if users:
            path = root / "htpasswd"
            path.write_text("".join(htpasswd_line(u, p) for u, p in users.items()))
            lines += ["auth:", f"  htpasswd: {{realm: madcache-test, path: {path}}}"]
        self.config = root / "config.yml"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.pki is not None else "http"

    def start(self, timeout: float = 30.0) -> "LocalRegistry":
        cmd = ["docker-registry", "serve", str(self.config)]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        log = open(self.root / "registry.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.answers():
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {(self.root / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def answers(self) -> bool:
        try:
            # any HTTP answer means it listens (a TLS port answers 400 to plain HTTP)
            requests.get(f"http://{self.address}/v2/", timeout=1)
            return True
        except requests.RequestException:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash: no graceful shutdown, connections reset.  Safe from any thread."""
        with self._lock:
            proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def __enter__(self) -> "LocalRegistry":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def docker_login(config_dir: Path, server: str, user: str, password: str, **extra: str) -> Path:
    """Write `auths` as `docker login SERVER` does (base64 user:password under the server's name)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "config.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    entry = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode(), **extra}
    data.setdefault("auths", {})[server] = entry
    path.write_text(json.dumps(data, indent="\t"))
    os.chmod(path, 0o600)
    return path


HELPER = """#!/bin/sh
# A docker credential helper for one registry, as docker-credential-* helpers answer `get`.  `list` (which
# the Docker SDK asks before a classic build, to send every credential along) lists none, so only our own
# lookups reach `get` and the calls file.
if [ "$1" = list ]; then echo "{{}}"; exit 0; fi
read server
echo "$server" >> "{calls}"
if [ "$1" != get ]; then echo "unsupported" >&2; exit 1; fi
if [ "$server" = "{server}" ]; then
  printf '{{"ServerURL":"%s","Username":"%s","Secret":"%s"}}\\n' "$server" "{user}" "{secret}"
  exit 0
fi
echo "credentials not found in native keychain"
exit 1
"""


def credential_helper(bin_dir: Path, name: str, server: str, user: str, secret: str) -> Path:
    """`docker-credential-NAME` in `bin_dir`; it appends each server it is asked about to NAME.calls."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text(HELPER.format(calls=bin_dir / f"{name}.calls", server=server, user=user, secret=secret))
    path.chmod(0o755)
    return path
