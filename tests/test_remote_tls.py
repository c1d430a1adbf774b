"""A registry as teams run it: HTTPS with a private CA, htpasswd auth, credentials from `docker login`.

The CA is made here; the registry is Debian's docker-registry with TLS and
bcrypt htpasswd; the credentials are written to a temporary
$DOCKER_CONFIG/config.json as `docker login` writes them, or given by a
credential helper script on PATH.  Crafted entries, no engine.
"""

from __future__ import annotations

import base64
import os

import pytest

from pytest_madcache.remote.oci import Registry, RemoteCache, RemoteError, RemoteRef
from pytest_madcache.store import Store
from tests.registries import LocalRegistry, credential_helper, docker_login, make_pki
from tests.remote_helpers import put_entry, text_like

USER, PASSWORD = "ci-bot", "pw-" + os.urandom(6).hex()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_registry(pki, tmp_path_factory, registry_factory):  # registry_factory: docker-registry is installed
    reg = LocalRegistry(tmp_path_factory.mktemp("tls-registry"), pki=pki, users={USER: PASSWORD}).start()
    yield reg
    reg.stop()


def base_env(tmp_path, **more):
    """A user's environment: own HOME and DOCKER_CONFIG, nothing from the test runner's."""
    return {"HOME": str(tmp_path / "home"), "DOCKER_CONFIG": str(tmp_path / "docker"),
            "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", **more}


def round_trip(address: str, repo: str, env, tmp_path) -> RemoteCache:
    """Machine A pushes an entry, machine B fetches it; both through `env` only."""
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    entry = put_entry(a, repo, [text_like(400_000), os.urandom(300_000)])
    pusher = RemoteCache(Registry.from_env(RemoteRef.parse(f"{address}/{repo}"), env), state_dir=tmp_path / "state")
    assert pusher.push(entry, a.open_blob) > 0 and not pusher.disabled
    fetcher = RemoteCache(Registry.from_env(RemoteRef.parse(f"{address}/{repo}"), env), have_blob=b.has_blob)
    found = fetcher.find(entry.key)
    assert found is not None, fetcher.disabled
    got, fetched = b.import_entry(found.meta, found.open_blob)
    assert got.id == entry.id and fetched == sum(entry.sizes.values()) and b.verify().ok
    return fetcher


def test_https_with_a_private_ca_and_docker_login_credentials(tls_registry, pki, tmp_path):
    docker_login(tmp_path / "docker", tls_registry.address, USER, PASSWORD)
    env = base_env(tmp_path, REQUESTS_CA_BUNDLE=str(pki.ca))
    rc = round_trip(tls_registry.address, "login", env, tmp_path)
    assert rc.registry.origin == f"https://{tls_registry.address}", "a loopback registry that speaks TLS gets TLS"


@pytest.mark.parametrize("where", ["DOCKER_CONFIG", "XDG_CONFIG_HOME", "SSL_CERT_FILE"])
def test_the_ca_from_certs_d_or_ssl_cert_file(tls_registry, pki, tmp_path, where):
    docker_login(tmp_path / "docker", tls_registry.address, USER, PASSWORD)
    env = base_env(tmp_path)
    if where == "SSL_CERT_FILE":
        env["SSL_CERT_FILE"] = str(pki.ca)
    else:
        base = tmp_path / "docker" if where == "DOCKER_CONFIG" else tmp_path / "xdg" / "docker"
        env.setdefault("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
        (base / "certs.d" / tls_registry.address).mkdir(parents=True)
        (base / "certs.d" / tls_registry.address / "ca.crt").write_bytes(pki.ca.read_bytes())
    round_trip(tls_registry.address, f"ca-{where.lower().replace('_', '-')}", env, tmp_path)


def test_a_credential_helper_on_path(tls_registry, pki, tmp_path):
    credential_helper(tmp_path / "bin", "madcachetest", tls_registry.address, USER, PASSWORD)
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text('{"credsStore": "madcachetest"}')
    round_trip(tls_registry.address, "helper", base_env(tmp_path, REQUESTS_CA_BUNDLE=str(pki.ca)), tmp_path)
    assert tls_registry.address in (tmp_path / "bin" / "madcachetest.calls").read_text()


def test_an_untrusted_certificate_is_a_clear_error_and_never_a_downgrade(tls_registry, tmp_path):
    docker_login(tmp_path / "docker", tls_registry.address, USER, PASSWORD)
    reg = Registry.from_env(RemoteRef.parse(f"{tls_registry.address}/untrusted"), base_env(tmp_path))
    with pytest.raises(RemoteError) as info:
        reg.tags()
    assert "TLS with registry" in str(info.value) and "REQUESTS_CA_BUNDLE" in str(info.value)
    assert "certs.d" in str(info.value)
    assert reg.origin.startswith("https://"), "a certificate problem never falls back to plain HTTP"


def test_plain_http_only_for_loopback_that_does_not_speak_tls(registry, tmp_path):
    reg = Registry.from_env(RemoteRef.parse(f"{registry}/plain"), base_env(tmp_path))
    assert reg.tags() == [] and reg.origin == f"http://{registry}"
    explicit = Registry.from_env(RemoteRef.parse(f"https://{registry}/plain"), base_env(tmp_path))
    with pytest.raises(RemoteError, match="TLS"):
        explicit.tags()
    assert RemoteRef.parse("registry.example.com/team/cache").scheme is None
    assert RemoteRef.parse("http://ci-cache:5000/m").scheme == "http"


def test_no_credentials_says_docker_login(tls_registry, pki, tmp_path):
    reg = Registry.from_env(RemoteRef.parse(f"{tls_registry.address}/anon"),
                            base_env(tmp_path, REQUESTS_CA_BUNDLE=str(pki.ca)))
    with pytest.raises(RemoteError, match=f"run `docker login {tls_registry.address}`"):
        reg.tags()


def test_credentials_are_never_logged_or_stored(tls_registry, pki, tmp_path):
    secret_forms = [PASSWORD.encode(), base64.b64encode(f"{USER}:{PASSWORD}".encode())]
    docker_login(tmp_path / "docker", tls_registry.address, USER, "wrong-" + PASSWORD)
    env = base_env(tmp_path, REQUESTS_CA_BUNDLE=str(pki.ca))
    messages = []
    rc = RemoteCache(Registry.from_env(RemoteRef.parse(f"{tls_registry.address}/nolog"), env), log=messages.append)
    assert rc.find("0" * 64) is None
    assert messages and "401" in messages[0] and f"from auths in {tmp_path / 'docker'}" in messages[0]
    assert not any(f in m.encode() for m in messages for f in secret_forms + [b"wrong-"])

    docker_login(tmp_path / "docker", tls_registry.address, USER, PASSWORD)
    round_trip(tls_registry.address, "nolog", env, tmp_path)
    for root in (tmp_path / "a", tmp_path / "b", tmp_path / "state", tls_registry.root / "data"):
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert not any(f in data for f in secret_forms), f"a credential was written to {path}"
