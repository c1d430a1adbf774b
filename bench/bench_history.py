"""What the performance history adds to the cache directory and to the remote, in bytes.

Shapes: the realistic suite's sweep (1 model, batch sizes 1, 16 and 64) and a larger suite (5 models
x 6 batch sizes), each run recorded with an A/B interval per test, a 40-hex commit and a branch, as
CI records them; after 1 run and after 20 (the default --perf-history-size) and 21 (trimmed to 20).
The local figure is the file `record` writes; the registry figure counts what `put_document` sends
(the document blob, the 2-byte empty config and the manifest) through the real code path, into a
recording stand-in for the registry.

    python bench/bench_history.py [--record]   (the record: bench/results/history-size.json and .md)
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import stamp  # noqa: E402
from pytest_madcache.perf.history import HistoryFile, HistoryRun, Point, record  # noqa: E402
from pytest_madcache.remote.documents import RegistryDocuments  # noqa: E402

HERE = Path(__file__).resolve().parent
SHAPES = {"realistic sweep (1 model x 3 batch sizes)": (["realistic-mlp"], [1, 16, 64]),
          "larger suite (5 models x 6 batch sizes)": ([f"model-{i}" for i in range(5)], [1, 2, 4, 8, 16, 64])}


class CountingRegistry:
    """Takes what RegistryDocuments sends, and counts it."""

    def __init__(self) -> None:
        self.sent = 0
        self.blobs: Dict[str, bytes] = {}
        self.manifest = b""
        self.ref = "bench"

    def upload_blob(self, digest: str, source: Any, size: int) -> bool:
        if digest in self.blobs:
            return False
        self.blobs[digest] = source.read()
        self.sent += size
        return True

    def put_manifest(self, name: str, body: bytes) -> str:
        self.manifest = body
        self.sent += len(body)
        return ""

    def get_manifest(self, name: str) -> Any:
        return (self.manifest, "") if self.manifest else None

    def download(self, digest: str, size: int, write: Any) -> int:
        write(self.blobs[digest])
        return size


def a_run(i: int, models: List[str], sizes: List[int], rng: random.Random) -> HistoryRun:
    points = []
    for model in models:
        for bs in sizes:
            value = 100.0 * bs * rng.uniform(0.9, 1.1)
            points.append(Point(model=model, params=json.dumps({"batch_size": bs}, sort_keys=True),
                                performance=float(f"{value:.6g}"), metric="samples/s", direction="higher",
                                low=float(f"{value * 0.97:.6g}"), high=float(f"{value * 1.03:.6g}"), samples=10))
    return HistoryRun(id=f"run_{1796000000 + i}_{rng.getrandbits(32):08x}", time=1796000000.0 + i * 3600,
                      commit=f"{rng.getrandbits(160):040x}", ref="main", points=tuple(points))


def measure(models: List[str], sizes: List[int], root: Path) -> Dict[str, Any]:
    rng = random.Random(7)
    local = HistoryFile(root / "history.json")
    registry = CountingRegistry()
    docs = RegistryDocuments(registry)  # type: ignore[arg-type]  # the stand-in has the calls it makes
    out: Dict[str, Any] = {"tests": len(models) * len(sizes)}
    for i in range(1, 22):
        before = registry.sent
        outcome = record(local, docs, "bench", a_run(i, models, sizes, rng), 20)
        assert not outcome.problems, outcome.problems
        if i in (1, 20, 21):
            out[f"after_{i}"] = {"runs": len(outcome.history.runs), "local_bytes": local.path.stat().st_size,
                                 "registry_sent_bytes": registry.sent - before,
                                 "registry_manifest_bytes": len(registry.manifest)}
    out["bytes_per_test_and_run"] = round(out["after_20"]["local_bytes"] / (20 * out["tests"]), 1)
    return out


def main(argv: List[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for name, (models, sizes) in SHAPES.items():
            (Path(tmp) / str(len(results))).mkdir()
            results[name] = measure(models, sizes, Path(tmp) / str(len(results)))
    data = {"measured": stamp(), "size": 20, "shapes": results}
    lines = ["| suite | tests | runs recorded | runs kept | history file | sent to a registry per record "
             "(document, config, manifest) |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        for when in ("after_1", "after_20", "after_21"):
            x = r[when]
            lines.append(f"| {name} | {r['tests']} | {when.split('_')[1]} | {x['runs']} | {x['local_bytes']:,} B | "
                         f"{x['registry_sent_bytes']:,} B |")
    text = "\n".join(lines)
    print(text)
    if "--record" in argv:
        (HERE / "results" / "history-size.json").write_text(json.dumps(data, indent=2) + "\n")
        (HERE / "results" / "history-size.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
