"""Security: secrets never in plaintext, private caches by default, shared caches on request,
validation of what others could have written, symlink-proof locks, builds' temp files in the cache."""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import stat
import tarfile
from pathlib import Path

import pytest

from pytest_madcache.core.images import EngineInfo, ImageInfo
from pytest_madcache.store import Entry, Store, StoreError
from pytest_madcache.store.imageformat import Descriptor
from tests.plugin_helpers import remove_images, tiny_context

SECRET_ARG = "s3cr3t-BUILDARG-" + secrets.token_hex(4)
SECRET_CTX = "ctx-SECRET-" + secrets.token_hex(4)


def _all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.engine
def test_secrets_never_in_plaintext_in_the_cache_or_the_output(pytester, engine, tmp_path) -> None:
    name = f"sec{secrets.token_hex(3)}"
    tiny_context(pytester.path, ["ARG TOKEN", "ARG API_KEY"])
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.model("{name}", build_args={{"TOKEN": "{SECRET_ARG}"}}, secrets=["TOKEN", "api_key"])
        def test_m(model_image):
            pass
    """)
    cache = tmp_path / "cache"
    try:
        ctx = "{'api_key': '%s', 'docker_build_arg': {'API_KEY': 'x'}}" % SECRET_CTX
        result = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(cache),
                                    "--additional-context", ctx, "-v")
        result.assert_outcomes(passed=1)
        files = [p for p in cache.rglob("*") if p.is_file()]
        data = _all_bytes(cache)
        out = result.stdout.str()
        from pytest_madcache.cli import main

        buf = io.StringIO()
        entry = Store(cache).entries()[0]
        main(["info", entry.id, "--cache-dir", str(cache), "--json"], stdout=buf)
        for secret in (SECRET_ARG, SECRET_CTX):
            assert secret.encode() not in data
            assert secret not in out and secret not in buf.getvalue()
        print(f"\nsecrets: {len(files)} files grepped, plugin output and `madcache info` checked: 0 plaintext hits")
    finally:
        remove_images(engine, f"madcache.model={name}")


def _modes(directory: Path):
    return {str(p.relative_to(directory)): stat.S_IMODE(p.stat().st_mode) | (p.stat().st_mode & stat.S_ISGID)
            for p in [directory, *directory.rglob("*")] if not p.is_symlink()}


def test_new_caches_are_private_by_default(tmp_path: Path) -> None:
    store = Store(tmp_path / "new" / "cache")
    with store.lock():
        pass
    modes = _modes(store.dir)
    for d in ("", "blobs", "blobs/sha256", "entries", "tmp", "keys"):
        assert modes[d if d else "."] == 0o700, (d, oct(modes[d if d else "."]))
    print(f"\nprivate cache: {len(modes)} paths, dirs 0700")


def test_shared_cache_is_group_writable_with_setgid(tmp_path: Path, monkeypatch) -> None:
    old = os.umask(0o022)
    try:
        from pytest_madcache.core.settings import resolve

        monkeypatch.setenv("MADCACHE_SHARED", "1")
        settings = resolve({}, dict(os.environ, MADCACHE_DIR=str(tmp_path / "shared")), {})
        assert settings.shared and settings.source("shared") == "environment variable MADCACHE_SHARED"
        store = Store.from_settings(settings)
        with store.lock():
            pass
        with store.key_lock("ab" * 32):
            pass
        modes = _modes(store.dir)
        for d in (".", "blobs", "blobs/sha256", "entries", "tmp", "keys"):
            assert modes[d] == 0o2770 | stat.S_ISGID, (d, oct(modes[d]))
        for f in ("lock", "madcache.json", "keys/" + "ab" * 32 + ".lock"):
            assert modes[f] & 0o060 == 0o060, (f, oct(modes[f]))
        # A later process without the setting still treats it as shared.
        assert Store(store.dir).shared
    finally:
        os.umask(old)


def test_a_shared_cache_leaves_the_process_umask_alone(tmp_path: Path) -> None:
    """User code in the same process keeps its own umask: the store sets each file's mode itself."""
    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "shared", shared=True)
        with store.lock():
            pass
        store.record_session({"ended": 1.0})
        assert os.umask(0o022) == 0o022
        mine = tmp_path / "user-file"
        mine.write_text("x")
        assert stat.S_IMODE(os.stat(mine).st_mode) == 0o644
        for f in ("lock", "madcache.json", "last-session.json"):
            assert stat.S_IMODE(os.stat(store.dir / f).st_mode) & 0o060 == 0o060, f
    finally:
        os.umask(old)


# -- validation of what others could write --------------------------------------------------


def _entry_meta(store: Store, **changes):
    blob = b"config"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    (store.blob_dir / digest[7:]).write_bytes(blob)
    meta = {"id": "run_1700000000_0123abcd", "key": "ab" * 32, "image_name": "ci-x", "image_tag": "t",
            "image_id": digest, "config": digest, "layers": [], "sizes": {digest: len(blob)},
            "repo_tags": ["ci-x:t"], "created": 1.0}
    meta.update(changes)
    return meta


POISON = {
    "id with a path": {"id": "run_1_../../x"},
    "digest with a path": {"layers": ["sha256:../../../etc/passwd"]},
    "negative size": {"sizes": "NEG"},
    "size not a number": {"sizes": "STR"},
    "tag with a newline": {"repo_tags": ["ci-x:t\nevil"]},
    # The image id may be a manifest digest (containerd image store), but it must be a digest;
    # an image found under it that lacks the entry's layers is never served (test_store).
    "image id not a digest": {"image_id": "sha256:../../x"},
    "layers not a list": {"layers": "sha256:" + "0" * 64},
}


@pytest.mark.parametrize("kind", list(POISON))
def test_poisoned_entry_metadata_is_refused_and_dropped(tmp_path: Path, kind) -> None:
    store = Store(tmp_path / "cache")
    meta = _entry_meta(store)
    change = dict(POISON[kind])
    if change.get("sizes") == "NEG":
        change["sizes"] = {meta["config"]: -5}
    elif change.get("sizes") == "STR":
        change["sizes"] = {meta["config"]: "5"}
    meta.update(change)
    entry_dir = store.entry_dir / "run_1700000000_0123abcd"
    entry_dir.mkdir()
    (entry_dir / "meta.json").write_text(json.dumps(meta))
    reopened = Store(store.dir)
    assert reopened.entries() == []  # refused, and dropped by the index repair
    assert not entry_dir.exists()
    print(f"\npoisoned metadata ({kind}): refused")


LAYER = "sha256:" + "1" * 64
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
BAD_DESCRIPTORS = {
    "digest with a path": {LAYER: {"mediaType": GZIP, "digest": "sha256:../../x", "size": 5}},
    "media type with a newline": {LAYER: {"mediaType": GZIP + "\nevil", "digest": "sha256:" + "2" * 64, "size": 5}},
    "size not a number": {LAYER: {"mediaType": GZIP, "digest": "sha256:" + "2" * 64, "size": "5"}},
    "a layer the entry does not have": {"sha256:" + "3" * 64: {"mediaType": GZIP, "digest": "sha256:" + "2" * 64,
                                                               "size": 5}},
}


@pytest.mark.parametrize("kind", list(BAD_DESCRIPTORS))
def test_layer_descriptors_a_load_would_name_are_validated(tmp_path: Path, kind) -> None:
    """They end up in a manifest the engine reads (loading.py): refused unless well formed."""
    store = Store(tmp_path / "cache")
    meta = _entry_meta(store, layers=[LAYER])
    meta["sizes"][LAYER] = 5
    good = dict(meta, descriptors={LAYER: {"mediaType": GZIP, "digest": "sha256:" + "2" * 64, "size": 5}})
    assert Entry.from_json(good).descriptor(LAYER) == Descriptor(GZIP, "sha256:" + "2" * 64, 5)
    with pytest.raises(StoreError, match="layer descriptor"):
        Entry.from_json(dict(meta, descriptors=BAD_DESCRIPTORS[kind]))


class TarEngine:
    """An engine whose `docker save` is a crafted tar."""

    info = EngineInfo("docker", "test", "1.41", "classic")

    def __init__(self, members):
        self.members = members
        self.data = b"layer-bytes"
        self.diff = "sha256:" + hashlib.sha256(self.data).hexdigest()
        self.config = json.dumps({"rootfs": {"diff_ids": [self.diff]}}).encode()
        self.id = "sha256:" + hashlib.sha256(self.config).hexdigest()

    def inspect(self, ref):
        return ImageInfo(self.id, [self.diff], [], 0)

    def save(self, image_id, chunk_size=1 << 20):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, kind, payload in self.members:
                info = tarfile.TarInfo(name)
                if kind == "sym":
                    info.type, info.linkname = tarfile.SYMTYPE, payload
                    tar.addfile(info)
                elif kind == "hard":
                    info.type, info.linkname = tarfile.LNKTYPE, payload
                    tar.addfile(info)
                else:
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        return iter([buf.getvalue()])


EVIL_TARS = {
    "absolute member": [("/tmp/evil/layer.tar", "file", b"x")],
    "dot-dot member": [("../../evil/layer.tar", "file", b"x")],
    "symlink out of the tree": [("a/layer.tar", "sym", "../../../etc/passwd")],
    "absolute symlink": [("a/layer.tar", "sym", "/etc/passwd")],
    "hard link out of the tree": [("a/layer.tar", "hard", "../etc/shadow")],
    "device member": [("dev", "dev", b"")],
}


@pytest.mark.parametrize("kind", list(EVIL_TARS))
def test_image_archive_members_are_validated(tmp_path: Path, kind) -> None:
    members = EVIL_TARS[kind]
    if kind == "device member":
        eng = TarEngine([])

        class DevEngine(TarEngine):
            def save(self, image_id, chunk_size=1 << 20):
                buf = io.BytesIO()
                with tarfile.open(fileobj=buf, mode="w") as tar:
                    info = tarfile.TarInfo("dev")
                    info.type = tarfile.CHRTYPE
                    tar.addfile(info)
                return iter([buf.getvalue()])

        eng = DevEngine([])
    else:
        eng = TarEngine(members)
    store = Store(tmp_path / "cache", engine=eng)
    with pytest.raises(StoreError) as err:
        store.save(eng.id, "ab" * 32, image_name="evil")
    assert store.entries() == []
    assert list(store.tmp_dir.iterdir()) == []
    assert not Path("/tmp/evil").exists()
    print(f"\narchive ({kind}): refused: {err.value}")


# -- locks and symlinks --------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["lock", "keys"])
def test_symlinked_lock_files_are_refused_and_their_targets_untouched(tmp_path: Path, which) -> None:
    store = Store(tmp_path / "cache")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    if which == "lock":
        (store.dir / "lock").unlink(missing_ok=True)
        (store.dir / "lock").symlink_to(victim)
        with pytest.raises(StoreError, match="symbolic link"):
            store.prune()
    else:
        k = "cd" * 32
        (store.dir / "keys" / f"{k}.lock").symlink_to(victim)
        with pytest.raises(StoreError, match="symbolic link"):
            with store.key_lock(k):
                pass
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_a_planted_lease_lock_symlink_is_not_followed_by_gc(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    lease = store.tmp_dir / "save-planted"
    lease.mkdir()
    (lease / "lock").symlink_to(victim)
    store.prune()
    assert victim.read_text() == "precious\n"


# -- builds write only in the cache dir -----------------------------------------------------------


@pytest.mark.engine
@pytest.mark.parametrize("builder", ["legacy", "auto"])  # auto: BuildKit on Docker kinds (buildx is there)
def test_plugin_builds_keep_their_context_tar_in_the_cache(pytester, engine, tmp_path, monkeypatch, builder) -> None:
    """The build context is packed into an unnamed file in the cache's tmp/, never in TMPDIR, with
    either builder: every file the build opens through `tempfile` is found by its open descriptor
    (/proc/self/fd), and TMPDIR (an empty directory of its own here) stays empty."""
    import tempfile

    import docker.utils.build as dub

    def refuse(*a, **k):
        raise AssertionError("docker-py wrote the build context to TMPDIR")

    monkeypatch.setattr(dub.tempfile, "NamedTemporaryFile", refuse)
    opened = []  # (prefix, where the file is) for every TemporaryFile made during the run
    real_temporary_file = tempfile.TemporaryFile

    def spy(*a, **k):
        fh = real_temporary_file(*a, **k)
        opened.append((k.get("prefix"), os.readlink(f"/proc/self/fd/{fh.fileno()}")))
        return fh

    monkeypatch.setattr(tempfile, "TemporaryFile", spy)
    tmpdir = tmp_path / "TMPDIR"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))  # buildx and any other child process
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))  # this process
    name = f"tmpd{secrets.token_hex(3)}"
    tiny_context(pytester.path, ["COPY data.txt /data.txt"], files={"data.txt": "x"})
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.model("{name}", builder="{builder}")
        def test_m(model_image):
            pass
    """)
    cache = tmp_path / "c"
    try:
        result = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(cache))
        result.assert_outcomes(passed=1)
    finally:
        remove_images(engine, f"madcache.model={name}")
    contexts = [where for prefix, where in opened if prefix == "build-context-"]
    assert len(contexts) == 1, opened  # one build, one context tar
    assert contexts[0].startswith(str(cache.resolve()) + "/"), (contexts, str(cache))
    assert [p for p in tmpdir.rglob("*")] == []
    assert [p for p in (cache / "tmp").rglob("*") if p.is_file()] == []  # and nothing left behind
