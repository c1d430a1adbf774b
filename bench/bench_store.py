"""Benchmark: the madcache store against the raw engine, side by side, in one run.

    python -m pytest_madcache.localengine -- python bench/bench_store.py [--size-mb 300] [--repeat 3] [--json FILE]

Builds a ~300 MB image locally (no registry needed): a busybox base, one
large data layer and a small (~2 MB) top layer.  The data layer is one file
of random bytes (`--data random`), one of text-like bytes (`compressible`)
or a tree of about 20,000 files of 1-30 kB (`smallfiles`).  Then measures,
each at least --repeat times (median with min-max; ratios come from the same
run because these machines are noisy):

* raw `docker save` vs our save (Store.save into an empty cache dir) vs the
  seed design's save, in one loop whose order rotates run by run;
* our load with the image present ("present") vs a raw `docker load`
  of the full tar with the image present (what a cache that always loads
  would do) and vs a CLI presence check;
* our load with only the top layer missing ("delta", the base is held by
  another image) vs a raw `docker load` of a tar that holds only that
  layer (built from the full save);
* our load with nothing present ("full") vs a raw `docker load` vs the seed
  design's hit, rotating in one loop;
* disk of 5 variants sharing the base: `du` of our cache directory vs `du`
  of one multi-image `docker save` of the same 5 images, and vs the seed
  design's 5 tars.

Raw, ours and the seed design all go through the Docker SDK (one client).

Everything it creates (images, tars, cache dirs) is removed at the end.
The images get a random nonce in their lowest layer, so no other image on
the engine shares their layers and "nothing present" really means that.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pytest_madcache.engines.docker import Engine
from pytest_madcache.core.key import KeySpec, key_for
from pytest_madcache.devtools.localengine import busybox_path
from pytest_madcache.store import Store
from pytest_madcache.provide import get_or_build

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (GOALS, stamp, MB, Measured, du, loadavg, log, machine, raw_load, raw_save, rotate,  # noqa: E402
                      table, timed)
from seed_design import SeedDesignCache  # noqa: E402

MIB = 1 << 20
TOP_MB = 2
VARIANTS = 5


# -- small helpers -------------------------------------------------------------


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, MIB)
            fh.write(os.urandom(n))
            left -= n


def write_compressible(path: Path, size: int) -> None:
    """Text-like bytes (a random vocabulary of hex words): zstd -1 shrinks them about 3x."""
    import random

    rng = random.Random(secrets.randbits(32))
    vocab = [os.urandom(4).hex().encode() for _ in range(4000)]
    with open(path, "wb") as fh:
        left = size
        while left:
            block = b" ".join(rng.choices(vocab, k=120_000))[:min(left, MIB)]
            fh.write(block)
            left -= len(block)


def write_smallfiles(path: Path, size: int) -> None:
    """A tree of 1-30 kB files (about 20,000 for 300 MB), 200 to a directory, as site-packages has."""
    import random

    rng = random.Random(secrets.randbits(32))
    left, n = size, 0
    while left > 0:
        folder = path / f"pkg{n // 200:04d}"
        if n % 200 == 0:
            folder.mkdir(parents=True)
        chunk = min(left, rng.randint(1000, 30000))
        (folder / f"mod{n:06d}.py").write_bytes(os.urandom(chunk // 2).hex().encode()[:chunk])
        left -= chunk
        n += 1


WRITERS = {"random": write_random, "compressible": write_compressible, "smallfiles": write_smallfiles}


def docker_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def proc_wchar() -> int:
    """Bytes this process has passed to write() (Linux /proc/self/io), or -1."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


# -- the benchmark -------------------------------------------------------------


class Bench(Measured):
    def __init__(self, size_mb: int, repeat: int, workdir: Path, data: str = "random") -> None:
        super().__init__()
        self.data = data
        self.size_mb = size_mb
        self.repeat = repeat
        self.work = workdir
        self.engine = Engine()
        self.nonce = secrets.token_hex(4)
        self.prefix = f"madcache-bench-{self.nonce}"
        self.base_ref = f"{self.prefix}-base:latest"
        self.image_ref = f"{self.prefix}:latest"
        self.refs: List[str] = []  # every tag we created, for cleanup
        self.ids: List[str] = []  # every image id we created, for cleanup
        self.facts: Dict[str, Any] = {}

    # -- images ----------------------------------------------------------------

    def build(self, context: Path, ref: str) -> str:
        self.refs.append(ref)
        result = self.engine.build(context, tag=ref)
        self.ids.append(result.image_id)
        return result.image_id

    def build_images(self) -> None:
        big = max(1, self.size_mb - 20) * MB
        base_ctx = self.work / "ctx-base"
        base_ctx.mkdir()
        shutil.copy(busybox_path(), base_ctx / "busybox")
        (base_ctx / "nonce").write_text(self.nonce + "\n")  # makes the lowest layer unique to this run
        WRITERS[self.data](base_ctx / "data.bin", big)
        (base_ctx / "Dockerfile").write_text(
            "FROM scratch\n"
            "COPY busybox nonce /bin/\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            "COPY data.bin /data/data.bin\n"
        )
        log(f"building the base image ({big / MB:.0f} MB {self.data} layer)")
        t, self.base_id = timed(lambda: self.build(base_ctx, self.base_ref))
        self.facts["base_build_seconds"] = t
        self.base_ctx = base_ctx  # kept: P1 hashes it as a lookup would
        self.image_id = self.build_top(self.image_ref, "top")
        info = self.engine.inspect(self.image_id)
        assert info is not None
        self.layers = info.diff_ids
        self.facts["image_bytes"] = info.size
        self.facts["layers"] = len(info.diff_ids)
        log(f"image {self.image_ref}: {info.size / MB:.1f} MB in {len(info.diff_ids)} layers")

    def build_top(self, ref: str, name: str) -> str:
        ctx = self.work / f"ctx-{name}"
        ctx.mkdir()
        write_random(ctx / "top.bin", TOP_MB * MB)
        (ctx / "Dockerfile").write_text(f"FROM {self.base_ref}\nCOPY top.bin /data/top.bin\n")
        image_id = self.build(ctx, ref)
        shutil.rmtree(ctx)
        return image_id

    def remove(self, *refs: str) -> None:
        for ref in refs:
            self.engine.remove(ref, force=True, prune_parents=True)
        self.engine.forget_layers()

    def engine_has_prefix(self) -> int:
        self.engine.forget_layers()
        return self.engine.present_prefix(self.layers)

    def ensure_state(self, state: str) -> None:
        """'present': image there; 'delta': only the top layer missing; 'none': no layer at all."""
        if state == "present":
            assert self.engine.inspect(self.image_id) is not None, "image should be present"
            return
        self.remove(self.image_id)
        if state == "none":
            self.remove(self.base_id)
            have = self.engine_has_prefix()
            if have:
                raise RuntimeError(f"after removing the bench images the engine still has {have} of their layers")
        elif state == "delta":
            have = self.engine_has_prefix()
            if have != len(self.layers) - 1:
                raise RuntimeError(f"expected {len(self.layers) - 1} layers present, found {have}")

    def restore_base(self) -> None:
        if self.engine.inspect(self.base_id) is None:
            raw_load(self.engine, self.base_tar)

    # -- tars --------------------------------------------------------------------

    def make_delta_tar(self, full_tar: Path, out: Path) -> None:
        """A load tar whose manifest names every layer but which holds only the top one."""
        with tarfile.open(full_tar) as src:
            manifest = json.loads(src.extractfile("manifest.json").read())  # type: ignore[union-attr]
            layer_paths = manifest[0]["Layers"]
            drop_dirs = {p.rsplit("/", 1)[0] for p in layer_paths[:-1]}
            with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as dst:
                for member in src.getmembers():
                    top = member.name.split("/", 1)[0]
                    if top in drop_dirs:
                        continue
                    dst.addfile(member, src.extractfile(member) if member.isfile() else None)

    # -- phases ------------------------------------------------------------------

    def phase_save(self) -> None:
        log("phase: save (raw docker save vs Store.save into an empty cache vs the seed design's save)")
        self.base_tar = self.work / "base.tar"
        raw_save(self.engine, [self.base_ref], self.base_tar)
        self.full_tar = self.work / "image.tar"
        for i in range(self.repeat):
            for who in rotate(["raw", "ours", "seed"], i):
                if who == "raw":
                    tar = self.work / f"raw-save-{i}.tar"
                    self.measure("save_raw", lambda: raw_save(self.engine, [self.image_ref], tar))
                    self.facts["raw_tar_bytes"] = tar.stat().st_size
                    if i == 0:
                        tar.rename(self.full_tar)
                    else:
                        tar.unlink()
                elif who == "seed":
                    seed = SeedDesignCache(self.work / f"seed-save-{i}", self.engine)
                    self.measure("seed_save", lambda: seed.save(self.image_ref, secrets.token_hex(32)))
                    if i == 0:
                        self.seed = seed  # kept: its hits are timed below
                    else:
                        shutil.rmtree(seed.dir)
                else:
                    cache = self.work / f"cache-save-{i}"
                    store = Store(cache, max_entries=10, engine=self.engine, progress=False)
                    key = secrets.token_hex(32)
                    entry = self.measure("save_ours", lambda: store.save(self.image_id, key, image_name=self.prefix,
                                                                         image_tag="latest"))
                    self.facts["cache_blob_bytes_one_image"] = du(cache / "blobs")
                    if i == 0:
                        self.cache_dir, self.store, self.entry = cache, store, entry
                    else:
                        shutil.rmtree(cache)
        self.delta_tar = self.work / "delta.tar"
        self.make_delta_tar(self.full_tar, self.delta_tar)
        self.facts["delta_tar_bytes"] = self.delta_tar.stat().st_size
        log(f"raw tar {self.facts['raw_tar_bytes'] / MB:.1f} MB, delta tar {self.facts['delta_tar_bytes'] / MB:.2f} MB")

    def phase_present(self) -> None:
        log("phase: hit with the image present")
        self.ensure_state("present")
        store, entry = self.store, self.entry
        calls = max(20, self.repeat)
        for _ in range(calls):
            t, res = timed(lambda: store.load(entry))
            assert res.how == "present", res
            self.s("load_present_ours").add(t)
            t, _ = timed(lambda: docker_cli("image", "inspect", "--format", "{{.Id}}", self.image_id))
            self.s("inspect_cli").add(t)
        for _ in range(self.repeat):
            t, _ = timed(lambda: raw_load(self.engine, self.full_tar))
            self.s("load_present_raw_full_tar").add(t)
            self.ensure_state("present")

    def phase_lookup(self) -> None:
        """P1: what a test pays per lookup when the engine has the image: key (context
        hashed, memo warm) + index lookup + presence check; vs the seed design's hit
        (a full load), in one loop."""
        log("phase: P1 lookups (ours: key + get_or_build; seed design: full docker load per hit)")
        self.ensure_state("present")
        spec = KeySpec(image=self.prefix, model_tags=["bench"], context=self.base_ctx)
        t, key = timed(lambda: key_for(spec))
        self.facts["first_key_seconds"] = t  # cold: hashes the whole context once per process
        store = Store(self.work / "cache-lookup", engine=self.engine, progress=False)
        store.save(self.image_id, key, image_name=self.prefix)
        key_for(spec, store.dir)  # the plugin keys with the cache directory's digest memo: fill it once
        seed = self.seed
        seed_key = seed.lookup_any()
        for i in range(max(50, self.repeat)):
            t, out = timed(lambda: get_or_build(store, key_for(spec, store.dir), lambda: 1 / 0,
                                                image_name=self.prefix))
            assert out.hit and out.load.how == "present"
            self.s("lookup_present_ours").add(t)
            if i < self.repeat:
                t, _ = timed(lambda: seed.hit(seed_key))
                self.s("seed_hit_present").add(t)

    def phase_compressed(self) -> None:
        """zstd: save, full load and disk bytes against the same image stored raw.  Both sides
        come from one loop whose order rotates (saves into an empty cache each, loads with nothing
        in the engine), timed by the same clock: no ratio compares phases run at different times."""
        log("phase: zstd-compressed blobs against raw ones (save, full load, disk), alternating")
        caches = {"zstd": self.work / "cache-zstd", "raw": self.work / "cache-raw-paired"}
        stores, entries = {}, {}
        for i in range(self.repeat):
            for form in rotate(["zstd", "raw"], i):
                if caches[form].exists():
                    shutil.rmtree(caches[form])
                stores[form] = Store(caches[form], engine=self.engine, progress=False,
                                     compress="zstd" if form == "zstd" else None)
                t, entries[form] = timed(lambda: stores[form].save(self.image_id, secrets.token_hex(32),
                                                                  image_name=self.prefix))
                self.s(f"save_ours_{form}_paired").add(t)
        self.facts["zstd_blob_bytes"] = du(caches["zstd"] / "blobs")
        self.facts["raw_blob_bytes"] = du(caches["raw"] / "blobs")
        for i in range(self.repeat):
            for form in rotate(["zstd", "raw"], i):
                self.ensure_state("none")
                t, res = timed(lambda: stores[form].load(entries[form]))
                assert res.how == "full", res
                self.s(f"load_full_ours_{form}_paired").add(t)
        for cache in caches.values():
            shutil.rmtree(cache)

    def _alternate_loads(self, state: str, tar: Path, how: str, name: str, seed: bool = False,
                         full_too: bool = False) -> None:
        """Raw `docker load` of TAR, our load (and the seed design's hit; with `full_too` a raw
        full load from nothing, P2b's other side) from the same engine state, in one loop whose
        order rotates."""
        seed_key = self.seed.lookup_any()
        for i in range(self.repeat):
            contenders = ["raw", "ours"] + (["seed"] if seed else []) + (["rawfull"] if full_too else [])
            for who in rotate(contenders, i):
                if state == "delta" and who != "rawfull":
                    self.restore_base()  # a raw full load before removed it
                self.ensure_state("none" if who == "rawfull" else state)
                if who == "rawfull":
                    self.measure(f"load_{name}_raw_full", lambda: raw_load(self.engine, self.full_tar))
                elif who == "raw":
                    self.measure(f"load_{name}_raw" if name == "full" else f"load_{name}_raw_layer_tar",
                                 lambda: raw_load(self.engine, tar))
                elif who == "seed":
                    self.measure(f"seed_hit_{name}", lambda: self.seed.hit(seed_key))
                else:
                    res = self.measure(f"load_{name}_ours", lambda: self.store.load(self.entry))
                    if res.how != how:
                        raise RuntimeError(f"expected a {how} load, got {res}")
                    self.facts[f"{name}_bytes_sent"] = res.bytes_sent
                    self.facts[f"{name}_layers_sent"] = res.layers_sent
                info = self.engine.inspect(self.image_id)
                assert info is not None and info.id == self.image_id

    def phase_delta(self) -> None:
        log("phase: hit with only the top layer missing")
        self.restore_base()
        self._alternate_loads("delta", self.delta_tar, "delta", "delta", full_too=True)

    def phase_full(self) -> None:
        log("phase: hit with nothing present")
        self._alternate_loads("none", self.full_tar, "full", "full", seed=True)

    def phase_variants(self) -> None:
        """P5 from outside the store: `du` of our cache directory (index, entries, blobs) holding
        5 variants against `du` of one multi-image `docker save` of the same 5 images, which
        also holds each layer once."""
        log(f"phase: {VARIANTS} variants sharing the base")
        self.restore_base()
        cache = self.work / "cache-variants"
        seed = SeedDesignCache(self.work / "seed-variants", self.engine)
        store = Store(cache, max_entries=VARIANTS + 5, engine=self.engine, progress=False)
        refs = []
        for n in range(VARIANTS):
            ref = f"{self.prefix}-v{n}:latest"
            image_id = self.build_top(ref, f"v{n}")
            refs.append(ref)
            t = t2 = 0.0
            written = 0
            for who in rotate(["raw", "ours"], n):
                if who == "raw":
                    tar = self.work / f"variant-{n}.tar"
                    t, _ = timed(lambda: raw_save(self.engine, [ref], tar))
                    tar.unlink()
                else:
                    w0 = proc_wchar()
                    t2, _ = timed(lambda: store.save(image_id, secrets.token_hex(32), image_name=f"{self.prefix}-v{n}"))
                    written = proc_wchar() - w0
            seed.save(ref, secrets.token_hex(32))
            if n > 0:  # variants after the first share the base already in the cache
                self.s("variant_save_raw").add(t)
                self.s("variant_save_ours").add(t2)
                self.facts.setdefault("variant_save_ours_bytes_written", []).append(written)
        multi = self.work / "variants-multi.tar"
        raw_save(self.engine, refs, multi)
        self.facts["variants_multi_save_bytes"] = du(multi)
        self.facts["variants_seed_bytes"] = du(seed.dir)
        self.facts["variants_cache_bytes"] = du(cache)
        self.facts["variants_entries"] = len(store.entries())
        multi.unlink()
        shutil.rmtree(cache)
        shutil.rmtree(seed.dir)

    # -- cleanup -------------------------------------------------------------------

    def cleanup(self) -> None:
        for ref in [*self.refs, *self.ids]:
            try:
                self.engine.remove(ref, force=True, prune_parents=True)
            except Exception as exc:  # keep going: remove as much as we can
                log(f"could not remove {ref}: {exc}")
        # Anything else still carrying our prefix (loads re-create tags).
        try:
            for img in self.engine.api.images(all=True):
                if any(t.startswith(self.prefix) for t in img.get("RepoTags") or []):
                    self.engine.remove(img["Id"], force=True, prune_parents=True)
        except Exception as exc:
            log(f"cleanup listing failed: {exc}")


# -- report ----------------------------------------------------------------------


def report(bench: Bench, info: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    s, f = bench.series, bench.facts

    def med(name: str) -> float:
        return s[name].median

    def ratio_v(a: str, b: str) -> float:
        return med(a) / med(b)

    def fmt_ratio(r: float) -> str:
        return f"{r:.2f}x" if r >= 0.1 else f"{r:.3f}x"

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    p1 = med("lookup_present_ours")
    p2 = ratio_v("load_delta_ours", "load_delta_raw_layer_tar")
    p2b = ratio_v("load_delta_ours", "load_delta_raw_full")  # the same loop (P3's raw loads ran apart)
    p3 = ratio_v("load_full_ours", "load_full_raw")
    p4 = ratio_v("save_ours", "save_raw")
    p5 = f["variants_cache_bytes"] / f["variants_multi_save_bytes"]
    targets = [
        ("P1", "hit, image in the engine: time per lookup (key + lookup + presence)",
         s["lookup_present_ours"].fmt("ms"), f"seed design hit {s['seed_hit_present'].fmt('ms')}",
         fmt_ratio(p1 / med("seed_hit_present")), f"<= {GOALS['P1'] * 1000:.0f} ms", verdict(p1 <= GOALS["P1"])),
        ("P2", "hit, only the top layer missing", s["load_delta_ours"].fmt("ms"),
         f"load of a top-layer-only tar {s['load_delta_raw_layer_tar'].fmt('ms')}", fmt_ratio(p2), f"<= {GOALS['P2']:.1f}x",
         verdict(p2 <= GOALS["P2"])),
        ("P2b", "  same, against a full-tar load", s["load_delta_ours"].fmt("ms"),
         f"raw `docker load` full tar {s['load_delta_raw_full'].fmt('ms')}", fmt_ratio(p2b), f"<= {GOALS['P2b']:.2f}x",
         verdict(p2b <= GOALS["P2b"])),
        ("P3", "hit, nothing in the engine", s["load_full_ours"].fmt(), f"raw `docker load` {s['load_full_raw'].fmt()}",
         fmt_ratio(p3), f"<= {GOALS['P3']:.2f}x", verdict(p3 <= GOALS["P3"])),
        ("P4", "miss: saving into the cache", s["save_ours"].fmt(), f"raw `docker save` {s['save_raw'].fmt()}",
         fmt_ratio(p4), f"<= {GOALS['P4']:.2f}x", verdict(p4 <= GOALS["P4"])),
        ("P5", f"disk, {VARIANTS} variants sharing a base (`du`)", f"{f['variants_cache_bytes'] / MB:,.1f} MB",
         f"one `docker save` of the {VARIANTS} {f['variants_multi_save_bytes'] / MB:,.1f} MB", f"{p5:.3f}x",
         f"<= {GOALS['P5']:.2f}x", verdict(p5 <= GOALS["P5"])),
    ]
    seed_rows = [
        ("hit, image in the engine", s["lookup_present_ours"].fmt("ms"), s["seed_hit_present"].fmt("ms"),
         fmt_ratio(p1 / med("seed_hit_present"))),
        ("hit, nothing in the engine", s["load_full_ours"].fmt(), s["seed_hit_full"].fmt(),
         fmt_ratio(med("load_full_ours") / med("seed_hit_full"))),
        ("miss: save", s["save_ours"].fmt(), s["seed_save"].fmt(), fmt_ratio(med("save_ours") / med("seed_save"))),
        (f"disk, {VARIANTS} variants (`du`)", f"{f['variants_cache_bytes'] / MB:,.1f} MB",
         f"{f['variants_seed_bytes'] / MB:,.1f} MB ({VARIANTS} tars)",
         f"{f['variants_cache_bytes'] / f['variants_seed_bytes']:.3f}x"),
    ]
    zstd_rows = []
    if "save_ours_zstd_paired" in s:
        zstd_rows = [
            ("disk bytes, one image", f"{f['zstd_blob_bytes'] / MB:,.1f} MB", f"{f['raw_blob_bytes'] / MB:,.1f} MB",
             f"{f['zstd_blob_bytes'] / f['raw_blob_bytes']:.3f}x"),
            ("save (miss)", s["save_ours_zstd_paired"].fmt(), s["save_ours_raw_paired"].fmt(),
             fmt_ratio(ratio_v("save_ours_zstd_paired", "save_ours_raw_paired"))),
            ("load, nothing in the engine", s["load_full_ours_zstd_paired"].fmt(), s["load_full_ours_raw_paired"].fmt(),
             fmt_ratio(ratio_v("load_full_ours_zstd_paired", "load_full_ours_raw_paired"))),
        ]
    out = [
        f"pytest-madcache store benchmark ({bench.data} data), {info['date']}",
        f"machine: {info['machine']['vcpus']} vCPU ({info['machine']['cpu']}), kernel {info['machine']['kernel']}, "
        f"Python {info['machine']['python']}; engine: {info['engine']} "
        f"(storage driver {info['storage_driver']}); load average at start {info.get('loadavg', '?')}",
        f"image: {f['image_bytes'] / MB:.1f} MB in {f['layers']} layers (top layer {TOP_MB} MB, {bench.data} data); "
        f"raw save tar {f['raw_tar_bytes'] / MB:.1f} MB; top-layer tar {f['delta_tar_bytes'] / MB:.2f} MB",
        f"repeats: {bench.repeat} per measure (lookups: {len(s['lookup_present_ours'].samples)}); "
        "median (min-max); each ratio compares medians measured side by side in this run",
        "",
        "Targets",
        *table(("id", "measure", "ours", "compared with", "ratio", "target", "verdict"), targets),
        "",
        "Ours vs the seed design (one tar per entry, full load on every hit, JSON index rewritten whole)",
        *table(("measure", "ours", "seed design", "ratio"), seed_rows),
    ]
    if zstd_rows:
        out += ["", "zstd-compressed blobs vs raw blobs (both ours)",
                *table(("measure", "zstd", "raw", "ratio"), zstd_rows)]
    out += [
        "",
        f"first lookup in a process (hashes the {bench.size_mb} MB build context once): "
        f"{f['first_key_seconds'] * 1000:.0f} ms",
        "throughput (medians): "
        f"raw save {f['raw_tar_bytes'] / MB / med('save_raw'):.0f} MB/s, our save {f['raw_tar_bytes'] / MB / med('save_ours'):.0f} MB/s, "
        f"raw full load {f['raw_tar_bytes'] / MB / med('load_full_raw'):.0f} MB/s, "
        f"our full load {f['full_bytes_sent'] / MB / med('load_full_ours'):.0f} MB/s",
        f"delta load sent {f['delta_bytes_sent'] / MB:.2f} MB ({f['delta_layers_sent']} layer); "
        f"full load sent {f['full_bytes_sent'] / MB:.1f} MB; "
        f"save of variants 2-{VARIANTS} (base cached): ours {s['variant_save_ours'].fmt()}, "
        f"raw `docker save` {s['variant_save_raw'].fmt()}",
    ]
    cpu = {k: v.to_json() for k, v in bench.cpu.items()}

    def split(name: str) -> str:
        c = cpu[name]
        return f"{c['wall']:.2f} s wall, ours {c['our_cpu']:.2f} + engine {c['engine_cpu']:.2f} CPU-s"

    out += ["where the time goes (medians): "
            f"raw save {split('save_raw')}; our save {split('save_ours')}; "
            f"raw full load {split('load_full_raw')}; our full load {split('load_full_ours')}"]
    data = {"info": info, "facts": f, "series": {k: v.to_json() for k, v in s.items()}, "cpu": cpu,
            "targets": [dict(zip(("id", "measure", "ours", "compared", "ratio", "target", "verdict"), r)) for r in targets]}
    return "\n".join(out), data


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=300, help="approximate image size in MB (default 300)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per measure, at least 3 (default 5)")
    parser.add_argument("--json", metavar="FILE", help="also write all samples as JSON to FILE")
    parser.add_argument("--workdir", metavar="DIR", help="where temp tars and caches go (default: system temp)")
    parser.add_argument("--data", choices=sorted(WRITERS), default="random",
                        help="content of the big layer: random (incompressible) or compressible (default random)")
    args = parser.parse_args(argv)
    if args.repeat < 3:
        parser.error("--repeat must be at least 3")
    if args.size_mb < 30:
        parser.error("--size-mb must be at least 30")
    if shutil.which("docker") is None:
        parser.error("the docker CLI is needed for the presence-check figure")

    work = Path(tempfile.mkdtemp(prefix="madcache-bench-", dir=args.workdir))
    bench = Bench(args.size_mb, args.repeat, work, args.data)
    version = bench.engine.api.version()
    dinfo = bench.engine.api.info()
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "engine_version": version.get("Version"),
        "storage_driver": dinfo.get("Driver"),
        "size_mb": args.size_mb,
        "repeat": args.repeat,
        "data": args.data,
        "loadavg": loadavg(),
        "engine": bench.engine.info.name,
    }
    try:
        bench.build_images()
        bench.phase_save()
        bench.phase_present()
        bench.phase_lookup()
        bench.phase_delta()
        bench.phase_full()
        bench.phase_compressed()
        bench.phase_variants()
        text, data = report(bench, info)
    finally:
        log("cleaning up")
        bench.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"measured": stamp(), **data}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
