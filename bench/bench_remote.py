"""Benchmark: a second machine's first run through the registry, per link speed and compression.

    python -m pytest_madcache.localengine -- python bench/bench_remote.py [--json bench/results/remote.json]

Machine A (the engine in DOCKER_HOST, its own cache dir) builds a model-like
image: a multi-stage build that unpacks a library tree (this interpreter's
standard library and site-packages: numpy, scipy... as `pip install` leaves
them) and adds fp16 weights (numpy's normal distribution; random bytes
without numpy).
It saves the image and pushes it with each layer compression (gzip, zstd,
none) to Debian's docker-registry, served over HTTPS with a CA made here:

* `loopback`: the registry on 127.0.0.1;
* `1gbit`, `100mbit`: the registry in a network namespace behind a veth
  pair shaped with `tc tbf` in both directions (needs root and `ip`/`tc`).

Machine B (a second private engine, an empty cache dir) then fetches the
entry and loads it.  Reported per link and compression: push time, fetch
time, load time, bytes on the wire each way (the veth's counters, TLS and
headers included; payload bytes on loopback), the ratio of the compressible
layer on the wire, and B's first run against A's build.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_madcache.engines.docker import Engine  # noqa: E402
from pytest_madcache.core.key import KeySpec, key_for  # noqa: E402
from pytest_madcache.devtools.localengine import busybox_path, install_packages, private_engine  # noqa: E402
from pytest_madcache.remote.oci import Registry, RemoteCache, key_tag, parse_manifest
from pytest_madcache.util.refs import RemoteRef
from pytest_madcache.store import Store  # noqa: E402
from tests.registries import LocalRegistry, make_pki  # noqa: E402

from benchlib import stamp  # noqa: E402 - bench/, the script's own directory

NS, HOST_IF, NS_IF = "mcbench", "mcb0", "mcb1"
HOST_IP, NS_IP = "10.213.0.1", "10.213.0.2"
RATES = {"1gbit": ("1gbit", "1mb"), "100mbit": ("100mbit", "256kb")}


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@contextlib.contextmanager
def shaped_link() -> Iterator[None]:
    """A veth pair into a network namespace of our own (removed afterwards)."""
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        sh("ip", "link", "set", NS_IF, "netns", NS)
        sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", HOST_IF)
        sh("ip", "link", "set", HOST_IF, "up")
        for cmd in (["ip", "addr", "add", f"{NS_IP}/30", "dev", NS_IF], ["ip", "link", "set", NS_IF, "up"],
                    ["ip", "link", "set", "lo", "up"]):
            sh("ip", "netns", "exec", NS, *cmd)
        yield
    finally:
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def shape(rate: str, burst: str) -> None:
    """The same rate both ways: tbf on the host end (A's pushes) and on the namespace's end (B's fetches)."""
    sh("tc", "qdisc", "replace", "dev", HOST_IF, "root", "tbf", "rate", rate, "burst", burst, "latency", "100ms")
    sh("ip", "netns", "exec", NS, "tc", "qdisc", "replace", "dev", NS_IF, "root", "tbf", "rate", rate, "burst", burst,
       "latency", "100ms")


def if_bytes() -> Dict[str, int]:
    base = Path("/sys/class/net") / HOST_IF / "statistics"
    return {"tx": int((base / "tx_bytes").read_text()), "rx": int((base / "rx_bytes").read_text())}


def library_tree(limit: int) -> List[Path]:
    """What a Python ML environment is made of: this interpreter's standard library and installed
    packages (numpy, scipy and the like here), sources, bytecode and shared objects, up to `limit` bytes."""
    import sysconfig

    out: List[Path] = []
    total = 0
    roots = list(dict.fromkeys([sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]]))
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file():
                    continue
                size = path.stat().st_size
                if total + size > limit:
                    return out
                out.append(path)
                total += size
    return out


def weights(size: int) -> bytes:
    try:
        import numpy as np

        return (np.random.default_rng(14).standard_normal(size // 2) * 0.02).astype(np.float16).tobytes()
    except ImportError:
        return os.urandom(size)


def make_context(ctx: Path, env_mb: int, weights_mb: int) -> Dict[str, Any]:
    ctx.mkdir(parents=True)
    shutil.copy(busybox_path(), ctx / "busybox")
    files = library_tree(env_mb * 1_000_000)
    with tarfile.open(ctx / "env.tar.gz", "w:gz", compresslevel=6) as tar:  # as wheels: deflated archives
        for path in files:
            tar.add(path, arcname=str(path).lstrip("/"))
    (ctx / "weights.bin").write_bytes(weights(weights_mb * 1_000_000))
    (ctx / "Dockerfile").write_text(
        "FROM scratch AS install\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "COPY env.tar.gz weights.bin /tmp/\n"
        "RUN mkdir -p /opt/env /opt/model && tar xzf /tmp/env.tar.gz -C /opt/env"
        " && cp /tmp/weights.bin /opt/model/ && sha256sum /opt/model/weights.bin > /opt/model/SUMS\n"
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "COPY --from=install /opt/env /opt/env\n"
        "COPY --from=install /opt/model /opt/model\n")
    return {"library_files": len(files), "library_bytes": sum(p.stat().st_size for p in files)}


def run_one(link: str, codec: str, address: str, env: Dict[str, str], a: Store, entry: Any, b_engine: Engine,
            work: Path, n: int) -> Dict[str, Any]:
    repo = f"bench/{link}-{codec}-{n}"
    ref = RemoteRef.parse(f"{address}/{repo}")
    shaped = link != "loopback"
    pusher = RemoteCache(Registry.from_env(ref, env), compress=codec)
    before = if_bytes() if shaped else None
    t0 = time.perf_counter()
    pusher.push(entry, a.open_blob)
    push_s = time.perf_counter() - t0
    assert not pusher.disabled, pusher.disabled
    after = if_bytes() if shaped else None
    manifest = parse_manifest(pusher.registry.get_manifest(key_tag(entry.key))[0])
    layers = [{"diff_id": d, "raw": entry.sizes[d], "wire": blob.size, "media_type": blob.media_type}
              for d, blob in zip(entry.layers, manifest.layers)]

    b = Store(work / f"b-{link}-{codec}-{n}", engine=b_engine)
    fetcher = RemoteCache(Registry.from_env(ref, env), have_blob=b.has_blob)
    t0 = time.perf_counter()
    found = fetcher.find(entry.key)
    got, _ = b.import_entry(found.meta, found.open_blob)
    fetch_s = time.perf_counter() - t0
    fetched_if = if_bytes() if shaped else None
    t1 = time.perf_counter()
    load = b.load(got)
    load_s = time.perf_counter() - t1
    assert load.how == "full", load.how
    b_engine.remove(load.image_id or got.image_id, prune_parents=True)
    shutil.rmtree(b.dir, ignore_errors=True)
    streamed_s = _streamed_first_run(ref, env, entry, b_engine, work / f"s-{link}-{codec}-{n}")
    return {
        "link": link, "compression": codec, "push_s": round(push_s, 2), "fetch_s": round(fetch_s, 2),
        "load_s": round(load_s, 2), "first_run_s": round(fetch_s + load_s, 2),
        "streamed_first_run_s": round(streamed_s, 2),
        "up_payload_bytes": pusher.registry.bytes_sent, "down_payload_bytes": fetcher.registry.bytes_received,
        "up_wire_bytes": (after["tx"] - before["tx"]) if shaped else None,
        "down_wire_bytes": (fetched_if["rx"] - after["rx"]) if shaped else None,
        "raw_bytes": sum(entry.sizes.values()), "layers": layers,
    }


def _streamed_first_run(ref: Any, env: Dict[str, str], entry: Any, engine: Engine, directory: Path) -> float:
    """A third machine's first run as the plugin makes it: the load reads each blob as it arrives."""
    store = Store(directory, engine=engine)
    fetcher = RemoteCache(Registry.from_env(ref, env), have_blob=store.has_blob)
    t0 = time.perf_counter()
    found = fetcher.find(entry.key)
    got, _, load = store.import_and_load(found.meta, found.open_blob)
    seconds = time.perf_counter() - t0
    assert load.how == "full", load.how
    engine.remove(load.image_id or got.image_id, prune_parents=True)
    shutil.rmtree(directory, ignore_errors=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--links", default="loopback,1gbit,100mbit")
    parser.add_argument("--compress", default="gzip,zstd,none")
    parser.add_argument("--env-mb", type=int, default=400, help="library tree size (MB)")
    parser.add_argument("--weights-mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "remote.json")
    args = parser.parse_args()
    links = args.links.split(",")
    if any(link != "loopback" for link in links) and (os.geteuid() != 0 or not shutil.which("tc")):
        print("shaped links need root and tc (iproute2); running loopback only", file=sys.stderr)
        links = ["loopback"]
    if not shutil.which("docker-registry"):
        install_packages(["docker-registry"])
    work = Path(tempfile.mkdtemp(prefix="madcache-bench-remote-"))
    load_at_start = os.getloadavg()
    results: List[Dict[str, Any]] = []
    a_engine = Engine()
    try:
        context = make_context(work / "ctx", args.env_mb, args.weights_mb)
        tag = "madcache-bench-remote:latest"
        built = a_engine.build(work / "ctx", tag=tag)
        a = Store(work / "a", engine=a_engine)
        t0 = time.perf_counter()
        entry = a.save(built.image_id, key_for(KeySpec(image="bench-remote", context=work / "ctx")),
                       image_name="bench-remote")
        save_s = time.perf_counter() - t0
        pki = make_pki(work / "pki", hosts=("127.0.0.1", NS_IP))
        env = {"REQUESTS_CA_BUNDLE": str(pki.ca), "HOME": str(work / "home"), "PATH": os.environ.get("PATH", "")}
        with contextlib.ExitStack() as stack:
            b_host = stack.enter_context(private_engine())
            b_engine = Engine(client=docker.DockerClient(base_url=b_host, timeout=600))
            if any(link != "loopback" for link in links):
                stack.enter_context(shaped_link())
            for link in links:
                if link == "loopback":
                    reg = LocalRegistry(work / "reg-loopback", pki=pki)
                else:
                    shape(*RATES[link])
                    reg = LocalRegistry(work / f"reg-{link}", host=NS_IP, port=5000, pki=pki, netns=NS)
                with reg:
                    for n in range(args.repeat):
                        for codec in args.compress.split(","):
                            row = run_one(link, codec, reg.address, env, a, entry, b_engine, work, n)
                            results.append(row)
                            print(f"{link:8s} {codec:5s} push {row['push_s']:6.2f} s  fetch {row['fetch_s']:6.2f} s  "
                                  f"load {row['load_s']:5.2f} s  streamed {row['streamed_first_run_s']:6.2f} s  "
                                  f"down {row['down_payload_bytes'] / 1e6:7.1f} MB",
                                  flush=True)
                shutil.rmtree(reg.root, ignore_errors=True)
        a_engine.remove(built.image_id, prune_parents=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} vCPU, {platform.system()} {platform.release()}, Python {platform.python_version()}",
        "load_average": {"start": [round(x, 2) for x in load_at_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "engine": a_engine.describe() if hasattr(a_engine, "describe") else "",
        "command": "python -m pytest_madcache.localengine -- python bench/bench_remote.py " + " ".join(sys.argv[1:]),
        "image": {"raw_bytes": sum(entry.sizes.values()), "layers": len(entry.layers), **context},
        "build_s": round(built.duration, 2), "save_s": round(save_s, 2), "runs": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"measured": stamp(), **out}, indent=1, default=str) + "\n")
    print(render(out))
    return 0


def render(out: Dict[str, Any]) -> str:
    """The table docs/remote.md shows (`python bench/bench_remote.py --render FILE` prints it again)."""
    mb = lambda n: f"{n / 1e6:.0f} MB"  # noqa: E731
    image = out["image"]
    lines = [f"image {image['raw_bytes'] / 1e6:.0f} MB in {image['layers']} layers (library "
             f"{out['runs'][0]['layers'][-2]['raw'] / 1e6:.0f} MB, fp16 weights "
             f"{out['runs'][0]['layers'][-1]['raw'] / 1e6:.0f} MB); A builds in {out['build_s']:.1f} s, "
             f"saves in {out['save_s']:.1f} s; {out['machine']}, load average "
             f"{out.get('load_average', {}).get('start', ['?'])[0]} at the start",
             "",
             "| link | layers travel | A: push | up | B: fetch | + load | = first run | streamed first run | "
             "streamed / larger of fetch, load | down | library layer on the wire | A's build / streamed first run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["runs"]:
        library = r["layers"][-2]  # the final stage: busybox, its links, the library, the model
        up = r["up_wire_bytes"] if r["up_wire_bytes"] is not None else r["up_payload_bytes"]
        down = r["down_wire_bytes"] if r["down_wire_bytes"] is not None else r["down_payload_bytes"]
        first = r.get("streamed_first_run_s") or r["first_run_s"]  # records before streaming have none
        streamed = f"{first:.1f} s" if "streamed_first_run_s" in r else "not measured"
        bound = f"{first / max(r['fetch_s'], r['load_s']):.2f}x" if "streamed_first_run_s" in r else "-"
        lines.append(f"| {r['link']} | {r['compression']} | {r['push_s']:.1f} s | {mb(up)} | {r['fetch_s']:.1f} s | "
                     f"{r['load_s']:.1f} s | {r['first_run_s']:.1f} s | {streamed} | {bound} | {mb(down)} | "
                     f"{library['wire'] / library['raw']:.2f}x | {out['build_s'] / first:.1f}x |")
    lines.append("")
    lines.append("up/down: bytes through the shaped veth (TLS and HTTP included); on loopback, blob payload bytes. "
                 "B fetches, then loads; a third, empty cache then takes the same entry as the plugin does, "
                 "loading while its blobs arrive (streamed)")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--render"]:
        print(render(json.loads(Path(sys.argv[2]).read_text())))
        sys.exit(0)
    sys.exit(main())
