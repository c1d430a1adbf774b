"""Registry authentication: htpasswd basic auth and bearer tokens, against the real registry."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from pytest_madcache.remote.base import RemoteError
from pytest_madcache.remote.oci import Registry
from pytest_madcache.util.refs import RemoteRef

USER, PASSWORD = "ci-bot", "s3cret-" + secrets.token_hex(4)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def basic_registry(registry_factory, tmp_path_factory):
    import bcrypt
    path = tmp_path_factory.mktemp("htpasswd") / "htpasswd"
    path.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
    return registry_factory(f"auth:\n  htpasswd: {{realm: madcache-test, path: {path}}}\n")


class _TokenService:
    """A token endpoint as registries expect: RS256 JWTs with an x5c chain, for one user."""

    def __init__(self, directory) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "madcache-test-token")])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.bundle = directory / "token.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests = 0
        self.refreshes = 0
        self.identity_token = "idt-" + secrets.token_hex(8)
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                service.requests += 1
                auth = self.headers.get("Authorization", "")
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if auth != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                query = parse_qs(urlparse(self.path).query)
                body = json.dumps({"token": service.token(query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802 - OAuth2 refresh-token grant, as for docker login's identity token
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [service.identity_token]:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                service.refreshes += 1
                body = json.dumps({"access_token": service.token(form.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, scopes) -> str:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": sorted(set(actions.split(",")) | {"delete"})})
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {"iss": "madcache-test-issuer", "sub": USER, "aud": "madcache-test", "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64url(signature)}"


@pytest.fixture(scope="module")
def token_registry(registry_factory, tmp_path_factory):
    service = _TokenService(tmp_path_factory.mktemp("token"))
    host = registry_factory(
        "auth:\n  token:\n"
        f"    realm: {service.realm}\n    service: madcache-test\n    issuer: madcache-test-issuer\n"
        f"    rootcertbundle: {service.bundle}\n"
    )
    yield host, service
    service.server.shutdown()


def _exercise(reg: Registry) -> None:
    data = secrets.token_bytes(50_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert reg.upload_blob(digest, io.BytesIO(data), len(data))
    assert reg.open_blob(digest).content == data
    assert reg.tags() == []


def test_basic_auth_with_credentials(basic_registry):
    _exercise(Registry(RemoteRef.parse(f"{basic_registry}/private"), USER, PASSWORD))


def test_basic_auth_without_credentials_says_what_to_set(basic_registry):
    with pytest.raises(RemoteError, match="MADCACHE_REMOTE_USER and MADCACHE_REMOTE_PASSWORD"):
        Registry(RemoteRef.parse(f"{basic_registry}/private")).tags()


def test_wrong_password_is_refused(basic_registry):
    with pytest.raises(RemoteError, match="401"):
        Registry(RemoteRef.parse(f"{basic_registry}/private"), USER, "wrong").tags()


def test_bearer_token_auth(token_registry):
    host, service = token_registry
    reg = Registry.from_env(RemoteRef.parse(f"{host}/team/models"),
                            {"MADCACHE_REMOTE_USER": USER, "MADCACHE_REMOTE_PASSWORD": PASSWORD})
    _exercise(reg)
    assert service.requests >= 1


def test_bearer_token_refused_without_credentials(token_registry):
    host, _ = token_registry
    with pytest.raises(RemoteError, match="token service .* answered 401"):
        Registry(RemoteRef.parse(f"{host}/team/models")).tags()


def test_identity_token_from_docker_login_is_exchanged_at_the_token_service(token_registry, tmp_path):
    """`docker login` against a token service stores an identity token (an OAuth2 refresh token)."""
    host, service = token_registry
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"auths": {host: {"auth": "", "identitytoken": service.identity_token}}}))
    reg = Registry.from_env(RemoteRef.parse(f"{host}/team/models"), {"DOCKER_CONFIG": str(config.parent)})
    _exercise(reg)
    assert service.refreshes >= 1


def test_a_base_images_digest_asked_directly_uses_the_docker_login_of_its_registry(basic_registry, tmp_path,
                                                                                 monkeypatch):
    """Base resolution where the engine cannot ask (Podman) finds the registry's credentials as the
    remote does: here a credential helper named by `credHelpers`, not MADCACHE_REMOTE_USER."""
    import os
    import stat

    from pytest_madcache.remote.registry import registry_digest
    from tests.test_bases_engine import put_image

    digest = put_image(basic_registry, "team/base", "1", b"base", USER, PASSWORD)

    for var in ("MADCACHE_REMOTE_USER", "MADCACHE_REMOTE_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nobody"))
    assert registry_digest(f"{basic_registry}/team/base:1") is None  # no login: refused, keyed by the tag

    bin_dir, docker = tmp_path / "bin", tmp_path / "docker"
    bin_dir.mkdir()
    docker.mkdir()
    helper = bin_dir / "docker-credential-madcachetest"
    helper.write_text(f"#!/bin/sh\nread server\necho '{json.dumps({'Username': USER, 'Secret': PASSWORD})}'\n")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    (docker / "config.json").write_text(json.dumps({"credHelpers": {basic_registry: "madcachetest"}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert registry_digest(f"{basic_registry}/team/base:1") == digest
