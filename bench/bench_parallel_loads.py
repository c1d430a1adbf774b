"""Benchmark: loading the realistic suite's images one at a time against two at once, on one engine.

    python -m pytest_madcache.localengine --engine KIND -- python bench/bench_parallel_loads.py --record

What `--cache-prefetch-jobs` should default to on each engine kind.  The suite's 2 model images are
saved into a cache once; then, in one loop whose order alternates, both are loaded with nothing of
them in the engine (their base present, as on a fresh runner): one after the other, and at the same
time on two threads (each with its own Store, as prefetch runs them).  Wall time of the pair of loads.

Writes bench/results/parallel-loads-KIND.json with --record (KIND: MADCACHE_ENGINE_KIND, else the
engine's name).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "examples" / "realistic"))

import prepare  # noqa: E402
from benchlib import forget_models, loadavg, log, machine, rotate, stamp, timed  # noqa: E402

from pytest_madcache.engines.docker import Engine  # noqa: E402
from pytest_madcache.store import Store  # noqa: E402

SUITE = ROOT / "examples" / "realistic"
MODEL_LABEL = "org.madcache.example"


def load_all(cache: Path, serial: bool) -> None:
    engine = Engine()
    entries = Store(cache).entries()
    if serial:
        for entry in entries:
            Store(cache, engine=engine, progress=False).load(entry)
        return
    errors: List[BaseException] = []

    def one(entry: Any) -> None:
        try:
            Store(cache, engine=engine, progress=False).load(entry)
        except BaseException as exc:  # noqa: BLE001 -- re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(e,)) for e in entries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=4, help="loads per way (default 4)")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--cache", metavar="DIR", help="a cache holding the suite's 2 entries, kept between runs "
                        "(the same entries load into every engine kind); filled when empty")
    args = parser.parse_args()
    engine = Engine()
    kind = os.environ.get("MADCACHE_ENGINE_KIND") or engine.info.name
    work = Path(tempfile.mkdtemp(prefix="madcache-bench-parallel-"))
    cache = Path(args.cache) if args.cache else work / "cache"
    samples: Dict[str, List[float]] = {"one at a time": [], "two at once": []}
    log(f"engine: {engine.info.name}; load average {loadavg()}")
    try:
        prepare.prepare(log=sys.stderr)
        if len(Store(cache).entries()) != 2:
            log("filling the cache: the suite's images built and saved")
            subprocess.run([sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider", "-q",
                            "--enable-cache", "--cache-dir", str(cache), "--cache-warm-only"], check=True,
                           capture_output=True)
        if len(Store(cache).entries()) != 2:
            raise RuntimeError(f"expected the suite's 2 entries in {cache}")
        for i in range(args.repeat):
            for way in rotate(list(samples), i):
                forget_models(engine, MODEL_LABEL)
                seconds, _ = timed(lambda serial=way == "one at a time": load_all(cache, serial))
                log(f"{i + 1}/{args.repeat} {way}: {seconds:.2f} s")
                samples[way].append(round(seconds, 3))
    finally:
        try:
            forget_models(engine, MODEL_LABEL)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    medians = {way: statistics.median(s) for way, s in samples.items()}
    data = {"measured": stamp(), "machine": machine(), "engine": engine.info.name, "kind": kind,
            "command": f"python -m pytest_madcache.localengine --engine {kind} -- python "
                       "bench/bench_parallel_loads.py --record",
            "samples": samples, "medians": medians,
            "ratio_two_over_one": round(medians["two at once"] / medians["one at a time"], 3)}
    print(json.dumps(data, indent=1))
    if args.record:
        (ROOT / "bench" / "results" / f"parallel-loads-{kind}.json").write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
