"""Benchmark: this cache side by side with what users pick instead, on the realistic suite.

    python -m pytest_madcache.localengine --engine debian13-containerd -- python bench/bench_compare.py --record

On a fresh runner (the model images and the engine's build cache removed, the base image kept, as
after pulling `FROM`), each round gets the suite's images five ways, in an order that rotates:

  (a) no cache: the suite builds its images;
  (b) BuildKit's cache, as docker/build-push-action users keep it: `buildx build --cache-from
      type=local --load` per image, from a cache exported with `--cache-to type=local,mode=max`
      (the containerd image store is where Docker's default driver can export it);
  (c) one `docker save` tar per image, `docker load`ed (one tar per image kept by CI);
  (d) this cache, prefetch off (each image loaded when its first test asks);
  (e) this cache, prefetch on (the default).

Image acquisition: for (a), (d) and (e) the tests' setup time (`--durations`: where `model_image`
obtains the image); for (b) and (c) the time of their step that puts the images in the engine.
Wall time: the pytest process for (a), (d) and (e); for (b) and (c) their step plus the suite run
with the images already in the engine (measured in the same round), as a CI job runs them.  Bytes
stored: what each keeps between runs.  Each figure is reported as a ratio to (d).

Writes bench/results/compare.json and compare.md with --record.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "examples" / "realistic"))

import prepare  # noqa: E402
from benchlib import du, forget_models, loadavg, log, machine, raw_load, raw_save, rotate, stamp, table  # noqa: E402

from pytest_madcache.engines.buildkit import buildx_binary  # noqa: E402
from pytest_madcache.engines.docker import Engine  # noqa: E402

SUITE = ROOT / "examples" / "realistic"
MODELS = ("mlp", "transformer")
MODEL_LABEL = "org.madcache.example"
WAYS = {"a": "no cache", "b": "BuildKit cache (type=local, mode=max)", "c": "docker save tar per image",
        "d": "this cache, prefetch off", "e": "this cache, prefetch on"}


class CompareBench:
    def __init__(self, work: Path, buildx: str) -> None:
        self.engine = Engine()
        self.work = work
        self.buildx = buildx
        self.cache = work / "madcache"
        self.buildkit = work / "buildkit"
        self.tars = work / "tars"
        self.runs = 0

    # -- a fresh runner -----------------------------------------------------------------

    def fresh(self) -> None:
        """No model image and no build cache; the base image stays."""
        forget_models(self.engine, MODEL_LABEL)
        self.engine.api.prune_builds(all=True)

    # -- the ways -----------------------------------------------------------------------

    def pytest(self, *args: str) -> Tuple[float, float, str]:
        """Run the suite; its wall time, its tests' setup time and its output."""
        self.runs += 1
        cmd = [sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider", "-q", "--durations=0",
               "--durations-min=0", *args]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        output = proc.stdout + proc.stderr
        (self.work / f"run-{self.runs}.log").write_text(output)
        if proc.returncode != 0:
            raise RuntimeError(f"pytest {' '.join(args)} failed ({proc.returncode}):\n{output[-3000:]}")
        setup = sum(float(m.group(1)) for m in re.finditer(r"^([\d.]+)s setup ", output, re.M))
        return wall, setup, output

    def ours(self, prefetch: str) -> Tuple[float, float, str]:
        wall, setup, output = self.pytest("--enable-cache", f"--cache-dir={self.cache}", f"--cache-prefetch={prefetch}")
        if "Cache miss" in output:
            raise RuntimeError(f"--cache-prefetch={prefetch}: a miss in a filled cache:\n{output[-3000:]}")
        return wall, setup, output

    def present(self) -> float:
        """The suite with both images already in the engine: what (b) and (c) run after their step."""
        wall, _setup, output = self.ours("off")
        if "loaded from cache successfully" in output:
            raise RuntimeError(f"the images were not in the engine:\n{output[-3000:]}")
        return wall

    def buildkit_build(self, model: str, cache_args: List[str]) -> None:
        cmd = [self.buildx, "build", "--load", "--network", "none", "--progress", "plain", "--tag",
               f"compare-{model}:buildkit", *cache_args, str(SUITE / "models" / model)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.buildx_env())
        if proc.returncode != 0:
            raise RuntimeError(f"buildx build of {model} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")

    def buildx_env(self) -> Dict[str, str]:
        return {**os.environ, "BUILDX_CONFIG": str(self.work / "buildx-config")}

    def acquire_buildkit(self) -> None:
        for model in MODELS:
            self.buildkit_build(model, ["--cache-from", f"type=local,src={self.buildkit / model}"])

    def acquire_tars(self) -> None:
        for model in MODELS:
            raw_load(self.engine, self.tars / f"{model}.tar")
        self.engine.forget_layers()

    # -- filling what each way keeps ------------------------------------------------------

    def fill(self) -> Dict[str, int]:
        self.fresh()
        log("fill (d)/(e): the suite's first run with --enable-cache builds and saves")
        self.pytest("--enable-cache", f"--cache-dir={self.cache}")
        self.tars.mkdir()
        for model, image_id in self.model_images():
            log(f"fill (c): docker save of {model}")
            raw_save(self.engine, [image_id], self.tars / f"{model}.tar")
        self.fresh()
        for model in MODELS:
            log(f"fill (b): buildx build --cache-to type=local,mode=max of {model}")
            self.buildkit_build(model, ["--cache-to", f"type=local,dest={self.buildkit / model},mode=max"])
        return {"a": 0, "b": du(self.buildkit), "c": du(self.tars), "d": du(self.cache), "e": du(self.cache)}

    def model_images(self) -> List[Tuple[str, str]]:
        images = self.engine.api.images(filters={"label": MODEL_LABEL})
        return sorted((img["Labels"][MODEL_LABEL], img["Id"]) for img in images
                      if not any(t.endswith(":buildkit") for t in img.get("RepoTags") or []))

    # -- one round ---------------------------------------------------------------------

    def round(self, i: int, n: int) -> Dict[str, Any]:
        out: Dict[str, Any] = {"order": rotate(list(WAYS), i)}
        for way in out["order"]:
            log(f"round {i + 1}/{n}: ({way}) {WAYS[way]}")
            self.fresh()
            out[way] = self.way(way)
            out[way]["load_average"] = loadavg()
        self.fresh()
        self.ours("off")  # the images back in the engine, then the suite with them present
        out["present_wall_seconds"] = round(self.present(), 3)
        for way in ("b", "c"):
            out[way]["wall_seconds"] = round(out[way]["acquire_seconds"] + out["present_wall_seconds"], 3)
        return out

    def way(self, way: str) -> Dict[str, Any]:
        steps: Dict[str, Callable[[], None]] = {"b": self.acquire_buildkit, "c": self.acquire_tars}
        if way in steps:
            start = time.perf_counter()
            steps[way]()
            return {"acquire_seconds": round(time.perf_counter() - start, 3)}
        args = {"a": (), "d": ("off",), "e": ("loads",)}[way]
        wall, setup, _ = self.ours(*args) if args else self.pytest()
        return {"wall_seconds": round(wall, 3), "acquire_seconds": round(setup, 3)}


def summarize(rounds: List[Dict[str, Any]], stored: Dict[str, int]) -> Dict[str, Any]:
    """Per way: the medians, and each as a ratio to (d)."""
    out: Dict[str, Any] = {}
    for way in WAYS:
        wall = statistics.median(r[way]["wall_seconds"] for r in rounds)
        acquire = statistics.median(r[way]["acquire_seconds"] for r in rounds)
        out[way] = {"wall_seconds": round(wall, 3), "acquire_seconds": round(acquire, 3), "stored_bytes": stored[way]}
    d = out["d"]
    for way in WAYS:
        out[way]["wall_ratio"] = round(out[way]["wall_seconds"] / d["wall_seconds"], 3)
        out[way]["acquire_ratio"] = round(out[way]["acquire_seconds"] / d["acquire_seconds"], 3)
        out[way]["stored_ratio"] = round(out[way]["stored_bytes"] / d["stored_bytes"], 3)
    return out


def render(data: Dict[str, Any]) -> List[str]:
    lines = [f"# The realistic suite on a fresh runner, five ways ({data['engine']})", "",
             f"Measured at {data['measured']['commit'][:12]} ({data['measured']['date']}), "
             f"{len(data['rounds'])} rounds, the order rotating; `{data['command']}`.", ""]
    rows = []
    for way, s in data["summary"].items():
        rows.append([f"({way}) {WAYS[way]}", f"{s['wall_seconds']:.1f} s", f"{s['wall_ratio']:.2f}x",
                     f"{s['acquire_seconds']:.1f} s", f"{s['acquire_ratio']:.2f}x",
                     f"{s['stored_bytes'] / 1e6:,.0f} MB", f"{s['stored_ratio']:.2f}x"])
    lines += table(["way", "suite wall (median)", "/ (d)", "image acquisition (median)", "/ (d)", "stored",
                    "/ (d)"], rows)
    lines += ["", f"(b) and (c): their step, then the suite with the images in the engine "
              f"({statistics.median(r['present_wall_seconds'] for r in data['rounds']):.1f} s, median).", ""]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each every way once (default 3)")
    parser.add_argument("--record", action="store_true", help="write bench/results/compare.json and .md")
    args = parser.parse_args()
    buildx = buildx_binary()
    if buildx is None:
        raise SystemExit("bench_compare: no docker-buildx (run it under python -m pytest_madcache.localengine)")
    work = Path(tempfile.mkdtemp(prefix="madcache-bench-compare-"))
    bench = CompareBench(work, buildx)
    log(f"engine: {bench.engine.info.name}; load average {loadavg()}")
    try:
        prepare.prepare(log=sys.stderr)
        stored = bench.fill()
        rounds = [bench.round(i, args.rounds) for i in range(args.rounds)]
    finally:
        try:
            bench.fresh()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    data = {"measured": stamp(), "machine": machine(), "engine": bench.engine.info.name,
            "command": "python -m pytest_madcache.localengine --engine debian13-containerd -- "
                       "python bench/bench_compare.py --record",
            "rounds": rounds, "stored_bytes": stored, "summary": summarize(rounds, stored)}
    text = "\n".join(render(data))
    print(text)
    if args.record:
        out = ROOT / "bench" / "results"
        (out / "compare.json").write_text(json.dumps(data, indent=1) + "\n")
        (out / "compare.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
