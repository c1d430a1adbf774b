"""Faults: kill -9 at random points, disk full, read-only and foreign caches, corrupt data, a dying engine.

Every test ends in figures (printed with -s): trials, failures found, failures left.
The kill -9 campaign is scripts/fault_campaign.py (its 300-trial record: bench/results/
fault-campaign.json); a 40-trial run of it is here.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from pytest_madcache.engines.docker import Engine
from pytest_madcache.core.key import CacheKey
from pytest_madcache.store import Store, StoreError
from pytest_madcache.provide import get_or_build
from tests.images import ImageFactory
from tests.needs import unavailable
from tests.plugin_helpers import FAKE_HOOKS, remove_images, tiny_context


MB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]
NONROOT = "madcache-nr"


def tree_hash(directory: Path) -> str:
    """Names, modes, sizes and contents of everything under `directory` (not times)."""
    h = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        h.update(f"{path.relative_to(directory)}|{st.st_mode:o}|".encode())
        if path.is_file() and not path.is_symlink():
            h.update(path.read_bytes())
    return h.hexdigest()


def key(name: str) -> CacheKey:
    return CacheKey(hashlib.sha256(name.encode()).hexdigest(), {"name": name})


def _campaign_module():
    spec = importlib.util.spec_from_file_location("fault_campaign", ROOT / "scripts" / "fault_campaign.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# -- kill -9 -------------------------------------------------------------------------


@pytest.mark.engine
def test_kill_9_at_every_write_of_every_store_operation(engine: Engine, tmp_path: Path) -> None:
    """A short run of the campaign (40 trials: each operation twice at a crash point, twice after a delay;
    the recorded 300-trial run is bench/results/fault-campaign.json): every write the store's source
    makes is a crash point, and no trial loses an entry, serves a corrupt one or leaves an orphan."""
    fc = _campaign_module()
    trials = int(os.environ.get("MADCACHE_FAULT_TRIALS", "40"))
    campaign = fc.Campaign(engine, tmp_path, seed=int(os.environ.get("MADCACHE_FAULT_SEED", "6")), log=print)
    try:
        campaign.build_images()
        campaign.make_template()
        campaign.calibrate()
        assert campaign.unreached_sites() == []
        figures = campaign.run(trials)
    finally:
        campaign.cleanup()
    print("\n" + "\n".join(figures.lines()))
    assert figures.trials == trials and figures.killed >= trials // 2
    assert set(figures.by_op) == set(fc.OPS)
    assert figures.failures == 0, "\n".join(figures.errors)


# -- mounts: disk full, read-only ------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "30m") -> Iterator[Path]:
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _models(pytester: pytest.Pytester, big_mb: int, name: str) -> None:
    tiny_context(pytester.path / "small")
    tiny_context(pytester.path / "big", ["COPY big.bin /big.bin"])
    with open(pytester.path / "big" / "big.bin", "wb") as fh:
        fh.write(os.urandom(big_mb * MB))
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.model("{name}small", context="small")
        def test_small(model_run):
            assert model_run(command="true").ok

        @pytest.mark.model("{name}big", context="big")
        def test_big(model_run):
            assert model_run(command="test -s /big.bin").ok
    """)


@pytest.mark.engine
def test_disk_full_warns_once_runs_uncached_and_keeps_what_was_intact(pytester, engine, tmp_path) -> None:
    """A 30 MB tmpfs cache: the 40 MB image does not fit; one warning, both tests pass, the small entry survives."""
    name = f"df{secrets.token_hex(3)}"
    _models(pytester, 40, name)
    with tmpfs(tmp_path / "full") as cache:
        try:
            first = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(cache),
                                       "-k", "small")
            first.assert_outcomes(passed=1, deselected=1)
            before = Store(cache).entries()
            assert len(before) == 1
            result = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(cache))
            result.assert_outcomes(passed=2, warnings=1)
            out = result.stdout.str()
            assert out.count("MadcacheWarning: madcache:") == 1
            assert "the disk is full" in out
            store = Store(cache, engine=engine)
            assert [e.id for e in store.entries()] == [e.id for e in before]
            assert store.verify(repair=False).ok
            assert list(store.tmp_dir.iterdir()) == []  # the partial blob and lease are gone
            engine.remove(before[0].image_id)
            assert store.load(before[0]).how in ("full", "delta")
            print(f"\ndisk full: 1 trial, 1 warning, 0 entries lost, {shutil.disk_usage(cache).used // 1024} KiB used")
        finally:
            remove_images(engine, f"madcache.model={name}small")
            remove_images(engine, f"madcache.model={name}big")


@pytest.mark.engine
def test_read_only_cache_hits_what_it_has_builds_the_rest_and_changes_nothing(pytester, engine, tmp_path) -> None:
    name = f"ro{secrets.token_hex(3)}"
    _models(pytester, 1, name)
    with tmpfs(tmp_path / "ro", "200m") as cache:
        try:
            pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(cache),
                               "-k", "small").assert_outcomes(passed=1, deselected=1)
            subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
            before = tree_hash(cache)
            result = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(cache))
            result.assert_outcomes(passed=2, warnings=1)
            out = result.stdout.str()
            assert "Cache hit!" in out  # the small model, from the read-only cache
            assert out.count("MadcacheWarning: madcache:") == 1
            assert "the file system is read-only" in out
            assert tree_hash(cache) == before
            print("\nread-only: 1 trial, 1 hit, 1 uncached build, 1 warning, cache unchanged")
        finally:
            remove_images(engine, f"madcache.model={name}small")
            remove_images(engine, f"madcache.model={name}big")


# -- permission denied: a non-root user ------------------------------------------------------


def _nonroot_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        unavailable("creating a user needs root")
    try:
        return pwd.getpwnam(NONROOT)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", NONROOT], check=True)
        return pwd.getpwnam(NONROOT)


@contextlib.contextmanager
def reachable(*paths: Path) -> Iterator[None]:
    """The interpreter may live under a 0700 home (pyenv in /root), the engine's socket in a 0700
    temp dir: let others traverse those directories meanwhile (modes restored after)."""
    opened = []
    for parent in sorted({p for path in paths for p in Path(path).resolve().parents}):
        mode = parent.stat().st_mode & 0o7777
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)
            opened.append((parent, mode))
    try:
        yield
    finally:
        for parent, mode in opened:
            os.chmod(parent, mode)


def run_as(user: pwd.struct_passwd, argv, cwd: Path, env: dict, extra_groups=()) -> subprocess.CompletedProcess:
    groups = ",".join(str(g) for g in extra_groups) or "-"
    cmd = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
           f"--groups={groups}" if extra_groups else "--clear-groups", "--", *argv]
    return subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir others can traverse (pytest's own tmp dirs are 0700)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="madcache-nr-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.engine
def test_permission_denied_for_another_user_warns_once_and_runs_uncached(docker_host, shared_tmp) -> None:
    """root's private cache, a non-root user's run: one clear warning, the tests pass, root's cache unchanged."""
    user = _nonroot_user()
    tmp_path = shared_tmp
    cache = tmp_path / "roots-cache"
    Store(cache)  # private: 0700
    assert cache.stat().st_mode & 0o777 == 0o700
    before = tree_hash(cache)
    work = tmp_path / "user-work"
    work.mkdir()
    (work / "conftest.py").write_text(FAKE_HOOKS)
    (work / "Dockerfile").write_text("FROM scratch\n")
    (work / "test_m.py").write_text(
        "import pytest\n\n@pytest.mark.model('m')\ndef test_m(model_run):\n    assert model_run().ok\n")
    for p in (work, *work.iterdir()):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chown(p, user.pw_uid, user.pw_gid)
    sock = docker_host.split("://", 1)[1]
    env = {"PATH": os.environ["PATH"], "HOME": str(work), "DOCKER_HOST": docker_host, "TMPDIR": str(work),
           "PYTHONPATH": str(ROOT)}
    with reachable(Path(sys.executable), Path(sock)):
        proc = run_as(user, [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--enable-cache",
                             f"--cache-dir={cache}", "-W", "always"], work, env, extra_groups=[os.stat(sock).st_gid])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "1 passed" in out
    # warned once: one warning in pytest's summary, repeated once in madcache's own
    assert "1 passed, 1 warning in" in out, out
    assert out.count("MadcacheWarning: madcache: cannot write to the cache directory") == 1, out
    assert out.count("\nwarning: madcache: cannot write to the cache directory") == 1, out
    assert out.count("permission denied") == 2, out
    assert tree_hash(cache) == before
    print("\npermission denied: 1 trial, 1 warning, test passed uncached, root's cache unchanged")


# -- corrupt data ------------------------------------------------------------------------


@pytest.fixture
def saved(engine: Engine, tmp_path: Path):
    factory = ImageFactory(engine, tmp_path / "imgs")
    ctx = factory.context({"data.bin": 256 * 1024})
    built = factory.build(ctx)
    store = Store(tmp_path / "cache", engine=engine, max_entries=50)
    entry = store.save(built.image_id, key("corrupt-me"), image_name="corrupt", image_tag="t")
    yield store, entry, factory, ctx
    factory.cleanup()
    engine.remove(built.image_id)


def _truncate(store, entry):
    p = store.blob_file(entry.layers[-1])
    p.write_bytes(p.read_bytes()[:-100])


def _flip(store, entry):
    p = store.blob_file(entry.layers[-1])
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))


def _missing(store, entry):
    store.blob_file(entry.layers[-1]).unlink()


def _nowhere(store, entry):
    meta = store.entry_dir / entry.id / "meta.json"
    data = json.loads(meta.read_text())
    ghost = "sha256:" + "0" * 64
    data["layers"][-1] = ghost
    data["sizes"][ghost] = 123
    meta.write_text(json.dumps(data))
    (store.dir / "index.json").unlink()


def _garbage_index(store, entry):
    (store.dir / "index.json").write_bytes(os.urandom(300))


def _garbage_meta(store, entry):
    (store.entry_dir / entry.id / "meta.json").write_bytes(b"{not json")
    (store.dir / "index.json").unlink()  # else the index's intact copy serves (its blobs are verified anyway)


CORRUPTIONS = {"truncated blob": _truncate, "flipped byte": _flip, "missing blob": _missing,
               "metadata pointing nowhere": _nowhere, "garbage index": _garbage_index,
               "garbage entry metadata": _garbage_meta}


EXPECTED_LOADS = {"truncated blob": ["refused"], "flipped byte": ["refused"], "missing blob": [],
                  "metadata pointing nowhere": [], "garbage index": ["loaded"], "garbage entry metadata": []}


@pytest.mark.engine
@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corruption_is_detected_dropped_and_rebuilt_never_loaded(saved, engine, kind) -> None:
    store, entry, factory, ctx = saved
    engine.remove(entry.image_id)  # force the load to read blobs
    CORRUPTIONS[kind](store, entry)
    loads = []  # each load the engine was asked for: "refused" (it raised) or "loaded"
    real_load = engine.load

    def spy(data):
        try:
            result = real_load(data)
        except Exception:
            loads.append("refused")
            raise
        loads.append("loaded")
        return result

    engine.load = spy
    builds = []

    def build():
        builds.append(True)
        return factory.build(ctx)

    try:
        reopened = Store(store.dir, engine=engine, max_entries=50)
        outcome = get_or_build(reopened, key("corrupt-me"), build, image_name="corrupt", image_tag="t")
    finally:
        del engine.load
    if kind == "garbage index":  # the data is fine: the index is rebuilt and the entry hits
        assert outcome.hit and not builds
    else:
        assert not outcome.hit and builds == [True], kind
        assert outcome.saved  # rebuilt and saved again
    assert engine.inspect(outcome.image_id).id == outcome.image_id
    assert reopened.verify(repair=False).ok
    assert len(reopened.entries()) == 1
    # Never loaded: a blob that is missing, or metadata that cannot be read, stops before the engine
    # is asked; a blob whose bytes are wrong is found while it streams, and the stream stops short,
    # so the engine refuses the archive.  Only the intact data (a garbage index) is loaded.
    assert loads == EXPECTED_LOADS[kind], (kind, loads)
    print(f"\n{kind}: detected, {'hit after index repair' if outcome.hit else 'dropped and rebuilt'}; "
          f"engine loads: {loads or 'none asked'}")


# -- the engine dies mid-load, or is unreachable ------------------------------------------------


@pytest.mark.engine
def test_engine_killed_mid_load_gives_a_clear_error_and_no_half_written_entry(engine, tmp_path) -> None:
    import docker

    from pytest_madcache.devtools.localengine import EngineUnavailable, private_engine

    factory = ImageFactory(engine, tmp_path / "imgs")
    big = factory.make({"big.bin": 100 * MB})
    cache = tmp_path / "cache"
    store = Store(cache, engine=engine, max_entries=50)
    entry = store.save(big.image_id, key("big"), image_name="big", image_tag="t")
    before = tree_hash(cache)
    try:
        with private_engine() as host:
            other = Engine(client=docker.DockerClient(base_url=host, timeout=120))
            pid = int((Path(host.split("://", 1)[1]).parent / "docker.pid").read_text())
            remote_store = Store(cache, engine=other, max_entries=50)
            errors = []
            killed_at = []  # bytes the engine had been sent when it was killed
            real_load = other.load

            def load_then_kill(data):
                """Kill the engine on an event, not a timer: once 8 MB of the archive have gone out."""
                def stream():
                    sent = 0
                    for chunk in data:
                        yield chunk
                        sent += len(chunk)
                        if not killed_at and sent >= 8 * MB:
                            os.kill(pid, signal.SIGKILL)
                            killed_at.append(sent)
                return real_load(stream())

            other.load = load_then_kill

            def load():
                try:
                    remote_store.load(entry)
                except Exception as exc:
                    errors.append(exc)

            t = threading.Thread(target=load)
            t.start()
            t.join(120)
            assert not t.is_alive()
            assert killed_at and killed_at[0] < 100 * MB, "the engine is killed while the archive is half sent"
            assert errors, "the load should fail when the engine dies"
            message = str(errors[0])
            assert isinstance(errors[0], StoreError)
            assert "loading" in message and entry.id in message
            print(f"\nengine killed mid-load: {message[:160]}")
    except EngineUnavailable as exc:
        unavailable(f"no private engine: {exc}")
    finally:
        factory.cleanup()
        engine.remove(big.image_id)
    after = Store(cache, engine=engine, max_entries=50)
    assert [e.id for e in after.entries()] == [entry.id]
    assert after.verify(repair=False).ok
    assert list(after.tmp_dir.iterdir()) == []
    assert tree_hash(cache) == before  # nothing half-written; the entry was not dropped either


def test_unreachable_engine_is_a_clear_error_and_the_cache_is_untouched(pytester, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    Store(cache)
    before = tree_hash(cache)
    tiny_context(pytester.path)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.model("nowhere")
        def test_m(model_image):
            pass
    """)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(cache))
    assert result.ret != 0
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no image for model 'nowhere': no Docker engine answers at unix://*/no-such.sock "
                                 "(from DOCKER_HOST): no such socket*"])
    assert tree_hash(cache) == before
    cli = subprocess.run([sys.executable, "-m", "pytest_madcache", "verify", "--cache-dir", str(cache)],
                         capture_output=True, text=True, env=dict(os.environ))
    assert cli.returncode == 0  # verify needs no engine
    print("\nunreachable engine: 1 trial, clear error, cache unchanged")
