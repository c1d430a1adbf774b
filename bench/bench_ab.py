"""Benchmark: the A/B performance gate against today's one-row comparison, over repeated trials.

    python -m pytest_madcache.localengine -- python bench/bench_ab.py [--trials 20] [--pairs 10] --json FILE

The realistic MLP (examples/realistic/models/mlp, copied into a temp dir) swept over batch sizes
1, 16 and 64.  A first session writes the baseline CSV.  Then each trial builds a new image and
runs the sweep with `--perf-baseline --perf-fail-threshold 5 --perf-ab`, under one of two
conditions:

* **rebuilt**: the same model with a new `LABEL` (a new image id, the same work): any REGRESSED
  is a false alarm;
* **slower**: the model's `infer.py` spins for a ninth of each forward pass's time after it (1/9
  more work: its throughput falls by 10%): a REGRESSED is a detection.

A trial counts as flagged when any of its 3 tests is REGRESSED.  On the same data, the one-row
comparison (what `--perf-baseline` does without `--perf-ab`): the candidate's first measured run
against the baseline row, at the same threshold.  Trials alternate between the conditions, so both
see the machine alike.  Run time per model run is SECONDS_PER_RUN (--seconds-per-run, 0.25 s of
work by default, plus the container's start).  The model's BLAS runs one thread
(--blas-threads, OPENBLAS_NUM_THREADS, passed as the test's env, so baseline and candidate get it
alike): its default of one thread per core makes it fight the engine and the runner for the 2
cores, which widens the pairs' spread here (bench/results/ab-noise.json).

On a noisy machine the whole takes hours: `--work DIR --minutes M` runs a part, writing FILE after
every trial, and `--resume` (same commit, same settings, the baseline kept in DIR) goes on with it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "examples" / "realistic"))

import prepare  # noqa: E402
from benchlib import loadavg, log, machine, stamp  # noqa: E402

THRESHOLD = 5.0
SUITE = '''
import os
import pytest


@pytest.mark.model("abmlp", context="models/mlp", timeout=600)
@pytest.mark.parametrize("batch_size", [1, 16, 64])
def test_mlp(model_run, batch_size):
    threads = {"OPENBLAS_NUM_THREADS": os.environ["BLAS_THREADS"]} if os.environ["BLAS_THREADS"] != "0" else {}
    result = model_run(env={"BATCH_SIZE": str(batch_size), "SECONDS_PER_RUN": os.environ["SECONDS_PER_RUN"],
                            **threads})
    assert result.ok, result.logs
'''
SLOWER = ("        model.forward(params, x)\n        done += batch\n",
          "        t0 = time.perf_counter()\n"
          "        model.forward(params, x)\n        done += batch\n"
          "        spin = time.perf_counter() + (time.perf_counter() - t0) / 9  # bench_ab.py: 1/9 more work,\n"
          "        while time.perf_counter() < spin:  # so 10% less throughput\n"
          "            pass\n")


def make_suite(work: Path) -> Path:
    """A copy of the MLP's context (with the wheels prepare.py fetched) and a sweep over it."""
    suite = work / "suite"
    shutil.rmtree(suite, ignore_errors=True)  # a part that stopped before its baseline was written
    shutil.copytree(ROOT / "examples" / "realistic" / "models" / "mlp", suite / "models" / "mlp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (suite / "test_ab.py").write_text(SUITE)
    (suite / "pytest.ini").write_text("[pytest]\n")
    return suite


def set_condition(suite: Path, condition: str, trial: int) -> None:
    model = suite / "models" / "mlp"
    original = (ROOT / "examples" / "realistic" / "models" / "mlp" / "infer.py").read_text()
    if condition == "slower":
        assert SLOWER[0] in original, "infer.py's loop changed: update bench_ab.py's SLOWER"
        original = original.replace(*SLOWER)
    (model / "infer.py").write_text(original)
    dockerfile = (ROOT / "examples" / "realistic" / "models" / "mlp" / "Dockerfile").read_text()
    (model / "Dockerfile").write_text(dockerfile + (f'LABEL bench.trial="{trial}"\n' if trial else ""))


def session(suite: Path, cache: Path, out: str, *args: str, seconds_per_run: float = 0.25,
            blas_threads: int = 1) -> float:
    cmd = [sys.executable, "-m", "pytest", str(suite), "-q", "-p", "no:cacheprovider", "--enable-cache",
           f"--cache-dir={cache}", "--cache-max-entries=100", f"--output={suite / out}", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=suite,
                          env={**os.environ, "SECONDS_PER_RUN": f"{seconds_per_run:g}",
                               "BLAS_THREADS": str(blas_threads)})
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1) or not (suite / out).exists():
        raise RuntimeError(f"pytest {' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return seconds


def rows(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def one_row(row: Dict[str, str], baseline: Dict[str, float]) -> bool:
    """Today's comparison on the same data: the first measured run against the baseline row."""
    first = float(row["samples"].split(",")[0])
    base = baseline[row["params"]]
    return -(first - base) / base * 100.0 > THRESHOLD


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per condition (default 20)")
    parser.add_argument("--pairs", type=int, default=10, help="A/B pairs per model run (default 10)")
    parser.add_argument("--max-pairs", type=int, default=30,
                        help="--perf-ab-max-pairs: pairs in all for a test the first leave inconclusive (default 30)")
    parser.add_argument("--seconds-per-run", type=float, default=0.25,
                        help="SECONDS_PER_RUN: how long the model measures in one run (default 0.25)")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="OPENBLAS_NUM_THREADS for the model's runs, 0 for the image's default (one per core); "
                        "default 1")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--work", metavar="DIR", help="keep the suite, its cache and the baseline here (default: a "
                        "temporary directory); with --resume, the one the first part used")
    parser.add_argument("--resume", action="store_true", help="go on with the trials FILE (--json) holds, measured "
                        "at this same commit with the same settings, against the baseline in --work")
    parser.add_argument("--minutes", type=float, help="start no trial after this many minutes (a part of the whole)")
    args = parser.parse_args()
    if args.resume and not (args.json and args.work):
        parser.error("--resume needs --json FILE and --work DIR")
    prepare.prepare(log=sys.stderr)
    settings = {"trials_per_condition": args.trials, "pairs": args.pairs, "max_pairs": args.max_pairs,
                "seconds_per_run": args.seconds_per_run, "blas_threads": args.blas_threads, "threshold": THRESHOLD}
    result: Dict[str, Any] = {"measured": stamp(), "machine": machine(), **settings, "load_average_start": loadavg(),
                              "trials": []}
    if args.resume and Path(args.json).exists():
        result = resumed(json.loads(Path(args.json).read_text()), result, settings)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="madcache-ab-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        suite = work / "suite" if (work / "suite" / "base.csv").exists() else make_suite(work)
        cache = work / "cache"
        if "baseline_seconds" in result and not (suite / "base.csv").exists():
            raise SystemExit(f"the baseline the trials so far compared with is gone from {work}: start again "
                             "without --resume")
        if "baseline_seconds" not in result:
            set_condition(suite, "rebuilt", 0)
            result["baseline_seconds"] = session(suite, cache, "base.csv", seconds_per_run=args.seconds_per_run,
                                                 blas_threads=args.blas_threads)
            save_part(args.json, result)
        baseline = {r["params"]: float(r["performance"]) for r in rows(suite / "base.csv")}
        log(f"baseline: {baseline}")
        for n in range(len(result["trials"]) + 1, 2 * args.trials + 1):
            if args.minutes is not None and time.monotonic() - started > args.minutes * 60:
                log(f"{args.minutes:g} minutes passed: {n - 1} of {2 * args.trials} trials done; go on with --resume")
                break
            result["trials"].append(trial(suite, cache, n, baseline, args))
            result["summary"] = summarize(result["trials"])
            save_part(args.json, result)
    if len(result["trials"]) < 2 * args.trials:
        return 0
    print(table(result))
    if args.json:
        Path(args.json).with_suffix(".md").write_text(table(result) + "\n")
    return 0


def save_part(path: Optional[str], result: Dict[str, Any]) -> None:
    """After the baseline and after every trial: a part stopped midway keeps what it measured."""
    if path:
        Path(path).write_text(json.dumps(result, indent=1))


def resumed(earlier: Dict[str, Any], now: Dict[str, Any], settings: Dict[str, Any]) -> Dict[str, Any]:
    """The earlier part's results, when they were measured at this commit with these settings."""
    was, new = earlier.get("measured", {}), now["measured"]
    if was.get("commit") != new["commit"] or was.get("dirty") or new["dirty"]:
        raise SystemExit(f"the trials so far were measured at {was.get('commit')} (dirty: {was.get('dirty')}), "
                         f"this is {new['commit']} (dirty: {new['dirty']}): start again without --resume")
    changed = {k: (earlier.get(k), v) for k, v in settings.items() if earlier.get(k) != v}
    if changed:
        raise SystemExit(f"the trials so far used other settings {changed}: start again without --resume")
    log(f"resuming after {len(earlier['trials'])} trials")
    return earlier


def trial(suite: Path, cache: Path, n: int, baseline: Dict[str, float], args: argparse.Namespace) -> Dict[str, Any]:
    condition = "rebuilt" if n % 2 else "slower"
    set_condition(suite, condition, n)
    seconds = session(suite, cache, "now.csv", "--perf-baseline=base.csv", f"--perf-fail-threshold={THRESHOLD:g}",
                      "--perf-ab", f"--perf-ab-pairs={args.pairs}", f"--perf-ab-max-pairs={args.max_pairs}",
                      seconds_per_run=args.seconds_per_run, blas_threads=args.blas_threads)
    now = rows(suite / "now.csv")
    paired = [r for r in now if r["perf_method"] == "paired t on log ratios"]
    if len(paired) != len(now):
        raise RuntimeError(f"trial {n}: {len(now) - len(paired)} runs were not compared side by side")
    result = {"n": n, "condition": condition, "seconds": seconds,
              "ab": [r["perf_status"] for r in now],
              "one_row": ["REGRESSED" if one_row(r, baseline) else "-" for r in now],
              "pairs": [len(r["samples"].split(",")) for r in now],
              "change": [float(r["relative_change"]) for r in now],
              "low": [float(r["change_low"]) for r in now], "high": [float(r["change_high"]) for r in now]}
    log(f"trial {n} ({condition}): A/B {result['ab']}, pairs {result['pairs']}, one row {result['one_row']}, "
        f"{seconds:.1f} s")
    return result


def summarize(trials: List[Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for condition in ("rebuilt", "slower"):
        these = [t for t in trials if t["condition"] == condition]
        out[condition] = {
            "trials": len(these),
            "ab_flagged": sum(1 for t in these if "REGRESSED" in t["ab"]),
            "one_row_flagged": sum(1 for t in these if "REGRESSED" in t["one_row"]),
            "ab_inconclusive": sum(1 for t in these if "inconclusive" in t["ab"]),
            "seconds_median": sorted(t["seconds"] for t in these)[len(these) // 2] if these else None,
            "pairs_median": statistics.median(p for t in these for p in t.get("pairs", [])) if these else None,
        }
    return out


def table(result: Dict[str, Any]) -> str:
    s = result["summary"]
    m = result["measured"]
    lines = [
        f"A/B gate against the one-row comparison: the realistic MLP swept over batch sizes 1, 16, 64; "
        f"{result['trials_per_condition']} trials per condition, {result['pairs']} pairs per model run"
        + (f" (up to {result['max_pairs']} for a test they leave inconclusive), {result['seconds_per_run']:g} s of "
           "measurement per run" if "max_pairs" in result else "")
        + (f", OPENBLAS_NUM_THREADS={result['blas_threads']}" if result.get("blas_threads") else "")
        + f", threshold {result['threshold']:g}%; a trial is flagged when any of its 3 tests is REGRESSED.",
        "",
        "| condition | trials | A/B: flagged REGRESSED | A/B: trials with an inconclusive test "
        "| one-row comparison: flagged REGRESSED | session (median) |",
        "|---|---|---|---|---|---|",
    ]
    names = {"rebuilt": "unchanged, rebuilt (false alarms)", "slower": "10% slower (detections)"}
    for condition in ("rebuilt", "slower"):
        c = s[condition]
        lines.append(f"| {names[condition]} | {c['trials']} | {c['ab_flagged']} | {c['ab_inconclusive']} | "
                     f"{c['one_row_flagged']} | {c['seconds_median']:.1f} s |")
    lines += ["", f"Baseline session (one run per test): {result['baseline_seconds']:.1f} s. Measured at commit "
              f"{m['commit'][:12]}, {m['date']}; `bench/results/ab-trials.json`, regenerated by "
              "`python -m pytest_madcache.localengine -- python bench/bench_ab.py "
              "--json bench/results/ab-trials.json`."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
