"""Benchmark: what resolving base images costs a key, per base and per session, by base_key mode.

    python -m pytest_madcache.localengine --engine debian12 -- python bench/bench_bases.py \
        --json bench/results/bases-debian12.json
    (and --engine podman ... --json bench/results/bases-podman.json: Podman lacks the endpoint,
    so its "registry_first_ask_engine" is the direct path)

Builds a tiny base from busybox, pushes it to a loopback registry (Debian's docker-registry,
started here), and measures side by side, --repeat times each (medians):

* the key alone (`key_for`, a 3-stage Dockerfile, context memoised as in a session)
* parsing the FROM lines (`parse_bases`)
* `local`: the engine's image id (one inspect per base)
* `registry`, first ask in a session: the engine's distribution endpoint (one registry round trip)
* `registry`, first ask, directly (HEAD /v2/<repo>/manifests/<tag>), as on Podman
* `registry`, later asks in the same session (answered from the resolver's memory)

The registry is on loopback: a remote registry adds its round trip (and a token fetch) to the
first ask of each base, once per session.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

from pytest_madcache.core.bases import BaseResolver, parse_bases
from pytest_madcache.remote.registry import registry_digest
from pytest_madcache.engines.docker import Engine
from pytest_madcache.core.key import KeySpec, key_for
from pytest_madcache.devtools.localengine import busybox_path
from benchlib import stamp


def timed(fn: Callable[[], object], repeat: int) -> Dict[str, float]:
    times: List[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000, "max_ms": max(times) * 1000}


def start_registry(root: Path) -> "tuple[subprocess.Popen, str]":
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {root / 'data'}}}\n"
                      f"http: {{addr: '127.0.0.1:{port}'}}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    import requests

    for _ in range(300):
        try:
            requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    return proc, f"127.0.0.1:{port}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="madcache-bench-bases-"))
    proc, registry = start_registry(work / "registry")
    engine = Engine()
    base = f"{registry}/bench-base-{secrets.token_hex(3)}:1"
    try:
        ctx = work / "base"
        ctx.mkdir()
        shutil.copy(busybox_path(), ctx / "busybox")
        (ctx / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\n')
        engine.build(ctx, tag=base)
        repo, tag = base.rsplit(":", 1)
        engine.client.images.push(repo, tag=tag)
        model = work / "model"
        model.mkdir()
        (model / "Dockerfile").write_text(f"ARG BASE={base}\nFROM $BASE AS build\nFROM build AS test\n"
                                          "FROM scratch\nCOPY --from=build /bin/busybox /bin/busybox\n")
        spec = KeySpec(image="bench", dockerfile=model / "Dockerfile", context=model)
        key_for(spec)  # the context digest is memoised for the rest of a session, as in the plugin
        (only,) = parse_bases(model / "Dockerfile")
        results = {
            "key_for": timed(lambda: key_for(spec), args.repeat),
            "parse_bases": timed(lambda: parse_bases(model / "Dockerfile"), args.repeat),
            "local_image_id": timed(lambda: BaseResolver(engine, direct=registry_digest).resolve([only], "local"), args.repeat),
            "registry_first_ask_engine": timed(lambda: BaseResolver(engine, direct=registry_digest).resolve([only], "registry"), args.repeat),
            "registry_first_ask_direct": timed(lambda: registry_digest(base), args.repeat),
        }
        memo = BaseResolver(engine, direct=registry_digest)
        memo.resolve([only], "registry")
        results["registry_later_asks"] = timed(lambda: memo.resolve([only], "registry"), args.repeat)
        (resolved,) = BaseResolver(engine, direct=registry_digest).resolve([only], "registry")
        path = "digest-direct" if engine.info.product == "podman" else "digest"  # Podman lacks the endpoint
        assert resolved.via == path and resolved.value == registry_digest(base), (resolved, registry_digest(base))
        report = {
            "measured": stamp(),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}",
            "engine": engine.info.name, "registry_path": path, "repeat": args.repeat, "bases_per_dockerfile": 1,
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        width = max(len(k) for k in results)
        for name, r in results.items():
            print(f"{name:<{width}}  {r['median_ms']:8.3f} ms  ({r['min_ms']:.3f}-{r['max_ms']:.3f})")
        return 0
    finally:
        try:
            engine.remove(base)
        except Exception:
            pass
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
