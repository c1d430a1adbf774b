"""The suites a new user writes, run as they would run them: do they hit on the second run?

Three suites, written fresh into a temp dir, each run several times with default settings
(pytest's own cache on, no tuning) against the engine in DOCKER_HOST:

- sweep: one model, `context="."` next to the test file, `parametrize("batch_size", [1..32])`,
  `--output=results.csv` (inside the context);
- seven: seven models, one test each, `--cache-max-entries=5`;
- edit: the sweep's suite again, with a data file edited between runs (the miss must say why).

Per run it records hits, misses, builds, entries in the cache, evictions and the miss reasons
(from --cache-summary-json).  `--source DIR` runs another checkout of the plugin (for a
before/after record); the record goes to ~/.cache/pytest-madcache/bench-results/ unless
`--record` writes bench/results/new-user-<label>.json and .md.

    python -m pytest_madcache.localengine -- python bench/new_user.py [--runs 3] [--label after] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
BASE = "madcache-newuser-base:1"

DOCKERFILE = f"""FROM {BASE}
COPY . /app
CMD ["sh", "-c", "echo performance: $((100 * ${{BATCH_SIZE:-1}})) samples_per_second"]
"""

SWEEP = """import pytest

@pytest.mark.model("sweep", context=".")
@pytest.mark.parametrize("batch_size", [1, 2, 4, 8, 16, 32])
def test_sweep(model_run, batch_size):
    result = model_run(env={"BATCH_SIZE": str(batch_size)})
    assert result.exit_code == 0
    assert result.performance == 100 * batch_size
"""

SEVEN = "import pytest\n" + "".join(f"""

@pytest.mark.model("m{n}", context="m{n}")
def test_m{n}(model_run):
    assert model_run().exit_code == 0
""" for n in range(1, 8))


def make_base() -> None:
    """A busybox base image built here (no registry): FROM scratch, busybox installed."""
    sys.path.insert(0, str(HERE.parent))
    from pytest_madcache.devtools.localengine import busybox_path

    with tempfile.TemporaryDirectory() as d:
        ctx = Path(d)
        (ctx / "busybox").write_bytes(Path(busybox_path()).read_bytes())
        (ctx / "busybox").chmod(0o755)
        (ctx / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\n'
                                        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n')
        import docker

        client = docker.from_env()
        client.images.build(path=str(ctx), tag=BASE, rm=True)


def write_suites(root: Path) -> Dict[str, Path]:
    sweep = root / "sweep"
    sweep.mkdir()
    (sweep / "Dockerfile").write_text(DOCKERFILE)
    (sweep / "test_sweep.py").write_text(SWEEP)
    (sweep / "data.txt").write_text("training data v1\n")
    seven = root / "seven"
    seven.mkdir()
    for n in range(1, 8):
        (seven / f"m{n}").mkdir()
        (seven / f"m{n}" / "Dockerfile").write_text(DOCKERFILE + f"LABEL model=m{n}\n")
    (seven / "test_seven.py").write_text(SEVEN)
    return {"sweep": sweep, "seven": seven}


def run(suite: Path, cache: Path, extra: List[str], env: Dict[str, str], n: int) -> Dict[str, Any]:
    summary = suite / f".summary-{n}.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "--enable-cache", f"--cache-dir={cache}",
           f"--cache-summary-json={summary}", *extra]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=suite, env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    data = json.loads(summary.read_text()) if summary.is_file() else {}
    summary.unlink(missing_ok=True)
    entries = len(list((cache / "entries").glob("run_*"))) if (cache / "entries").is_dir() else 0
    reasons = sorted({line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("Cache miss (")})
    return {"run": n, "exit": proc.returncode, "seconds": round(took, 1), "hits": data.get("hits"),
            "misses": data.get("misses"), "builds": data.get("builds"), "evicted": data.get("evicted"),
            "entries": entries, "miss_reasons": reasons,
            "tail": proc.stdout.strip().splitlines()[-1:] if proc.returncode else []}


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--label", default="after")
    ap.add_argument("--source", type=Path, help="a checkout of the plugin to run instead of the installed one")
    ap.add_argument("--record", action="store_true", help="write bench/results/new-user-LABEL.* (the committed record)")
    args = ap.parse_args(argv)
    env = dict(os.environ)
    if args.source:
        env["PYTHONPATH"] = os.pathsep.join([str(args.source.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    make_base()
    results: Dict[str, Any] = {"label": args.label, "runs": args.runs, "date": time.strftime("%Y-%m-%d"),
                               "engine": env.get("MADCACHE_ENGINE_KIND", "DOCKER_HOST"), "suites": {}}
    with tempfile.TemporaryDirectory(prefix="madcache-new-user-") as d:
        root = Path(d)
        suites = write_suites(root)
        plans = {"sweep": (suites["sweep"], ["--output=results.csv"], None),
                 "seven": (suites["seven"], ["--cache-max-entries=5"], None),
                 "edit": (suites["sweep"], ["--output=results.csv"], "data.txt")}
        for name, (suite, extra, edit) in plans.items():
            cache = root / f"cache-{name}"
            rows = []
            for n in range(1, args.runs + 1):
                if edit and n > 1:
                    (suite / edit).write_text(f"training data v{n}\n")
                rows.append(run(suite, cache, extra, env, n))
                print(name, rows[-1], flush=True)
            results["suites"][name] = rows
    out_dir = HERE / "results" if args.record else Path.home() / ".cache" / "pytest-madcache" / "bench-results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"new-user-{args.label}"
    from benchlib import stamp  # bench/: the commit of this checkout, whichever --source ran

    stem.with_suffix(".json").write_text(json.dumps({"measured": stamp(), **results}, indent=1) + "\n")
    stem.with_suffix(".md").write_text(render(results))
    print(f"written: {stem}.json and .md")
    return 0


def render(results: Dict[str, Any]) -> str:
    lines = [f"# New-user suites ({results['label']}, {results['engine']}, {results['date']})", "",
             "| suite | run | hits | misses | builds | entries after | evicted | why it missed |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rows in results["suites"].items():
        for r in rows:
            why = "; ".join(r["miss_reasons"]) or "-"
            lines.append(f"| {name} | {r['run']} | {r['hits']} | {r['misses']} | {r['builds']} | {r['entries']} "
                         f"| {r['evicted'] if r['evicted'] is not None else '-'} | {why} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
