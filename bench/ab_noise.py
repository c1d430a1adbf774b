"""How noisy A/B pairs are on this machine, and what that means for the gate: a model of its trials.

    python -m pytest_madcache.localengine -- python bench/ab_noise.py [--pairs 30] [--record]

The realistic MLP's sweep (bench_ab.py's suite, batch sizes 1, 16 and 64), rebuilt unchanged, runs
side by side with its baseline image in PAIRS pairs per test (no extension) for each setting:
the measurement window (SECONDS_PER_RUN: how long the model measures its throughput in one run)
and the model's BLAS threads (OPENBLAS_NUM_THREADS; "default" is the image's, one per core).  From each test's
log ratios comes its spread (sigma) and from the session's wall time the cost of one run.

Then a simulation with those spreads (normal noise, 2,000 trials of 3 tests each, the plugin's own
statistics: perf.stats.paired, judge, extension) gives, for each window and each
--perf-ab-max-pairs, the share of trials flagged REGRESSED with an unchanged image and with a 10%
slowdown, and the runs a trial costs.  It is a model, for choosing the design: bench_ab.py's trials
are the measurement.  Written to bench/results/ab-noise.json (and .md) with --record.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import bench_ab  # noqa: E402
from benchlib import log, machine, stamp  # noqa: E402

from pytest_madcache.perf.stats import REGRESSED, extension, judge, paired  # noqa: E402

SETTINGS = ((0.25, 0), (0.25, 1))  # (window in seconds, BLAS threads; 0: the image's default)
CAPS = (10, 20, 30, 40)
THRESHOLD = bench_ab.THRESHOLD
SIMULATED = 2_000


def spreads(rows: List[Dict[str, str]]) -> Dict[str, Any]:
    """Per test: the standard deviation of its pairs' log ratios, and how heavy their tails are."""
    out = {}
    for row in rows:
        a = [float(v) for v in row["baseline_samples"].split(",")]
        b = [float(v) for v in row["samples"].split(",")]
        ratios = [math.log(y / x) for x, y in zip(a, b)]
        sd = statistics.stdev(ratios)
        mean = statistics.fmean(ratios)
        kurtosis = statistics.fmean([((r - mean) / sd) ** 4 for r in ratios]) - 3 if sd else 0.0
        out[json.loads(row["params"])["batch_size"]] = {"sigma": sd, "excess_kurtosis": kurtosis,
                                                        "change": math.expm1(mean) * 100}
    return out


def simulate(sigmas: List[float], change: float, cap: int, pairs: int, rng: random.Random) -> Dict[str, float]:
    """Trials of 3 tests (one per measured spread): the share flagged, and the pairs a trial ran."""
    flagged, ran = 0, 0
    for _ in range(SIMULATED):
        hit = False
        for sigma in sigmas:
            base = [100.0] * pairs
            cand = [100.0 * math.exp(math.log1p(change) + rng.gauss(0, sigma)) for _ in range(pairs)]
            added = extension(base, cand, "higher", THRESHOLD, cap)
            base += [100.0] * added
            cand += [100.0 * math.exp(math.log1p(change) + rng.gauss(0, sigma)) for _ in range(added)]
            ran += len(cand)
            hit = hit or judge(paired(base, cand), "higher", THRESHOLD).status == REGRESSED
        flagged += hit
    return {"flagged": flagged / SIMULATED, "pairs_per_trial": ran / SIMULATED}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=30, help="pairs per test in each measured session (default 30)")
    parser.add_argument("--record", action="store_true", help="write bench/results/ab-noise.json and .md")
    args = parser.parse_args()
    bench_ab.prepare.prepare(log=sys.stderr)
    result: Dict[str, Any] = {"measured": stamp(), "machine": machine(), "pairs": args.pairs, "threshold": THRESHOLD,
                              "simulated_trials": SIMULATED, "windows": []}
    with tempfile.TemporaryDirectory(prefix="madcache-ab-noise-") as tmp:
        suite = bench_ab.make_suite(Path(tmp))
        cache = Path(tmp) / "cache"
        bench_ab.set_condition(suite, "rebuilt", 0)
        bench_ab.session(suite, cache, "base.csv")
        for n, (window, threads) in enumerate(SETTINGS, start=1):
            bench_ab.set_condition(suite, "rebuilt", n)
            seconds = bench_ab.session(suite, cache, "now.csv", "--perf-baseline=base.csv",
                                       f"--perf-fail-threshold={THRESHOLD:g}", "--perf-ab",
                                       f"--perf-ab-pairs={args.pairs}", f"--perf-ab-max-pairs={args.pairs}",
                                       seconds_per_run=window, blas_threads=threads)
            tests = spreads(bench_ab.rows(suite / "now.csv"))
            runs = 3 * args.pairs * 2
            entry = {"seconds_per_run": window, "blas_threads": threads, "session_seconds": seconds,
                     "seconds_per_model_run": seconds / runs,
                     "tests": tests, "model": {}}
            log(f"window {window:g} s, BLAS threads {threads or 'default'}: {seconds:.1f} s, sigma " +
                ", ".join(f"bs {k}: {v['sigma']:.3f}" for k, v in tests.items()))
            rng = random.Random(n)
            sigmas = [t["sigma"] for t in tests.values()]
            for cap in CAPS:
                entry["model"][str(cap)] = {
                    "unchanged": simulate(sigmas, 0.0, cap, 10, rng),
                    "slower_10": simulate(sigmas, -0.10, cap, 10, rng)}
            result["windows"].append(entry)
    print(table(result))
    if args.record:
        out = ROOT / "bench" / "results" / "ab-noise.json"
        out.write_text(json.dumps(result, indent=1))
        out.with_suffix(".md").write_text(table(result) + "\n")
    return 0


def table(result: Dict[str, Any]) -> str:
    m = result["measured"]
    lines = [
        f"Spread of A/B pairs on this machine ({result['pairs']} pairs per test, the realistic MLP rebuilt "
        f"unchanged), and a model of the gate's trials from it ({result['simulated_trials']} simulated trials of 3 "
        f"tests each, 10 first pairs, threshold {result['threshold']:g}%).",
        "",
        "| window | BLAS threads | sigma of log ratios (batch 1, 16, 64) | s per model run | max pairs "
        "| simulated: unchanged flagged | simulated: 10% slower flagged | simulated: runs per trial "
        "| simulated: s per trial |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w in result["windows"]:
        sig = ", ".join(f"{w['tests'][bs]['sigma']:.3f}" for bs in sorted(w["tests"], key=int))  # batch 1, 16, 64
        for cap, model in w["model"].items():
            runs = model["slower_10"]["pairs_per_trial"] * 2
            threads = w.get("blas_threads") or "default"
            lines.append(f"| {w['seconds_per_run']:g} s | {threads} | {sig} | {w['seconds_per_model_run']:.2f} | "
                         f"{cap} | "
                         f"{model['unchanged']['flagged']:.1%} | {model['slower_10']['flagged']:.1%} | {runs:.0f} | "
                         f"{runs * w['seconds_per_model_run']:.0f} |")
    lines += ["", f"Measured at commit {m['commit'][:12]}, {m['date']}; `bench/results/ab-noise.json`, regenerated by "
              "`python -m pytest_madcache.localengine -- python bench/ab_noise.py --record`."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
