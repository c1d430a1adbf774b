"""Benchmark: the realistic example models on the engine DOCKER_HOST points at (any kind).

    python -m pytest_madcache.localengine --engine KIND -- python bench/bench_realistic.py --json FILE

What a user's model images cost, measured on the images the realistic suite
(examples/realistic: a Python base from Debian's packages, pip-installed
dependencies, a 200 MB checkpoint converted at build time) really builds:

* P7: the suite run twice with `--enable-cache` and a fresh cache directory,
  the model images removed from the engine in between: run 1 misses (build +
  save), run 2 hits (load).  Wall time of each pytest process, and image
  acquisition (the tests' setup time, from `--durations`).
* P4: saving each model image: raw `docker save`, our `Store.save` into an
  empty cache, and the seed design's save, in one loop whose order rotates.
* P3: a hit with nothing in the engine (the model images and their base
  removed, no layer left): raw `docker load` of the engine's own save, our
  `Store.load`, and the seed design's hit, rotating in one loop.
* P5: `du` of our cache directory holding both images against `du` of one
  multi-image `docker save` of the same images, and of the seed design's tars.

Where the time goes: every P3/P4 sample also records the CPU seconds it cost
this process (all threads) and the engine's processes (dockerd, containerd,
podman), and one save and one load of the larger image run once more under
cProfile (the calling thread's functions by their own time).

Raw, ours and the seed design all go through the Docker SDK (one client).
The base image's own preparation (what a registry and PyPI give) is timed
apart.  Images this run leaves are removed; the base image is put back.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "examples" / "realistic"))

from benchlib import (MB, Measured, du, loadavg, log, machine, profile_top, raw_load, raw_save, stamp,  # noqa: E402
                      rotate, timed)
from seed_design import SeedDesignCache  # noqa: E402
import prepare  # noqa: E402

from pytest_madcache.engines.docker import Engine  # noqa: E402
from pytest_madcache.store import Store  # noqa: E402
from pytest_madcache.store.entries import Entry  # noqa: E402

SUITE = ROOT / "examples" / "realistic"
MODEL_LABEL = "org.madcache.example"


class RealisticBench(Measured):
    def __init__(self, repeat: int, work: Path) -> None:
        super().__init__()
        self.engine = Engine()
        self.repeat = repeat
        self.work = work
        self.profiles: Dict[str, Any] = {}
        self.facts: Dict[str, Any] = {}
        self.models: List[Tuple[str, str]] = []  # (model, image id)
        self.entries: Dict[str, Entry] = {}  # model -> our entry, its store, its raw tar, its seed cache
        self.stores: Dict[str, Store] = {}
        self.raw_tars: Dict[str, Path] = {}
        self.seeds: Dict[str, SeedDesignCache] = {}

    # -- the engine's state ------------------------------------------------------------

    def model_images(self) -> List[Tuple[str, str]]:
        images = self.engine.api.images(filters={"label": MODEL_LABEL})
        return sorted((img["Labels"][MODEL_LABEL], img["Id"]) for img in images)

    def forget_models(self) -> None:
        for _model, image_id in self.model_images():
            self.engine.remove(image_id, force=True, prune_parents=True)
        self.engine.forget_layers()

    def empty_engine(self, diff_ids: List[str]) -> None:
        """No model image, no base image, and not one of DIFF_IDS' layers left."""
        self.forget_models()
        if self.engine.inspect(prepare.BASE_IMAGE) is not None:
            self.engine.remove(prepare.BASE_IMAGE, force=True, prune_parents=True)
        for image in self.engine.api.images(filters={"label": prepare.BASE_LABEL}):
            self.engine.remove(image["Id"], force=True, prune_parents=True)
        self.engine.forget_layers()
        have = self.engine.present_prefix(diff_ids)
        if have:
            raise RuntimeError(f"the engine still holds {have} of the image's {len(diff_ids)} layers")

    # -- P7: the suite, a miss then a hit ---------------------------------------------

    def run_suite(self, n: int, cache: Path) -> float:
        self.forget_models()
        cmd = [sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider", "-q", "--durations=0",
               "--durations-min=0", "--enable-cache", "--cache-dir", str(cache)]
        log(f"P7 run {n}: pytest examples/realistic --enable-cache")
        seconds, proc = timed(lambda: subprocess.run(cmd, capture_output=True, text=True))
        output = proc.stdout + proc.stderr
        (self.work / f"run-{n}.log").write_text(output)
        if proc.returncode != 0:
            raise RuntimeError(f"run {n} of the realistic suite failed ({proc.returncode}):\n{output[-3000:]}")
        wanted = "Cache miss. Will build" if n == 1 else "Cache hit! Loading Docker image from cache"
        if wanted not in output or (n == 2 and "Cache miss" in output):
            raise RuntimeError(f"run {n} did not {'miss' if n == 1 else 'hit'} as expected:\n{output[-3000:]}")
        setups = [float(m.group(1)) for m in re.finditer(r"^([\d.]+)s setup ", output, re.M)]
        if not setups or sum(setups) <= 0:  # a ratio over nothing would read as any speed-up at all
            raise RuntimeError(f"run {n}: no test setup time in pytest's --durations output:\n{output[-3000:]}")
        setup = sum(setups)
        self.facts[f"p7_run{n}_seconds"] = seconds
        self.facts[f"p7_run{n}_setup_seconds"] = setup
        self.facts.setdefault("load_average_runs", []).append(loadavg())
        return seconds

    def phase_suite(self) -> None:
        t, _ = timed(lambda: prepare.prepare(log=sys.stderr))
        self.facts["prepare_seconds"] = t
        cache = self.work / "suite-cache"
        self.run_suite(1, cache)
        self.run_suite(2, cache)
        self.models = self.model_images()
        if len(self.models) != 2:
            raise RuntimeError(f"expected the 2 realistic model images after run 2, found {self.models}")

    # -- P4, P5 ------------------------------------------------------------------------

    def phase_save(self) -> None:
        log("P4: raw docker save / our save / the seed design's save, rotating")
        for model, image_id in self.models:
            for i in range(self.repeat):
                for who in rotate(["raw", "ours", "seed"], i):
                    if who == "raw":
                        tar = self.work / f"raw-{model}-{i}.tar"
                        size = self.measure(f"{model}_save_raw", lambda: raw_save(self.engine, [image_id], tar))
                        self.facts[f"{model}_raw_tar_bytes"] = size
                        if i == 0:
                            self.raw_tars[model] = tar
                        else:
                            tar.unlink()
                    elif who == "seed":
                        seed = SeedDesignCache(self.work / f"seed-{model}-{i}", self.engine)
                        self.measure(f"{model}_seed_save", lambda: seed.save(image_id, secrets.token_hex(32)))
                        if i == 0:
                            self.seeds[model] = seed
                        else:
                            shutil.rmtree(seed.dir)
                    else:
                        cache = self.work / f"ours-{model}-{i}"
                        store = Store(cache, engine=self.engine, progress=False)
                        entry = self.measure(f"{model}_save_ours", lambda: store.save(
                            image_id, secrets.token_hex(32), image_name=f"bench-{model}"))
                        if i == 0:
                            self.entries[model], self.stores[model] = entry, store
                        else:
                            shutil.rmtree(cache)
        self.count_files()

    def count_files(self) -> None:
        """How many files each image holds, read from its layers in our store."""
        for model, entry in self.entries.items():
            store = self.stores[model]
            files = 0
            for digest in entry.layers:
                with store.open_blob(digest) as fh, tarfile.open(fileobj=fh, mode="r|") as layer:
                    files += sum(1 for member in layer if member.isfile())
            info = self.engine.inspect(dict(self.models)[model])
            self.facts[f"{model}_files"] = files
            self.facts[f"{model}_layers"] = len(entry.layers)
            self.facts[f"{model}_image_bytes"] = info.size if info else 0
            log(f"{model}: {self.facts[f'{model}_image_bytes'] / MB:.0f} MB, {len(entry.layers)} layers, {files} files")

    def phase_disk(self) -> None:
        log("P5: du of one cache holding both images vs du of one multi-image docker save")
        cache = self.work / "both"
        store = Store(cache, engine=self.engine, progress=False)
        seed = SeedDesignCache(self.work / "seed-both", self.engine)
        for model, image_id in self.models:
            store.save(image_id, secrets.token_hex(32), image_name=f"bench-{model}")
            seed.save(image_id, secrets.token_hex(32))
        multi = self.work / "multi.tar"
        raw_save(self.engine, [image_id for _model, image_id in self.models], multi)
        self.facts["p5_cache_bytes"] = du(cache)
        self.facts["p5_multi_save_bytes"] = du(multi)
        self.facts["p5_seed_bytes"] = du(seed.dir)
        multi.unlink()
        shutil.rmtree(cache)
        shutil.rmtree(seed.dir)

    # -- P3 ----------------------------------------------------------------------------

    def phase_load(self) -> None:
        log("P3: nothing in the engine: raw docker load / our load / the seed design's hit, rotating")
        base_tar = self.work / "base.tar"
        raw_save(self.engine, [prepare.BASE_IMAGE], base_tar)
        try:
            for model, image_id in self.models:
                entry, store, seed = self.entries[model], self.stores[model], self.seeds[model]
                seed_key = seed.lookup_any()
                for i in range(self.repeat):
                    for who in rotate(["raw", "ours", "seed"], i):
                        self.empty_engine(entry.layers)
                        if who == "raw":
                            self.measure(f"{model}_load_raw", lambda: raw_load(self.engine, self.raw_tars[model]))
                        elif who == "seed":
                            self.measure(f"{model}_seed_hit", lambda: seed.hit(seed_key))
                        else:
                            res = self.measure(f"{model}_load_ours", lambda: store.load(entry))
                            if res.how != "full":
                                raise RuntimeError(f"expected a full load, got {res}")
                            self.facts[f"{model}_bytes_sent"] = res.bytes_sent
                        # Our load on the containerd store names the image by our archive's manifest (oci_id).
                        if self.engine.find([image_id, *entry.engine_ids]) is None:
                            raise RuntimeError(f"{who}'s load left no {model} image in the engine")
            self.phase_profile()
        finally:
            self.forget_models()
            if self.engine.inspect(prepare.BASE_IMAGE) is None:
                raw_load(self.engine, base_tar)

    def phase_profile(self) -> None:
        """One more save and one more load of the larger image, under cProfile."""
        model, image_id = max(self.models, key=lambda m: self.facts[f"{m[0]}_image_bytes"])
        entry, store = self.entries[model], self.stores[model]
        log(f"profile: one save and one load of the {model} image under cProfile")
        self.empty_engine(entry.layers)
        self.profiles["load"] = {"model": model, "top": profile_top(lambda: store.load(entry))}
        loaded = self.engine.find([image_id, *entry.engine_ids])
        if loaded is None:
            raise RuntimeError(f"the profiled load left no {model} image in the engine")
        cache = Store(self.work / "profile-save", engine=self.engine, progress=False)
        self.profiles["save"] = {"model": model, "top": profile_top(
            lambda: cache.save(loaded.id, secrets.token_hex(32), image_name=f"bench-{model}"))}

    # -- report ------------------------------------------------------------------------

    def report(self) -> Dict[str, Any]:
        med = {k: v.median for k, v in self.series.items()}
        f = self.facts
        out: Dict[str, Any] = {
            "measured": stamp(),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "engine": self.engine.info.name,
            "kind": os.environ.get("MADCACHE_ENGINE_KIND", "(DOCKER_HOST)"),
            "strategy": self.engine.info.strategy,
            "repeat": self.repeat,
            "facts": f,
            "series": {k: v.to_json() for k, v in self.series.items()},
            "cpu": {k: v.to_json() for k, v in self.cpu.items()},
            "profiles": self.profiles,
            "P7_speedup": f["p7_run1_seconds"] / f["p7_run2_seconds"],
            "P7_acquisition_speedup": f["p7_run1_setup_seconds"] / f["p7_run2_setup_seconds"],
            "P5_disk_vs_multi_save": f["p5_cache_bytes"] / f["p5_multi_save_bytes"],
            "P5_disk_vs_seed": f["p5_cache_bytes"] / f["p5_seed_bytes"],
        }
        for model, _image_id in self.models:
            out[f"P3_{model}"] = med[f"{model}_load_ours"] / med[f"{model}_load_raw"]
            out[f"P3_{model}_vs_seed"] = med[f"{model}_load_ours"] / med[f"{model}_seed_hit"]
            out[f"P4_{model}"] = med[f"{model}_save_ours"] / med[f"{model}_save_raw"]
            out[f"P4_{model}_vs_seed"] = med[f"{model}_save_ours"] / med[f"{model}_seed_save"]
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measure and contender (default 3)")
    parser.add_argument("--json", metavar="FILE", required=True)
    parser.add_argument("--workdir", metavar="DIR", help="where tars and caches go (default: system temp)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, not {args.repeat}")
    work = Path(tempfile.mkdtemp(prefix="madcache-bench-realistic-", dir=args.workdir))
    bench = RealisticBench(args.repeat, work)
    log(f"engine: {bench.engine.info.name}; load average {loadavg()}")
    bench.facts["load_average_start"] = loadavg()
    try:
        bench.phase_suite()
        bench.phase_save()
        bench.phase_disk()
        bench.phase_load()
        data = bench.report()
    finally:
        try:
            bench.forget_models()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.json).write_text(json.dumps(data, indent=1))
    print(json.dumps({k: v for k, v in data.items() if k.startswith("P") or k in ("engine", "kind")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
