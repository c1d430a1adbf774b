"""Benchmark: prefetch on against off, on the realistic suite, on a fresh runner each time.

    python -m pytest_madcache.localengine -- python bench/bench_prefetch.py --record

The suite (examples/realistic: 2 models, 5 tests) fills a cache once.  Then, in one loop, pairs of
runs with `--cache-prefetch loads` and `--cache-prefetch off`, the order alternating, each after the
model images are removed from the engine (their base stays, as after pulling `FROM`): every image is
a hit loaded from the cache.  Per run: the wall time of the pytest process, the time the tests spent in
setup (where `model_image` obtains the image: from `--durations`), and each image's load (from
`--cache-summary-json`).  The goal, per pair: setup with prefetch at most the first image's load plus
a quarter of the others' (their loads in the pair's run without prefetch), and the wall time lower.
A one-model suite (`-k mlp`) runs the same pairs: prefetch must not make it slower.

Writes bench/results/prefetch.json and prefetch.md with --record.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "examples" / "realistic"))

import prepare  # noqa: E402
from benchlib import forget_models, loadavg, log, machine, rotate, stamp, table, timed  # noqa: E402

from pytest_madcache.engines.docker import Engine  # noqa: E402

SUITE = ROOT / "examples" / "realistic"
MODEL_LABEL = "org.madcache.example"
MODES = ("loads", "off")


class PrefetchBench:
    def __init__(self, work: Path, cache: Path) -> None:
        self.engine = Engine()
        self.work = work
        self.cache = cache
        self.runs = 0

    def forget_models(self) -> None:
        """A fresh runner: no model image, the base kept."""
        forget_models(self.engine, MODEL_LABEL)

    def run(self, mode: str, select: List[str]) -> Dict[str, Any]:
        self.forget_models()
        self.runs += 1
        summary = self.work / f"summary-{self.runs}.json"
        cmd = [sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider", "-q", "--durations=0",
               "--durations-min=0", "--enable-cache", "--cache-dir", str(self.cache), "--cache-prefetch", mode,
               "--cache-summary-json", str(summary), *select]
        seconds, proc = timed(lambda: subprocess.run(cmd, capture_output=True, text=True))
        output = proc.stdout + proc.stderr
        if proc.returncode != 0 or "Cache miss" in output:
            raise RuntimeError(f"a {mode} run did not pass with hits only ({proc.returncode}):\n{output[-3000:]}")
        setup = sum(float(m.group(1)) for m in re.finditer(r"^([\d.]+)s setup ", output, re.M))
        images = json.loads(summary.read_text())["images"]
        loads = [i["load_seconds"] for i in images]
        return {"mode": mode, "wall_seconds": round(seconds, 3), "setup_seconds": round(setup, 3),
                "loads": loads, "prefetched": sum(1 for i in images if i["prefetched"]),
                "waited": [i["prefetch_waited_seconds"] for i in images], "load_average": loadavg()}

    def pairs(self, n: int, select: List[str]) -> List[Dict[str, Any]]:
        out = []
        for i in range(n):
            pair: Dict[str, Any] = {"order": rotate(list(MODES), i)}
            for mode in pair["order"]:
                log(f"pair {i + 1}/{n} {' '.join(select) or 'whole suite'}: --cache-prefetch {mode}")
                pair[mode] = self.run(mode, select)
            off, on = pair["off"], pair["loads"]
            pair["bound_seconds"] = round(off["loads"][0] + 0.25 * sum(off["loads"][1:]), 3)
            pair["setup_met"] = on["setup_seconds"] <= pair["bound_seconds"]
            pair["wall_ratio"] = round(on["wall_seconds"] / off["wall_seconds"], 3)
            out.append(pair)
        return out


def render(data: Dict[str, Any]) -> List[str]:
    lines = [f"# Prefetch on against off: the realistic suite on a fresh runner ({data['engine']})", "",
             f"Measured at {data['measured']['commit'][:12]} ({data['measured']['date']}); "
             f"`{data['command']}`.", ""]
    for name, title in (("suite", "Whole suite (2 models, 5 tests)"), ("one_model", "One model (`-k mlp`)")):
        rows = []
        for n, p in enumerate(data[name], 1):
            on, off = p["loads"], p["off"]
            rows.append([str(n), " then ".join(p["order"]), f"{off['setup_seconds']:.2f}",
                         f"{on['setup_seconds']:.2f}",
                         f"{p['bound_seconds']:.2f}", "yes" if p["setup_met"] else "no", f"{off['wall_seconds']:.1f}",
                         f"{on['wall_seconds']:.1f}", f"{p['wall_ratio']:.3f}"])
        lines += [f"## {title}", "", *table(["pair", "order", "setup off (s)", "setup on (s)", "goal (s)", "met",
                                              "wall off (s)", "wall on (s)", "wall on/off"], rows), ""]
    s = data["summary"]
    lines += [f"Median wall on/off: whole suite {s['suite_wall_ratio']:.3f}, "
              f"one model {s['one_model_wall_ratio']:.3f}; "
              f"setup goal met in {s['suite_setup_met']} of {len(data['suite'])} pairs; "
              f"one model slower with prefetch in {sum(p['wall_ratio'] > 1 for p in data['one_model'])} of "
              f"{len(data['one_model'])} pairs.", ""]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=8, help="pairs per suite (default 8)")
    parser.add_argument("--record", action="store_true", help="write bench/results/prefetch.json and .md")
    parser.add_argument("--cache", metavar="DIR", help="a cache directory kept between runs (default: a new one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="madcache-bench-prefetch-"))
    bench = PrefetchBench(work, Path(args.cache) if args.cache else work / "cache")
    log(f"engine: {bench.engine.info.name}; load average {loadavg()}")
    try:
        prepare.prepare(log=sys.stderr)
        log("filling the cache: the suite's first run builds and saves (or hits, in a kept --cache)")
        subprocess.run([sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider", "-q", "--enable-cache",
                        "--cache-dir", str(bench.cache)], check=True, capture_output=True)
        suite = bench.pairs(args.pairs, [])
        one = bench.pairs(args.pairs, ["-k", "mlp"])
    finally:
        try:
            bench.forget_models()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    data = {"measured": stamp(), "machine": machine(), "engine": bench.engine.info.name,
            "command": "python -m pytest_madcache.localengine -- python bench/bench_prefetch.py --record",
            "suite": suite, "one_model": one,
            "summary": {"suite_wall_ratio": statistics.median(p["wall_ratio"] for p in suite),
                        "one_model_wall_ratio": statistics.median(p["wall_ratio"] for p in one),
                        "suite_setup_met": sum(1 for p in suite if p["setup_met"]),
                        "one_model_slower": sum(1 for p in one if p["wall_ratio"] > 1.0)}}
    text = "\n".join(render(data))
    print(text)
    if args.record:
        out = ROOT / "bench" / "results"
        (out / "prefetch.json").write_text(json.dumps(data, indent=1) + "\n")
        (out / "prefetch.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
