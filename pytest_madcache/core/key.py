"""Cache keys: what an image is built from, hashed by content.

madengine keys on the Dockerfile *path*, so an edited Dockerfile still hits
the old image.  We hash the Dockerfile's bytes and every file the engine would
receive as build context (the same `.dockerignore` rules docker-py applies
when it sends the context), so a changed byte changes the key while a touched
mtime or an edited ignored file does not.

It must not talk to an engine or the store: a key depends on files and values alone.  Its one
file in the cache directory, `context-digests.json`, only spares reading unchanged files again.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import stat
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

from pytest_madcache.core import keymemo
from pytest_madcache.core.keymemo import DigestMemo, KeyCaches
from pytest_madcache.util.dockerignore import included_paths, read_dockerignore

__all__ = ["KEY_FORMAT", "KeySpec", "KeySources", "KeyFiles", "CacheKey", "key_for", "key_files", "context_digest",
           "canonical_json", "KeyError_", "exclude_patterns"]

#: Bumped whenever the meaning of a key changes, so old entries stop matching.
KEY_FORMAT = 1

SECRET_PREFIX = "madcache-secret-v1:"


class KeyError_(ValueError):
    """Key material we cannot hash (an unsupported value, a missing file)."""


def canonical(value: Any, where: str = "value") -> Any:
    """Reduce a value to JSON types in a stable form, or raise naming `where`."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return repr(value)
        return value
    if isinstance(value, enum.Enum):
        return canonical(value.value, where)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise KeyError_(f"{where}: dictionary key {k!r} of type {type(k).__name__} "
                                "cannot be part of a cache key")
            out[str(k)] = canonical(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return sorted((canonical(v, where) for v in value), key=lambda x: json.dumps(x, sort_keys=True))
    raise KeyError_(
        f"{where}: value {value!r} of type {type(value).__name__} cannot be part of a cache key "
        "(use str, int, float, bool, None, lists and dicts of those)"
    )


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def secret_hash(value: Any) -> Dict[str, str]:
    """What a secret contributes: a domain-separated sha256, never the value."""
    digest = hashlib.sha256((SECRET_PREFIX + canonical_json(canonical(value))).encode()).hexdigest()
    return {"secret_sha256": digest}


# -- file content --------------------------------------------------------------




def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: Path, st: Optional[os.stat_result] = None, memo: Optional[DigestMemo] = None,
                caches: Optional[KeyCaches] = None) -> str:
    return _digest(os.path.abspath(path), st or os.stat(path), memo, caches or KeyCaches())


def _digest(name: str, st: os.stat_result, memo: Optional[DigestMemo], caches: KeyCaches) -> str:
    """The sha256 of the file at the absolute path NAME: from this process's memory, the memo, or read."""
    stamp = (name, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    cached = caches.file(stamp) or (memo.get(name, st) if memo is not None else None)
    if cached:
        caches.put_file(stamp, cached)
        return cached
    digest = _hash_file(Path(name))
    caches.put_file(stamp, digest)
    if memo is not None:
        memo.put(name, st, digest)
    return digest


_STAMP = struct.Struct("<IqqQq")  # mode, size, mtime_ns, inode, ctime_ns
_ENTRY_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode  # = canonical_json


def _included(context: str, patterns: List[str], dockerfile: Optional[str],
              memo: Optional[DigestMemo]) -> List[str]:
    """The context's paths the engine receives (`util.dockerignore`), sorted.

    A memo remembers the list with the stat tuple of every directory in it: a name added,
    removed or renamed changes its directory's tuple, and then the tree is walked again.
    """
    if memo is not None:
        remembered = memo.paths(context, patterns, dockerfile)
        if remembered is not None:
            return remembered
    included = included_paths(context, patterns, dockerfile)
    if memo is not None:
        memo.put_paths(context, patterns, dockerfile, included)
    return included


def context_digest(context: Path, dockerfile: Optional[str] = None, memo: Optional[DigestMemo] = None,
                   exclude: Sequence[str] = (), caches: Optional[KeyCaches] = None) -> Tuple[str, int]:
    """sha256 over (path, type, mode, content) of every file the engine receives.

    Returns the digest and the number of entries hashed.  `dockerfile` is the
    Dockerfile's path relative to the context (it is always sent).  With a
    `memo`, files whose stat tuple it remembers are not read again, an
    unchanged tree is not matched against `.dockerignore` again, and a context
    whose every entry has the stat tuple it had is not digested again.  `exclude` adds
    `.dockerignore` patterns: files the session itself writes into the context.
    """
    context = Path(context)
    caches = caches or KeyCaches()
    if not context.is_dir():
        raise KeyError_(f"build context {str(context)!r} is not a directory")
    root = os.path.abspath(context)
    prefix = root if root.endswith(os.sep) else root + os.sep
    patterns = read_dockerignore(context) + list(exclude)
    included = _included(root, patterns, dockerfile, memo)
    # The fingerprint of every entry's name and stat tuple: when it is the one the digest was last
    # computed with (in this process, or remembered by the memo), nothing in the context changed.
    fingerprint = hashlib.sha256("\0".join(included).encode("utf-8", "surrogateescape"))
    entries: List[Tuple[str, os.stat_result]] = []
    newest = 0
    for rel in included:
        try:
            st = os.lstat(prefix + rel)
        except FileNotFoundError:
            fingerprint.update(b"-")
            continue  # removed while we walked; the engine would not see it either
        entries.append((rel, st))
        fingerprint.update(_STAMP.pack(st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
        newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    seen = fingerprint.hexdigest()
    tree = (root, tuple(patterns), dockerfile)
    known = caches.contexts.get(tree) or (memo.whole(root, patterns, dockerfile) if memo is not None else None)
    if known is None or known[0] != seen:
        known = (seen, *_entries_digest(prefix, entries, memo, caches))
    caches.contexts[tree] = known
    if memo is not None:
        if newest / 1e9 <= time.time() - keymemo.SETTLE_SECONDS:  # as for single files: a tuple just written may recur
            memo.put_whole(root, patterns, dockerfile, *known)
        memo.save()
    return known[1], known[2]


def _entries_digest(prefix: str, entries: List[Tuple[str, os.stat_result]],
                    memo: Optional[DigestMemo], caches: KeyCaches) -> Tuple[str, int]:
    """sha256 over one canonical line per entry, and how many entries it covers."""
    lines = [line for _, line in _entry_lines(prefix, entries, memo, caches)]
    h = hashlib.sha256(b"\n".join(lines))
    if lines:
        h.update(b"\n")
    return h.hexdigest(), len(lines)


def _entry_lines(prefix: str, entries: List[Tuple[str, os.stat_result]],
                 memo: Optional[DigestMemo], caches: KeyCaches) -> List[Tuple[str, bytes]]:
    """Each entry's path and canonical line (sockets and fifos left out, as docker-py does)."""
    lines: List[Tuple[str, bytes]] = []
    for rel, st in entries:
        full = prefix + rel
        if stat.S_ISREG(st.st_mode):
            line = _entry_line(rel, "f", st, _digest(full, st, memo, caches))
        elif stat.S_ISDIR(st.st_mode):
            line = _entry_line(rel, "d", st, "")
        elif stat.S_ISLNK(st.st_mode):
            line = _entry_line(rel, "l", st, os.readlink(full))
        else:
            continue  # sockets, fifos: docker-py skips them too
        lines.append((rel.replace(os.sep, "/"), line))
    return lines


def _entry_line(rel: str, kind: str, st: os.stat_result, content: str) -> bytes:
    """One entry of the context digest: (path, type, mode, content) as canonical JSON.

    Written out directly when nothing in it needs escaping (the JSON encoder would give the
    same bytes; it cost a cold 10,000-file key a third of its time); through the encoder otherwise.
    """
    rel = rel.replace(os.sep, "/")
    if _NEEDS_ESCAPE.search(rel) is None and _NEEDS_ESCAPE.search(content) is None:
        return f'["{rel}","{kind}","{oct(stat.S_IMODE(st.st_mode))}","{content}"]'.encode()
    return _ENTRY_JSON([rel, kind, oct(stat.S_IMODE(st.st_mode)), content]).encode()


#: What the JSON encoder escapes in a string (with ensure_ascii=False): quotes, backslashes, control characters.
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


# -- keys ----------------------------------------------------------------------


@dataclass
class KeySpec:
    """Everything that decides which image a test gets.

    `secrets` names build args or additional-context entries whose values
    are secret: they join the key as a hash only and are redacted everywhere.
    `key_material` is what `pytest_madcache_key_material` hooks added; it joins
    the parameters.
    """

    image: str
    model_tags: Sequence[str] = ()
    additional_context: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    build_args: Mapping[str, str] = field(default_factory=dict)
    nodes: int = 1
    dockerfile: Optional[Path] = None
    context: Optional[Path] = None
    secrets: Collection[str] = ()
    key_material: Mapping[str, Any] = field(default_factory=dict)
    #: base reference -> what it resolved to (bases.BaseResolver); empty in `tag` mode, and then not hashed,
    #: so keys made before bases joined them keep hitting.
    bases: Mapping[str, str] = field(default_factory=dict)
    #: `.dockerignore` patterns for files the session itself writes into the context (pytest's cache,
    #: the plugin's outputs): never part of the key, nor of what the build is sent.
    context_excludes: Sequence[str] = ()


def exclude_patterns(context: Path, paths: Sequence[Path], dockerfile: Optional[Path] = None) -> Tuple[str, ...]:
    """`.dockerignore` patterns for the `paths` that lie inside `context` (the Dockerfile is always sent).

    Literal paths: `*` and `?` become `[*]` and `[?]`; docker-py's matcher has no other quoting, so a
    path with `[` may stay in the key (a miss too many, never a wrong image)."""
    root = Path(os.path.realpath(context))
    skip = Path(os.path.realpath(dockerfile)) if dockerfile is not None else None
    out = []
    for path in paths:
        real = Path(os.path.realpath(path))
        if real == skip or root not in real.parents:
            continue
        out.append(re.sub(r"([*?])", r"[\1]", real.relative_to(root).as_posix()))
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class KeySources:
    """Where a key's files came from, to list them again when a miss needs explaining."""

    context: Optional[Path]
    dockerfile: Optional[Path]
    dockerfile_in_context: Optional[str]
    exclude: Tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyFiles:
    """What a key's file digests were made of, per file: kept beside an entry (paths and short
    digests, never contents) so a later miss can say which files changed."""

    context: Mapping[str, str]  # path in the context -> short digest of its (path, type, mode, content) line
    dockerfile: Sequence[str]  # short digest of each Dockerfile line
    dockerfile_path: Optional[str] = None  # the Dockerfile's path in the context, when it is in it

    def to_json(self) -> Dict[str, Any]:
        return {"context": dict(self.context), "dockerfile": list(self.dockerfile),
                "dockerfile_path": self.dockerfile_path}

    @classmethod
    def from_json(cls, data: Any) -> Optional["KeyFiles"]:
        """None for anything that is not what `to_json` writes (the file is read from a shared directory)."""
        if not isinstance(data, dict):
            return None
        context, dockerfile = data.get("context"), data.get("dockerfile")
        if not isinstance(context, dict) or not isinstance(dockerfile, list):
            return None
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in context.items()):
            return None
        path = data.get("dockerfile_path")
        return cls({str(k): str(v) for k, v in context.items()}, [str(v) for v in dockerfile],
                   path if isinstance(path, str) else None)


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def key_files(key: "CacheKey", cache_dir: Optional[Path] = None,
              caches: Optional[KeyCaches] = None) -> Optional[KeyFiles]:
    """The per-file form of `key`'s Dockerfile and context digests (None for a key made without
    files).  Costs one lstat per context entry; file contents come from the digest memo."""
    src = key.sources
    if src is None:
        return None
    caches = caches or KeyCaches()
    memo = caches.memo(cache_dir)
    context: Dict[str, str] = {}
    if src.context is not None and src.context.is_dir():
        root = os.path.abspath(src.context)
        prefix = root if root.endswith(os.sep) else root + os.sep
        patterns = read_dockerignore(src.context) + list(src.exclude)
        entries = []
        for rel in _included(root, patterns, src.dockerfile_in_context, memo):
            try:
                entries.append((rel, os.lstat(prefix + rel)))
            except FileNotFoundError:
                continue
        context = {rel: _short(line) for rel, line in _entry_lines(prefix, entries, memo, caches)}
    lines: List[str] = []
    if src.dockerfile is not None:
        try:
            lines = [_short(line) for line in src.dockerfile.read_bytes().splitlines()]
        except OSError:
            lines = []
    inside = src.dockerfile_in_context
    return KeyFiles(context, lines, inside.replace(os.sep, "/") if inside and not inside.startswith("..") else None)


@dataclass(frozen=True)
class CacheKey:
    """A key's digest and the components it was hashed from (secrets as hashes)."""

    digest: str
    components: Mapping[str, Any]
    sources: Optional[KeySources] = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return self.digest

    def diff(self, other_components: Mapping[str, Any]) -> List[str]:
        """Names of the components that differ from another key's."""
        names = set(self.components) | set(other_components)
        return sorted(n for n in names if self.components.get(n) != other_components.get(n))


def _hash_secrets(values: Mapping[str, Any], secrets: Collection[str], where: str) -> Dict[str, Any]:
    out = {}
    for k, v in values.items():
        out[str(k)] = secret_hash(v) if k in secrets else canonical(v, f"{where}[{k!r}]")
    return out


def key_for(spec: KeySpec, cache_dir: Optional[Path] = None, caches: Optional[KeyCaches] = None) -> CacheKey:
    """The one way a key is made (the plugin for a test, `madcache key` for the command line):
    sha256 of the canonical JSON of the spec's components.  With `cache_dir`, file digests
    are remembered there between sessions (`DigestMemo`); with `caches` (the session's), within
    this process too; the key is the same either way."""
    if not spec.image or not isinstance(spec.image, str):
        raise KeyError_(f"image name {spec.image!r} must be a non-empty string")
    if not isinstance(spec.nodes, int) or isinstance(spec.nodes, bool) or spec.nodes < 1:
        raise KeyError_(f"nodes={spec.nodes!r} must be a whole number >= 1")
    components: Dict[str, Any] = {
        "format": KEY_FORMAT,
        "image": spec.image,
        "model_tags": sorted(str(t) for t in spec.model_tags),
        "additional_context": _hash_secrets(spec.additional_context, spec.secrets, "additional context"),
        "params": canonical(dict(spec.params, **({"key_material": dict(spec.key_material)} if spec.key_material
                                                 else {})), "parameters"),
        "build_args": _hash_secrets(spec.build_args, spec.secrets, "build args"),
        "nodes": spec.nodes,
        "dockerfile_sha256": None,
        "context_sha256": None,
    }
    if spec.bases:
        components["bases"] = {str(k): str(v) for k, v in spec.bases.items()}
    caches = caches or KeyCaches()
    memo = caches.memo(cache_dir)
    context = Path(spec.context) if spec.context is not None else None
    dockerfile = Path(spec.dockerfile) if spec.dockerfile is not None else None
    if dockerfile is None and context is not None:
        dockerfile = context / "Dockerfile"
    if dockerfile is not None:
        if not dockerfile.is_file():
            raise KeyError_(f"Dockerfile {str(dockerfile)!r} does not exist")
        components["dockerfile_sha256"] = file_digest(dockerfile, memo=memo, caches=caches)
    rel = None
    if context is not None:
        if dockerfile is not None:
            try:
                rel = os.path.relpath(dockerfile.resolve(), context.resolve())
            except ValueError:
                rel = None
        components["context_sha256"], _ = context_digest(context, rel, memo, spec.context_excludes, caches)
    if memo is not None:
        memo.save()
    digest = hashlib.sha256(canonical_json(components).encode()).hexdigest()
    return CacheKey(digest=digest, components=components,
                    sources=KeySources(context, dockerfile, rel, tuple(spec.context_excludes)))
