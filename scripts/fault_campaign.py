#!/usr/bin/env python
"""kill -9 campaign: crash every kind of store operation at every kind of write it makes.

Each trial copies a template cache (4 entries of small busybox images sharing
their base, plus the leftovers earlier crashes leave: a stray temp file, a
trash dir, an old unrenamed lease, a dead save's lease, an unreferenced blob),
forks a child that runs one operation on it, and kills the child with SIGKILL
either

* at a crash point: right before the k-th write the operation makes, k drawn
  uniformly from the writes a clean run of it makes.  A write is any call
  that changes the file system: open for writing (builtins/io.open, so also
  Path.write_bytes and Path.write_text; os.open with a write flag, so also
  Path.touch and the lock files), mkdir, rename, replace, unlink, rmdir
  (so also shutil.rmtree), utime, chmod, fsync, link, symlink, truncate; or
* after a random delay: uniform over the clean run's duration, from outside
  (this is where kills land in the middle of streaming a layer).

The operations: save, save with eviction, import (an entry fetched from
another cache, as remotes do), evict, prune, index rebuild, load (into the
engine, marking the entry used), load of a corrupt entry (refused and
dropped), verify's repair, and creating a new cache.  store_writes.py lists
every write call in pytest_madcache/store/*.py and installs the crash points;
calibration records which of those calls the crash points reach, and the
campaign fails when one is left out without a reason in UNREACHED_BY_DESIGN.

Then it checks, as the next process to open the cache would see it:

* lost: an entry the operation had no business removing is gone;
* corrupt served: verify() finds a bad or missing blob behind a listed entry,
  or a listed entry fails to load into the engine or loads under another
  image id, or a corrupt entry was loaded instead of refused;
* index not repaired: after opening, index.json does not list exactly the
  entry dirs;
* orphans: after the next operation's garbage collection, tmp/ is not empty
  or a blob no entry references remains.

Run (it prints its figures and changes no tracked file; maintainers add --record
to refresh bench/results/fault-campaign.json, whose table bench/render_faults.py
then writes to bench/results/fault-campaign.md and docs/cache.md):

    python -m pytest_madcache.localengine -- python scripts/fault_campaign.py --trials 300
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import platform
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench", Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from benchlib import stamp
from pytest_madcache.engines.docker import Engine  # noqa: E402
from pytest_madcache.store import EntryCorrupt, Store  # noqa: E402
from store_writes import UNREACHED_BY_DESIGN, Site, install_crash_points, store_write_sites  # noqa: E402

MB = 1 << 20
OPS = ("save", "save_evict", "import", "evict", "prune", "index", "load", "load_corrupt", "verify", "create")
ENGINE_OPS = {"save", "save_evict", "load", "load_corrupt"}
TEMPLATE_ENTRIES = 4
RESULTS = ROOT / "bench" / "results" / "fault-campaign.json"
COMMAND = "python -m pytest_madcache.localengine -- python scripts/fault_campaign.py --trials {trials}"

def key(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()


# -- the child: one operation, maybe a crash point ----------------------------------

def _child(directory: str, op: str, arg: Dict[str, Any], k: int, conn: Any) -> None:
    counter = [0]
    reached: Set[Tuple[str, int]] = set()
    note = ""
    try:
        engine = Engine() if op in ENGINE_OPS else None
        if op == "create":
            conn.send(("start", time.monotonic()))
            install_crash_points(k, counter, reached)
            Store(directory).entries()
        else:
            store = Store(directory, engine=engine, max_entries=4 if op == "save_evict" else 50)
            conn.send(("start", time.monotonic()))
            source = Store(arg["source"]) if op == "import" else None
            install_crash_points(k, counter, reached)
            if op in ("save", "save_evict"):
                store.save(arg["image"], key(arg["key"]), image_name="fault", image_tag=arg["key"])
            elif op == "import":
                store.import_entry(source.get(arg["entry"]).to_json(), source.open_blob, last_used=time.time())
            elif op == "evict":
                store.evict(arg["entry"])
            elif op == "prune":
                store.prune(max_entries=2)
            elif op == "index":
                store.entries()  # index.json is garbage: rebuilt and written under the lock
            elif op == "load":
                store.load(store.get(arg["entry"]))
            elif op == "load_corrupt":
                try:
                    store.load(store.get(arg["entry"]))
                    note = "served"
                except EntryCorrupt:
                    note = "refused"
            elif op == "verify":
                store.verify(repair=True)
        conn.send(("done", counter[0], sorted(reached), note))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        os._exit(0)


# -- the campaign ------------------------------------------------------------------------


@dataclass
class Counts:
    trials: int = 0
    killed: int = 0
    finished_before_kill: int = 0
    lost: int = 0
    corrupt_served: int = 0
    unrepaired_index: int = 0
    orphans: int = 0
    errors: int = 0


FAILURE_FIELDS = ("lost", "corrupt_served", "unrepaired_index", "orphans", "errors")


@dataclass
class Figures:
    by_op: Dict[str, Counts] = field(default_factory=dict)
    by_mode: Dict[str, int] = field(default_factory=dict)
    loads_checked: int = 0
    young_leases: int = 0  # tmp/new-* left by a kill between mkdir and rename; collected after the grace period
    new_entry_complete: int = 0
    new_entry_absent: int = 0
    errors: List[str] = field(default_factory=list)

    def op(self, name: str) -> Counts:
        return self.by_op.setdefault(name, Counts())

    def total(self, name: str) -> int:
        return sum(getattr(c, name) for c in self.by_op.values())

    @property
    def trials(self) -> int:
        return self.total("trials")

    @property
    def killed(self) -> int:
        return self.total("killed")

    @property
    def failures(self) -> int:
        return sum(self.total(n) for n in FAILURE_FIELDS)

    def lines(self) -> List[str]:
        t = self.total
        return [
            f"trials: {self.trials} (killed mid-operation: {self.killed}, finished before the kill: "
            f"{t('finished_before_kill')})",
            "by operation: " + ", ".join(f"{k} {v.trials}" for k, v in self.by_op.items()),
            "by kill mode: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_mode.items())),
            f"saves and imports interrupted: new entry complete {self.new_entry_complete}, "
            f"absent {self.new_entry_absent}",
            f"engine loads of surviving entries checked: {self.loads_checked}",
            f"unrenamed lease dirs left (collected once older than the store's grace period): {self.young_leases}",
            f"failures: lost {t('lost')}, corrupt served {t('corrupt_served')}, index not repaired "
            f"{t('unrepaired_index')}, orphans {t('orphans')}, errors {t('errors')}",
        ]


class Campaign:
    def __init__(self, engine: Engine, workdir: Path, seed: int = 0, log: Callable[[str], None] = print) -> None:
        self.engine = engine
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.log = log
        self.image_ids: List[str] = []
        self.template = workdir / "template"
        self.source = workdir / "source"  # another cache holding the images imports fetch
        self.calls: Dict[str, int] = {}
        self.durations: Dict[str, float] = {}
        self.reached: Dict[Tuple[str, int], Set[str]] = {}  # write site -> operations whose crash points hit it
        self.figures = Figures()

    # setup
    def build_images(self) -> None:
        from tests.images import write_context

        for i in range(6):
            size = 24 * MB if i == 5 else 64 * 1024
            ctx = write_context(self.workdir / f"img{i}", {f"d{i}.bin": size})
            tag = f"madcache-fault-{secrets.token_hex(4)}:latest"
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
        source = Store(self.source, engine=self.engine, max_entries=50)
        for i in (4, 5):
            source.save(self.image_ids[i], key(f"s{i}"), image_name="fault", image_tag=f"s{i}")

    def cleanup(self) -> None:
        for image_id in self.image_ids:
            try:
                self.engine.remove(image_id)
            except Exception:
                pass

    # one trial
    def _leftovers(self, d: Path) -> None:
        """What earlier crashes leave, for this operation's garbage collection to meet."""
        (d / f".tmp-index.json-1-{secrets.token_hex(4)}").write_bytes(b"{torn")
        trash = d / "tmp" / f"trash-run_1_dead{secrets.token_hex(2)}-0000"
        trash.mkdir()
        (trash / "meta.json").write_bytes(b"{}")
        young = d / "tmp" / f"new-1-{secrets.token_hex(6)}"
        young.mkdir()
        (young / "lock").write_bytes(b"")
        old = time.time() - 7200
        os.utime(young, (old, old))
        data = os.urandom(512)
        import hashlib

        stray = hashlib.sha256(data).hexdigest()
        (d / "blobs" / "sha256" / stray).write_bytes(data)
        dead = d / "tmp" / f"save-1-{secrets.token_hex(6)}"
        dead.mkdir()
        (dead / "lock").write_bytes(b"")
        (dead / "digests").write_text(stray + "\n")

    def _corrupt(self, store: Store, entry: Any) -> None:
        """Flip a byte of the entry's top layer (its own: the base is shared), keeping the size."""
        path = store.blob_file(entry.layers[-1])
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    def _prepare(self, op: str) -> tuple:
        d = self.workdir / f"trial-{secrets.token_hex(4)}"
        if op == "create":
            d.mkdir()
            return d / "cache", [], {}, set()
        shutil.copytree(self.template, d, symlinks=True)
        self._leftovers(d)
        store = Store(d, max_entries=50)
        before = sorted(store.entries(), key=lambda e: e.last_used)  # oldest first
        arg: Dict[str, Any] = {}
        allowed_gone: set = set()
        if op in ("save", "save_evict"):
            arg = {"image": self.image_ids[self.rng.choice([4, 5])], "key": f"new-{secrets.token_hex(3)}"}
            if op == "save_evict":
                allowed_gone = {before[0].id}  # the least recently used one makes room
        elif op == "import":
            entry = self.rng.choice(Store(self.source).entries())
            arg = {"source": str(self.source), "entry": entry.id, "key": entry.key}
        elif op == "evict":
            victim = self.rng.choice(before)
            arg = {"entry": victim.id}
            allowed_gone = {victim.id}
        elif op == "prune":
            allowed_gone = {e.id for e in before[:-2]}
        elif op == "index":
            (d / "index.json").write_bytes(b"\x00garbage{" + os.urandom(64))
        elif op in ("load", "load_corrupt", "verify"):
            victim = self.rng.choice(before)
            arg = {"entry": victim.id}
            for image_id in victim.engine_ids:  # so it is streamed, not found present
                self.engine.remove(image_id)
            if op == "load":
                (store.entry_dir / victim.id / "used").unlink()  # marking it used creates the file again
            else:
                self._corrupt(store, victim)
                allowed_gone = {victim.id}
        return d, before, arg, allowed_gone

    def _run_child(self, d: Path, op: str, arg: Dict[str, Any], k: int, delay: Optional[float]) -> Tuple[str, str]:
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(str(d), op, arg, k, child))
        proc.start()
        child.close()  # so the child's death shows as EOF here
        outcome, note = "killed", ""
        try:
            msg = parent.recv() if parent.poll(60) else ("error", "child did not start")
            if msg[0] == "error":
                return "error:" + msg[1], ""
            if delay is not None and not parent.poll(delay):
                os.kill(proc.pid, signal.SIGKILL)
            elif parent.poll(60):
                msg = parent.recv()
                if msg[0] != "done":
                    return "error:" + str(msg[1]), ""
                outcome, note = "finished", msg[3]
                if k == 0 and delay is None:
                    self.calls[op] = msg[1]
                    for site in msg[2]:
                        self.reached.setdefault(tuple(site), set()).add(op)
        except EOFError:
            outcome = "killed"  # the child died with the pipe open: SIGKILL at a crash point
        finally:
            proc.join(60)
            if proc.is_alive():
                proc.kill()
                proc.join()
            parent.close()
        return outcome, note

    def calibrate(self) -> None:
        """A clean run of each operation: how many crash points, where they are, how long it takes."""
        for op in OPS:
            d, _, arg, _ = self._prepare(op)
            start = time.monotonic()
            outcome, _ = self._run_child(d, op, arg, 0, None)
            self.durations[op] = time.monotonic() - start
            if outcome != "finished":
                raise RuntimeError(f"calibration run of {op} failed: {outcome}")
            shutil.rmtree(d.parent if op == "create" else d, ignore_errors=True)
        self.log("crash points per operation: " + ", ".join(f"{op} {n}" for op, n in self.calls.items()))

    def unreached_sites(self) -> List[Site]:
        """Write calls of the store that no crash point reached (and no reason says why)."""
        return [s for s in store_write_sites() if (s.module, s.line) not in self.reached
                and (s.module, s.function, s.kind) not in UNREACHED_BY_DESIGN]

    def trial(self, op: str, mode: str, load_check: bool = True) -> None:
        f = self.figures
        counts = f.op(op)
        d, before, arg, allowed_gone = self._prepare(op)
        if mode == "point":
            k = self.rng.randint(1, max(1, self.calls[op]))
            outcome, note = self._run_child(d, op, arg, k, None)
        else:
            outcome, note = self._run_child(d, op, arg, 0, self.rng.uniform(0, self.durations[op]))
        counts.trials += 1
        f.by_mode[mode] = f.by_mode.get(mode, 0) + 1
        trial_dir = d.parent if op == "create" else d
        if outcome.startswith("error:"):
            counts.errors += 1
            f.errors.append(f"{op}/{mode}: {outcome}")
            shutil.rmtree(trial_dir, ignore_errors=True)
            return
        if outcome == "killed":
            counts.killed += 1
        else:
            counts.finished_before_kill += 1
        if note == "served":
            counts.corrupt_served += 1
            f.errors.append(f"{op}: a corrupt entry was loaded instead of refused")
        self.check(d, op, counts, before, arg, allowed_gone, load_check)
        shutil.rmtree(trial_dir, ignore_errors=True)

    def check(self, d: Path, op: str, counts: Counts, before: Sequence[Any], arg: Dict[str, Any],
              allowed_gone: set, load_check: bool) -> None:
        f = self.figures
        store = Store(d, engine=self.engine, max_entries=50)  # the next process to open it
        if op in ("load_corrupt", "verify"):
            store.verify(repair=True)  # the planted corruption is what `madcache verify` repairs
        entries = store.entries()
        ids = {e.id for e in entries}
        lost = {e.id for e in before} - allowed_gone - ids
        if lost:
            counts.lost += 1
            f.errors.append(f"{op}: lost {sorted(lost)}")
        dirs = {p.name for p in store.entry_dir.iterdir()}
        index = set(json.loads((d / "index.json").read_text())["entries"])
        if not (index == dirs == ids):
            counts.unrepaired_index += 1
            f.errors.append(f"{op}: index {sorted(index)} dirs {sorted(dirs)} listed {sorted(ids)}")
        report = store.verify(repair=False)
        if not report.ok:
            counts.corrupt_served += 1
            f.errors.append(f"{op}: verify found {report}")
        if op in ("save", "save_evict", "import"):
            new = [e for e in entries if e.key in (key(arg["key"]), arg["key"])]
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
                counts.corrupt_served += 1
                f.errors.append(f"{op}: load of {e.id} failed: {exc}")
        # The next operation's garbage collection leaves nothing behind.  A lease killed
        # before it was renamed into view (tmp/new-*) is collected once it is old enough.
        for young in store.tmp_dir.glob("new-*"):
            if time.time() - young.stat().st_mtime < 3600:  # not the old one _leftovers planted
                f.young_leases += 1
            old = time.time() - 7200
            os.utime(young, (old, old))
        store.prune()
        leftovers = sorted(p.name for p in store.tmp_dir.iterdir())
        referenced = {x.split(":", 1)[1] for e in store.entries() for x in e.blobs}
        blobs = {p.name.split(".", 1)[0] for p in store.blob_dir.iterdir()}
        stray = sorted(p.name for p in d.iterdir() if p.name.startswith(".tmp-"))
        if leftovers or blobs != referenced or stray:
            counts.orphans += 1
            f.errors.append(f"{op}: orphans tmp={leftovers} unreferenced={sorted(blobs - referenced)} "
                            f"missing={sorted(referenced - blobs)} stray={stray}")

    def run(self, trials: int, load_every: int = 1) -> Figures:
        plan = [(OPS[i % len(OPS)], "point" if (i // len(OPS)) % 2 == 0 else "delay") for i in range(trials)]
        for n, (op, mode) in enumerate(plan):
            self.trial(op, mode, load_check=(n % load_every == 0))
        return self.figures


# -- the record: bench/results/fault-campaign.json (bench/render_faults.py renders its table) ------


def record(campaign: Campaign, trials: int, seed: int, seconds: float) -> Dict[str, Any]:
    f = campaign.figures
    sites = store_write_sites()
    return {
        "command": COMMAND.format(trials=trials),
        "seed": seed,
        "seconds": round(seconds),
        "engine": campaign.engine.info.name,
        "python": platform.python_version(),
        "operations": {op: asdict(c) for op, c in f.by_op.items()},
        "by_kill_mode": f.by_mode,
        "crash_points": campaign.calls,
        "write_sites": {
            "total": len(sites),
            "reached": sum(1 for s in sites if (s.module, s.line) in campaign.reached),
            "unreached_by_design": [f"{m} {fn}: {kind} ({why})" for (m, fn, kind), why in UNREACHED_BY_DESIGN.items()],
            "unreached": [f"{s.module}:{s.line} {s.function}: {s.kind}" for s in campaign.unreached_sites()],
        },
        "loads_checked": f.loads_checked,
        "new_entry_complete": f.new_entry_complete,
        "new_entry_absent": f.new_entry_absent,
        "errors": f.errors[:50],
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--load-every", type=int, default=1, help="load-check a survivor every N trials")
    parser.add_argument("--record", action="store_true",
                        help="maintainers: write the committed bench/results/fault-campaign.{json,md} and the table "
                             "in docs/cache.md (without it a run prints its figures and changes no tracked file)")
    parser.add_argument("--no-record", action="store_true", help="the default; kept for old command lines")
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
    seconds = time.monotonic() - start
    print(f"kill -9 campaign (seed {args.seed}, {seconds:.0f} s)")
    for line in figures.lines():
        print("  " + line)
    unreached = campaign.unreached_sites()
    for site in unreached:
        print(f"  ! write without a crash point: {site.module}:{site.line} {site.function}: {site.kind}")
    for err in figures.errors[:20]:
        print("  ! " + err)
    if not args.record:
        print(f"not recorded ({RESULTS.relative_to(ROOT)} stays as committed; --record writes it)")
    elif not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"measured": stamp(), **record(campaign, args.trials, args.seed, seconds)},
                                      indent=1) + "\n")
        spec = importlib.util.spec_from_file_location("render_faults", ROOT / "bench" / "render_faults.py")
        render = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(render)
        render.render(RESULTS)
        print(f"recorded {RESULTS.relative_to(ROOT)}, its table in {RESULTS.with_suffix('.md').relative_to(ROOT)} "
              "and docs/cache.md")
    return 1 if figures.failures or unreached else 0


if __name__ == "__main__":
    sys.exit(main())
