"""Kill the registry at random points of pushes and fetches, and check what is left.

Each trial makes a fresh registry (Debian's docker-registry) and an entry of
crafted layers (some compressible, some not; large ones go up in chunks),
then pushes it (or fetches it into an empty store) and SIGKILLs the registry
at a random point: after a random number of the entry's bytes has moved, or
at a random moment of the whole exchange (which also lands in the HEAD,
POST and manifest requests).  The registry comes back after a random pause:
within the client's retry window (the transfer may survive) or after it has
given up.  Then:

* remote: the entry's manifest is absent, or every blob it names is there
  and checks out (no half-published entry);
* local: the fetching store holds no entry, or a whole one (`verify`);
* next run: a new process on the same cache completes the push (through the
  pending journal) or the fetch.

Given an engine, the campaign also kills the registry while a fetch streams
into the engine's load (`Store.import_and_load`; the entry's layers are real
tar layers then).  Besides the checks above: no temp file left in the store,
and no image in the engine unless the store holds its entry (the engine's
load ends short when the stream breaks).

`bench/fault_campaign.py` runs it and records the results in bench/results/;
tests/test_remote_faults.py runs a few trials.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from pytest_madcache.engines.docker import Engine
from pytest_madcache.remote.base import RemoteError
from pytest_madcache.remote.oci import Registry, RemoteCache, RetryPolicy, key_tag, parse_manifest
from pytest_madcache.store import Entry, Store, StoreError
from pytest_madcache.util.refs import RemoteRef
from tests.registries import LocalRegistry
from tests.remote_helpers import put_entry, text_like

RETRY = RetryPolicy(attempts=4, base=0.2, cap=0.8)  # patience: about 1-1.5 s of waits


@dataclass
class Trial:
    n: int
    phase: str  # push | fetch | stream (a fetch streamed into the engine's load)
    kill: str  # "bytes" (after `kill_at` of the entry's bytes moved) | "time" (after `kill_at` seconds)
    kill_at: float
    entry_bytes: int
    pause: float  # seconds the registry stayed down
    killed_mid_transfer: bool = False
    first_run: str = ""  # completed | survived (retries rode out the kill) | failed (gave up; remote off)
    remote_half_entry: bool = False
    local_half_entry: bool = False
    temp_files_left: bool = False  # fetch and stream: the store's tmp/ not empty after the first run
    engine_image_without_entry: bool = False  # stream: the image loaded although no entry was committed
    next_run_completed: bool = False
    seconds: float = 0.0
    error: str = ""


def _layers(rng: random.Random) -> List[bytes]:
    out = []
    for _i in range(rng.randint(3, 6)):
        size = rng.choice([200_000, 1_000_000, 3_000_000, 5_000_000])
        out.append(text_like(size, seed=rng.randrange(1 << 30)) if rng.random() < 0.5 else rng.randbytes(size))
    return out


def _tar_layers(rng: random.Random) -> List[bytes]:
    """Layers an engine can load: a tar of one file each, as large as _layers' blobs."""
    out = []
    for i, data in enumerate(_layers(rng)):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(f"campaign/layer{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        out.append(buf.getvalue())
    return out


def _remote(reg: LocalRegistry, repo: str, state: Optional[Path] = None, **kw: Any) -> RemoteCache:
    registry = Registry(RemoteRef.parse(f"{reg.address}/{repo}"), retry=RETRY, upload_chunk=1 << 20)
    return RemoteCache(registry, state_dir=state, **kw)


def _remote_is_whole(reg: LocalRegistry, repo: str, key: str) -> Optional[bool]:
    """None: no manifest; True: the manifest and every blob it names check out; False: a half entry."""
    registry = Registry(RemoteRef.parse(f"{reg.address}/{repo}"), retry=RETRY)
    got = registry.get_manifest(key_tag(key))
    if got is None:
        return None
    manifest = parse_manifest(got[0])
    for blob in manifest.blobs.values():
        h = hashlib.sha256()
        try:
            n = registry.download(blob.digest, blob.size, h.update)
        except Exception:
            return False
        if n != blob.size or "sha256:" + h.hexdigest() != blob.digest:
            return False
    return True


class _Counting:
    """A blob reader that calls `tick(n)` for the bytes it hands out."""

    def __init__(self, fh: Any, tick: Callable[[int], None]) -> None:
        self.fh, self.tick = fh, tick

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.tick(len(data))
        return data

    def close(self) -> None:
        self.fh.close()


class _Killer:
    """Kills the registry once: after `kill_at` bytes moved ("bytes") or seconds ("time"); it comes
    back after the trial's pause."""

    def __init__(self, reg: LocalRegistry, trial: Trial) -> None:
        self.reg, self.trial = reg, trial
        self.moved = 0
        self.lock = threading.Lock()
        self.killed, self.done = threading.Event(), threading.Event()
        self.restarts: List[threading.Timer] = []
        self.timer = threading.Timer(trial.kill_at, self.crash) if trial.kill == "time" else None

    def __enter__(self) -> "_Killer":
        if self.timer:
            self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.timer:
            self.timer.cancel()
            self.timer.join()
        self.wait_up()

    def crash(self) -> None:
        with self.lock:
            if self.killed.is_set():
                return
            self.killed.set()
        self.trial.killed_mid_transfer = not self.done.is_set()
        self.reg.kill()
        restart = threading.Timer(self.trial.pause, self.reg.start)
        self.restarts.append(restart)
        restart.start()

    def tick(self, k: int) -> None:
        with self.lock:
            self.moved += k
            hit = self.trial.kill == "bytes" and self.moved >= self.trial.kill_at
        if hit:
            self.crash()

    def wait_up(self) -> None:
        for restart in self.restarts:
            restart.join()
        if self.reg.proc is None:
            self.reg.start()


def _fetch(b: Store, rc: RemoteCache, key: str, phase: str, tick: Optional[Callable[[int], None]] = None) -> str:
    """A fetch into `b` (streamed into its engine for "stream"); the error it ended with, or ""."""
    found = rc.find(key)
    if found is None:
        return ""
    opener = found.open_blob if tick is None else (lambda d: _Counting(found.open_blob(d), tick))
    try:
        if phase == "stream":
            b.import_and_load(found.meta, opener)
        else:
            b.import_entry(found.meta, opener)
    except (RemoteError, StoreError) as exc:
        return str(exc)[:200]
    return ""


def _in_engine(engine: Optional[Engine], entry: Entry) -> bool:
    """The entry's image is in the engine (whole: an engine lists an image only once loaded)."""
    found = engine.find(entry.engine_ids) if engine is not None else None
    return found is not None and list(found.diff_ids) == list(entry.layers)


def run_trial(n: int, rng: random.Random, work: Path, phase: str, engine: Optional[Engine] = None) -> Trial:
    root = Path(tempfile.mkdtemp(prefix=f"trial{n}-", dir=work))
    a, b = Store(root / "a"), Store(root / "b", engine=engine if phase == "stream" else None)
    entry = put_entry(a, f"trial{n}", _tar_layers(rng) if phase == "stream" else _layers(rng))
    reg = LocalRegistry(root / "registry").start()
    t0 = time.monotonic()
    try:
        total = sum(entry.sizes.values())
        repo, state = f"campaign/t{n}", root / "state"
        if phase != "push":
            _remote(reg, repo).push(entry, a.open_blob)
        kill = rng.choice(["bytes", "bytes", "time"])
        trial = Trial(n, phase, kill, 0.0, total, pause=rng.choice([rng.uniform(0.1, 0.6), rng.uniform(2.0, 3.0)]))
        trial.kill_at = rng.uniform(0.02, 0.98) * total if kill == "bytes" else rng.uniform(0.0, 0.6)
        killer = _Killer(reg, trial)
        with killer:
            if phase == "push":
                rc = _remote(reg, repo, state)
                rc.push(entry, lambda d: _Counting(a.open_blob(d), killer.tick))
            else:
                rc = _remote(reg, repo, have_blob=b.has_blob)
                trial.error = _fetch(b, rc, entry.key, phase, killer.tick)
        whole = _remote_is_whole(reg, repo, entry.key)
        first_ok = (whole is True and rc.disabled is None) if phase == "push" else bool(b.entries())
        trial.first_run = "failed" if not first_ok else ("survived" if trial.killed_mid_transfer else "completed")
        trial.remote_half_entry = whole is False
        trial.local_half_entry = bool(b.entries()) and not (b.verify().ok and all(b.has_blob(d) for d in entry.blobs))
        trial.temp_files_left = phase != "push" and b.tmp_dir.is_dir() and any(b.tmp_dir.iterdir())
        trial.engine_image_without_entry = _in_engine(engine, entry) and not b.entries()
        # The next run: a new process on the same caches.
        if phase == "push":
            _remote(reg, repo, state).push(put_entry(a, f"next{n}", [os.urandom(1000)]), a.open_blob)
            trial.next_run_completed = _remote_is_whole(reg, repo, entry.key) is True
        else:
            if not b.entries():
                _fetch(b, _remote(reg, repo, have_blob=b.has_blob), entry.key, phase)
            loaded = phase != "stream" or _in_engine(engine, entry)
            trial.next_run_completed = bool(b.entries()) and b.verify().ok and loaded
        trial.seconds = round(time.monotonic() - t0, 2)
        trial.kill_at, trial.pause = round(trial.kill_at, 3), round(trial.pause, 2)
        return trial
    finally:
        reg.stop()
        found = engine.find(entry.engine_ids) if engine is not None and phase == "stream" else None
        if found is not None:
            engine.remove(found.id)  # type: ignore[union-attr]
        shutil.rmtree(root, ignore_errors=True)


def run_campaign(trials: int, seed: int, work: Optional[Path] = None,
                 progress: Optional[Callable[[Trial], None]] = None,
                 engine: Optional[Engine] = None, stream_trials: int = 0) -> Dict[str, Any]:
    """`trials` push and fetch trials, alternating; then, given an engine, `stream_trials` fetches
    streamed into its load (their own random sequence: the others stay as they were)."""
    if stream_trials and engine is None:
        raise ValueError("stream trials need an engine")
    work = work or Path(tempfile.mkdtemp(prefix="madcache-faults-"))
    rng = random.Random(seed)
    plan = [("push" if n % 2 == 0 else "fetch", rng) for n in range(trials)]
    stream_rng = random.Random(f"{seed}-stream")
    plan += [("stream", stream_rng) for _ in range(stream_trials)]
    results = []
    for n, (phase, rng) in enumerate(plan):
        trial = run_trial(n, rng, work, phase, engine)
        results.append(trial)
        if progress:
            progress(trial)
    summary = {
        "trials": len(results),
        "push_trials": sum(t.phase == "push" for t in results),
        "fetch_trials": sum(t.phase == "fetch" for t in results),
        "stream_trials": sum(t.phase == "stream" for t in results),
        "killed_mid_transfer": sum(t.killed_mid_transfer for t in results),
        "first_run": {k: sum(t.first_run == k for t in results) for k in ("completed", "survived", "failed")},
        "remote_half_entries": sum(t.remote_half_entry for t in results),
        "local_half_entries": sum(t.local_half_entry for t in results),
        "temp_files_left": sum(t.temp_files_left for t in results),
        "engine_images_without_entry": sum(t.engine_image_without_entry for t in results),
        "next_run_completed": sum(t.next_run_completed for t in results),
    }
    return {"seed": seed, "summary": summary, "trials": [asdict(t) for t in results]}
