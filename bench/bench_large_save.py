"""Benchmark, on demand: saving a 10 GB image into the cache against a raw save, and where the time goes.

    python -m pytest_madcache.localengine --engine debian13 -- python bench/bench_large_save.py --record

An image of --layers layers of --layer-mb MB of random bytes each (default 3 x 3400 MB: 10.2 GB,
the shape of a large model's weights) is built, then saved --repeat times each way, alternating
and in an order that rotates: raw (`docker save -o` through the SDK: the engine's archive written
to a file) and ours (`Store.save` into an empty cache directory).  Both go through one client and
are timed by one clock (P4: ours / raw, goal 1.15x).

Where the time goes, sampled every 0.5 s during each save: the CPU seconds of every thread of this
process and of the engine's processes (a bottleneck thread runs near 1 s per s), and the kernel's
dirty and writeback page cache (/proc/meminfo: a writer throttled by writeback waits on the disk).
One more save of ours runs under cProfile (the consuming thread's functions by their own time).
Results: bench/results/large-save.json (and .md) with --record; 40 GB of free disk are needed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import benchlib  # noqa: E402
from benchlib import GOALS, log, machine, profile_top, raw_save, rotate, stamp  # noqa: E402

from pytest_madcache.devtools.localengine import busybox_path  # noqa: E402
from pytest_madcache.engines.docker import Engine  # noqa: E402
from pytest_madcache.store import Store  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> Dict[str, float]:
    """CPU seconds of each thread of this process, by its Python name (the tarstream producer's
    target is in it) and id."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        tid = int(stat.parent.name)
        name = names.get(tid) or text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        out[f"{name}/{tid}"] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def meminfo_mb() -> Dict[str, float]:
    wanted = {"Dirty", "Writeback"}
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in wanted:
            out[name] = int(rest.split()[0]) / 1024
    return out


class Sampler:
    """Every `every` seconds while a call runs: thread and engine CPU, dirty and writeback MB."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.samples: List[Dict[str, Any]] = []
        self._stop = threading.Event()

    def run(self, fn: Callable[[], Any]) -> float:
        thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        start = time.perf_counter()
        thread.start()
        try:
            fn()
        finally:
            seconds = time.perf_counter() - start
            self._stop.set()
            thread.join()
        return seconds

    def _loop(self) -> None:
        start = time.perf_counter()
        while not self._stop.wait(self.every):
            self.samples.append({"t": time.perf_counter() - start, "threads": thread_cpu(),
                                 "engine": sum(benchlib.engine_cpu_by_process().values()), **meminfo_mb()})

    def summary(self) -> Dict[str, Any]:
        """Per thread and for the engine: CPU seconds over the call and the busiest 10 s stretch
        (a thread at ~1 CPU-second per second is the bound); the most dirty and writeback MB."""
        if len(self.samples) < 2:
            return {}
        first, last = self.samples[0], self.samples[-1]
        span = last["t"] - first["t"]
        threads = {name: round(last["threads"][name] - first["threads"].get(name, 0.0), 2)
                   for name in last["threads"] if "bench-sampler" not in name}
        return {"seconds_sampled": round(span, 1),
                "cpu_seconds_by_thread": {k: v for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v > 0.05},
                "engine_cpu_seconds": round(last["engine"] - first["engine"], 2),
                "dirty_mb_max": round(max(s.get("Dirty", 0.0) for s in self.samples)),
                "writeback_mb_max": round(max(s.get("Writeback", 0.0) for s in self.samples)),
                "dirty_mb_median": round(statistics.median(s.get("Dirty", 0.0) for s in self.samples))}


def build(engine: Engine, work: Path, layers: int, layer_mb: int) -> str:
    ctx = work / "ctx"
    ctx.mkdir()
    shutil.copy(busybox_path(), ctx / "busybox")
    lines = ["FROM scratch", "COPY busybox /bin/busybox"]
    for i in range(layers):
        with open(ctx / f"weights{i}.bin", "wb") as fh:
            for _ in range(layer_mb):
                fh.write(os.urandom(1 << 20))
        lines.append(f"COPY weights{i}.bin /weights{i}.bin")
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    tag = f"madcache-bench-large-{secrets.token_hex(4)}:latest"
    result = engine.build(ctx, dockerfile=ctx / "Dockerfile", tag=tag, builder="legacy")
    shutil.rmtree(ctx)
    log(f"built {tag}: {layers} x {layer_mb} MB in {result.duration:.1f} s")
    return tag


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--layer-mb", type=int, default=3400)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="write bench/results/large-save.json and .md")
    args = parser.parse_args()
    engine = Engine()
    work = Path(tempfile.mkdtemp(prefix="madcache-bench-large-"))
    result: Dict[str, Any] = {"measured": stamp(), "machine": machine(), "engine": engine.info.name,
                              "layers": args.layers, "layer_mb": args.layer_mb, "repeat": args.repeat}
    tag = ""
    try:
        tag = build(engine, work, args.layers, args.layer_mb)
        result["image_bytes"] = engine.inspect(tag).size
        seconds: Dict[str, List[float]] = {"raw": [], "ours": []}
        where: Dict[str, List[Dict[str, Any]]] = {"raw": [], "ours": []}
        for i in range(args.repeat):
            for who in rotate(["raw", "ours"], i):
                sampler = Sampler()
                if who == "raw":
                    took = sampler.run(lambda: raw_save(engine, [tag], work / "raw.tar"))
                    (work / "raw.tar").unlink()
                else:
                    store = Store(work / "cache", engine=engine, max_entries=5, progress=False)
                    took = sampler.run(lambda s=store: s.save(tag, "ab" * 32, image_name="large"))
                    shutil.rmtree(work / "cache")
                seconds[who].append(took)
                where[who].append(sampler.summary())
                log(f"{who}: {took:.1f} s; {where[who][-1]}")
        store = Store(work / "cache", engine=engine, max_entries=5, progress=False)
        result["profile_ours"] = profile_top(lambda: store.save(tag, "cd" * 32, image_name="large"))
        shutil.rmtree(work / "cache")
        result.update(seconds=seconds, where=where,
                      P4=statistics.median(seconds["ours"]) / statistics.median(seconds["raw"]), goal=GOALS["P4"])
    finally:
        if tag:
            engine.remove(tag, prune_parents=True)
        shutil.rmtree(work, ignore_errors=True)
    print(table(result))
    if args.record:
        out = ROOT / "bench" / "results" / "large-save.json"
        out.write_text(json.dumps(result, indent=1))
        out.with_suffix(".md").write_text(table(result) + "\n")
    return 0


def table(result: Dict[str, Any]) -> str:
    raw, ours = (statistics.median(result["seconds"][w]) for w in ("raw", "ours"))
    m = result["measured"]
    size = result["image_bytes"] / 1e9
    lines = [f"Saving a {size:.1f} GB image ({result['layers']} layers of {result['layer_mb']} MB of random bytes) "
             f"on {result['engine']}, {result['repeat']} times each way, alternating:", "",
             "| save | median | samples |", "|---|---|---|",
             f"| raw (`docker save -o`) | {raw:.1f} s | {', '.join(f'{s:.1f}' for s in result['seconds']['raw'])} |",
             f"| ours (`Store.save`) | {ours:.1f} s | {', '.join(f'{s:.1f}' for s in result['seconds']['ours'])} |",
             "", f"P4: {result['P4']:.2f}x (goal <= {result['goal']:.2f}x). Measured at commit {m['commit'][:12]}, "
             f"{m['date']}; `bench/results/large-save.json`, regenerated by `python -m pytest_madcache.localengine "
             "--engine debian13 -- python bench/bench_large_save.py --record`."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
