"""Benchmark P1 cold and warm: the cache key of an unchanged build context, per session.

    python bench/bench_key.py [--repeat 5] [--json bench/results/key-cold-warm.json]

A session starts with no digest in memory: it used to hash the whole context again. With
the digest memo in the cache directory (`keymemo.DigestMemo`), an unchanged file costs a stat.
Each measure runs in a fresh Python process, as a pytest session would:

- cold, no memo: the first key of a session with an empty cache directory (every file read);
- cold, memo:    the first key of a session whose cache directory remembers the context;
- warm:          a second key in the same session (digests in memory).

The Docker SDK's import (the key reads `.dockerignore` with its rules) is timed apart: it is
paid once per session whatever the context.  Contexts: one of 300 MB (a few large files, as
model weights) and one of 10,000 small files.  No engine needed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pytest_madcache.core.keymemo import SETTLE_SECONDS

MB = 1 << 20
from benchlib import GOALS, stamp  # noqa: E402

GOALS_MS = GOALS["P1_cold_ms"]

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import docker.utils.build  # noqa: F401  (the SDK: paid once per session)
t1 = time.perf_counter()
from pathlib import Path
from pytest_madcache.core.key import KeySpec, key_for
cache = Path(sys.argv[2]) if sys.argv[2] != "-" else None
spec = KeySpec(image="ci-bench", context=Path(sys.argv[1]))
t2 = time.perf_counter()
first = key_for(spec, cache).digest
t3 = time.perf_counter()
second = key_for(spec, cache).digest
t4 = time.perf_counter()
assert first == second
print(json.dumps({"sdk_import": t1 - t0, "first": t3 - t2, "second": t4 - t3, "key": first}))
"""


def make_contexts(base: Path) -> Dict[str, Path]:
    big = base / "big"
    (big / "weights").mkdir(parents=True)
    (big / "Dockerfile").write_text("FROM scratch\nCOPY . /model\n")
    for i in range(6):  # 6 x 50 MB of incompressible "weights"
        (big / "weights" / f"shard-{i}.bin").write_bytes(os.urandom(50 * MB))
    many = base / "many"
    many.mkdir()
    (many / "Dockerfile").write_text("FROM scratch\nCOPY . /src\n")
    for d in range(100):
        sub = many / f"pkg{d:03d}"
        sub.mkdir()
        for f in range(100):
            (sub / f"mod{f:03d}.py").write_text(f"# module {d}.{f}\n" + "x = 1\n" * (f % 17 + 1))
    past = 1_600_000_000
    for path in [*big.rglob("*"), *many.rglob("*")]:  # settled files, as in a checked-out repository
        os.utime(path, (past, past))
    time.sleep(SETTLE_SECONDS + 0.1)  # files changed this recently are hashed every time (their ctime is now)
    return {"300 MB": big, "10,000 files": many}


def probe(context: Path, cache: Optional[Path]) -> Dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", PROBE, str(context), str(cache) if cache else "-"],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout)


def measure(contexts: Dict[str, Path], work: Path, repeat: int) -> Dict[str, Dict[str, List[float]]]:
    out: Dict[str, Dict[str, List[float]]] = {}
    for name, context in contexts.items():
        samples: Dict[str, List[float]] = {"cold_no_memo": [], "cold_memo": [], "warm": [], "sdk_import": []}
        cache = work / f"cache-{name.replace(' ', '').replace(',', '')}"
        cache.mkdir()
        probe(context, cache)  # fills the memo (and the page cache)
        keys = set()
        for _ in range(repeat):  # alternate the two cold variants run by run
            empty = Path(tempfile.mkdtemp(dir=work))
            r = probe(context, empty)
            samples["cold_no_memo"].append(r["first"])
            keys.add(r["key"])
            r = probe(context, cache)
            samples["cold_memo"].append(r["first"])
            samples["warm"].append(r["second"])
            samples["sdk_import"].append(r["sdk_import"])
            keys.add(r["key"])
        assert len(keys) == 1, "the memo changed a key"
        out[name] = samples
    return out


def table(results: Dict[str, Dict[str, List[float]]]) -> str:
    def ms(xs: List[float]) -> str:
        return f"{statistics.median(xs) * 1000:.1f} ms ({min(xs) * 1000:.1f}-{max(xs) * 1000:.1f})"

    lines = ["| context | cold, no memo (every file read) | cold, memo | warm | goal (cold, memo) | verdict | "
             "SDK import, apart |", "|---|---|---|---|---|---|---|"]
    for name, s in results.items():
        cold = statistics.median(s["cold_memo"]) * 1000
        lines.append(f"| {name} | {ms(s['cold_no_memo'])} | **{ms(s['cold_memo'])}** | {ms(s['warm'])} | "
                     f"<= {GOALS_MS[name]:.0f} ms | {'met' if cold <= GOALS_MS[name] else 'MISSED'} | "
                     f"{ms(s['sdk_import'])} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="madcache-bench-key-") as tmp:
        contexts = make_contexts(Path(tmp))
        results = measure(contexts, Path(tmp), args.repeat)
    text = (f"P1 cold and warm: the key of an unchanged context, first lookup of a session "
            f"({os.cpu_count()} CPUs, median of {args.repeat} sessions each)\n{table(results)}\n")
    print(text, end="")
    if args.json:  # and the table beside it, FILE.md, for the docs to quote
        Path(args.json).write_text(json.dumps({"measured": stamp(), "repeat": args.repeat, "results": results}, indent=2))
        Path(args.json).with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
