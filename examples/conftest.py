"""Prepare the example models' build contexts before any image key is computed.

There is no Docker Hub here, so every image is `FROM scratch` with the host's
static busybox copied in.  The bulk data (weights, a dataset) is generated
from a fixed seed: the same bytes on every run, so the cache key is the same
and the second run hits.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

from pytest_madcache.devtools.localengine import busybox_path

HERE = Path(__file__).parent
MB = 1 << 20


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # xdist workers may prepare at the same time: same bytes, atomic


def _weights(size: int) -> bytes:
    return random.Random(20240601).randbytes(size)


def _dataset(size: int) -> bytes:
    rng = random.Random(7)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
    return bytes(out[:size])


def prepare() -> None:
    busybox = Path(busybox_path())
    for name, data_name, size, make in (
        ("hashbench", "weights.bin", 40 * MB, _weights),
        ("gzipbench", "dataset.txt", 24 * MB, _dataset),
    ):
        context = HERE / "models" / name
        target = context / "busybox"
        if not target.is_file() or target.read_bytes() != busybox.read_bytes():
            tmp = context / f".busybox.{os.getpid()}.tmp"
            shutil.copyfile(busybox, tmp)
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
        data = context / data_name
        if not data.is_file() or data.stat().st_size != size:
            _write_atomically(data, make(size))


def pytest_configure(config) -> None:
    prepare()
