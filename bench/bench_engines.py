"""Benchmark: the store against the raw engine on the engine DOCKER_HOST points at (any kind).

    python -m pytest_madcache.localengine --engine KIND -- python bench/bench_engines.py --json FILE

Builds an image (busybox, a layer of --size-mb MB of random data, a 2 MB top layer; the
table prints its measured size) and two more variants on the same base, then measures side by side,
--repeat times each (medians):

* P1 hit with the image present: `Store.load` (presence under every id the image goes by)
* P2 hit with only the top layer missing (the base loaded from the cache earlier) vs a raw full load
* P3 hit with nothing in the engine vs raw `docker load -i` of the engine's own `docker save` tar
* P4 our save vs raw `docker save -o`
* P5 disk of the cache holding 3 variants (`du` of the directory) vs one `docker save` of the 3
  (both from outside the store)

Raw and ours both go through the SDK (one client), in the same loop, timed by the same outer
clock, in an order that rotates run by run.
`bench/engines.sh` runs it on every engine kind and writes bench/ENGINES.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from benchlib import du, log, rotate  # noqa: E402
from pytest_madcache.engines.docker import Engine  # noqa: E402
from pytest_madcache.devtools.localengine import busybox_path  # noqa: E402
from pytest_madcache.store import Store  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    """Seconds `fn` took, on the one clock every side of every ratio here is timed with."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Bench:
    def __init__(self, size_mb: int, repeat: int, work: Path) -> None:
        self.engine = Engine()
        self.api = self.engine.api
        self.size_mb = size_mb
        self.repeat = repeat
        self.work = work
        self.nonce = secrets.token_hex(4)
        self.samples: Dict[str, List[float]] = {}
        self.facts: Dict[str, float] = {}
        self.images: List[str] = []

    def add(self, name: str, seconds: float) -> None:
        self.samples.setdefault(name, []).append(seconds)

    def build(self) -> None:
        ctx = self.work / "ctx"
        ctx.mkdir()
        shutil.copy(busybox_path(), ctx / "busybox")
        (ctx / "nonce").write_text(self.nonce)
        with open(ctx / "big.bin", "wb") as fh:
            for _ in range(self.size_mb):
                fh.write(os.urandom(1 << 20))
        base = ["FROM scratch", "COPY nonce /nonce", "COPY busybox /bin/busybox", "COPY big.bin /big.bin"]
        for i in range(3):
            (ctx / f"top{i}.bin").write_bytes(os.urandom(2 << 20))
            (ctx / f"Dockerfile.{i}").write_text("\n".join(base + [f"COPY top{i}.bin /top.bin"]) + "\n")
            tag = f"madcache-bench-{self.nonce}-v{i}:latest"
            result = self.engine.build(ctx, dockerfile=ctx / f"Dockerfile.{i}", tag=tag, builder="legacy")
            self.images.append(tag)
            log(f"built {tag} ({result.duration:.1f} s)")
        info = self.engine.inspect(self.images[0])
        self.facts["image_bytes"] = info.size
        self.facts["layers"] = len(info.diff_ids)

    def raw_save(self, ref: str, path: Path) -> None:
        with open(path, "wb") as fh:
            for chunk in self.api.get_image(ref, chunk_size=1 << 20):
                fh.write(chunk)

    def raw_load(self, path: Path) -> None:
        with open(path, "rb") as fh:
            self.engine.load(iter(lambda: fh.read(1 << 20), b""))

    def remove_all(self) -> None:
        for ref in [*self.images, *[f"mcb{self.nonce}:{i}" for i in range(3)]]:
            self.engine.remove(ref, prune_parents=True)

    def assert_empty(self, diff_ids) -> None:
        """A full load is timed only when the engine holds none of the image's layers."""
        have = self.engine.present_prefix(diff_ids)
        if have:
            raise RuntimeError(f"the engine still holds {have} of the image's layers before a full load")

    def run(self) -> None:
        """Every ratio's two sides come from the same loop, timed by the same outer clock, in an
        order that rotates run by run (benchlib.rotate), so neither side always goes first."""
        ref = self.images[0]
        tar = self.work / "raw.tar"
        # P4: save, raw and ours; ours into an empty cache each time.
        for i in range(self.repeat):
            for who in rotate(["raw", "ours"], i):
                if who == "raw":
                    self.add("save_raw", timed(lambda: self.raw_save(ref, tar)))
                else:
                    store = Store(self.work / f"save{i}", engine=self.engine, max_entries=50, progress=False)
                    self.add("save_ours", timed(lambda: store.save(ref, "ab" * 32, image_name=f"mcb{self.nonce}",
                                                                    image_tag="0")))
                    shutil.rmtree(self.work / f"save{i}")
        self.facts["raw_tar_bytes"] = tar.stat().st_size
        # The cache used for the loads: three variants sharing the base.  P5 measures it from
        # outside the store: `du` of the whole cache directory against one `docker save` of the
        # three images (the engine's own archive, which holds each shared layer once).
        store = Store(self.work / "cache", engine=self.engine, max_entries=50, progress=False)
        entries = [store.save(r, f"{i:02d}" * 32, image_name=f"mcb{self.nonce}", image_tag=str(i))
                   for i, r in enumerate(self.images)]
        self.facts["variants_cache_bytes"] = du(store.dir)
        # P1: present.
        for _ in range(max(self.repeat, 20)):
            self.add("present_ours", timed(lambda: store.load(entries[0])))
        # P3: nothing in the engine: raw full load of the engine's own save vs ours.
        for i in range(self.repeat):
            for who in rotate(["raw", "ours"], i):
                self.remove_all()
                self.assert_empty(entries[0].layers)
                if who == "raw":
                    self.add("full_raw", timed(lambda: self.raw_load(tar)))
                else:
                    result = {}
                    self.add("full_ours", timed(lambda: result.setdefault("r", store.load(entries[0]))))
                    self.facts["full_bytes_sent"] = result["r"].bytes_sent
        # P2: ours with only the top layer missing (the base in the engine through another variant
        # loaded from the cache) against a raw full load from nothing, in the same loop.
        how = "?"
        for i in range(self.repeat):
            for who in rotate(["raw", "ours"], i):
                self.remove_all()
                self.assert_empty(entries[0].layers)
                if who == "raw":
                    self.add("delta_raw_full", timed(lambda: self.raw_load(tar)))
                else:
                    store.load(entries[1])
                    result = {}
                    self.add("delta_ours", timed(lambda: result.setdefault("r", store.load(entries[0]))))
                    how = result["r"].how
                    self.facts["delta_bytes_sent"] = result["r"].bytes_sent
        self.facts["delta_how"] = how  # type: ignore[assignment]
        # P5's other side, last: on dockerd 26 a multi-image save kept the layers' data after the
        # images were removed, so the full loads timed after it sent 161 MB in 0.13 s.
        loaded = [f"mcb{self.nonce}:{i}" for i in range(len(entries))]
        for entry in entries:
            store.load(entry)  # the same layers as built (the builds were removed above)
        self.facts["variants_multi_save_bytes"] = benchlib.raw_save(self.engine, loaded, self.work / "multi.tar")
        (self.work / "multi.tar").unlink()

    def report(self) -> Dict[str, object]:
        med = {k: statistics.median(v) for k, v in self.samples.items()}
        return {
            "measured": benchlib.stamp(),
            "engine": self.engine.info.name,
            "strategy": self.engine.info.strategy,
            "repeat": self.repeat,
            "facts": self.facts,
            "medians": med,
            "samples": self.samples,
            "P1_present_ms": med["present_ours"] * 1000,
            "P2_delta_vs_raw_full": med["delta_ours"] / med["delta_raw_full"],
            "P3_full_vs_raw_load": med["full_ours"] / med["full_raw"],
            "P4_save_vs_raw_save": med["save_ours"] / med["save_raw"],
            "P5_disk_vs_multi_save": self.facts["variants_cache_bytes"] / self.facts["variants_multi_save_bytes"],
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", metavar="FILE", required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="madcache-bench-engines-"))
    bench = Bench(args.size_mb, args.repeat, work)
    log(f"engine: {bench.engine.info.name}")
    try:
        bench.build()
        bench.run()
        data = bench.report()
    finally:
        with_errors = []
        for ref in bench.images:
            try:
                bench.engine.remove(ref, prune_parents=True)
            except Exception as exc:  # noqa: BLE001 - cleanup goes on
                with_errors.append(str(exc))
        bench.remove_all()
        shutil.rmtree(work, ignore_errors=True)
    Path(args.json).write_text(json.dumps(data, indent=1))
    print(json.dumps({k: v for k, v in data.items() if k.startswith("P") or k == "engine"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
