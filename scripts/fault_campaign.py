#!/usr/bin/env python
"""kill -9 campaign: crash save, save+evict, evict, prune and index writes at random points.

Each trial copies a template cache (4 entries of small busybox images sharing
their base), forks a child that runs one operation on it and kills the child
with SIGKILL either

* at a crash point: the k-th state-changing call (os.mkdir, os.rename,
  os.replace, os.unlink, os.rmdir, os.fsync, os.utime, os.chmod, open for
  writing), k drawn uniformly from the calls a clean run of that operation
  makes; or
* after a random delay: uniform over the clean run's duration, from outside
  (this is where kills land in the middle of streaming a layer).

Then it checks, as the next process to open the cache would see it:

* lost: an entry the operation had no business removing is gone;
* corrupt: verify() finds a bad or missing blob behind a listed entry, or a
  listed entry fails to load into the engine (image removed first) or loads
  under another image id;
* unrepaired: after opening, index.json does not list exactly the entry dirs;
* orphans: after the next operation's garbage collection, tmp/ is not empty
  or a blob no entry references remains.

Run: python -m pytest_madcache.localengine -- python scripts/fault_campaign.py --trials 200
"""

from __future__ import annotations

import argparse
import builtins
import json
import multiprocessing
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pytest_madcache.engine import Engine  # noqa: E402
from pytest_madcache.store import Store  # noqa: E402

MB = 1 << 20
OPS = ("save", "save_evict", "evict", "prune", "index")
TEMPLATE_ENTRIES = 4


def key(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()


# -- the child: one operation, maybe a crash point ----------------------------------

_MUTATORS = ("mkdir", "rename", "replace", "unlink", "rmdir", "fsync", "utime", "chmod")


def _install_crash_point(k: int, counter: List[int]) -> None:
    """SIGKILL this process right before its k-th state-changing call (k=0: count only)."""

    def hit() -> None:
        counter[0] += 1
        if k and counter[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)

    for name in _MUTATORS:
        real = getattr(os, name)

        def wrapped(*args: Any, _real: Callable = real, **kwargs: Any) -> Any:
            hit()
            return _real(*args, **kwargs)

        setattr(os, name, wrapped)
    real_open = builtins.open

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+"):
            hit()
        return real_open(file, mode, *args, **kwargs)

    builtins.open = open_


def _child(directory: str, op: str, arg: Dict[str, Any], k: int, conn: Any) -> None:
    counter = [0]
    try:
        engine = Engine() if op in ("save", "save_evict") else None
        max_entries = 4 if op == "save_evict" else 50
        store = Store(directory, engine=engine, max_entries=max_entries)
        conn.send(("start", time.monotonic()))
        _install_crash_point(k, counter)
        if op in ("save", "save_evict"):
            store.save(arg["image"], key(arg["key"]), image_name="fault", image_tag=arg["key"])
        elif op == "evict":
            store.evict(arg["entry"])
        elif op == "prune":
            store.prune(max_entries=2)
        elif op == "index":
            store.entries()  # index.json is garbage: rebuilt and written under the lock
        conn.send(("done", counter[0]))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        os._exit(0)


# -- the campaign ------------------------------------------------------------------------


@dataclass
class Figures:
    trials: int = 0
    killed: int = 0
    finished_before_kill: int = 0
    by_op: Dict[str, int] = field(default_factory=dict)
    by_mode: Dict[str, int] = field(default_factory=dict)
    lost: int = 0
    corrupt_served: int = 0
    unrepaired_index: int = 0
    orphans: int = 0
    loads_checked: int = 0
    young_leases: int = 0  # tmp/new-* left by a kill between mkdir and rename; collected after the grace period
    new_entry_complete: int = 0
    new_entry_absent: int = 0
    errors: List[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return self.lost + self.corrupt_served + self.unrepaired_index + self.orphans + len(self.errors)

    def lines(self) -> List[str]:
        return [
            f"trials: {self.trials} (killed: {self.killed}, finished before the kill: {self.finished_before_kill})",
            "by operation: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_op.items())),
            "by kill mode: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_mode.items())),
            f"saves interrupted: new entry complete {self.new_entry_complete}, absent {self.new_entry_absent}",
            f"engine loads of surviving entries checked: {self.loads_checked}",
            f"unrenamed lease dirs left (collected once older than the store's grace period): {self.young_leases}",
            f"failures: lost {self.lost}, corrupt served {self.corrupt_served}, index not repaired "
            f"{self.unrepaired_index}, orphans {self.orphans}, errors {len(self.errors)}",
        ]


class Campaign:
    def __init__(self, engine: Engine, workdir: Path, seed: int = 0, log: Callable[[str], None] = print) -> None:
        self.engine = engine
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.log = log
        self.image_ids: List[str] = []
        self.tags: List[str] = []
        self.template = workdir / "template"
        self.calls: Dict[str, int] = {}
        self.durations: Dict[str, float] = {}
        self.figures = Figures()

    # setup
    def build_images(self) -> None:
        from tests.images import write_context

        for i in range(6):
            size = 24 * MB if i == 5 else 64 * 1024
            ctx = write_context(self.workdir / f"img{i}", {f"d{i}.bin": size})
            tag = f"madcache-fault-{secrets.token_hex(4)}:latest"
            self.tags.append(tag)
            self.image_ids.append(self.engine.build(ctx, tag=tag).image_id)

    def make_template(self) -> None:
        store = Store(self.template, engine=self.engine, max_entries=50)
        for i in range(TEMPLATE_ENTRIES):
            store.save(self.image_ids[i], key(f"t{i}"), image_name="fault", image_tag=f"t{i}")
            time.sleep(0.01)
        # distinct last-used times: t0 oldest ... t3 newest
        now = time.time()
        for n, e in enumerate(sorted(store.entries(), key=lambda e: e.created)):
            os.utime(store.entry_dir / e.id / "used", (now - 1000 + n, now - 1000 + n))

    def cleanup(self) -> None:
        for image_id in self.image_ids:
            try:
                self.engine.remove(image_id)
            except Exception:
                pass

    # one trial
    def _prepare(self, op: str) -> tuple:
        d = self.workdir / f"trial-{secrets.token_hex(4)}"
        shutil.copytree(self.template, d, symlinks=True)
        store = Store(d, max_entries=50)
        before = sorted(store.entries(), key=lambda e: e.last_used)  # oldest first
        arg: Dict[str, Any] = {}
        allowed_gone: set = set()
        if op == "save":
            arg = {"image": self.image_ids[self.rng.choice([4, 5])], "key": f"new-{secrets.token_hex(3)}"}
        elif op == "save_evict":
            arg = {"image": self.image_ids[self.rng.choice([4, 5])], "key": f"new-{secrets.token_hex(3)}"}
            allowed_gone = {before[0].id}  # the least recently used one makes room
        elif op == "evict":
            victim = self.rng.choice(before)
            arg = {"entry": victim.id}
            allowed_gone = {victim.id}
        elif op == "prune":
            allowed_gone = {e.id for e in before[:-2]}
        elif op == "index":
            (d / "index.json").write_bytes(b"\x00garbage{" + os.urandom(64))
        return d, before, arg, allowed_gone

    def _run_child(self, d: Path, op: str, arg: Dict[str, Any], k: int, delay: Optional[float]) -> str:
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(str(d), op, arg, k, child))
        proc.start()
        child.close()  # so the child's death shows as EOF here
        outcome = "killed"
        try:
            msg = parent.recv() if parent.poll(60) else ("error", "child did not start")
            if msg[0] == "error":
                return "error:" + msg[1]
            if delay is not None:
                if parent.poll(delay):
                    msg = parent.recv()
                    outcome = "finished" if msg[0] == "done" else "error:" + str(msg[1])
                else:
                    os.kill(proc.pid, signal.SIGKILL)
            else:
                if parent.poll(60):
                    msg = parent.recv()
                    outcome = "finished" if msg[0] == "done" else "error:" + str(msg[1])
                    if msg[0] == "done" and k == 0:
                        self.calls[op] = msg[1]
        except EOFError:
            outcome = "killed"  # the child died with the pipe open: SIGKILL at a crash point
        finally:
            proc.join(60)
            if proc.is_alive():
                proc.kill()
                proc.join()
            parent.close()
        return outcome

    def calibrate(self) -> None:
        """A clean run of each operation: how many crash points, how long."""
        for op in OPS:
            d, _, arg, _ = self._prepare(op)
            start = time.monotonic()
            outcome = self._run_child(d, op, arg, 0, None)
            self.durations[op] = time.monotonic() - start
            if outcome != "finished":
                raise RuntimeError(f"calibration run of {op} failed: {outcome}")
            shutil.rmtree(d, ignore_errors=True)
        self.log("crash points per operation: " + ", ".join(f"{op} {n}" for op, n in self.calls.items()))

    def trial(self, op: str, mode: str, load_check: bool = True) -> None:
        f = self.figures
        d, before, arg, allowed_gone = self._prepare(op)
        if mode == "point":
            k = self.rng.randint(1, max(1, self.calls[op]))
            outcome = self._run_child(d, op, arg, k, None)
        else:
            outcome = self._run_child(d, op, arg, 0, self.rng.uniform(0, self.durations[op]))
        f.trials += 1
        f.by_op[op] = f.by_op.get(op, 0) + 1
        f.by_mode[mode] = f.by_mode.get(mode, 0) + 1
        if outcome.startswith("error:"):
            f.errors.append(f"{op}/{mode}: {outcome}")
            shutil.rmtree(d, ignore_errors=True)
            return
        if outcome == "killed":
            f.killed += 1
        else:
            f.finished_before_kill += 1
        self.check(d, op, before, arg, allowed_gone, load_check)
        shutil.rmtree(d, ignore_errors=True)

    def check(self, d: Path, op: str, before: Sequence[Any], arg: Dict[str, Any], allowed_gone: set,
              load_check: bool) -> None:
        f = self.figures
        store = Store(d, engine=self.engine, max_entries=50)  # the next process to open it
        entries = store.entries()
        ids = {e.id for e in entries}
        lost = {e.id for e in before} - allowed_gone - ids
        if lost:
            f.lost += 1
            f.errors.append(f"{op}: lost {sorted(lost)}")
        dirs = {p.name for p in store.entry_dir.iterdir()}
        index = set(json.loads((d / "index.json").read_text())["entries"])
        if not (index == dirs == ids):
            f.unrepaired_index += 1
            f.errors.append(f"{op}: index {sorted(index)} dirs {sorted(dirs)} listed {sorted(ids)}")
        report = store.verify(repair=False)
        if not report.ok:
            f.corrupt_served += 1
            f.errors.append(f"{op}: verify found {report}")
        if op in ("save", "save_evict"):
            new = [e for e in entries if e.key == key(arg["key"])]
            if new:
                f.new_entry_complete += 1
            else:
                f.new_entry_absent += 1
        if load_check and entries and report.ok:
            e = self.rng.choice(entries)
            for image_id in e.engine_ids:
                self.engine.remove(image_id)
            try:
                result = store.load(e)
                info = self.engine.inspect(result.image_id)
                if info is None or result.image_id not in e.engine_ids or info.diff_ids != e.layers:
                    raise RuntimeError(f"loaded image {result.image_id} is not entry {e.id}'s image")
                f.loads_checked += 1
            except Exception as exc:
                f.corrupt_served += 1
                f.errors.append(f"{op}: load of {e.id} failed: {exc}")
        # The next operation's garbage collection leaves nothing behind.  A lease killed
        # before it was renamed into view (tmp/new-*) is collected once it is old enough.
        for young in store.tmp_dir.glob("new-*"):
            f.young_leases += 1
            old = time.time() - 7200
            os.utime(young, (old, old))
        store.prune()
        leftovers = sorted(p.name for p in store.tmp_dir.iterdir())
        referenced = {x.split(":", 1)[1] for e in store.entries() for x in e.blobs}
        blobs = {p.name.split(".", 1)[0] for p in store.blob_dir.iterdir()}
        stray = sorted(p.name for p in d.iterdir() if p.name.startswith(".tmp-"))
        if leftovers or blobs != referenced or stray:
            f.orphans += 1
            f.errors.append(f"{op}: orphans tmp={leftovers} unreferenced={sorted(blobs - referenced)} "
                            f"missing={sorted(referenced - blobs)} stray={stray}")

    def run(self, trials: int, load_every: int = 1) -> Figures:
        plan = [(OPS[i % len(OPS)], "point" if (i // len(OPS)) % 2 == 0 else "delay") for i in range(trials)]
        for n, (op, mode) in enumerate(plan):
            self.trial(op, mode, load_check=(n % load_every == 0))
        return self.figures


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--load-every", type=int, default=1, help="load-check a survivor every N trials")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="madcache-faults-"))
    engine = Engine()
    campaign = Campaign(engine, workdir, seed=args.seed)
    start = time.monotonic()
    try:
        campaign.build_images()
        campaign.make_template()
        campaign.calibrate()
        figures = campaign.run(args.trials, args.load_every)
    finally:
        campaign.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"kill -9 campaign (seed {args.seed}, {time.monotonic() - start:.0f} s)")
    for line in figures.lines():
        print("  " + line)
    for err in figures.errors[:20]:
        print("  ! " + err)
    return 1 if figures.failures else 0


if __name__ == "__main__":
    sys.exit(main())
