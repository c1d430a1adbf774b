"""Credentials are found where Docker finds them, in Docker's order, and never shown."""

from __future__ import annotations

import base64
import json

import pytest

from pytest_madcache.remote.credentials import CredentialsError, find_credentials
from tests.registries import credential_helper, docker_login

HOST = "127.0.0.1:5999"


def env_for(tmp_path, **more):
    return {"HOME": str(tmp_path / "home"), "DOCKER_CONFIG": str(tmp_path / "docker"),
            "PATH": str(tmp_path / "bin") + ":/usr/bin:/bin", **more}


def test_madcache_variables_come_first(tmp_path):
    docker_login(tmp_path / "docker", HOST, "from-config", "pw1")
    creds = find_credentials(HOST, env_for(tmp_path, MADCACHE_REMOTE_USER="bot", MADCACHE_REMOTE_PASSWORD="pw2"))
    assert (creds.username, creds.password) == ("bot", "pw2")
    assert creds.source == "MADCACHE_REMOTE_USER/MADCACHE_REMOTE_PASSWORD"


@pytest.mark.parametrize("server", [HOST, f"https://{HOST}", f"http://{HOST}/v2/", f"https://{HOST}/v1/"])
def test_docker_login_entries_under_any_spelling_of_the_server(tmp_path, server):
    docker_login(tmp_path / "docker", server, "ci-bot", "p:ss:word")
    creds = find_credentials(HOST, env_for(tmp_path))
    assert (creds.username, creds.password) == ("ci-bot", "p:ss:word"), "split at the first colon, as Docker does"
    assert str(tmp_path / "docker" / "config.json") in creds.source


def test_default_config_is_under_home(tmp_path):
    docker_login(tmp_path / "home" / ".docker", HOST, "u", "p")
    env = env_for(tmp_path)
    del env["DOCKER_CONFIG"]
    assert find_credentials(HOST, env).username == "u"


def test_no_config_or_no_entry_is_no_credentials(tmp_path):
    assert find_credentials(HOST, env_for(tmp_path)) is None
    docker_login(tmp_path / "docker", "127.0.0.1:1", "u", "p")
    assert find_credentials(HOST, env_for(tmp_path)) is None


def test_identity_and_registry_tokens(tmp_path):
    path = tmp_path / "docker" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"auths": {HOST: {"identitytoken": "refresh-me"}, "other:1": {"registrytoken": "tok"}}}))
    creds = find_credentials(HOST, env_for(tmp_path))
    assert creds.identity_token == "refresh-me" and not creds.password
    assert find_credentials("other:1", env_for(tmp_path)).registry_token == "tok"


def test_cred_helpers_then_creds_store(tmp_path):
    credential_helper(tmp_path / "bin", "mine", HOST, "helper-user", "helper-secret")
    credential_helper(tmp_path / "bin", "store", HOST, "store-user", "store-secret")
    docker_login(tmp_path / "docker", HOST, "file-user", "file-pw")
    path = tmp_path / "docker" / "config.json"
    data = json.loads(path.read_text())
    data["credsStore"] = "store"
    path.write_text(json.dumps(data))
    creds = find_credentials(HOST, env_for(tmp_path))
    assert (creds.username, creds.password) == ("store-user", "store-secret"), "credsStore wins over auths"
    data["credHelpers"] = {HOST: "mine"}
    path.write_text(json.dumps(data))
    creds = find_credentials(HOST, env_for(tmp_path))
    assert (creds.username, creds.password) == ("helper-user", "helper-secret"), "credHelpers wins over credsStore"
    assert (tmp_path / "bin" / "mine.calls").read_text() == f"{HOST}\n", "the helper is asked for host:port"


def test_a_helper_that_has_nothing_is_no_credentials(tmp_path):
    credential_helper(tmp_path / "bin", "store", "elsewhere:1", "u", "s")
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"credsStore": "store"}))
    assert find_credentials(HOST, env_for(tmp_path)) is None


def test_a_missing_helper_is_named(tmp_path):
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"credsStore": "desktop"}))
    with pytest.raises(CredentialsError, match="docker-credential-desktop .* is not on PATH"):
        find_credentials(HOST, env_for(tmp_path))


def test_a_broken_config_is_named_without_its_content(tmp_path):
    (tmp_path / "docker").mkdir()
    secret = base64.b64encode(b"user:hunter2").decode()
    (tmp_path / "docker" / "config.json").write_text('{"auths": {"%s": {"auth": "%s"}' % (HOST, secret))
    with pytest.raises(CredentialsError) as info:
        find_credentials(HOST, env_for(tmp_path))
    assert "not valid JSON" in str(info.value) and secret not in str(info.value) and "hunter2" not in str(info.value)


def test_secrets_never_show_in_repr_or_str(tmp_path):
    docker_login(tmp_path / "docker", HOST, "bot", "hunter2", identitytoken="tok-123")
    creds = find_credentials(HOST, env_for(tmp_path))
    for text in (repr(creds), str(creds)):
        assert "hunter2" not in text and "tok-123" not in text
    assert "bot" in str(creds)
