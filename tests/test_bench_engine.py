"""The store benchmark runs end to end on a real engine and reports what the docs quote.

bench/bench_store.py at a small size (30 MB, the many-small-files shape, 3 runs): every goal gets
a figure, disk is measured from outside the store, every timed sample carries its CPU split, and
nothing it built is left in the engine.  The benchmark needs a classic engine's delta loads, so
this runs in the whole-suite pass on the default engine only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.engine, pytest.mark.default_engine]


def test_store_benchmark_reports_every_goal_and_cleans_up(engine, tmp_path: Path) -> None:
    before = {img["Id"] for img in engine.api.images(all=True)}
    out = tmp_path / "store.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_store.py"), "--size-mb", "30", "--repeat", "3",
         "--data", "smallfiles", "--json", str(out), "--workdir", str(tmp_path)],
        capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    targets = {t["id"]: t for t in data["targets"]}
    assert set(targets) == {"P1", "P2", "P2b", "P3", "P4", "P5"}
    assert all(t["ratio"].endswith("x") for t in targets.values())
    facts = data["facts"]
    # P5 from outside the store: du of our cache against du of one docker save of the same 5 images.
    assert 0.97 <= facts["variants_cache_bytes"] / facts["variants_multi_save_bytes"] <= 1.05
    assert facts["variants_seed_bytes"] > 3 * facts["variants_cache_bytes"]  # the seed design keeps 5 tars
    for name in ("save_raw", "save_ours", "seed_save", "load_full_raw", "load_full_ours", "seed_hit_full"):
        assert len(data["series"][name]["samples"]) == 3, name
        assert data["cpu"][name]["wall"] > 0 and data["cpu"][name]["our_cpu"] >= 0, name
    assert "where the time goes (medians): raw save" in proc.stdout
    assert {img["Id"] for img in engine.api.images(all=True)} <= before
