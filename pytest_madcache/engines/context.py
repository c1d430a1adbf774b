"""What a build is asked (`BuildRequest`), and the build context packed as the engine is sent it.

Both builders take the same request; the context is packed here whenever the session left files out
of it (`exclude`) or the archive must go to the cache's tmp/, so what is sent is exactly what the key
hashed (`util.dockerignore` decides both).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, Optional, Sequence, Tuple

from pytest_madcache.util.dockerignore import included_paths, read_dockerignore

__all__ = ["BuildRequest", "ContextUnwritable", "pack_context"]

_UNWRITABLE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # writing the packed context


class ContextUnwritable(OSError):
    """The packed context could not be written where it was asked to go."""


@dataclass(frozen=True)
class BuildRequest:
    """One image build.  `secrets` are build args whose values must not stay in the image: BuildKit
    gets them as secret mounts; the legacy builder as build args (the store then refuses to cache an
    image whose metadata holds one).  `tmp_dir` (the cache's tmp/) is where the packed context goes,
    so a read-only root filesystem with one writable cache volume is enough; `exclude` adds
    `.dockerignore` patterns (files the test session wrote into the context)."""

    context: Path
    dockerfile: Optional[Path] = None
    tag: Optional[str] = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    on_line: Optional[Callable[[str], None]] = None
    tmp_dir: Optional[Path] = None
    builder: str = "auto"
    secrets: Mapping[str, str] = field(default_factory=dict)
    exclude: Sequence[str] = ()

    @property
    def dockerfile_path(self) -> Path:
        return Path(self.dockerfile) if self.dockerfile is not None else Path(self.context) / "Dockerfile"

    @property
    def dockerfile_name(self) -> Optional[str]:
        """The Dockerfile relative to the context when inside it, else its absolute path."""
        if self.dockerfile is None:
            return None
        dockerfile = Path(self.dockerfile)
        if _inside(dockerfile, Path(self.context)):
            return str(dockerfile.resolve().relative_to(Path(self.context).resolve()))
        return str(dockerfile.resolve())

    def packed(self, tmp_dir: Optional[Path]) -> Tuple[BinaryIO, str]:
        """The context packed into `tmp_dir` (the cache's tmp/); where that volume is full or
        read-only, into TMPDIR: a cache that cannot be written never stops a build."""
        if tmp_dir is not None:
            try:
                return pack_context(Path(self.context), self.dockerfile_name, tmp_dir, self.exclude)
            except ContextUnwritable:
                pass
        return pack_context(Path(self.context), self.dockerfile_name, None, self.exclude)


def pack_context(context: Path, dockerfile: Optional[str], tmp_dir: Optional[Path],
                  exclude: Sequence[str] = ()) -> Tuple[BinaryIO, str]:
    """The build context as docker-py would send it (`.dockerignore` and `exclude` honoured, a
    Dockerfile outside the context added), in an unnamed temp file in `tmp_dir` (None: TMPDIR),
    with the Dockerfile's name inside the archive.

    Written here rather than by docker-py's `tar`: its headers carry sub-second mtimes as PAX
    records, and buildx, reading a context from stdin, takes an archive whose first 1 KiB is not
    a whole tar header for a Dockerfile.  Whole-second GNU headers suit both builders.
    """
    import tempfile

    from docker.api.build import process_dockerfile

    root = os.path.abspath(context)
    patterns = read_dockerignore(context) + list(exclude)
    name, outside = process_dockerfile(dockerfile, str(context))  # outside: the Dockerfile's text, else None
    extra = {} if outside is None else {".dockerignore": "\n".join((patterns or [".dockerignore"]) + [name]),
                                        name: outside}
    where = str(tmp_dir) if tmp_dir is not None else tempfile.gettempdir()
    try:
        if tmp_dir is not None:
            Path(tmp_dir).mkdir(parents=True, exist_ok=True)
        fh = tempfile.TemporaryFile(dir=where, prefix="build-context-")
    except OSError as exc:
        raise ContextUnwritable(exc.errno, f"cannot pack the build context into {where}: {exc}") from None
    try:
        _write_tar(fh, root, patterns, name, extra)
    except OSError as exc:
        fh.close()
        if exc.errno in _UNWRITABLE:
            raise ContextUnwritable(exc.errno, f"cannot pack the build context into {where}: {exc}") from None
        raise
    fh.seek(0)
    return fh, name or "Dockerfile"


def _write_tar(fh: BinaryIO, root: str, patterns: Sequence[str], name: Optional[str],
               extra: Mapping[str, str]) -> None:
    import io
    import tarfile

    with tarfile.open(mode="w", fileobj=fh, format=tarfile.GNU_FORMAT) as out:
        for rel in included_paths(root, patterns, name):
            if rel in extra:
                continue
            info = out.gettarinfo(os.path.join(root, rel), arcname=rel)
            if info is None:  # a socket
                continue
            info.mtime = int(info.mtime)
            if info.isfile():
                try:
                    src = open(os.path.join(root, rel), "rb")
                except OSError as exc:
                    raise OSError(f"cannot read {os.path.join(root, rel)} of the build context: {exc}") from None
                with src:
                    out.addfile(info, src)
            else:
                out.addfile(info)
        for rel, text in extra.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False
