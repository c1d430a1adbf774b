"""No results file is quoted as current once the code it measures has changed.

Every file under bench/results/ that the docs quote records the commit it measured (`measured`:
{"commit", "dirty", "date"}, from bench/benchlib.stamp(); main-job.txt has a `measured: commit`
line).  Here each one is compared with HEAD over the paths it measures: a change there since the
stamped commit makes the file stale, and the test names the command that regenerates it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from tests.needs import unavailable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

STORE = ["pytest_madcache/store", "pytest_madcache/engines/docker.py", "pytest_madcache/util"]
KEY = ["pytest_madcache/core/key.py", "pytest_madcache/core/keymemo.py", "pytest_madcache/util/dockerignore.py"]
GLUE = ["pytest_madcache/plugin.py", "pytest_madcache/pytest_glue"]
# results file -> (the paths whose code it measures, the command that regenerates it)
MEASURES = {
    "key-cold-warm.json": ([*KEY, "bench/bench_key.py"], "bash bench/run.sh --record (step key)"),
    "plugin.json": ([*GLUE, "pytest_madcache/core/settings.py", "bench/bench_plugin.py"],
                    "bash bench/run.sh --record (step plugin)"),
    **{f"store-{shape}.json": ([*STORE, *KEY, "pytest_madcache/provide", "bench/bench_store.py",
                                "bench/seed_design.py"], "bash bench/run.sh --record (step store)")
       for shape in ("random", "compressible", "smallfiles")},
    **{f"realistic-{kind}.json": ([*STORE, "pytest_madcache/provide", *GLUE, "pytest_madcache/engines",
                                   "examples/realistic", "bench/bench_realistic.py"],
                                  "bash bench/run.sh --record (step realistic)")
       for kind in ("debian12", "debian13", "debian13-containerd", "podman")},
    **{f"engines-{kind}.json": ([*STORE, "bench/bench_engines.py"], "bash bench/engines.sh")
       for kind in ("debian12", "debian13", "debian13-containerd", "podman")},
    "large-save.json": ([*STORE, "bench/bench_large_save.py"],
                        "python -m pytest_madcache.localengine --engine debian13 -- python bench/bench_large_save.py "
                        "--record"),
    "layer-form.json": ([*STORE, "bench/bench_layer_form.py"], "bash bench/engines.sh"),
    **{f"bases-{kind}.json": (["pytest_madcache/core/bases.py", *KEY, "pytest_madcache/remote/registry.py",
                               "bench/bench_bases.py"], "bash bench/run.sh --record (step bases)")
       for kind in ("debian12", "podman")},
    "remote.json": ([*STORE, "pytest_madcache/remote", "bench/bench_remote.py"],
                    "bash bench/run.sh --record (step remote)"),
    "remote-faults.json": ([*STORE, "pytest_madcache/remote", "tests/fault_campaign.py", "bench/fault_campaign.py"],
                           "PYTHONPATH=. python -m pytest_madcache.localengine -- python bench/fault_campaign.py "
                           "--out bench/results/remote-faults.json"),
    "fault-campaign.json": (["pytest_madcache/store", "pytest_madcache/util/fsutil.py", "scripts/fault_campaign.py",
                             "scripts/store_writes.py"],
                            "python -m pytest_madcache.localengine -- python scripts/fault_campaign.py --trials 300 --record"),
    "files-cost.json": ([*KEY, "bench/bench_files.py"], "python bench/bench_files.py --record"),
    "new-user-after.json": ([*GLUE, "pytest_madcache/provide", "pytest_madcache/core/why.py", *KEY,
                             "bench/new_user.py"],
                            "python -m pytest_madcache.localengine -- python bench/new_user.py --label after --record"),
    "ab-trials.json": ([*GLUE, "pytest_madcache/perf", "pytest_madcache/provide", "examples/realistic/models/mlp",
                        "examples/realistic/prepare.py", "bench/bench_ab.py"],
                       "python -m pytest_madcache.localengine -- python bench/bench_ab.py --trials 10 --json bench/results/ab-trials.json"),
    "ab-noise.json": (["pytest_madcache/perf/stats.py", "pytest_madcache/pytest_glue/ab.py",
                       "examples/realistic/models/mlp", "bench/bench_ab.py", "bench/ab_noise.py"],
                      "python -m pytest_madcache.localengine -- python bench/ab_noise.py --record"),
    "compare.json": ([*STORE, "pytest_madcache/provide", *GLUE, "pytest_madcache/engines", "examples/realistic",
                      "bench/bench_compare.py"],
                     "python -m pytest_madcache.localengine --engine debian13-containerd -- python bench/bench_compare.py "
                     "--record"),
    "prefetch.json": ([*STORE, "pytest_madcache/provide", *GLUE, "examples/realistic", "bench/bench_prefetch.py"],
                      "python -m pytest_madcache.localengine -- python bench/bench_prefetch.py --record"),
    **{f"parallel-loads-{kind}.json": ([*STORE, "examples/realistic", "bench/bench_parallel_loads.py"],
                                       f"python -m pytest_madcache.localengine --engine {kind} -- python "
                                       "bench/bench_parallel_loads.py --record")
       for kind in ("debian12", "debian13", "debian13-containerd", "podman")},
    "history-size.json": (["pytest_madcache/perf/history.py", "pytest_madcache/remote/documents.py",
                           "bench/bench_history.py"], "python bench/bench_history.py --record"),
    "main-job.txt": ([*STORE, "pytest_madcache/provide", *GLUE, "examples/realistic", "examples/main_job.sh"],
                     "python -m pytest_madcache.localengine -- bash examples/main_job.sh --record"),
}
# Measured before results carried their commit, each marked a strict xfail until regenerated (then the
# name comes off this list); empty since every result was regenerated on the layered code (issue 25).
# Companions (.md, .txt) are written with their JSON.
NOT_YET_REGENERATED: set = set()
# Records of a comparison between named checkouts, not figures of the current code.
NOT_CURRENT_BY_DESIGN = {"new-user-before.json", "new-user-before.md", "architecture-before.md", "architecture-after.md"}
COMPARISONS = re.compile(r"compare-[0-9a-f]+-[0-9a-f]+\.txt")  # bench/compare_commits.sh OLD NEW
COMPANIONS = re.compile(r".*\.(md|txt)$")


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def history() -> None:
    if not shutil.which("git") or git("rev-parse", "HEAD").returncode != 0:
        unavailable("no git history to compare the results' commits with")


def measured_commit(path: Path) -> Optional[dict]:
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return data.get("measured") if isinstance(data, dict) else None
    match = re.search(r"^measured: commit ([0-9a-f]{40}|unknown)( \(with uncommitted changes\))?$",
                      path.read_text(), re.M)
    return {"commit": match.group(1), "dirty": bool(match.group(2))} if match else None


def test_every_results_file_is_listed():
    """A new results file gets its list of measured paths (or is a companion, or a comparison)."""
    names = {p.name for p in RESULTS.iterdir()}
    unlisted = {n for n in names - set(MEASURES) - NOT_CURRENT_BY_DESIGN
                if not COMPARISONS.fullmatch(n) and not (COMPANIONS.match(n) and any(n.rsplit(".", 1)[0] == m.rsplit(".", 1)[0] for m in MEASURES))}
    assert unlisted == set(), "add these to MEASURES in tests/test_bench_results.py"
    for name, (paths, _) in MEASURES.items():
        assert name in names, name
        missing = [p for p in paths if not (ROOT / p).exists()]
        assert missing == [], f"{name}: measured paths that no longer exist (moved?): {missing}"


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(
        strict=True, reason="measured before results carried their commit: regenerate it")) if name in NOT_YET_REGENERATED
    else name
    for name in sorted(MEASURES)])
def test_results_are_not_older_than_the_code_they_measure(name, history):
    paths, command = MEASURES[name]
    stamp = measured_commit(RESULTS / name)
    assert stamp is not None, f"bench/results/{name} records no commit; regenerate it: {command}"
    commit = stamp["commit"]
    assert not stamp.get("dirty"), f"bench/results/{name} was measured with uncommitted changes; regenerate it: {command}"
    assert git("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0, \
        f"bench/results/{name}: commit {commit} is not in this repository's history; regenerate it: {command}"
    changed = git("diff", "--name-only", commit, "HEAD", "--", *paths).stdout.split()
    assert changed == [], (f"bench/results/{name} measured {commit[:12]}; since then these changed: "
                           f"{', '.join(changed)}; regenerate it: {command}")


def test_the_docs_quote_what_the_json_holds():
    """docs/cache.md's base resolution costs and docs/remote.md's fault campaign are rendered from
    their JSON (bench/render_quoted.py), as the other tables are."""
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    import render_quoted

    for (page, marker), render in render_quoted.PASSAGES.items():
        text = (ROOT / "docs" / page).read_text()
        assert render_quoted.between(text, marker) == "\n".join(render()), \
            f"docs/{page} ({marker}) differs from its JSON: python bench/render_quoted.py"
