"""The writes the store makes: found in its source, and caught as they happen.

`store_write_sites` reads pytest_madcache/store/*.py and lists every call
that changes the file system (open for writing, write_bytes, touch, mkdir,
rename, replace, unlink, rmtree, utime, chmod, fsync, ...).
`install_crash_points` hooks the primitives all of them end in (io.open and
builtins.open in a write mode, os.open with a write flag, and os's mkdir,
rmdir, rename, replace, unlink, remove, fsync, utime, chmod, link, symlink,
truncate) so that a process dies with SIGKILL right before its k-th write,
and notes which store line asked for each write.  The kill -9 campaign
(fault_campaign.py) uses both to put a crash point at every write.

Test tooling: it patches the process it runs in, so it runs in a forked child.
"""

from __future__ import annotations

import ast
import builtins
import io
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
STORE_DIR = ROOT / "pytest_madcache" / "store"
#: The package's one atomic write lives below the store; its writes are the store's when the store calls it.
FSUTIL = ROOT / "pytest_madcache" / "util" / "fsutil.py"
SHARED_WRITERS = {"atomic_write", "fsync_dir", "_replaced"}

#: Write calls in the store that no operation reaches on purpose, with the reason.
UNREACHED_BY_DESIGN = {
    ("layout.py", "share", "chmod"): "runs only in a shared cache (the campaign's is private); a kill between "
                                     "a file's creation and its chmod leaves the file whole, with the mode the "
                                     "umask gave",
    ("fsutil.py", "_replaced", "unlink"): "removes its own temp file after a failed write; a kill there "
                                          "leaves what a kill during the write leaves",
    ("blobs.py", "abort", "unlink"): "a BlobWriter removing its own temp file (fetched data that does not hash "
                                     "to its digest, or a fetch or streamed load that failed); a kill there "
                                     "leaves what a kill during the fetch leaves",
}


_PRIMITIVES = {"mkdir", "makedirs", "rmdir", "rename", "renames", "replace", "unlink", "remove", "rmtree", "utime",
               "chmod", "fsync", "touch", "write_bytes", "write_text", "link", "symlink", "symlink_to",
               "hardlink_to", "truncate", "ftruncate", "copy", "copy2", "copyfile", "copytree", "move"}
_ONLY_OS = {"replace", "remove", "renames", "link", "symlink", "ftruncate"}  # not str.replace, list.remove
_ONLY_SHUTIL = {"copy", "copy2", "copyfile", "copytree", "move"}
_OWN_METHODS = {"self.index.touch", "self._index.touch"}  # Index.touch: its utime and touch are the sites
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC")


@dataclass(frozen=True)
class Site:
    """One write call in the store's source."""

    module: str
    line: int
    function: str
    kind: str


def _writes_by_mode(call: ast.Call, position: int) -> bool:
    mode = call.args[position] if len(call.args) > position else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and any(c in mode.value for c in "wax+")


def _write_kind(call: ast.Call) -> Optional[str]:
    func = call.func
    if isinstance(func, ast.Name):
        return "open" if func.id == "open" and _writes_by_mode(call, 1) else None
    if not isinstance(func, ast.Attribute):
        return None
    receiver, name = ast.unparse(func.value), func.attr
    if name == "open":
        if receiver == "os":
            flags = ast.unparse(call.args[1]) if len(call.args) > 1 else ""
            return "os.open" if any(f in flags for f in _WRITE_FLAGS) else None
        return "open" if _writes_by_mode(call, 1 if receiver == "io" else 0) else None
    if name not in _PRIMITIVES or f"{receiver}.{name}" in _OWN_METHODS:
        return None
    if (name in _ONLY_OS and receiver != "os") or (name in _ONLY_SHUTIL and receiver != "shutil"):
        return None
    return name


def store_write_sites(store_dir: Path = STORE_DIR) -> List[Site]:
    """Every call in the store's modules that writes to the file system."""
    sites: List[Site] = []
    paths = sorted(store_dir.glob("*.py")) + ([FSUTIL] if store_dir == STORE_DIR else [])
    for path in paths:

        class Visitor(ast.NodeVisitor):
            def __init__(self) -> None:
                self.function = "<module>"

            def visit_FunctionDef(self, node: Any) -> None:
                outer, self.function = self.function, node.name
                self.generic_visit(node)
                self.function = outer

            visit_AsyncFunctionDef = visit_FunctionDef

            def visit_Call(self, node: ast.Call) -> None:
                kind = _write_kind(node)
                shared = path != FSUTIL or self.function in SHARED_WRITERS
                if kind is not None and shared:
                    sites.append(Site(path.name, node.lineno, self.function, kind))
                self.generic_visit(node)

        Visitor().visit(ast.parse(path.read_text(), str(path)))
    return sites


# -- catching them as they happen --------------------------------------------------

_OS_MUTATORS = ("mkdir", "rmdir", "rename", "replace", "unlink", "remove", "fsync", "utime", "chmod", "link",
                "symlink", "truncate", "ftruncate")
_OPEN_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _store_frame() -> Optional[Tuple[str, int]]:
    """(module, line) of the innermost store frame on the stack: where the write was asked for."""
    frame = sys._getframe(2)
    store = str(STORE_DIR)
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(store) or (name == str(FSUTIL) and frame.f_code.co_name in SHARED_WRITERS):
            return Path(frame.f_code.co_filename).name, frame.f_lineno
        frame = frame.f_back
    return None


def install_crash_points(k: int, counter: List[int], reached: Set[Tuple[str, int]]) -> None:
    """SIGKILL this process right before its k-th write (k=0: count them and note where they are)."""

    def hit() -> None:
        counter[0] += 1
        if k and counter[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        if not k:
            where = _store_frame()
            if where is not None:
                reached.add(where)

    for name in _OS_MUTATORS:
        real = getattr(os, name)

        def wrapped(*args: Any, _real: Callable = real, **kwargs: Any) -> Any:
            hit()
            return _real(*args, **kwargs)

        setattr(os, name, wrapped)
    real_os_open = os.open

    def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & _OPEN_WRITE:
            hit()
        return real_os_open(path, flags, *args, **kwargs)

    os.open = os_open  # type: ignore[assignment]
    real_open = io.open

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+"):
            hit()
        return real_open(file, mode, *args, **kwargs)

    builtins.open = open_  # type: ignore[assignment]
    io.open = open_  # type: ignore[assignment]  # pathlib's open, write_bytes and write_text go through io.open
