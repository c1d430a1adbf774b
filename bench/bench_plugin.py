"""Benchmark: what the plugin costs a suite that uses no model (P6).

    python bench/bench_plugin.py [--tests 2000] [--repeat 7] [--json FILE]

Runs the same 2,000 model-less tests with `--enable-cache` and with the
plugin disabled (`-p no:madcache`), alternating, and compares median wall
times.  No engine needed.  What the cache gives a model suite (P7) is
bench/bench_realistic.py's, per engine kind.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import GOALS, stamp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_suite(directory: Path, tests: int) -> None:
    files = max(1, tests // 100)
    per_file = tests // files
    for i in range(files):
        (directory / f"test_plain_{i:03d}.py").write_text(
            "import pytest\n\n"
            f"@pytest.mark.parametrize('n', range({per_file}))\n"
            "def test_plain(n):\n    assert n * 2 == n + n\n"
        )
    (directory / "pytest.ini").write_text("[pytest]\n")


def run_once(directory: Path, args: Sequence[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           str(directory), *args], capture_output=True, text=True, cwd=directory)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or " passed" not in proc.stdout:
        raise RuntimeError(f"pytest {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def p6(tests: int, repeat: int) -> Dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="madcache-p6-") as tmp:
        suite = Path(tmp) / "suite"
        suite.mkdir()
        make_suite(suite, tests)
        cache = Path(tmp) / "cache"
        variants = {"on": ["--enable-cache", "--cache-dir", str(cache)], "off": ["-p", "no:madcache"]}
        samples: Dict[str, List[float]] = {"on": [], "off": []}
        run_once(suite, variants["off"])  # warm the file system and bytecode caches
        for i in range(repeat):
            for name in (["on", "off"] if i % 2 == 0 else ["off", "on"]):
                samples[name].append(run_once(suite, variants[name]))
    on, off = statistics.median(samples["on"]), statistics.median(samples["off"])
    return {"tests": tests, "on": samples["on"], "off": samples["off"], "median_on": on, "median_off": off,
            "overhead": on / off - 1}


def fmt(xs: List[float]) -> str:
    return f"{statistics.median(xs):.3f} s ({min(xs):.3f}-{max(xs):.3f})"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    result: Dict[str, object] = {"measured": stamp(), "p6": p6(args.tests, args.repeat)}
    r6 = result["p6"]
    lines = [
        "pytest-madcache plugin benchmark",
        "| id | measure | ours | compared with | ratio | target | verdict |",
        "|----|---------|------|---------------|-------|--------|---------|",
        f"| P6 | {args.tests} tests that use no model, --enable-cache | {fmt(r6['on'])} | "
        f"`-p no:madcache` {fmt(r6['off'])} | {r6['median_on'] / r6['median_off']:.3f}x | <= {1 + GOALS['P6']:.2f}x | "
        f"{'met' if r6['overhead'] <= GOALS['P6'] else 'MISSED'} |",
    ]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
