"""What keeping a key's file list beside each entry costs (entries/<id>/files.json).

For contexts of 10, 1,000 and 10,000 files: the bytes of files.json (what it adds to an entry), the time
to list the files again on a miss (key.key_files, the digests coming from the memo as after key_for),
and the time of the whole key for comparison.  A hit never reads the list: Store.lookup reads index.json.

    python bench/bench_files.py [--record]   (the record: bench/results/files-cost.json and .md)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import stamp
from pytest_madcache.core.key import KeySpec, key_files, key_for  # noqa: E402

HERE = Path(__file__).resolve().parent


def measure(n: int, root: Path) -> dict:
    ctx = root / f"ctx{n}"
    for i in range(n):
        d = ctx / f"d{i // 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i:05d}.txt").write_text(f"content {i}\n" * 4)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /app\n")
    cache = root / f"cache{n}"
    cache.mkdir()
    spec = KeySpec(image="ci-m", context=ctx, dockerfile=ctx / "Dockerfile")
    keys, lists = [], []
    for _ in range(5):
        t = time.perf_counter()
        key = key_for(spec, cache)
        keys.append(time.perf_counter() - t)
        t = time.perf_counter()
        files = key_files(key, cache)
        lists.append(time.perf_counter() - t)
    assert files is not None
    size = len(json.dumps(files.to_json(), separators=(",", ":"), sort_keys=True).encode())
    return {"files": n, "files_json_bytes": size, "bytes_per_file": round(size / max(n, 1), 1),
            "key_ms": round(statistics.median(keys) * 1000, 1), "list_ms": round(statistics.median(lists) * 1000, 1)}


def main(argv: list) -> int:
    with tempfile.TemporaryDirectory() as d:
        rows = [measure(n, Path(d)) for n in (10, 1000, 10000)]
    lines = ["# The file list kept beside each entry", "",
             "| context files | files.json | per file | key (warm) | file list on a miss |", "|---|---|---|---|---|"]
    lines += [f"| {r['files']:,} | {r['files_json_bytes']:,} B | {r['bytes_per_file']} B | {r['key_ms']} ms "
              f"| {r['list_ms']} ms |" for r in rows]
    text = "\n".join(lines) + "\n\nMedians of 5. A hit reads no file list (Store.lookup reads index.json only).\n"
    print(text)
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else HERE / "results" if "--record" in argv else None
    if out is not None:  # --record: bench/results; --out DIR: there (bench/run.sh)
        (out / "files-cost.json").write_text(json.dumps({"measured": stamp(), "rows": rows}, indent=1) + "\n")
        (out / "files-cost.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
