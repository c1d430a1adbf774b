"""Images obtained before their tests ask (`--cache-prefetch`).

After collection the session knows its tests' keys in the order they run.  A Prefetcher obtains those
images on background threads, in that order, a bounded number at a time, so image N+1 loads while the
tests of image N run.  A test then takes what its key's job found: it waits only for what is not ready
yet.  A job that has not started when its test comes is cancelled, and the test does the work itself,
exactly as without prefetch.

A job runs `fetch(key, say, gate)` (the ImageService's: its own Store, the session's remote, never a build).  What
it says is kept and said again by the test that takes it, so the lines appear under that test; an error
it raised is said there too, and the test then asks the cache itself.  `stop()` (the session's end,
Ctrl-C) cancels what has not started and tells running jobs to stop: `Interruptible` ends their
streams at the next chunk, and the store's own rules (temp files, entries committed last) leave no half
entry.  `Gate.paused()` holds every stream at its next chunk while it lasts: a session that compares
performance keeps the engine quiet while a model runs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, BinaryIO, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, cast

from pytest_madcache.core.key import CacheKey
from pytest_madcache.provide.decide import Outcome, get_cached
from pytest_madcache.remote.base import RemoteBackend, RemoteEntry, RemoteError
from pytest_madcache.remote.retry import WaitStopped, stop_waits_on
from pytest_madcache.store.errors import LoadStopped
from pytest_madcache.store.protocols import StoreEngine

if TYPE_CHECKING:
    from pytest_madcache.core.images import EngineInfo, ImageInfo
    from pytest_madcache.store import Entry, Store

__all__ = ["Ahead", "Gate", "Lines", "Prefetcher", "Interruptible", "StoppableRemote", "Stopped", "fetch_job"]


class Gate:
    """Where background transfers check in between chunks: stopped for good, or paused for a while."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._open = threading.Event()
        self._open.set()
        self._pauses = 0
        self._lock = threading.Lock()

    def check(self, doing: str) -> None:
        """Return when the transfer may go on; raise Stopped once the session ended."""
        while not self._open.wait(0.1):
            if self.stopped.is_set():
                break
        if self.stopped.is_set():
            raise Stopped(f"the session ended during this {doing}")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Transfers wait at their next chunk until the last of these contexts ends."""
        with self._lock:
            self._pauses += 1
            self._open.clear()
        try:
            yield
        finally:
            with self._lock:
                self._pauses -= 1
                if not self._pauses:
                    self._open.set()


Fetch = Callable[[CacheKey, Callable[[str], None], Gate], Optional[Outcome]]


class Stopped(RemoteError):
    """A background transfer stopped because the session ended (a RemoteError, so a fetch from the
    remote unwinds the way a broken download does: its temp files removed, no entry added)."""


@dataclass(frozen=True)
class Ahead:
    """What one key's job found, as the test that takes it sees it."""

    outcome: Optional[Outcome]  # a hit, local or remote; None: not in the cache (the test builds)
    lines: Tuple[str, ...]  # what the job said, to say again under the test
    error: Optional[Exception]  # what the job raised, said under the test, which then asks itself
    seconds: float  # the job's own time (a pause included)
    waited: float  # how long the test waited for it


@dataclass(frozen=True)
class _Done:
    outcome: Optional[Outcome]
    lines: Tuple[str, ...]
    error: Optional[Exception]
    seconds: float


class Prefetcher:
    """Background jobs by key, run in the order they were wanted, `jobs` at a time."""

    def __init__(self, fetch: Fetch, jobs: int) -> None:
        self._fetch = fetch
        self.gate = Gate()
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="madcache-prefetch")
        self._jobs: Dict[str, "Future[_Done]"] = {}
        self._lock = threading.Lock()

    def want(self, keys: Iterable[CacheKey]) -> None:
        """Queue a job for each key not queued yet, in this order."""
        with self._lock:
            for key in keys:
                if not self.gate.stopped.is_set() and key.digest not in self._jobs:
                    self._jobs[key.digest] = self._pool.submit(self._run, key)

    def _run(self, key: CacheKey) -> _Done:
        lines: List[str] = []
        start = time.monotonic()
        try:
            self.gate.check("prefetch")
            outcome = self._fetch(key, lines.append, self.gate)
        except Exception as exc:  # handed to the test that takes it
            return _Done(None, tuple(lines), exc, time.monotonic() - start)
        return _Done(outcome, tuple(lines), None, time.monotonic() - start)

    def take(self, key: CacheKey) -> Optional[Ahead]:
        """What `key`'s job found, waiting for it to finish; None when there is no job (never wanted,
        taken already) or it had not started (cancelled: the test does the work itself)."""
        with self._lock:
            job = self._jobs.pop(key.digest, None)
        if job is None or job.cancel():
            return None
        start = time.monotonic()
        try:
            done = job.result()
        except BaseException:  # the wait was interrupted (Ctrl-C): stop() must still see the job
            with self._lock:
                self._jobs.setdefault(key.digest, job)
            raise
        return Ahead(done.outcome, done.lines, done.error, done.seconds, time.monotonic() - start)

    def stop(self) -> List[str]:
        """Cancel the jobs not started, stop the running ones' transfers, and wait for them.  Returns
        the warnings of jobs no test took (a test skipped, `-x`): the remote found down is said once,
        by the job that found it, and must not be lost with it."""
        self.gate.stopped.set()
        with self._lock:
            jobs, self._jobs = list(self._jobs.values()), {}
        for job in jobs:
            job.cancel()
        self._pool.shutdown(wait=True)
        untaken = [job.result() for job in jobs if not job.cancelled() and job.exception() is None]
        return list(dict.fromkeys(line for done in untaken for line in done.lines if line.startswith("Warning:")))


def _checked(chunks: Iterable[bytes], gate: Gate) -> Iterator[bytes]:
    for chunk in chunks:
        gate.check("load")
        yield chunk


class Interruptible:
    """An engine whose loads wait at the next chunk while the gate is paused and end there once it is
    stopped (the engine then drops the half-sent archive); every other call goes to `engine` as it is."""

    def __init__(self, engine: StoreEngine, gate: Gate) -> None:
        self._engine = engine
        self._gate = gate

    @property
    def info(self) -> "EngineInfo":
        return self._engine.info

    def inspect(self, ref: str) -> Optional["ImageInfo"]:
        return self._engine.inspect(ref)

    def find(self, ids: Iterable[str]) -> Optional["ImageInfo"]:
        return self._engine.find(ids)

    def tag(self, image_id: str, reference: str) -> None:
        self._engine.tag(image_id, reference)

    def present_prefix(self, diff_ids: Sequence[str], hints: Iterable[str] = ()) -> int:
        return self._engine.present_prefix(diff_ids, hints)

    def save(self, image_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        return self._engine.save(image_id, chunk_size)

    def load(self, data: Iterable[bytes]) -> List[str]:
        """The engine's load; LoadStopped when the session ended it (the store then neither retries it in
        full nor says the engine refused it)."""
        try:
            return self._engine.load(_checked(data, self._gate))
        except Exception as exc:
            if self._gate.stopped.is_set():
                raise LoadStopped(str(exc) if isinstance(exc, Stopped) else "the session ended during this load") \
                    from None
            raise


class _StoppableReader:
    """A remote blob's reader that waits while the gate is paused and raises Stopped once it is stopped."""

    def __init__(self, inner: BinaryIO, gate: Gate) -> None:
        self._inner = inner
        self._gate = gate

    def read(self, size: int = -1) -> bytes:
        self._gate.check("download")
        return self._inner.read(size)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> "_StoppableReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StoppableRemote:
    """A remote whose blob downloads wait at the next read while the gate is paused, and end there
    once it is stopped."""

    def __init__(self, remote: RemoteBackend, gate: Gate) -> None:
        self._remote = remote
        self._gate = gate

    def find(self, key: str, have: Optional[Callable[[str], bool]] = None) -> Optional[RemoteEntry]:
        self._gate.check("lookup")  # a session that ended asks the registry nothing more
        found = self._remote.find(key, have)
        if found is None:
            return None
        open_blob = found.open_blob

        def stoppable(digest: str) -> BinaryIO:  # read(), close(): what the store's import reads through
            return cast(BinaryIO, _StoppableReader(open_blob(digest), self._gate))

        return RemoteEntry(found.meta, stoppable)

    def failed(self, key: str, exc: RemoteError) -> None:
        if not isinstance(exc, (Stopped, WaitStopped)):  # the session ended it, not the registry
            self._remote.failed(key, exc)

    def mark_used(self, entry: "Entry") -> None:
        self._remote.mark_used(entry)

    def push(self, entry: "Entry", open_blob: Callable[[str], BinaryIO]) -> int:
        return self._remote.push(entry, open_blob)

    def push_pending(self, open_blob: Callable[[str], BinaryIO]) -> int:
        return self._remote.push_pending(open_blob)

    def sync(self, entries: Sequence["Entry"], open_blob: Callable[[str], BinaryIO],
             every: bool = False) -> Tuple[List[str], int, int]:
        return self._remote.sync(entries, open_blob, every)


class Lines:
    """Where the lines of the store and the remote go: to `say` (the test at hand), except on a
    thread collecting them for a prefetch job, which keeps them for the test that takes the job."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self._local = threading.local()

    def say(self, text: str) -> None:
        collect = getattr(self._local, "collect", None)
        (collect or self._say)(text)

    @contextlib.contextmanager
    def collecting(self, into: Callable[[str], None]) -> Iterator[None]:
        self._local.collect = into
        try:
            yield
        finally:
            self._local.collect = None


def fetch_job(open_store: Callable[[StoreEngine, Callable[[str], None]], "Store"], engine: StoreEngine,
              remote: Optional[RemoteBackend], lines: Lines) -> Fetch:
    """The job a Prefetcher runs for the ImageService: the key's entry loaded from the cache, else
    fetched from `remote` (the session's own: one remote, so a registry found down is said down once),
    never built.  Each thread opens its own Store: a Store's lock depth is its own, not the threads'."""
    local = threading.local()

    def fetch(key: CacheKey, say: Callable[[str], None], gate: Gate) -> Optional[Outcome]:
        with lines.collecting(say), stop_waits_on(gate.stopped):  # no retry outlasts the session
            if not hasattr(local, "store"):
                local.store = open_store(Interruptible(engine, gate), lines.say)
            stoppable = StoppableRemote(remote, gate) if remote is not None else None
            before = len(local.store.evicted)
            outcome = get_cached(local.store, key, stoppable, instead="its test asks again")
            evicted = len(local.store.evicted) - before
            return replace(outcome, evicted=evicted) if outcome is not None and evicted else outcome

    return fetch
