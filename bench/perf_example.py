"""The worked example of docs/perf-tracking.md, measured again and written into the page.

    bash bench/perf_example.sh      (a few minutes on 2 vCPUs; starts a private engine when none answers)

Runs the example suite three times on a fresh cache, as a pipeline would:

1. "the default branch": the suite as it is, `--output main.csv`: the baseline;
2. "a merge request" with a deliberate regression (HASHBENCH_SLOWDOWN=25: every
   hashbench run does 25% more work than it counts) against that baseline with
   `--perf-fail-threshold 10`, writing the CSV, the Markdown report and the plot;
3. the suite unchanged against the same baseline: what noise looks like.

hashbench runs with HASHBENCH_ROUNDS=3 and HASHBENCH_REPEATS=5 (a warm-up run,
then the median of five).  The page's block between the perf-example markers
is replaced with what the runs printed and wrote; the plot goes to
docs/img/perf-tracking.svg.  Nothing here is edited by hand.

A user's run writes a copy of the page and the plot outside the repository
(~/.cache/pytest-madcache/perf-example/, under $XDG_CACHE_HOME when set): it
never changes a tracked file.  Maintainers refresh the committed page and plot
with --record.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "perf-tracking.md"
PLOT = ROOT / "docs" / "img" / "perf-tracking.svg"
BEGIN, END = "<!-- perf-example:begin -->", "<!-- perf-example:end -->"
STEADY = {"HASHBENCH_ROUNDS": "3", "HASHBENCH_REPEATS": "5"}
CSV_SHOWN = ("model", "args", "performance", "metric", "relative_change", "baseline_performance",
             "performance_min", "performance_max", "repeats", "status", "perf_status")


LOADS: List[str] = []  # the load average at the start of each step: how busy the machine was


def pytest(work: Path, env_extra: dict, *args: str) -> Tuple[int, str]:
    LOADS.append(Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?")
    env = {**os.environ, **STEADY, **env_extra}
    for var in ("MADCACHE_PERF_BASELINE", "MADCACHE_PERF_FAIL_THRESHOLD", "MADCACHE_PERF_REPORT", "MADCACHE_PERF_PLOT"):
        env.pop(var, None)
    # From the repository (test ids read examples/...), every file in the work directory; its path
    # is taken out of what is shown.
    files = [str(work / a) if a.endswith((".csv", ".md", ".svg")) else a for a in args]
    cmd = [sys.executable, "-m", "pytest", "examples", "-p", "no:cacheprovider", "--enable-cache",
           "--cache-dir", str(work / "cache"), *files]
    print("$", " ".join(["pytest examples", *args]), " ".join(f"{k}={v}" for k, v in env_extra.items()), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    out = proc.stdout.replace(str(work) + os.sep, "")
    print(out[-3000:], flush=True)
    return proc.returncode, out


def section(out: str, title: str) -> List[str]:
    """The lines of a terminal-summary section, up to the next ===== line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^=+ {re.escape(title)} =+$", line))
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^=+ .* =+$", lines[i])), len(lines))
    return lines[start:end]


def failure_of(out: str, test: str) -> List[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^_+ {re.escape(test)} _+$", line))
    return lines[start:start + 2]


def csv_table(path: Path) -> List[str]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = ["| " + " | ".join(CSV_SHOWN) + " |", "|" + "---|" * len(CSV_SHOWN)]
    out += ["| " + " | ".join(r[c] for c in CSV_SHOWN) + " |" for r in rows]
    return out


def engine_line(out: str) -> str:
    match = re.search(r"^madcache engine: (Docker [^;(]*)", out, re.M)
    return match.group(1).strip() if match else "a Docker engine"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true",
                        help=f"write the committed {PAGE.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}")
    parser.add_argument("--page", type=Path, help="the page to write (default: a copy outside the repository)")
    parser.add_argument("--plot", type=Path, help="the plot to write (default: beside that copy)")
    args = parser.parse_args()
    if args.record:
        args.page, args.plot = args.page or PAGE, args.plot or PLOT
    else:
        out = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pytest-madcache" / "perf-example"
        if args.page is None:
            args.page = out / PAGE.name
            args.page.parent.mkdir(parents=True, exist_ok=True)
            args.page.write_text(PAGE.read_text())  # the committed page, its block replaced below
        args.plot = args.plot or args.page.parent / "img" / PLOT.name

    with tempfile.TemporaryDirectory(prefix="madcache-perf-example-") as tmp:
        work = Path(tmp)
        code, first = pytest(work, {}, "--output", "main.csv")
        if code != 0:
            raise SystemExit(f"the baseline run failed ({code})")
        code, second = pytest(work, {"HASHBENCH_SLOWDOWN": "25"}, "--perf-baseline", "main.csv",
                              "--perf-fail-threshold", "10", "--output", "mr.csv", "--perf-report", "perf.md",
                              "--perf-plot", "perf.svg")
        if code != 1:
            raise SystemExit(f"the regression run should fail its hashbench tests (exit 1), it exited {code}")
        code3, third = pytest(work, {}, "--perf-baseline", "main.csv", "--perf-fail-threshold", "10")
        report = (work / "perf.md").read_text().replace(str(work) + os.sep, "")
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        args.plot.write_text((work / "perf.svg").read_text())
        mr_csv = csv_table(work / "mr.csv")

    perf_section = section(second, "madcache performance")
    summary_2 = [line for line in second.splitlines() if re.match(r"^=+ \d+ (failed|passed)", line)]
    table_3 = section(third, "madcache performance")
    result_3 = [line for line in third.splitlines() if re.match(r"^=+ .*(failed|passed).* =+$", line)]
    when = datetime.date.today().isoformat()
    block = [
        BEGIN,
        "",
        f"Measured {when} by `bash bench/perf_example.sh` on {os.cpu_count()} vCPUs "
        f"({platform.system()} {platform.release()}, Python {platform.python_version()}, {engine_line(first)}), "
        f"the 1-minute load average {', '.join(LOADS)} at the start of steps 1, 2 and 3; "
        "the block below this line is that script's output, not edited.",
        "",
        "The regression run (step 2) ends with:",
        "",
        "```console",
        *failure_of(second, "test_hashbench[1]"),
        "...",
        *perf_section,
        *summary_2,
        "```",
        "",
        "Its `--perf-report perf.md`:",
        "",
        report.rstrip(),
        "",
        "Its `--output mr.csv`, the performance columns:",
        "",
        *mr_csv,
        "",
        "Its `--perf-plot` (hashbench's bars are the median of five runs, the whiskers their spread):",
        "",
        "![performance against batch size, the baseline beside it](img/perf-tracking.svg)",
        "",
        "Step 3, the same suite without the slowdown against the same baseline, is what noise looks like:",
        "",
        "```console",
        *table_3,
        *result_3,
        "```",
        "",
        END,
    ]
    page = args.page.read_text()
    if BEGIN not in page or END not in page:
        raise SystemExit(f"{args.page} has no {BEGIN} ... {END} block to replace")
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    args.page.write_text(head + "\n".join(block) + tail)
    print(f"wrote {args.page} and {args.plot}")
    return 0 if code3 in (0, 1) else code3


if __name__ == "__main__":
    sys.exit(main())
