"""What the benchmarks share: timings, the machine, disk by `du`, and the raw engine path.

Raw figures go through the same client as ours (the Docker SDK over the
engine's API, one client per run), so a ratio compares what we do with the
bytes, not which client carried them.  Only the benchmarks import this.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

from pytest_madcache.engines.docker import Engine

MB = 1000 * 1000  # figures are printed in decimal megabytes
#: Every goal the benchmarks and the summary judge against, in one place (each is an upper bound
#: but P7's, which are lower bounds):
#: P1: a hit with the image in the engine, seconds per lookup; P1_cold_ms: the key of an unchanged
#: context, first of a session, per context (milliseconds); P2: a hit with only the top layer missing
#: against a load of a top-layer-only tar; P2b: the same against a full raw load; P3: a load with
#: nothing in the engine against raw `docker load`; P4: a save against raw `docker save`; P5: disk
#: against one multi-image `docker save`; P6: the plugin's overhead on a suite that uses no model
#: (a fraction of its time); P7: the realistic suite's second run against its first, end to end, and
#: its image acquisition alone (times faster, at least).
GOALS = {"P1": 0.005, "P1_cold_ms": {"300 MB": 30.0, "10,000 files": 100.0}, "P2": 1.2, "P2b": 0.25,
         "P3": 1.10, "P4": 1.15, "P5": 1.02, "P6": 0.03, "P7": 10.0, "P7_acquisition": 20.0}
CHUNK = 1 << 20


def stamp() -> Dict[str, Any]:
    """What a result was measured on: the commit checked out, whether the code it measures
    differed from it (uncommitted changes to the package, bench/ or examples/), and when (UTC).
    Every results file carries one; tests/test_bench_results.py fails on a file older than the
    last change to the code it measures."""
    import datetime as _dt

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "pytest_madcache", "bench/*.py",
                "bench/*.sh", "examples")
    return {"commit": git("rev-parse", "HEAD") or "unknown", "dirty": bool(dirty),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any]) -> Tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def du(path: Path) -> int:
    """Apparent bytes under PATH as `du -sb` counts them: from outside the store's records."""
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine() -> Dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"vcpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "python": platform.python_version()}


def rotate(names: Sequence[str], i: int) -> List[str]:
    """Run i's order: each contender goes first in turn, so none always meets a warm or cold engine."""
    k = i % len(names)
    return [*names[k:], *names[:k]]


class Series:
    """Repeated timings of one measure."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.samples: List[float] = []

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def fmt(self, unit: str = "s") -> str:
        if not self.samples:
            return "-"
        scale, digits = (1000.0, 1) if unit == "ms" else (1.0, 3)
        med, lo, hi = self.median * scale, min(self.samples) * scale, max(self.samples) * scale
        return f"{med:.{digits}f} {unit} ({lo:.{digits}f}-{hi:.{digits}f})"

    def to_json(self) -> Dict[str, Any]:
        return {"median": self.median if self.samples else None, "min": min(self.samples, default=None),
                "max": max(self.samples, default=None), "samples": self.samples}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    return [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *[line(r) for r in rows]]


# -- the raw engine, through the SDK -------------------------------------------------


def forget_models(engine: Engine, label: str) -> None:
    """A fresh runner: no image carrying LABEL (the models), their layers forgotten; the base stays."""
    for image in engine.api.images(filters={"label": label}):
        engine.remove(image["Id"], force=True, prune_parents=True)
    engine.forget_layers()


def raw_save(engine: Engine, refs: Sequence[str], path: Path) -> int:
    """`docker save -o PATH REF...` through the SDK: the engine's own archive, written to a file."""
    api = engine.api
    if len(refs) == 1:
        chunks = api.get_image(refs[0], chunk_size=CHUNK)
    else:  # the API takes several names; docker-py's helper takes one
        response = api._get(api._url("/images/get"), params={"names": list(refs)}, stream=True)
        api._raise_for_status(response)
        chunks = response.iter_content(CHUNK)
    written = 0
    with open(path, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
            written += len(chunk)
    return written


def raw_load(engine: Engine, path: Path) -> None:
    """`docker load -i PATH` through the SDK."""
    with open(path, "rb") as fh:
        engine.load(iter(lambda: fh.read(CHUNK), b""))


# -- where the time goes --------------------------------------------------------------

ENGINE_PROCESSES = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "podman", "conmon")


def engine_cpu_by_process() -> Dict[int, float]:
    """CPU seconds (user + system) spent so far by each engine process (dockerd, containerd, podman),
    with its children that have ended (dockerd unpacks layers in a re-executed child).  Every such
    process on the machine counts: benchmark with one engine running."""
    tick = os.sysconf("SC_CLK_TCK")
    spent: Dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        if comm in ENGINE_PROCESSES:
            fields = text[text.rindex(")") + 2:].split()
            spent[int(stat.parent.name)] = sum(int(v) for v in fields[11:15]) / tick  # utime, stime, cutime, cstime
    return spent


def engine_cpu_between(before: Dict[int, float], after: Dict[int, float]) -> float:
    """What the engine spent between two readings, from the processes alive at the second: one that
    ended in between (an engine stopped by another test) takes its whole past with it, which would
    make the difference negative."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def self_cpu_seconds() -> float:
    """CPU seconds of this process, every thread (user + system)."""
    t = os.times()
    return t.user + t.system


class CpuSplit:
    """Wall time of a call beside the CPU time it cost this process and the engine."""

    def __init__(self) -> None:
        self.wall: List[float] = []
        self.ours: List[float] = []
        self.engine: List[float] = []

    def run(self, fn: Callable[[], Any]) -> Tuple[float, Any]:
        e0, s0 = engine_cpu_by_process(), self_cpu_seconds()
        seconds, result = timed(fn)
        self.ours.append(self_cpu_seconds() - s0)
        self.engine.append(engine_cpu_between(e0, engine_cpu_by_process()))
        self.wall.append(seconds)
        return seconds, result

    def to_json(self) -> Dict[str, float]:
        return {"wall": statistics.median(self.wall), "our_cpu": statistics.median(self.ours),
                "engine_cpu": statistics.median(self.engine)}


def profile_top(fn: Callable[[], Any], limit: int = 12) -> List[Dict[str, Any]]:
    """The functions of the calling thread that took the most time of their own in one call of FN."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(fn)
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(path).name}:{line}({name})", "calls": calls, "own_s": round(tottime, 4),
                     "cumulative_s": round(cumtime, 4)})
    rows.sort(key=lambda r: r["own_s"], reverse=True)
    return rows[:limit]


class Measured:
    """Timings by measure name, with the CPU split of every sample beside them (for a benchmark to extend)."""

    def __init__(self) -> None:
        self.series: Dict[str, Series] = {}
        self.cpu: Dict[str, CpuSplit] = {}

    def s(self, name: str) -> Series:
        return self.series.setdefault(name, Series(name))

    def measure(self, name: str, fn: Callable[[], Any]) -> Any:
        """One sample of NAME: its wall time in the series, the CPU it cost us and the engine beside it."""
        seconds, result = self.cpu.setdefault(name, CpuSplit()).run(fn)
        self.s(name).add(seconds)
        return result
