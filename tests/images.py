"""Test images: `FROM scratch` with Debian's static busybox copied in (no Docker Hub here)."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from pytest_madcache.engines.docker import BuildResult, Engine
from pytest_madcache.devtools.localengine import busybox_path

Content = Union[bytes, int]  # bytes, or a size in bytes of random data


def write_context(directory: Path, files: Dict[str, Content], extra_lines: Sequence[str] = (),
                  base: bool = True) -> Path:
    """A build context: busybox, the files (one COPY layer each, in order) and a Dockerfile."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["FROM scratch"]
    if base:
        shutil.copy(busybox_path(), directory / "busybox")
        lines += ["COPY busybox /bin/busybox", 'RUN ["/bin/busybox", "--install", "-s", "/bin"]']
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):
            with open(path, "wb") as fh:
                remaining = content
                while remaining:
                    n = min(remaining, 1 << 20)
                    fh.write(os.urandom(n))
                    remaining -= n
        else:
            path.write_bytes(content)
        lines.append(f"COPY {name} /data/{name}")
    lines += list(extra_lines)
    (directory / "Dockerfile").write_text("\n".join(lines) + "\n")
    return directory


class ImageFactory:
    """Builds uniquely tagged test images and removes them afterwards."""

    def __init__(self, engine: Engine, workdir: Path) -> None:
        self.engine = engine
        self.workdir = workdir
        self.tags: List[str] = []

    def context(self, files: Dict[str, Content], extra_lines: Sequence[str] = (), name: Optional[str] = None) -> Path:
        return write_context(self.workdir / (name or secrets.token_hex(4)), files, extra_lines)

    def build(self, context: Path, tag: Optional[str] = None) -> BuildResult:
        tag = tag or f"madcache-test-{secrets.token_hex(4)}:latest"
        self.tags.append(tag)
        return self.engine.build(context, tag=tag)

    def make(self, files: Dict[str, Content], extra_lines: Sequence[str] = (), tag: Optional[str] = None) -> BuildResult:
        return self.build(self.context(files, extra_lines), tag)

    def cleanup(self) -> None:
        for tag in self.tags:
            try:
                self.engine.remove(tag)
            except Exception:
                pass
