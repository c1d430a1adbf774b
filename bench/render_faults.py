"""bench/results/fault-campaign.json -> its table in bench/results/fault-campaign.md and docs/cache.md.

scripts/fault_campaign.py records the JSON and calls this; run it alone to
render the table again: python bench/render_faults.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "fault-campaign.json"
DOCS_PAGE = ROOT / "docs" / "cache.md"
MARKER = "fault-campaign"


def measured(data: Dict[str, Any]) -> str:
    m = data.get("measured")
    return f"measured at commit {m['commit'][:12]}, {m['date']}" if m else "measured before results recorded their commit"


def table_lines(data: Dict[str, Any]) -> List[str]:
    """The result table the docs quote, from the record."""
    cols = ("trials", "killed", "lost", "corrupt_served", "orphans", "unrepaired_index", "errors")
    lines = ["| operation | trials | killed mid-operation | entries lost | corrupt served | orphans | "
             "index not repaired | errors |", "|---|---|---|---|---|---|---|---|"]
    ops = data["operations"]
    for op, c in ops.items():
        lines.append(f"| {op} | " + " | ".join(str(c[k]) for k in cols) + " |")
    lines.append("| **all** | " + " | ".join(f"**{sum(c[k] for c in ops.values())}**" for k in cols) + " |")
    sites = data["write_sites"]
    lines += ["", f"{sites['reached']} of the store's {sites['total']} write calls are crash points "
              f"({len(sites['unreached_by_design'])} are not, each for a reason the JSON records: error-path "
              f"cleanups of a process's own temp file, where a kill leaves what a kill just before leaves, and "
              f"what only a shared cache runs; {len(sites['unreached'])} left out otherwise). "
              f"{data['loads_checked']} survivors were loaded into the engine and checked. Seed {data['seed']}, "
              f"{data['seconds']} s on {data['engine']}, {measured(data)}. Source: `bench/results/fault-campaign.json`, regenerated "
              f"by `{data['command']}{'' if '--record' in data['command'] else ' --record'}` (without --record "
              "a run prints its figures and changes no tracked file)."]
    return lines


def fill(path: Path, lines: List[str]) -> None:
    """Replace what stands between <!-- fault-campaign:start --> and <!-- fault-campaign:end -->."""
    text = path.read_text()
    start, end = f"<!-- {MARKER}:start -->", f"<!-- {MARKER}:end -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + tail)




def render(target: Path = RESULTS) -> None:
    """Write the table of the record at `target` beside it (.md) and into docs/cache.md."""
    data = json.loads(target.read_text())
    target.with_suffix(".md").write_text("# kill -9 campaign\n\n" + "\n".join(table_lines(data)) + "\n")
    fill(DOCS_PAGE, table_lines(data))


if __name__ == "__main__":
    render()
