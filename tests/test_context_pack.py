"""The packed build context goes to the cache's tmp/, and to TMPDIR when the cache cannot take it.

Every plugin build leaves pytest's own `.pytest_cache` out of its context, so every build packs
its context itself: a full or read-only cache volume must not stop it (the real-engine cases are
in tests/test_hardening_faults.py).
"""

from __future__ import annotations

import errno
import io
import tarfile
import tempfile
from pathlib import Path

import pytest

from pytest_madcache.engines.context import BuildRequest, ContextUnwritable, pack_context


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / ".pytest_cache").mkdir(parents=True)
    (ctx / ".pytest_cache" / "v").write_text("x")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY model.py /\n")
    (ctx / "model.py").write_text("print('hi')\n")
    return ctx


def _names(fh: io.BufferedIOBase) -> set:
    with tarfile.open(fileobj=fh) as tar:
        return set(tar.getnames())


def test_a_tmp_dir_that_cannot_be_made_packs_into_tmpdir(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache's tmp/ would go")
    request = BuildRequest(context=_context(tmp_path), exclude=(".pytest_cache",))
    fh, dockerfile = request.packed(blocker / "tmp")
    with fh:
        assert dockerfile == "Dockerfile" and _names(fh) == {"Dockerfile", "model.py"}


def test_a_full_tmp_dir_packs_into_tmpdir_and_says_where_when_asked_directly(tmp_path, monkeypatch) -> None:
    full = tmp_path / "full"
    real = tempfile.TemporaryFile

    class Full(io.BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            raise OSError(errno.ENOSPC, "No space left on device")

    def temporary_file(*args, dir=None, **kwargs):  # noqa: A002 (tempfile's name)
        return Full() if dir == str(full) else real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)
    ctx = _context(tmp_path)
    with pytest.raises(ContextUnwritable, match=f"cannot pack the build context into {full}: .*No space left"):
        pack_context(ctx, None, full, (".pytest_cache",))
    fh, _ = BuildRequest(context=ctx, exclude=(".pytest_cache",)).packed(full)
    with fh:
        assert _names(fh) == {"Dockerfile", "model.py"}
