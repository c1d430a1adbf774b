"""The performance record: bench/summary.py turns bench/run.sh's results into the goals table
that docs/performance.md shows, and the benchmarks' shared pieces behave as their figures assume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import benchlib  # noqa: E402
import summary  # noqa: E402


def realistic_result(p3: float, p4: float, run1: float, run2: float) -> dict:
    facts = {"load_average_start": "0.50 0.40 0.30", "p7_run1_seconds": run1, "p7_run2_seconds": run2,
             "p7_run1_setup_seconds": run1 - 8, "p7_run2_setup_seconds": 1.5,
             "p5_cache_bytes": 1_000_000_000, "p5_multi_save_bytes": 995_000_000}
    series = {}
    data = {"date": "2026-12-01 10:00 UTC", "engine": "Docker 20.10.24 (API 1.41, classic image store)",
            "facts": facts, "series": series, "P7_speedup": run1 / run2,
            "P7_acquisition_speedup": (run1 - 8) / 1.5, "P5_disk_vs_multi_save": 1_000 / 995}
    for model in ("mlp", "transformer"):
        facts.update({f"{model}_image_bytes": 600_000_000, f"{model}_files": 12_345, f"{model}_layers": 7})
        series.update({f"{model}_load_ours": {"median": 4.0 * p3}, f"{model}_load_raw": {"median": 4.0},
                       f"{model}_save_ours": {"median": 3.0 * p4}, f"{model}_save_raw": {"median": 3.0}})
        data[f"P3_{model}"], data[f"P4_{model}"] = p3, p4
    return data


def test_each_goal_gets_a_verdict_from_the_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "realistic-debian12.json").write_text(json.dumps(realistic_result(1.05, 1.30, 130.0, 8.0)))
    (tmp_path / "realistic-podman.json").write_text(json.dumps(realistic_result(1.20, 1.10, 130.0, 20.0)))
    monkeypatch.setattr(summary, "RESULTS", tmp_path)
    text = summary.render()
    rows = {line for line in text.splitlines() if line.startswith("| P")}
    assert any("debian12: hit, nothing in the engine" in r and "1.05x" in r and r.endswith("| met |") for r in rows)
    assert any("debian12: miss: save" in r and "1.30x" in r and r.endswith("**missed** |") for r in rows)
    assert any("podman: hit, nothing in the engine" in r and "1.20x" in r and r.endswith("**missed** |")
               for r in rows)
    assert any("podman: realistic suite" in r and "6.5x (130.0 vs 20.0 s)" in r and r.endswith("**missed** |")
               for r in rows)
    assert any("debian12: realistic suite" in r and "16.2x" in r and r.endswith("| met |") for r in rows)
    assert "12,345 files in 7 layers" in text
    assert "bench/results/realistic-debian12.json" in text and "bench/results/realistic-podman.json" in text


def test_the_docs_hold_the_table_the_committed_results_give() -> None:
    doc = (ROOT / "docs" / "performance.md").read_text()
    table = doc.split(summary.START, 1)[1].split(summary.END, 1)[0].strip()
    assert table == summary.render().strip(), "run `python bench/summary.py --write-docs` after the benchmarks"
    assert "| P3 |" in table and "| P4 |" in table and "| P5 |" in table and "| P7 |" in table


def test_write_docs_replaces_only_the_marked_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Performance\n\nbefore\n\n{summary.START}\nold table\n{summary.END}\n\nafter\n")
    monkeypatch.setattr(summary, "DOC", doc)
    summary.write_docs("| id |\n|---|")
    assert doc.read_text() == f"# Performance\n\nbefore\n\n{summary.START}\n| id |\n|---|\n{summary.END}\n\nafter\n"


def test_contenders_take_turns_going_first() -> None:
    firsts = [benchlib.rotate(["raw", "ours", "seed"], i)[0] for i in range(6)]
    assert firsts == ["raw", "ours", "seed", "raw", "ours", "seed"]
    assert sorted(benchlib.rotate(["raw", "ours", "seed"], 4)) == ["ours", "raw", "seed"]


def test_cpu_split_counts_this_process_cpu() -> None:
    split = benchlib.CpuSplit()
    seconds, total = split.run(lambda: sum(i * i for i in range(2_000_000)))
    assert total > 0 and seconds > 0
    figures = split.to_json()
    assert 0 < figures["our_cpu"] <= figures["wall"] * 2.5  # all threads of this process, 2 cores at most here
    assert figures["engine_cpu"] >= 0


def test_an_engine_that_stops_during_a_call_does_not_make_its_cpu_negative() -> None:
    """Another test may stop its private engine while a call is measured (CI runs tests in parallel)."""
    before = {100: 5.0, 200: 3.0}
    after = {100: 5.5, 300: 0.25}  # 200 ended; 300 started during the call
    assert benchlib.engine_cpu_between(before, after) == 0.75
