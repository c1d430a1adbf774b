"""The figures docs/cache.md (base resolution costs), docs/remote.md (the remote's fault campaign
and transfers), docs/perf-tracking.md (the A/B gate's trials and its pairs' noise, the history's
size) and docs/performance.md (prefetch, parallel loads) quote, rendered from their JSON between <!-- NAME:start --> and <!-- NAME:end -->.

    python bench/render_quoted.py            # rewrite the passages from bench/results/
    python bench/render_quoted.py --check    # exit 1 when a page differs from its JSON

tests/test_bench_results.py checks that the pages hold what this renders.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"


def load(name: str) -> Dict[str, Any]:
    return json.loads((RESULTS / name).read_text())


def when(data: Dict[str, Any]) -> str:
    m = data.get("measured")
    if m:
        return f"commit {m['commit'][:12]}, {m['date']}"
    return f"{data.get('when', 'date unknown')}, before results recorded their commit"


def about_ms(ms: float) -> str:
    if ms < 0.1:
        return f"{ms:.2f} ms"
    if ms < 1:
        return f"{ms:.1f} ms"
    return f"{ms:.0f} ms"


def bases_lines() -> List[str]:
    docker, podman = load("bases-debian12.json"), load("bases-podman.json")
    d = {k: v["median_ms"] for k, v in docker["results"].items()}
    p = {k: v["median_ms"] for k, v in podman["results"].items()}
    measured = when(docker) if when(docker) == when(podman) else f"{when(docker)} and {when(podman)}"
    text = (
        "Measured on this project's bench machine against a loopback registry "
        "(`bench/bench_bases.py`, figures in `bench/results/bases-debian12.json` and "
        f"`bench/results/bases-podman.json`, medians of {docker['repeat']}; measured {measured}): "
        f"parsing the `FROM` lines costs about {about_ms(d['parse_bases'])} per Dockerfile (the rest of the key "
        f"about {about_ms(d['key_for'])}); `local` about {about_ms(d['local_image_id'])} per base on "
        f"{docker['engine']} and {about_ms(p['local_image_id'])} on {podman['engine']}; `registry` about "
        f"{about_ms(d['registry_first_ask_engine'])} per base for the first ask through Docker's endpoint, about "
        f"{about_ms(d['registry_first_ask_direct'])} asking the registry directly "
        f"({about_ms(p['registry_first_ask_engine'])} on Podman, which takes that path), and "
        f"{'nothing' if d['registry_later_asks'] < 0.01 else about_ms(d['registry_later_asks'])} for later asks "
        "in the same session. A remote registry adds its round trip, once per base and session.")
    return [text]


def remote_faults_lines() -> List[str]:
    data = load("remote-faults.json")
    s = data["summary"]
    trials, first = s["trials"], s["first_run"]
    streamed = s.get("stream_trials", 0)
    killed = "every one" if s["killed_mid_transfer"] == trials else f"{s['killed_mid_transfer']} of them"
    half_remote = "none" if s["remote_half_entries"] == 0 else str(s["remote_half_entries"])
    half_local = "none" if s["local_half_entries"] == 0 else str(s["local_half_entries"])
    completed = f"in all {trials}" if s["next_run_completed"] == trials else f"in {s['next_run_completed']} of {trials}"
    kinds = f"{s['push_trials']} pushes, {s['fetch_trials']} fetches"
    if streamed:
        # The record keeps the engine's whole description; the name and version lead it.
        engine = data.get("engine", "").split(";")[0].split(" (")[0].strip() or "the engine"
        kinds += f", {streamed} fetches streamed into {engine}'s load"
    text = (
        "Both are held by a campaign that kills the registry (`SIGKILL`) at random points of pushes and "
        f"fetches: `{data['command']}` (results in `bench/results/remote-faults.json`, measured {when(data)}). "
        f"In {trials} trials ({kinds}, {killed} killed "
        f"mid-transfer, the registry back after 0.1 to 3 s), {first['survived']} transfers rode the kill out on "
        f"retries and {first['failed']} gave up with one warning"
        + (f" ({first['completed']} completed before the kill)" if first["completed"] else "")
        + f"; {half_remote} left a manifest naming a missing or bad blob, {half_local} left an entry in the "
        "fetching cache that was not whole"
        + (f", {_none_or(s['temp_files_left'])} left a temp file, {_none_or(s['engine_images_without_entry'])} "
           "left an image in the engine without its entry in the cache" if streamed else "")
        + f", and {completed} the next run (a push from the same cache, or a "
        "fetch) completed the entry" + (" (and, streamed, its image in the engine)." if streamed else "."))
    return [text]


def _none_or(n: int) -> str:
    return "none" if n == 0 else str(n)


def remote_transfer_lines() -> List[str]:
    """The transfer table (bench_remote.render), with when it was measured.  The bullets after it
    in docs/remote.md discuss that record's figures in prose and are not rendered."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_remote import render

    data = load("remote.json")
    return [f"Measured {when(data)}:", "", *render(data).splitlines()]


def ab_trials_lines() -> List[str]:
    """The A/B gate's trial table (bench_ab.table), and the pairs its tests ran."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_ab import table

    data = load("ab-trials.json")
    lines = table(data).splitlines()
    if data["trials_per_condition"] != 20:  # bench_ab.table names the default command
        lines = [line.replace("bench_ab.py --json", f"bench_ab.py --trials {data['trials_per_condition']} --json")
                 for line in lines]
    pairs = [p for t in data["trials"] for p in t.get("pairs", [])]
    if pairs:
        most = data.get("max_pairs", data["pairs"])
        median = statistics.median(pairs)
        lines += ["", f"The {len(pairs)} tests of those trials ran a median of {median:g} pairs ({2 * median:g} "
                  f"model runs, where a run without `--perf-ab` is one); {sum(1 for p in pairs if p > data['pairs'])} "
                  f"ran more than the first {data['pairs']}, and {sum(1 for p in pairs if p >= most)} ran to the "
                  f"most, {most}."]
    return lines


def ab_noise_lines() -> List[str]:
    """The spread of A/B pairs per setting, and the modelled trials (ab_noise.table)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from ab_noise import table

    return table(load("ab-noise.json")).splitlines()


def history_lines() -> List[str]:
    data = load("history-size.json")
    table = (RESULTS / "history-size.md").read_text().strip().splitlines()
    return [f"Measured at {when(data)} by `python bench/bench_history.py --record`:", "", *table, "",
            "A registry keeps each record's earlier document blob until its garbage collection "
            "(`registry garbage-collect`); the tag always names the newest."]


def prefetch_lines() -> List[str]:
    """Prefetch on against off on the realistic suite (bench_prefetch.render), without its title."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_prefetch import render

    data = load("prefetch.json")
    lines = [f"#{line}" if line.startswith("## ") else line for line in render(data)[2:]]
    one = data["one_model"]
    setup = [p["loads"]["setup_seconds"] - p["off"]["setup_seconds"] for p in one]
    wall = [p["loads"]["wall_seconds"] - p["off"]["wall_seconds"] for p in one]
    lines = [*"\n".join(lines).rstrip("\n").splitlines(), "", f"One model has nothing to fetch ahead: its tests' setup with prefetch, minus without, ranged from "
              f"{min(setup):+.2f} to {max(setup):+.2f} s (median {statistics.median(setup):+.2f} s), while its wall "
              f"time moved by {min(wall):+.1f} to {max(wall):+.1f} s, the spread of the model runs themselves."]
    return "\n".join(lines).strip("\n").splitlines()


def compare_lines() -> List[str]:
    """The realistic suite five ways: no cache, BuildKit's cache, docker save tars, ours (bench_compare.render)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_compare import render

    return "\n".join(render(load("compare.json"))[2:]).strip("\n").splitlines()


def parallel_loads_lines() -> List[str]:
    """The suite's 2 images loaded one at a time against two at once, per engine kind."""
    rows = []
    for path in sorted(RESULTS.glob("parallel-loads-*.json")):
        d = json.loads(path.read_text())
        one, two = d["medians"]["one at a time"], d["medians"]["two at once"]
        rows.append(f"| {d['kind']} | {one:.2f} s | {two:.2f} s | {d['ratio_two_over_one']:.2f}x | "
                    f"{len(d['samples']['one at a time'])} | {when(d)} |")
    return ["| engine kind | one at a time (median) | two at once (median) | two / one | loads per way | measured |",
            "|---|---|---|---|---|---|", *rows, "",
            "Each row: `python -m pytest_madcache.localengine --engine KIND -- python bench/bench_parallel_loads.py "
            "--record`."]


PASSAGES = {("cache.md", "bases-costs"): bases_lines, ("remote.md", "remote-faults"): remote_faults_lines,
            ("remote.md", "remote-transfers"): remote_transfer_lines,
            ("perf-tracking.md", "ab-trials"): ab_trials_lines, ("perf-tracking.md", "ab-noise"): ab_noise_lines,
            ("perf-tracking.md", "history-size"): history_lines, ("performance.md", "prefetch"): prefetch_lines,
            ("performance.md", "parallel-loads"): parallel_loads_lines, ("performance.md", "compare"): compare_lines}


def between(text: str, marker: str) -> str:
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")


def fill(path: Path, marker: str, lines: List[str]) -> None:
    text = path.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + tail)


def main(argv: List[str]) -> int:
    differ = []
    for (page, marker), render in PASSAGES.items():
        lines = render()
        if "--check" in argv:
            if between((DOCS / page).read_text(), marker) != "\n".join(lines):
                differ.append(f"docs/{page} ({marker})")
        else:
            fill(DOCS / page, marker, lines)
    if differ:
        print("differ from their JSON: " + ", ".join(differ) + " (python bench/render_quoted.py rewrites them)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
