"""Prefetch (`--cache-prefetch`) without an engine: jobs in test order and a bounded number at once, a
test that waits only for its own image, errors handed to the test, stopping, the setting's bad values,
and the summary's line.  tests/test_prefetch_engine.py runs it on a real engine."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import List

import pytest

from pytest_madcache.core.events import ImageEvent
from pytest_madcache.core.images import EngineInfo
from pytest_madcache.core.key import CacheKey
from pytest_madcache.core.model import spec_from_marks
from pytest_madcache.core.settings import SettingsError, resolve
from pytest_madcache.provide import ImageService
from pytest_madcache.provide.decide import Outcome
from pytest_madcache.provide.prefetch import Gate, Interruptible, Prefetcher, StoppableRemote, Stopped
from pytest_madcache.pytest_glue.summary import Summary, summary_lines
from pytest_madcache.remote.base import RemoteEntry, RemoteError
from pytest_madcache.store import Entry, LoadResult, LoadStopped, Store
from tests.remote_helpers import put_entry


def _key(name: str) -> CacheKey:
    return CacheKey(name, {})


class Recorder:
    """A fetch that records when each job runs; `gate` holds every job until it is set."""

    def __init__(self) -> None:
        self.order: List[str] = []
        self.running = 0
        self.most = 0
        self.gate = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, key: CacheKey, say, stopped) -> Outcome:
        with self.lock:
            self.order.append(key.digest)
            self.running += 1
            self.most = max(self.most, self.running)
        say(f"looked up {key.digest}")
        self.gate.wait(10)
        with self.lock:
            self.running -= 1
        if key.digest == "broken":
            raise RuntimeError("the engine went away")
        return Outcome(None, f"id-{key.digest}", hit=True)


def test_jobs_run_in_the_order_wanted_one_at_a_time_and_a_test_waits_for_its_own() -> None:
    fetch = Recorder()
    ahead = Prefetcher(fetch, jobs=1)
    ahead.want([_key("a"), _key("b"), _key("a"), _key("c")])
    time.sleep(0.05)
    assert fetch.order == ["a"]  # one at a time: b waits for a
    fetch.gate.set()
    got = ahead.take(_key("a"))
    assert got is not None and got.outcome is not None and got.outcome.image_id == "id-a"
    assert got.lines == ("looked up a",) and got.error is None and got.waited >= 0
    assert ahead.take(_key("a")) is None  # taken once
    assert ahead.take(_key("x")) is None  # never wanted
    assert [ahead.take(_key(k)).outcome.image_id for k in "bc"] == ["id-b", "id-c"]
    assert fetch.order == ["a", "b", "c"] and fetch.most == 1
    ahead.stop()


def test_two_jobs_at_once_when_asked() -> None:
    fetch = Recorder()
    ahead = Prefetcher(fetch, jobs=2)
    ahead.want([_key(k) for k in "abc"])
    deadline = time.monotonic() + 5
    while fetch.running < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fetch.most == 2 and fetch.order == ["a", "b"]
    fetch.gate.set()
    ahead.stop()


def test_a_job_not_started_when_its_test_comes_is_left_to_the_test() -> None:
    fetch = Recorder()
    ahead = Prefetcher(fetch, jobs=1)
    ahead.want([_key("a"), _key("b")])
    assert ahead.take(_key("b")) is None  # a still runs, so b has not started: cancelled
    fetch.gate.set()
    assert ahead.take(_key("a")).outcome is not None
    ahead.stop()
    assert fetch.order == ["a"]


def test_an_error_is_handed_to_the_test_with_what_the_job_said() -> None:
    fetch = Recorder()
    fetch.gate.set()
    ahead = Prefetcher(fetch, jobs=1)
    ahead.want([_key("broken")])
    got = ahead.take(_key("broken"))
    assert got is not None and got.outcome is None and got.lines == ("looked up broken",)
    assert isinstance(got.error, RuntimeError) and str(got.error) == "the engine went away"
    ahead.stop()


def test_stop_cancels_what_has_not_started_and_wants_nothing_more() -> None:
    fetch = Recorder()
    ahead = Prefetcher(fetch, jobs=1)
    ahead.want([_key("a"), _key("b")])
    time.sleep(0.05)
    threading.Timer(0.1, fetch.gate.set).start()
    ahead.stop()  # waits for a, never starts b
    ahead.want([_key("c")])
    assert fetch.order == ["a"] and ahead.take(_key("c")) is None


def test_warnings_of_jobs_no_test_took_are_kept_for_the_summary() -> None:
    """A job whose test was skipped, or never came (-x), found the remote down: said once, and kept."""

    def fetch(key: CacheKey, say, gate) -> None:
        say("Warning: remote cache 127.0.0.1:5000/c is unavailable (connection refused); local cache only")
        say(f"looked up {key.digest}")
        return None

    ahead = Prefetcher(fetch, jobs=1)
    ahead.want([_key("a"), _key("b")])
    time.sleep(0.2)
    assert ahead.stop() == ["Warning: remote cache 127.0.0.1:5000/c is unavailable (connection refused); "
                            "local cache only"]


def test_a_test_interrupted_while_it_waits_leaves_its_job_to_stop(monkeypatch) -> None:
    """Ctrl-C in a test waiting for its image: the session's stop still stops and waits for that job."""

    def fetch(key: CacheKey, say, gate) -> None:
        say("Warning: remote cache 127.0.0.1:5000/c is unavailable (connection refused); local cache only")
        while True:
            gate.check("download")  # a long download, until the session ends
            time.sleep(0.01)

    ahead = Prefetcher(fetch, jobs=1)
    ahead.want([_key("a")])
    time.sleep(0.1)

    def interrupted(self, timeout=None):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr("concurrent.futures.Future.result", interrupted)
        with pytest.raises(KeyboardInterrupt):
            ahead.take(_key("a"))
    # stop() ended the job and kept its warning, as for any job no test took
    assert ahead.stop() == ["Warning: remote cache 127.0.0.1:5000/c is unavailable (connection refused); "
                            "local cache only"]
    assert ahead._pool._threads and not any(t.is_alive() for t in ahead._pool._threads)


def test_a_stopped_session_asks_the_registry_nothing_more() -> None:
    asked: list = []
    remote = SimpleNamespace(find=lambda key, have=None: asked.append(key))
    gate = Gate()
    gate.stopped.set()
    with pytest.raises(Stopped, match="the session ended during this lookup"):
        StoppableRemote(remote, gate).find("k")
    assert asked == []


def test_tests_pytest_will_not_run_are_not_prefetched(pytester: pytest.Pytester) -> None:
    from pytest_madcache.pytest_glue.obtain import _will_run

    items = pytester.getitems("""
import sys, pytest

def test_runs(): pass

@pytest.mark.skip(reason="no")
def test_skipped(): pass

@pytest.mark.skipif(True, reason="no")
def test_skipif_true(): pass

@pytest.mark.skipif("sys.platform == 'nowhere'")
def test_skipif_false(): pass

@pytest.mark.xfail(run=False)
def test_xfail_not_run(): pass

@pytest.mark.xfail(reason="runs")
def test_xfail_runs(): pass
""")
    assert {i.name: _will_run(i) for i in items} == {
        "test_runs": True, "test_skipped": False, "test_skipif_true": False, "test_skipif_false": True,
        "test_xfail_not_run": False, "test_xfail_runs": True}


def test_a_remote_entry_another_process_committed_meanwhile_is_a_hit_not_a_build() -> None:
    """Two xdist workers (one prefetching) fetch one remote entry at once; the second to commit finds
    the first's entry there (its rename fails): it loads that entry, it neither warns nor builds."""
    from pytest_madcache.provide.decide import get_cached
    from pytest_madcache.store import CacheUnwritable

    config = "sha256:" + "c" * 64
    theirs = Entry(id="run_1_0000000a", key="k", image_name="ci-m", image_tag="t", image_id=config, config=config,
                   layers=[], sizes={config: 1}, created=1.0, last_used=1.0)
    said: List[str] = []

    class Racing:
        entry = None
        log = said.append

        def lookup(self, key):
            return self.entry

        def load(self, entry):
            return LoadResult("full", image_id=config)

        def has_blob(self, digest):
            return False

        def import_and_load(self, meta, open_blob):
            self.entry = theirs  # the other process committed first
            raise CacheUnwritable("cannot write to the cache directory /c: Directory not empty")

    remote = SimpleNamespace(find=lambda key, have=None: RemoteEntry({"id": theirs.id}, lambda d: io.BytesIO()),
                             failed=lambda key, exc: said.append(str(exc)), mark_used=lambda entry: None)
    outcome = get_cached(Racing(), _key("k"), remote)  # type: ignore[arg-type]
    assert outcome is not None and outcome.hit and outcome.entry is theirs and said == []


class ChunkEngine:
    def __init__(self) -> None:
        self.chunks: List[bytes] = []

    def load(self, data) -> List[str]:
        for chunk in data:
            self.chunks.append(chunk)
        return ["loaded"]


def test_a_load_ends_at_the_next_chunk_once_stopped() -> None:
    gate = Gate()
    engine = ChunkEngine()

    def chunks():
        yield b"one"
        gate.stopped.set()  # the session ends while the load streams
        yield b"two"

    with pytest.raises(LoadStopped, match="the session ended during this load"):
        Interruptible(engine, gate).load(chunks())
    assert engine.chunks == [b"one"]
    assert Interruptible(ChunkEngine(), Gate()).load([b"x"]) == ["loaded"]


class PartialEngine(ChunkEngine):
    """Holds the lower layer of every image (a classic engine's delta load), loads nothing whole."""

    info = EngineInfo("docker", "20.10", "1.41", "classic")

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def load(self, data) -> List[str]:
        self.loads += 1
        return super().load(data)

    def find(self, ids):
        return None

    def inspect(self, ref):
        return None

    def present_prefix(self, diff_ids, hints=()) -> int:
        return 1


def test_a_partial_load_the_session_ended_is_not_retried_in_full_nor_called_refused(tmp_path: Path) -> None:
    gate, engine, said = Gate(), PartialEngine(), []
    store = Store(tmp_path / "cache", engine=Interruptible(engine, gate), log=said.append)
    entry = put_entry(store, "m", [b"lower" * 1000, b"upper" * 1000])
    gate.stopped.set()
    with pytest.raises(LoadStopped):
        store.load(entry)
    assert engine.loads == 1 and not [line for line in said if "Partial load" in line]
    assert [e.id for e in store.entries()] == [entry.id]  # not dropped as corrupt


def test_a_paused_load_waits_at_its_next_chunk_until_the_pause_ends() -> None:
    gate, engine = Gate(), ChunkEngine()
    with gate.paused():
        loading = threading.Thread(target=Interruptible(engine, gate).load, args=([b"a", b"b"],))
        loading.start()
        time.sleep(0.3)
        assert engine.chunks == []  # held before its first chunk
        with gate.paused():  # nested: the outer pause still holds when this one ends
            pass
        time.sleep(0.2)
        assert engine.chunks == []
    loading.join(5)
    assert engine.chunks == [b"a", b"b"]


def test_a_remote_download_ends_at_the_next_read_and_is_not_the_remotes_fault() -> None:
    gate = Gate()
    failed: list = []
    remote = SimpleNamespace(find=lambda key, have=None: RemoteEntry({"id": "e"}, lambda d: io.BytesIO(b"abcdef")),
                             failed=lambda key, exc: failed.append(exc))
    found = StoppableRemote(remote, gate).find("k")
    blob = found.open_blob("sha256:x")
    assert blob.read(3) == b"abc"
    gate.stopped.set()
    with pytest.raises(Stopped) as raised:
        blob.read(3)
    StoppableRemote(remote, gate).failed("k", raised.value)
    StoppableRemote(remote, gate).failed("k", RemoteError("HTTP 500"))
    assert [str(e) for e in failed] == ["HTTP 500"]  # a stopped download does not turn the remote off


# -- the ImageService: a test takes what the prefetch found -------------------------


class FakeEngine:
    def describe(self) -> str:
        return "fake engine"

    def inspect(self, ref):
        return SimpleNamespace(repo_tags=[ref])

    def tag(self, image_id, ref) -> None:
        pass


class FakeStore:
    evicted: list = []

    def __init__(self, entries=(), fail: bool = False) -> None:
        self._entries, self.loads, self.fail = list(entries), [], fail
        self.log = print

    def lookup(self, key):
        return next((e for e in self._entries if e.key == key.digest), None)

    def load(self, entry):
        self.loads.append((entry.id, threading.current_thread().name))
        if self.fail:
            from pytest_madcache.store import StoreError

            raise StoreError("the engine refused the archive")
        return LoadResult("full", 2048, 2, 0.5, image_id=entry.image_id)


def _entry(key: str) -> Entry:
    image_id = "sha256:" + "0a" * 32
    return Entry(id="run_1_0000beef", key=key, image_name="ci-m", image_tag="t", image_id=image_id,
                 config=image_id, layers=[], sizes={}, build_duration=3.0)


def _service(store: FakeStore, said: list, decide=None) -> ImageService:
    class Listening:
        say, warn = staticmethod(said.append), staticmethod(said.append)

    def make_store(engine, log):
        store.log = log
        return store

    service = ImageService(enabled=True, store_factory=make_store, reporter=Listening(), decide=decide)
    service._engine = FakeEngine()
    return service


@pytest.fixture
def spec(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")

    class Mark:
        args, kwargs = ("m",), {}

    return spec_from_marks([Mark()], tmp_path, "t")


def test_a_hit_found_ahead_is_the_tests_hit_with_its_lines_and_times(spec) -> None:
    store, said = FakeStore([_entry("k1")]), []
    service = _service(store, said, decide=lambda *a, **k: pytest.fail("a prefetched hit asks nothing more"))
    service.prefetch([_key("k1")], jobs=1)
    image, event = service.obtain(spec, _key("k1"), "ci-m:t", {}, {}, build=lambda: pytest.fail("no build"))
    assert image.cache_hit and image.cache_id == "run_1_0000beef"
    assert event.hit and event.ahead and event.ahead_seconds >= 0 and event.ahead_waited >= 0
    assert store.loads == [("run_1_0000beef", store.loads[0][1])] and store.loads[0][1].startswith("madcache-prefetch")
    assert said == ["Cache hit! Loading Docker image from cache: run_1_0000beef",
                    "Docker image loaded from cache successfully: run_1_0000beef (all layers: 2 layers, 2.00 KB in "
                    "0.50 s)"]
    service.close()


def test_entries_a_prefetch_evicted_count_in_its_tests_event(spec) -> None:
    store, said = FakeStore([_entry("k1")]), []
    store.evicted, load = [], store.load

    def load_making_room(entry):  # as a remote entry's import does, committed over the limits
        store.evicted.append(_entry("older"))
        return load(entry)

    store.load = load_making_room
    service = _service(store, said, decide=lambda *a, **k: pytest.fail("a prefetched hit asks nothing more"))
    service.prefetch([_key("k1")], jobs=1)
    _, event = service.obtain(spec, _key("k1"), "ci-m:t", {}, {}, build=lambda: pytest.fail("no build"))
    assert event.ahead and event.evicted == 1
    service.close()


def test_a_failed_prefetched_load_is_said_under_its_test_which_then_asks_itself(spec) -> None:
    store, said, asked = FakeStore([_entry("k1")], fail=True), [], []

    def decide(store, key, build, **kwargs):
        asked.append(key.digest)
        return Outcome(None, "sha256:" + "0b" * 32, hit=False, build_duration=1.0)

    service = _service(store, said, decide=decide)
    service.prefetch([_key("k1")], jobs=1)
    image, event = service.obtain(spec, _key("k1"), "ci-m:t", {}, {}, build=lambda: pytest.fail("decide builds"))
    assert asked == ["k1"] and not event.ahead and not image.cache_hit
    assert said[0] == "Failed to load run_1_0000beef from cache (the engine refused the archive); its test asks again"
    service.close()


def test_no_prefetch_without_the_cache_or_with_force_rebuild(spec) -> None:
    for kwargs in ({"enabled": False}, {"enabled": True, "force_rebuild": True}):
        store = FakeStore([_entry("k1")])
        service = ImageService(store_factory=lambda engine, log, store=store: store, **kwargs)
        service._engine = FakeEngine()
        service.prefetch([_key("k1")], jobs=1)
        service.close()
        assert store.loads == []


# -- the setting ---------------------------------------------------------------------


def test_the_settings_defaults_and_values() -> None:
    s = resolve({}, {}, {})
    assert (s.prefetch, s.prefetch_jobs) == ("loads", None)
    s = resolve({"prefetch": "OFF"}, {"MADCACHE_PREFETCH_JOBS": "3"}, {})
    assert (s.prefetch, s.prefetch_jobs, s.source("prefetch_jobs")) == ("off", 3, "environment variable "
                                                                                   "MADCACHE_PREFETCH_JOBS")
    assert resolve({}, {}, {"madcache_prefetch_jobs": "auto"}).prefetch_jobs is None


@pytest.mark.parametrize("flags, env, ini, message", [
    ({"prefetch": "sometimes"}, {}, {}, "invalid value 'sometimes' for --cache-prefetch from option "
                                        "--cache-prefetch: expected one of off, loads"),
    ({}, {"MADCACHE_PREFETCH": "all-of-it"}, {}, "invalid value 'all-of-it' for --cache-prefetch from environment "
                                                 "variable MADCACHE_PREFETCH: expected one of off, loads"),
    ({}, {}, {"madcache_prefetch_jobs": "0"}, "invalid value '0' for --cache-prefetch-jobs from ini key "
                                              "madcache_prefetch_jobs in ini file: expected a whole number >= 1, "
                                              "or 'auto'"),
])
def test_bad_values_name_their_source(flags, env, ini, message) -> None:
    with pytest.raises(SettingsError) as raised:
        resolve(flags, env, ini)
    assert str(raised.value) == message


def test_the_summary_says_how_much_was_hidden_behind_tests() -> None:
    summary = Summary(enabled=True)
    for seconds, waited in ((4.0, 4.0), (3.0, 0.5), (2.0, 0.0)):
        summary.add(ImageEvent(model="m", key=f"k{seconds}", cached=True, hit=True, ahead=True,
                               ahead_seconds=seconds, ahead_waited=waited))
    summary.add(ImageEvent(model="m", key="k9", cached=True, hit=True))
    assert ("prefetched: 3 images obtained before their tests asked, in 9.0 s; 4.5 s of it hidden behind tests, "
            "4.5 s waited for") in summary_lines(summary)
    assert summary.as_dict()["prefetched"] == 3 and summary.as_dict()["prefetch_waited_seconds"] == 4.5


def test_a_registry_retry_ends_when_the_session_stops_not_after_its_window() -> None:
    """Ctrl-C while a prefetch job waits between a registry's 503s: the job ends at once, and the
    registry is not blamed (the remote stays in use for the session's other work)."""
    import http.server

    from pytest_madcache.remote.oci import Registry, RetryPolicy
    from pytest_madcache.remote.retry import WaitStopped, stop_waits_on
    from pytest_madcache.util.refs import RemoteRef

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    registry = Registry(RemoteRef.parse(f"127.0.0.1:{server.server_port}/c"),
                        retry=RetryPolicy(attempts=6, base=4.0, cap=8.0))  # about 20 s of waits in all
    stopped, raised = threading.Event(), []

    def job() -> None:
        with stop_waits_on(stopped):
            try:
                registry.get_manifest("k")
            except Exception as exc:
                raised.append(exc)

    try:
        worker = threading.Thread(target=job)
        start = time.monotonic()
        worker.start()
        time.sleep(0.3)
        stopped.set()
        worker.join(10)
        assert time.monotonic() - start < 3 and len(raised) == 1 and isinstance(raised[0], WaitStopped)
        blamed = []
        StoppableRemote(SimpleNamespace(failed=lambda key, exc: blamed.append(exc)), Gate()).failed("k", raised[0])
        assert blamed == []
    finally:
        server.shutdown()
