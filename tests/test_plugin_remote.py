"""`pytest --enable-cache --cache-remote REGISTRY/REPO`: a second machine hits through the registry."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from pytest_madcache.store import Store
from tests.plugin_helpers import remove_images, tiny_context


SUITE = """
import pytest

@pytest.mark.engine
@pytest.mark.model("{name}", context="ctx")
def test_model(model_run):
    result = model_run()
    assert result.ok and result.performance == 7.0
"""


@pytest.fixture
def remote_model(engine, pytester):
    name = f"remote{secrets.token_hex(3)}"
    tiny_context(pytester.path / "ctx", ['CMD ["sh", "-c", "echo performance: 7 it/s"]'],
                 files={"weights.txt": secrets.token_hex(5000)})
    pytester.makepyfile(SUITE.format(name=name))
    yield name
    remove_images(engine, f"madcache.model={name}")


@pytest.mark.engine
def test_second_machine_hits_through_the_registry(pytester, remote_model, engine, registry, tmp_path):
    remote = f"{registry}/plugin-{secrets.token_hex(3)}"
    first = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(tmp_path / "a"),
                               "--cache-remote", remote)
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*Cache miss. Will build Docker image and save to cache.*"])

    # "Another machine": an empty cache directory and an engine without the image.
    remove_images(engine, f"madcache.model={remote_model}")
    second = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(tmp_path / "b"),
                                "--cache-remote", remote)
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines(["*Cache hit! Loading Docker image from cache: run_*"])
    assert "Cache miss" not in second.stdout.str()
    assert [e.id for e in Store(tmp_path / "b").entries()] == [e.id for e in Store(tmp_path / "a").entries()]


@pytest.mark.engine
def test_unreachable_registry_warns_once_and_tests_go_on(pytester, remote_model, tmp_path, monkeypatch):
    monkeypatch.setenv("MADCACHE_REMOTE", "127.0.0.1:9/nowhere")
    result = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(tmp_path / "c"))
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert out.count("remote cache 127.0.0.1:9/nowhere unavailable") == 1
    assert "using the local cache only" in out
    assert len(Store(tmp_path / "c").entries()) == 1


@pytest.mark.engine
def test_a_session_that_only_hits_completes_the_push_an_earlier_run_left(pytester, remote_model, tmp_path):
    from tests.registries import LocalRegistry

    reg = LocalRegistry(tmp_path / "registry")  # not started yet: the first run's push fails
    args = ["-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(tmp_path / "a"),
            "--cache-remote", f"{reg.address}/late"]
    first = pytester.runpytest(*args)
    first.assert_outcomes(passed=1)
    assert "unavailable" in first.stdout.str()
    entry = Store(tmp_path / "a").entries()[0]
    with reg:
        second = pytester.runpytest(*args)  # the engine has the image: a hit, nothing built or pushed by a test
        second.assert_outcomes(passed=1)
        out = second.stdout.str()
        assert "Cache miss" not in out
        assert f"Completed the push of {entry.id} to {reg.address}/late, which an earlier run left unfinished" in out
        second.stdout.fnmatch_lines(["remote cache: fetched 0 B, pushed *"])
        third = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(tmp_path / "b"),
                                   "--cache-remote", f"{reg.address}/late")  # another machine now hits through it
        third.assert_outcomes(passed=1)
        assert [e.id for e in Store(tmp_path / "b").entries()] == [entry.id]


def test_bad_remote_value_is_a_usage_error(pytester, tmp_path):
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--enable-cache", "--cache-dir", str(tmp_path / "c"), "--cache-remote", "no-repo")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid value 'no-repo' for remote from option --cache-remote*"])


@pytest.fixture(scope="module")
def tls_registry(registry_factory, tmp_path_factory):
    """HTTPS with a CA made here, htpasswd (bcrypt) auth: a registry as a team runs it."""
    from tests.registries import LocalRegistry, make_pki

    pki = make_pki(tmp_path_factory.mktemp("pki"))
    reg = LocalRegistry(tmp_path_factory.mktemp("tls"), pki=pki, users={"ci-bot": "pw-" + secrets.token_hex(6)})
    reg.start()
    yield reg
    reg.stop()


@pytest.mark.engine
@pytest.mark.parametrize("login", ["docker-login", "credential-helper"])
def test_second_machine_hits_through_https_with_only_docker_credentials(pytester, remote_model, engine, tls_registry,
                                                                        tmp_path, monkeypatch, login):
    """The registry's CA in REQUESTS_CA_BUNDLE; credentials only where `docker login` (or a credential
    helper on PATH) keeps them; no MADCACHE_REMOTE_USER/PASSWORD."""
    import json
    import os

    from tests.registries import credential_helper, docker_login

    user, password = "ci-bot", tls_registry.users["ci-bot"]
    config = tmp_path / "docker-config"
    config.mkdir()
    old = os.environ.get("DOCKER_CONFIG")
    if old and (Path(old) / "cli-plugins").is_dir():  # keep an engine kind's buildx plugin
        (config / "cli-plugins").symlink_to(Path(old) / "cli-plugins")
    if login == "docker-login":
        docker_login(config, tls_registry.address, user, password)
    else:
        credential_helper(tmp_path / "bin", "madcachetest", tls_registry.address, user, password)
        (config / "config.json").write_text(json.dumps({"credsStore": "madcachetest"}))
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_registry.pki.ca))
    for var in ("MADCACHE_REMOTE_USER", "MADCACHE_REMOTE_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    remote = f"{tls_registry.address}/{login}-{secrets.token_hex(3)}"  # no scheme: HTTPS, as for any host

    first = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(tmp_path / "a"),
                               "--cache-remote", remote)
    first.assert_outcomes(passed=1)
    assert "Warning" not in first.stdout.str(), first.stdout.str()
    remove_images(engine, f"madcache.model={remote_model}")
    second = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(tmp_path / "b"),
                                "--cache-remote", remote)
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines(["*Cache hit! Loading Docker image from cache: run_*"])
    assert "Cache miss" not in second.stdout.str() and "Warning" not in second.stdout.str()
    if login == "credential-helper":
        assert tls_registry.address in (tmp_path / "bin" / "madcachetest.calls").read_text()

