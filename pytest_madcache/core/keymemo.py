"""What computing keys remembers, so a large context is not hashed again when nothing changed.

Hashing a large context on every lookup is wasted work when nothing changed: digests are
remembered by (path, size, mtime_ns, inode, ctime_ns), for this process and, with a
`DigestMemo`, across sessions in a file inside the cache directory.  The stat tuple only
decides whether a remembered digest may be reused; the key itself is made of digests and
never of mtimes.  A touched or changed file has another tuple and is hashed again.

`KeyCaches` holds this process's part; whoever computes keys owns one (the session's
`ImageService`, a `madcache key` call), so nothing is a module global and tests start afresh with a
new one.  `DigestMemo` is the part kept in the cache directory between sessions.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from pytest_madcache.util.fsutil import atomic_write

__all__ = ["KeyCaches", "DigestMemo", "DIGESTS_FILE", "SETTLE_SECONDS"]

#: Files modified this recently are hashed every time (not remembered across sessions): a write
#: within the file system's timestamp granularity after hashing would keep the same stat tuple.
SETTLE_SECONDS = 2.0


#: (absolute path, size, mtime_ns, inode, ctime_ns): what decides that a remembered digest may be reused.
Stamp = Tuple[str, int, int, int, int]
#: (context, .dockerignore patterns, Dockerfile) -> (fingerprint of every entry's stat tuple, digest, files).
Tree = Tuple[str, Tuple[str, ...], Optional[str]]


class KeyCaches:
    """This process's memory of file and context digests, and the memo of each cache directory.

    Bounded: past `max_files` remembered file digests the oldest are forgotten (a suite's contexts
    are far smaller; a long-lived process walking many trees stays within a few tens of MB)."""

    def __init__(self, max_files: int = 200_000) -> None:
        self.max_files = max_files
        self._files: "OrderedDict[Stamp, str]" = OrderedDict()
        self.contexts: Dict[Tree, Tuple[str, str, int]] = {}
        self._memos: Dict[str, DigestMemo] = {}

    def file(self, stamp: Stamp) -> Optional[str]:
        return self._files.get(stamp)

    def put_file(self, stamp: Stamp, digest: str) -> None:
        self._files[stamp] = digest
        while len(self._files) > self.max_files:
            self._files.popitem(last=False)

    def memo(self, cache_dir: Optional[Path]) -> Optional["DigestMemo"]:
        """The memo of `cache_dir` (read once), or None without a cache directory."""
        if cache_dir is None:
            return None
        path = str(Path(cache_dir) / DIGESTS_FILE)
        memo = self._memos.get(path)
        if memo is None:
            memo = self._memos[path] = DigestMemo(Path(path))
        return memo


class DigestMemo:
    """Content digests of context files, remembered in one JSON file between sessions.

    The file belongs to the cache directory (`DIGESTS_FILE`); it holds, per absolute path,
    the stat tuple and the sha256 seen when the file was last hashed, and per context (and
    `.dockerignore`) the list of paths the engine receives with each directory's stat tuple,
    and the context's digest with a fingerprint of every entry's stat tuple.  Reading a missing,
    unreadable or damaged file gives an empty memo; writing is atomic (a temporary file
    renamed over it) and a failure to write is ignored, so a read-only cache directory only
    costs the hashing.  Concurrent writers may drop each other's additions, never corrupt them.
    """

    VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._digests: Dict[str, List[Any]] = {}
        self._trees: Dict[str, Dict[str, Any]] = {}
        self._dirty = False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("version") == self.VERSION and isinstance(data.get("files"), dict):
                self._digests = data["files"]
                trees = data.get("trees")
                self._trees = trees if isinstance(trees, dict) else {}
        except (OSError, ValueError):
            pass

    @staticmethod
    def _stamp(st: os.stat_result) -> List[int]:
        return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]

    def get(self, path: str, st: os.stat_result) -> Optional[str]:
        seen = self._digests.get(path)
        if isinstance(seen, list) and len(seen) == 5 and seen[:4] == self._stamp(st):
            return str(seen[4])
        return None

    def put(self, path: str, st: os.stat_result, digest: str) -> None:
        if max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 > time.time() - SETTLE_SECONDS:
            return
        self._digests[path] = self._stamp(st) + [digest]
        self._dirty = True

    @staticmethod
    def _tree_key(context: str, patterns: List[str], dockerfile: Optional[str]) -> str:
        return json.dumps([context, patterns, dockerfile], separators=(",", ":"), ensure_ascii=False)

    @staticmethod
    def _dir_stamp(path: str) -> Optional[List[int]]:
        try:
            st = os.lstat(path)
        except OSError:
            return None
        return [st.st_mtime_ns, st.st_ino, st.st_ctime_ns] if stat.S_ISDIR(st.st_mode) else None

    def paths(self, context: str, patterns: List[str], dockerfile: Optional[str]) -> Optional[List[str]]:
        """The remembered path list of this context and `.dockerignore`, if no directory in it changed."""
        tree = self._trees.get(self._tree_key(context, patterns, dockerfile))
        if (not isinstance(tree, dict) or not isinstance(tree.get("dirs"), dict)
                or not isinstance(tree.get("paths"), list)):
            return None
        for rel, stamp in tree["dirs"].items():
            if self._dir_stamp(os.path.join(context, rel)) != stamp:
                return None
        return tree["paths"]

    def put_paths(self, context: str, patterns: List[str], dockerfile: Optional[str], paths: List[str]) -> None:
        """Remember a walk's result, unless `.dockerignore` has exceptions (`!`): those look into
        excluded directories, whose changes the included directories' tuples would not show."""
        if any(p.startswith("!") for p in patterns):
            return
        dirs: Dict[str, List[int]] = {}
        settled = time.time() - SETTLE_SECONDS
        for rel in ["", *paths]:
            stamp = self._dir_stamp(os.path.join(context, rel))
            if stamp is None:
                continue
            if max(stamp[0], stamp[2]) / 1e9 > settled:
                return
            dirs[rel] = stamp
        if "" not in dirs:
            return
        self._trees[self._tree_key(context, patterns, dockerfile)] = {"dirs": dirs, "paths": paths}
        self._dirty = True

    def whole(self, context: str, patterns: List[str], dockerfile: Optional[str]) -> Optional[Tuple[str, str, int]]:
        """The context's digest and entry count as last computed, with the fingerprint of every
        entry's stat tuple then (see context_digest), if the tree is remembered."""
        tree = self._trees.get(self._tree_key(context, patterns, dockerfile))
        seen = tree.get("whole") if isinstance(tree, dict) else None
        if isinstance(seen, list) and len(seen) == 3 and all(isinstance(v, str) for v in seen[:2]) \
                and isinstance(seen[2], int):
            return seen[0], seen[1], seen[2]
        return None

    def put_whole(self, context: str, patterns: List[str], dockerfile: Optional[str], fingerprint: str,
                  digest: str, count: int) -> None:
        """Remember the whole digest beside a remembered path list (none is kept without one)."""
        tree = self._trees.get(self._tree_key(context, patterns, dockerfile))
        if isinstance(tree, dict) and tree.get("whole") != [fingerprint, digest, count]:
            tree["whole"] = [fingerprint, digest, count]
            self._dirty = True

    def save(self) -> None:
        """Write the memo if something was added; files that no longer exist are forgotten."""
        if not self._dirty:
            return
        self._dirty = False
        files = {p: v for p, v in self._digests.items() if os.path.lexists(p)}
        trees = {k: v for k, v in self._trees.items() if os.path.isdir(json.loads(k)[0])}
        with contextlib.suppress(OSError):  # a read-only cache directory only costs the hashing
            atomic_write(self.path, json.dumps({"version": self.VERSION, "files": files, "trees": trees},
                                               separators=(",", ":")), durable=False)


#: The memo's file name inside the cache directory.
DIGESTS_FILE = "context-digests.json"
