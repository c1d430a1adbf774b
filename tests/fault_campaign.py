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

`bench/fault_campaign.py` runs it and records the results in bench/results/;
tests/test_remote_faults.py runs a few trials.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from pytest_madcache.remote.oci import (Registry, RemoteCache, RemoteError, RemoteRef, RetryPolicy, key_tag,
                                    parse_manifest)
from pytest_madcache.store import Store, StoreError
from tests.registries import LocalRegistry
from tests.remote_helpers import put_entry, text_like

RETRY = RetryPolicy(attempts=4, base=0.2, cap=0.8)  # patience: about 1-1.5 s of waits


@dataclass
class Trial:
    n: int
    phase: str  # push | fetch
    kill: str  # "bytes" (after `kill_at` of the entry's bytes moved) | "time" (after `kill_at` seconds)
    kill_at: float
    entry_bytes: int
    pause: float  # seconds the registry stayed down
    killed_mid_transfer: bool = False
    first_run: str = ""  # completed | survived (retries rode out the kill) | failed (gave up; remote off)
    remote_half_entry: bool = False
    local_half_entry: bool = False
    next_run_completed: bool = False
    seconds: float = 0.0
    error: str = ""


def _layers(rng: random.Random) -> List[bytes]:
    out = []
    for i in range(rng.randint(3, 6)):
        size = rng.choice([200_000, 1_000_000, 3_000_000, 5_000_000])
        out.append(text_like(size, seed=rng.randrange(1 << 30)) if rng.random() < 0.5 else rng.randbytes(size))
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


def run_trial(n: int, rng: random.Random, work: Path, phase: str) -> Trial:
    root = Path(tempfile.mkdtemp(prefix=f"trial{n}-", dir=work))
    reg = LocalRegistry(root / "registry").start()
    restarts: List[threading.Timer] = []
    t0 = time.monotonic()
    try:
        a, b = Store(root / "a"), Store(root / "b")
        entry = put_entry(a, f"trial{n}", _layers(rng))
        total = sum(entry.sizes.values())
        repo, state = f"campaign/t{n}", root / "state"
        if phase == "fetch":
            _remote(reg, repo).push(entry, a.open_blob)
        kill = rng.choice(["bytes", "bytes", "time"])
        trial = Trial(n, phase, kill, 0.0, total, pause=rng.choice([rng.uniform(0.1, 0.6), rng.uniform(2.0, 3.0)]))
        trial.kill_at = rng.uniform(0.02, 0.98) * total if kill == "bytes" else rng.uniform(0.0, 0.6)
        moved = [0]
        lock = threading.Lock()
        killed, done = threading.Event(), threading.Event()

        def crash() -> None:
            with lock:
                if killed.is_set():
                    return
                killed.set()
            trial.killed_mid_transfer = not done.is_set()
            reg.kill()
            restart = threading.Timer(trial.pause, reg.start)
            restarts.append(restart)
            restart.start()

        def tick(k: int) -> None:
            with lock:
                moved[0] += k
                hit = kill == "bytes" and moved[0] >= trial.kill_at
            if hit:
                crash()

        timer = threading.Timer(trial.kill_at, crash) if kill == "time" else None
        if timer:
            timer.start()
        if phase == "push":
            rc = _remote(reg, repo, state)
            rc.push(entry, lambda d: _Counting(a.open_blob(d), tick))
        else:
            rc = _remote(reg, repo, have_blob=b.has_blob)
            found = rc.find(entry.key)
            if found is not None:
                try:
                    b.import_entry(found.meta, lambda d: _Counting(found.open_blob(d), tick))
                except (RemoteError, StoreError) as exc:
                    trial.error = str(exc)[:200]
        done.set()
        if timer:
            timer.cancel()
            timer.join()
        _wait_up(reg, restarts)
        whole = _remote_is_whole(reg, repo, entry.key)
        first_ok = (whole is True and rc.disabled is None) if phase == "push" else bool(b.entries())
        trial.first_run = "failed" if not first_ok else ("survived" if trial.killed_mid_transfer else "completed")
        trial.remote_half_entry = whole is False
        trial.local_half_entry = bool(b.entries()) and not (b.verify().ok and all(b.has_blob(d) for d in entry.blobs))
        # The next run: a new process on the same caches.
        if phase == "push":
            _remote(reg, repo, state).push(put_entry(a, f"next{n}", [os.urandom(1000)]), a.open_blob)
            trial.next_run_completed = _remote_is_whole(reg, repo, entry.key) is True
        else:
            nxt = _remote(reg, repo, have_blob=b.has_blob)
            found = None if b.entries() else nxt.find(entry.key)
            if found is not None:
                b.import_entry(found.meta, found.open_blob)
            trial.next_run_completed = bool(b.entries()) and b.verify().ok
        trial.seconds = round(time.monotonic() - t0, 2)
        trial.kill_at, trial.pause = round(trial.kill_at, 3), round(trial.pause, 2)
        return trial
    finally:
        _wait_up(reg, restarts)
        reg.stop()
        shutil.rmtree(root, ignore_errors=True)


def _wait_up(reg: LocalRegistry, restarts: List[threading.Timer]) -> None:
    for restart in restarts:
        restart.join()
    if reg.proc is None:
        reg.start()


def run_campaign(trials: int, seed: int, work: Optional[Path] = None,
                 progress: Optional[Callable[[Trial], None]] = None) -> Dict[str, Any]:
    rng = random.Random(seed)
    work = work or Path(tempfile.mkdtemp(prefix="madcache-faults-"))
    results = []
    for n in range(trials):
        trial = run_trial(n, rng, work, "push" if n % 2 == 0 else "fetch")
        results.append(trial)
        if progress:
            progress(trial)
    summary = {
        "trials": len(results),
        "push_trials": sum(t.phase == "push" for t in results),
        "fetch_trials": sum(t.phase == "fetch" for t in results),
        "killed_mid_transfer": sum(t.killed_mid_transfer for t in results),
        "first_run": {k: sum(t.first_run == k for t in results) for k in ("completed", "survived", "failed")},
        "remote_half_entries": sum(t.remote_half_entry for t in results),
        "local_half_entries": sum(t.local_half_entry for t in results),
        "next_run_completed": sum(t.next_run_completed for t in results),
    }
    return {"seed": seed, "summary": summary, "trials": [asdict(t) for t in results]}
