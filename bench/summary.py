"""The performance record: every goal (P1 cold and warm, P3, P4, P5, P7) against what bench/run.sh measured.

    python bench/summary.py [--write-docs]

Reads the JSON files bench/run.sh writes under bench/results/ (the key
benchmark, the store benchmark per data shape, the realistic models per
engine kind, the remote benchmark), prints one Markdown table with a verdict
per goal, and with --write-docs puts the same table into
docs/performance.md between its `summary-table` markers.  Measures nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchlib import GOALS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
START, END = "<!-- summary-table:start -->", "<!-- summary-table:end -->"
KEY_START, KEY_END = "<!-- key-table:start -->", "<!-- key-table:end -->"
# The data each store run measured; its size comes from the run's own record (info.size_mb).
SHAPES = {"random": "one {mb} MB file of random bytes", "compressible": "one {mb} MB file of text-like bytes",
          "smallfiles": "{mb} MB in files of 1-30 kB"}
KINDS = ("debian12", "debian13", "debian13-containerd", "podman")
MB = 1000 * 1000


def load(name: str) -> Optional[Dict[str, Any]]:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def measured(name: str) -> str:
    """The commit and date a results file measured (benchlib.stamp), as the docs print them."""
    data = load(name) or {}
    m = data.get("measured") if isinstance(data, dict) else None
    return f"commit {m['commit'][:12]}, {m['date']}" if m else "measured before results recorded their commit"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def series_median(data: Dict[str, Any], name: str) -> float:
    return data["series"][name]["median"]


def key_rows(data: Dict[str, Any]) -> List[str]:
    rows = []
    for context, runs in data["results"].items():
        cold, warm = statistics.median(runs["cold_memo"]), statistics.median(runs["warm"])
        before = statistics.median(runs["cold_no_memo"])
        goal = GOALS["P1_cold_ms"][context] / 1000 if context in GOALS["P1_cold_ms"] else None
        rows.append(row("P1 cold", f"key of an unchanged {context} context, first of a session",
                        f"{ms(cold)} (no memo: {ms(before)})", f"<= {ms(goal)}" if goal else "report",
                        verdict(cold <= goal) if goal else "-"))
        rows.append(row("P1 warm", "key of the same context, later in the session", ms(warm), "report", "-"))
    return rows


def store_rows(shape: str, data: Dict[str, Any]) -> List[str]:
    targets = {t["id"]: t for t in data["targets"]}
    what = SHAPES.get(shape, shape).format(mb=data.get("info", {}).get("size_mb", "?"))
    rows = []
    p1 = targets["P1"]
    rows.append(row("P1 hit", f"lookup with the image in the engine (key of its build context, index, presence); "
                    f"{what}", p1["ours"], p1["target"], verdict(p1["verdict"] == "met")))
    for pid, label in (("P3", "hit, nothing in the engine, vs raw `docker load`"),
                       ("P4", "miss: save into the cache, vs raw `docker save`"),
                       ("P5", "disk of 5 variants (`du`) vs one `docker save` of the 5")):
        t = targets[pid]
        rows.append(row(pid, f"{label}; {what}", t["ratio"], t["target"], verdict(t["verdict"] == "met")))
    return rows


def realistic_rows(kind: str, data: Dict[str, Any]) -> List[str]:
    f = data["facts"]
    rows = []
    for model in ("mlp", "transformer"):
        if f"P3_{model}" not in data:
            continue
        shape = (f"{model} image, {f[f'{model}_image_bytes'] / MB:.0f} MB, {f[f'{model}_files']:,} files "
                 f"in {f[f'{model}_layers']} layers")
        p3, p4 = data[f"P3_{model}"], data[f"P4_{model}"]
        load_s = series_median(data, f"{model}_load_ours")
        raw_load = series_median(data, f"{model}_load_raw")
        save_s = series_median(data, f"{model}_save_ours")
        raw_save = series_median(data, f"{model}_save_raw")
        rows.append(row("P3", f"{kind}: hit, nothing in the engine, vs raw `docker load`; {shape}",
                        f"{p3:.2f}x ({load_s:.2f} vs {raw_load:.2f} s)", f"<= {GOALS['P3']:.2f}x", verdict(p3 <= GOALS["P3"])))
        rows.append(row("P4", f"{kind}: miss: save into the cache, vs raw `docker save`; {shape}",
                        f"{p4:.2f}x ({save_s:.2f} vs {raw_save:.2f} s)", f"<= {GOALS['P4']:.2f}x", verdict(p4 <= GOALS["P4"])))
    p5 = data["P5_disk_vs_multi_save"]
    rows.append(row("P5", f"{kind}: disk of both model images (`du`) vs one `docker save` of both",
                    f"{p5:.3f}x ({f['p5_cache_bytes'] / MB:.0f} vs {f['p5_multi_save_bytes'] / MB:.0f} MB)",
                    f"<= {GOALS['P5']:.2f}x", verdict(p5 <= GOALS["P5"])))
    p7, acq = data["P7_speedup"], data["P7_acquisition_speedup"]
    rows.append(row("P7", f"{kind}: realistic suite, run 2 (hits) vs run 1 (misses), end to end",
                    f"{p7:.1f}x ({f['p7_run1_seconds']:.1f} vs {f['p7_run2_seconds']:.1f} s)", f">= {GOALS['P7']:.0f}x",
                    verdict(p7 >= GOALS["P7"])))
    rows.append(row("P7", f"{kind}: image acquisition (test setup: build + save vs load)",
                    f"{acq:.1f}x ({f['p7_run1_setup_seconds']:.1f} vs {f['p7_run2_setup_seconds']:.1f} s)",
                    f">= {GOALS['P7_acquisition']:.0f}x", verdict(acq >= GOALS["P7_acquisition"])))
    return rows


def split(cpu: Dict[str, Dict[str, float]], name: str) -> str:
    c = cpu.get(name)
    if not c:
        return "-"
    return f"{c['wall']:.2f} s: {c['our_cpu']:.2f} + {c['engine_cpu']:.2f}"


def time_rows(label: str, cpu: Dict[str, Dict[str, float]], names: Dict[str, str]) -> List[str]:
    """Wall time and CPU seconds (ours + the engine's) of raw and ours, for a save and a full load."""
    return [row(label, split(cpu, names["save_raw"]), split(cpu, names["save_ours"]),
                split(cpu, names["load_raw"]), split(cpu, names["load_ours"]))]


def where_the_time_goes() -> List[str]:
    body: List[str] = []
    for shape in SHAPES:
        data = load(f"store-{shape}.json")
        if data and "cpu" in data:
            body += time_rows(f"debian12, {shape}", data["cpu"], {
                "save_raw": "save_raw", "save_ours": "save_ours", "load_raw": "load_full_raw",
                "load_ours": "load_full_ours"})
    for kind in KINDS:
        data = load(f"realistic-{kind}.json")
        for model in ("mlp", "transformer"):
            if data and "cpu" in data and f"{model}_save_ours" in data["cpu"]:
                body += time_rows(f"{kind}, {model}", data["cpu"], {
                    "save_raw": f"{model}_save_raw", "save_ours": f"{model}_save_ours",
                    "load_raw": f"{model}_load_raw", "load_ours": f"{model}_load_ours"})
    if not body:
        return []
    return ["", "Where the time goes (medians; wall time, then CPU seconds of the client process + the engine's "
            "processes):", "", "| engine, image | raw save | our save | raw load | our load |",
            "|---|---|---|---|---|", *body]


def med_s(data: Dict[str, Any], name: str) -> str:
    entry = data["series"].get(name)
    return f"{entry['median']:.2f} s" if entry and entry.get("median") is not None else "-"


def seed_rows() -> List[str]:
    """Ours against the seed design (one tar per entry, a full load on every hit), measured in the same loops."""
    body: List[str] = []
    for shape in SHAPES:
        d = load(f"store-{shape}.json")
        if not d:
            continue
        f, sr = d["facts"], d["series"]
        body.append(row(f"{shape} (debian12)", f"{sr['lookup_present_ours']['median'] * 1000:.1f} ms vs "
                        f"{sr['seed_hit_present']['median']:.2f} s", f"{med_s(d, 'load_full_ours')} vs "
                        f"{med_s(d, 'seed_hit_full')}", f"{med_s(d, 'save_ours')} vs {med_s(d, 'seed_save')}",
                        f"{f['variants_cache_bytes'] / MB:,.0f} vs {f['variants_seed_bytes'] / MB:,.0f} MB "
                        "(5 variants)"))
    for kind in KINDS:
        d = load(f"realistic-{kind}.json")
        if not d:
            continue
        f = d["facts"]
        for model in ("mlp", "transformer"):
            if f"{model}_seed_hit" in d["series"]:
                disk = (f"{f['p5_cache_bytes'] / MB:,.0f} vs {f['p5_seed_bytes'] / MB:,.0f} MB (both models)"
                        if model == "mlp" else "")
                body.append(row(f"{model} ({kind})", "-", f"{med_s(d, f'{model}_load_ours')} vs "
                                f"{med_s(d, f'{model}_seed_hit')}",
                                f"{med_s(d, f'{model}_save_ours')} vs {med_s(d, f'{model}_seed_save')}", disk))
    if not body:
        return []
    return ["", "Ours against the seed design (one `docker save` tar per entry, a full load on every hit), "
            "ours first, in the same loops:", "",
            "| image | hit, image in the engine | hit, nothing in the engine | miss: save | disk (`du`) |",
            "|---|---|---|---|---|", *body]


def zstd_rows() -> List[str]:
    body = []
    for shape in SHAPES:
        d = load(f"store-{shape}.json")
        if d and "save_ours_zstd_paired" in d["series"]:  # both sides from one alternating loop
            names = ("save_ours_zstd_paired", "save_ours_raw_paired", "load_full_ours_zstd_paired",
                     "load_full_ours_raw_paired")
            apart = ""
        elif d and "save_ours_zstd" in d["series"]:  # recorded before the loop: phases run at different times
            names = ("save_ours_zstd", "save_ours", "load_full_ours_zstd", "load_full_ours")
            apart = " (phases run apart)"
        else:
            continue
        f = d["facts"]
        body.append(row(shape + apart, f"{f['zstd_blob_bytes'] / f['raw_blob_bytes']:.3f}x "
                        f"({f['zstd_blob_bytes'] / MB:,.0f} vs {f['raw_blob_bytes'] / MB:,.0f} MB)",
                        f"{med_s(d, names[0])} vs {med_s(d, names[1])}",
                        f"{med_s(d, names[2])} vs {med_s(d, names[3])}"))
    if not body:
        return []
    return ["", "`--cache-compress zstd` against raw blobs (both ours, debian12):", "",
            "| data | disk | save | load, nothing in the engine |", "|---|---|---|---|", *body]


def remote_line(data: Dict[str, Any]) -> str:
    runs = [r for r in data["runs"] if r["link"] == "1gbit" and r["compression"] == "gzip"]
    if not runs:
        return ""
    r = runs[0]
    return (f"Remote (bench_remote.py, {data['when']}): a second machine's first run through a registry at 1 Gbit/s "
            f"with gzip took {r['first_run_s']:.1f} s against a {data['build_s']:.1f} s build "
            f"({data['build_s'] / r['first_run_s']:.1f}x); every link and compression is in bench/results/remote.json.")


def render() -> str:
    lines: List[str] = []
    head = ["| id | measure | ours | goal | verdict |", "|---|---|---|---|---|"]
    body: List[str] = []
    sources: List[str] = []
    key = load("key-cold-warm.json")
    if key:
        body += key_rows(key)
        sources.append("key-cold-warm.json")
    plugin = load("plugin.json")
    if plugin:
        p6 = plugin["p6"]
        body.append(row("P6", f"{p6['tests']:,} tests that use no model, `--enable-cache` vs `-p no:madcache`",
                        f"{p6['overhead'] * 100:+.1f} % ({p6['median_on']:.2f} vs {p6['median_off']:.2f} s)",
                        f"<= +{GOALS['P6'] * 100:.0f} %", verdict(p6["overhead"] <= GOALS["P6"])))
        sources.append("plugin.json")
    first_store = None
    for shape in SHAPES:
        data = load(f"store-{shape}.json")
        if data:
            first_store = first_store or data
            body += store_rows(shape, data)
            sources.append(f"store-{shape}.json")
    engines = []
    for kind in KINDS:
        data = load(f"realistic-{kind}.json")
        if data:
            body += realistic_rows(kind, data)
            sources.append(f"realistic-{kind}.json")
            engines.append(f"{kind}: {data['engine']} ({data['date']}, load average {data['facts']['load_average_start']})")
    if first_store:
        m = first_store["info"]["machine"]
        lines.append(f"Machine: {m['vcpus']} vCPU ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}. "
                     f"Store benchmarks on {first_store['info']['engine']}, {first_store['info']['date']}, load average at "
                     f"the start of each: " + "; ".join(f"{shape} {load(f'store-{shape}.json')['info'].get('loadavg', '?')}"
                                                       for shape in SHAPES if load(f"store-{shape}.json")) + ".")
        lines.append("")
    if engines:
        lines.append("Realistic models per engine kind:")
        lines.append("")
        lines += [f"- {e}" for e in engines]
        lines.append("")
    lines += head + body
    lines += where_the_time_goes()
    lines += seed_rows()
    lines += zstd_rows()
    remote = load("remote.json")
    if remote:
        lines += ["", remote_line(remote)]
        sources.append("remote.json")
    lines += ["", f"Sources: {', '.join(f'bench/results/{s} ({measured(s)})' for s in sources)}; "
              "regenerated by `bash bench/run.sh --record`."]
    return "\n".join(lines)


def replace_marked(doc: str, start: str, end: str, text: str) -> str:
    if start not in doc or end not in doc:
        raise SystemExit(f"{DOC} has no {start} ... {end} markers")
    before, rest = doc.split(start, 1)
    _old, after = rest.split(end, 1)
    return f"{before}{start}\n{text}\n{end}{after}"


def write_docs(text: str) -> None:
    """The goals table, and the key benchmark's own table (bench_key.py writes it beside its JSON)."""
    doc = replace_marked(DOC.read_text(), START, END, text)
    key_table = RESULTS / "key-cold-warm.md"
    if key_table.exists() and KEY_START in doc:
        doc = replace_marked(doc, KEY_START, KEY_END, key_table.read_text().split("\n", 1)[1].strip())
    DOC.write_text(doc)


def main(argv: Optional[Sequence[str]] = None) -> int:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-docs", action="store_true", help=f"also write the table into {DOC.relative_to(ROOT)}")
    parser.add_argument("--results", type=Path, help=f"read the results here (default: {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.results is not None:
        RESULTS = args.results
    text = render()
    print(text)
    if args.write_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
