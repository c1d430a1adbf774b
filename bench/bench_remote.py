"""Benchmark: a second machine's first run through the registry, against building.

    python -m pytest_madcache.localengine -- python bench/bench_remote.py [--size-mb 150] [--repeat 3]

Machine A (the engine in DOCKER_HOST, its own cache dir) builds an image
whose Dockerfile does real work (a data layer plus a RUN step that
compresses it, as installs and conversions do) and pushes it to a registry
on loopback (Debian's docker-registry).  Machine B (a second private engine,
an empty cache dir) then gets the same key: it fetches the blobs and loads
them.  Printed: A's build, A's push, B's fetch+load, and B against building.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

from pytest_madcache.engine import Engine
from pytest_madcache.key import KeySpec, key_for
from pytest_madcache.localengine import busybox_path, private_engine
from pytest_madcache.remote import Registry, RemoteCache, RemoteRef
from pytest_madcache.store import Store
from pytest_madcache.provide import get_or_build


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="madcache-bench-remote-"))
    port = free_port()
    (work / "registry.yml").write_text(
        f"version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {work / 'registry'}}}\n"
        f"  delete: {{enabled: true}}\nhttp: {{addr: '127.0.0.1:{port}'}}\n")
    registry = subprocess.Popen(["docker-registry", "serve", str(work / "registry.yml")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    a_engine = Engine()
    samples = {"build": [], "push": [], "fetch_load": []}
    try:
        with private_engine() as host_b:
            b_engine = Engine(client=docker.DockerClient(base_url=host_b, timeout=600))
            for i in range(args.repeat):
                ctx = work / f"ctx{i}"
                ctx.mkdir()
                shutil.copy(busybox_path(), ctx / "busybox")
                with open(ctx / "data.txt", "wb") as fh:  # compressible, so the RUN step does real work
                    words = [os.urandom(4).hex().encode() for _ in range(2000)]
                    left = args.size_mb * 1000 * 1000 // 2
                    while left > 0:
                        block = b" ".join(words[j % 2000] for j in range(secrets.randbelow(97), 200_000, 3))
                        fh.write(block[:left])
                        left -= len(block)
                (ctx / "Dockerfile").write_text(
                    "FROM scratch\nCOPY busybox /bin/busybox\n"
                    'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                    "COPY data.txt /data/data.txt\n"
                    "RUN gzip -6 -c /data/data.txt > /data/data.txt.gz && sha256sum /data/* > /data/SUMS\n")
                key = key_for(KeySpec(image="bench-remote", context=ctx))
                repo = f"127.0.0.1:{port}/bench{i}"
                a = Store(work / f"a{i}", engine=a_engine)
                tag = f"madcache-bench-remote-{i}:latest"
                t0 = time.perf_counter()
                out = get_or_build(a, key, lambda: a_engine.build(ctx, tag=tag),
                                   remote=RemoteCache(Registry(RemoteRef.parse(repo))), image_name="bench-remote")
                total = time.perf_counter() - t0
                samples["build"].append(out.build_duration)
                samples["push"].append(total - out.build_duration)
                b = Store(work / f"b{i}", engine=b_engine)
                t0 = time.perf_counter()
                got = get_or_build(b, key, lambda: (_ for _ in ()).throw(RuntimeError("B built")),
                                   remote=RemoteCache(Registry(RemoteRef.parse(repo))), image_name="bench-remote")
                samples["fetch_load"].append(time.perf_counter() - t0)
                assert got.hit and got.image_id == out.image_id
                size = sum(got.entry.sizes.values())
                b_engine.remove(got.image_id, prune_parents=True)
                a_engine.remove(out.image_id, prune_parents=True)
    finally:
        registry.terminate()
        registry.wait()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    fmt = lambda k: f"{med[k]:.2f} s ({min(samples[k]):.2f}-{max(samples[k]):.2f})"  # noqa: E731
    print(f"image {size / 1e6:.0f} MB; {args.repeat} runs; median (min-max)")
    print(f"machine A: build {fmt('build')}, save + push {fmt('push')}")
    print(f"machine B: fetch + load (first run, empty cache) {fmt('fetch_load')}")
    print(f"machine B vs building: {med['fetch_load'] / med['build']:.2f}x the build time "
          f"({med['build'] / med['fetch_load']:.1f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
