"""Base images in the key, on a real engine: a rebuilt or re-pushed base under the same tag.

The bases are built here from busybox (no Docker Hub): `tag` mode keeps hitting after the base
is rebuilt (today's behaviour, documented), `local` notices the new image id, `registry`
notices the new digest a loopback registry serves, without pulling the base first.
"""

from __future__ import annotations

import io
import json
import secrets
from pathlib import Path

import pytest

from pytest_madcache.cli import main
from tests.plugin_helpers import remove_images

pytestmark = pytest.mark.engine

SUITE = """
import pytest

@pytest.mark.model("{name}", context="ctx"{mark})
def test_model(model_run):
    assert model_run().ok
"""

MISS = "*Cache miss. Will build Docker image and save to cache.*"
HIT = "*Cache hit!*"


def _model(pytester, name: str, base: str, mark: str = "") -> None:
    ctx = pytester.path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(f"ARG BASE={base}\nFROM $BASE AS model\nCMD [\"true\"]\n")
    pytester.makepyfile(SUITE.format(name=name, mark=mark))


def _run(pytester, cache: Path, *extra: str):
    result = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(cache), *extra)
    result.assert_outcomes(passed=1)
    return result


@pytest.mark.parametrize("mode, after_rebuild", [("local", MISS), ("tag", HIT)])
def test_rebuilding_the_base_under_the_same_tag(pytester, engine, images, tmp_path, mode, after_rebuild):
    name = f"bases{secrets.token_hex(3)}"
    base = f"madcache-base-{secrets.token_hex(3)}:1"
    images.make({"version.txt": b"1"}, tag=base)
    _model(pytester, name, base, mark=f", base_key={mode!r}")
    try:
        _run(pytester, tmp_path / "c").stdout.fnmatch_lines([MISS])
        _run(pytester, tmp_path / "c").stdout.fnmatch_lines([HIT])
        images.make({"version.txt": b"2"}, tag=base)  # same tag, another image
        third = _run(pytester, tmp_path / "c")
        third.stdout.fnmatch_lines([after_rebuild])
        assert "could not be asked" not in third.stdout.str()
    finally:
        remove_images(engine, f"madcache.model={name}")


def _push(engine, ref: str) -> str:
    repo, tag = ref.rsplit(":", 1)
    log = engine.client.images.push(repo, tag=tag)
    assert '"error"' not in log, log
    return ref


def test_a_new_base_pushed_under_the_same_tag_misses_without_a_pull(pytester, engine, images, registry, tmp_path):
    name = f"bases{secrets.token_hex(3)}"
    base = f"{registry}/base-{secrets.token_hex(3)}:1"
    images.make({"version.txt": b"1"}, tag=base)
    _push(engine, base)
    _model(pytester, name, base)
    try:
        _run(pytester, tmp_path / "c", "--cache-base-key", "registry").stdout.fnmatch_lines([MISS])
        _run(pytester, tmp_path / "c", "--cache-base-key", "registry").stdout.fnmatch_lines([HIT])

        images.make({"version.txt": b"2"}, tag=base)
        _push(engine, base)
        engine.remove(base)  # a fresh runner: the engine does not hold the base
        out = io.StringIO()
        assert main(["key", "--cache-dir", str(tmp_path / "c"), "--image", f"ci-{name}", "--tag", name,
                     "--context", str(pytester.path / "ctx"), "--cache-base-key", "registry", "--json"],
                    env={}, stdout=out) == 0
        answer = json.loads(out.getvalue())
        assert answer["entry"] is None and answer["nearest"]["differs_in"] == ["bases"]
        assert [b["via"] for b in answer["bases"]] == ["digest-direct" if engine.info.product == "podman" else "digest"]
        assert engine.image_id(base) is None, "resolving the base pulled it"

        third = _run(pytester, tmp_path / "c", "--cache-base-key", "registry")
        third.stdout.fnmatch_lines([MISS])
        assert "could not be asked" not in third.stdout.str()

        from pytest_madcache.store import Store

        entry = next(e for e in Store(tmp_path / "c").entries() if e.key == answer["key"])  # the third run's
        info = io.StringIO()
        assert main(["info", entry.id, "--cache-dir", str(tmp_path / "c")], env={}, stdout=info) == 0
        assert f"  {base} -> {answer['bases'][0]['value']} (the registry's digest, asked " in info.getvalue()
    finally:
        remove_images(engine, f"madcache.model={name}")


def put_image(registry: str, repository: str, tag: str, content: bytes, user: str = "", password: str = "") -> str:
    """An image manifest (a config, no layers) under `tag`, written straight to the registry (as USER
    when it asks for a login); its digest."""
    import hashlib

    from pytest_madcache.remote.oci import CONFIG_TYPE, MANIFEST_TYPE, Registry
    from pytest_madcache.util.refs import RemoteRef

    reg = Registry(RemoteRef.parse(f"{registry}/{repository}"), user or None, password or None)
    config = json.dumps({"architecture": "amd64", "os": "linux", "comment": content.decode(),
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    reg.upload_blob(digest, io.BytesIO(config), len(config))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "layers": [],
                           "config": {"mediaType": CONFIG_TYPE, "digest": digest, "size": len(config)}}).encode()
    return reg.put_manifest(tag, manifest)


def test_registry_mode_takes_the_engines_endpoint_or_asks_the_registry_directly(engine, registry):
    """Docker answers GET /distribution/{name}/json; Podman lacks it, so the registry itself is asked."""
    from pytest_madcache.core.bases import Base, BaseResolver
    from pytest_madcache.remote.registry import registry_digest

    repository = f"direct-{secrets.token_hex(3)}"
    base = Base(f"{registry}/{repository}:1", None, "0")
    first = put_image(registry, repository, "1", b"one")
    (resolved,) = BaseResolver(engine, direct=registry_digest).resolve([base], "registry")
    expected_path = "digest-direct" if engine.info.product == "podman" else "digest"
    assert (resolved.via, resolved.value) == (expected_path, first)

    second = put_image(registry, repository, "1", b"two")  # a new image under the same tag
    (again,) = BaseResolver(engine, direct=registry_digest).resolve([base], "registry")  # a new session
    assert second != first and (again.via, again.value) == (expected_path, second)
    assert engine.image_id(base.reference) is None  # asked, never pulled


def test_registry_mode_when_the_registry_cannot_be_asked_warns_once_and_keys_on_the_tag(pytester, engine, images,
                                                                                        tmp_path):
    """docs/cache.md: `registry` where the registry cannot be asked: one warning, the tag, and the
    tests go on (a miss, then a hit on the tag).  The base is in the engine; its registry is not there."""
    name = f"bases{secrets.token_hex(3)}"
    base = f"127.0.0.1:9/base-{secrets.token_hex(3)}:1"  # nothing listens on port 9
    images.make({"version.txt": b"1"}, tag=base)
    _model(pytester, name, base)
    try:
        for expected in (MISS, HIT):
            result = _run(pytester, tmp_path / "c", "--cache-base-key", "registry")
            result.stdout.fnmatch_lines([expected])
            out = result.stdout.str()  # one warning, which madcache's summary repeats once
            assert "1 passed, 1 warning in" in out, out
            assert out.count(f"MadcacheWarning: madcache: base image {base}: the registry could not be asked") == 1, out
            assert out.count(f"\nwarning: madcache: base image {base}: the registry could not be asked") == 1, out
        assert engine.image_id(base) is not None
    finally:
        remove_images(engine, f"madcache.model={name}")
