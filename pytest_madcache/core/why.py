"""Why a key missed: its components and files against the nearest entry's, in one line.

A miss that says nothing makes a user give up on the cache; a miss that says
`context changed since run_...: +results.csv` tells them what to put in
`.dockerignore`.  The nearest entry is one of the same model (else the same
image) whose key differs in the fewest components; its file list was kept
beside it when it was saved (`key.KeyFiles`), so explaining costs no rebuild.

Pure: keys, entries' metadata and file lists in, a sentence out.  It must not
open the store or talk to an engine.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

from pytest_madcache.core.key import KeyFiles

__all__ = ["MissReason", "Candidate", "nearest", "explain", "SHOWN_FILES"]

#: How many changed files a reason names before "(and N more)".
SHOWN_FILES = 3

#: What each component is called in a reason, and the order reasons are given in.
_NAMES = {
    "context_sha256": "context", "dockerfile_sha256": "Dockerfile", "bases": "base images", "params": "params",
    "build_args": "build args", "additional_context": "additional context", "model_tags": "model tags",
    "nodes": "nodes", "image": "image name", "format": "key format",
}


#: Components a test's own values decide: an entry that shares them is the one the test made last time.
_TEST_VALUES = frozenset({"params", "build_args", "additional_context"})


class Candidate(Protocol):
    """What `nearest` reads of a cache entry (store.Entry has it)."""

    id: str
    image_name: str
    model_tags: List[str]
    last_used: float
    key_components: Dict[str, Any]
    run_config: Dict[str, Any]


@dataclass(frozen=True)
class MissReason:
    """A miss's reason: `kind` groups misses in the summary, `text` is the line's body."""

    kind: str  # "new" (no entry of this model or image), "force", or the first differing component's name
    text: str
    entry_id: Optional[str] = None  # the entry it was compared with

    @property
    def line(self) -> str:
        return f"Cache miss ({self.text})"

    @property
    def group(self) -> str:
        """The summary's name for this kind of miss."""
        if self.kind == "new":
            return "no earlier entry"
        if self.kind == "force":
            return "--force-rebuild"
        return f"{_NAMES.get(self.kind, self.kind)} changed"


def _model_of(c: Candidate) -> Optional[str]:
    name = c.run_config.get("model_name") if isinstance(c.run_config, dict) else None
    return str(name) if name is not None else None


def nearest(components: Mapping[str, Any], model: str, image: str,
            candidates: Sequence[Candidate]) -> Optional[Tuple[Candidate, List[str]]]:
    """The entry to compare with, and the components that differ: of the same model (else the
    same image name), the fewest differences, then one made for the same test values (parameters,
    build args, context: an edited file then shows as such, not as the other precision's build arg
    of an entry saved a moment ago), then the most recently used."""
    same_model = [c for c in candidates if c.key_components and _model_of(c) == model]
    pool = same_model or [c for c in candidates if c.key_components and c.image_name == image]
    best: Optional[Tuple[Tuple[int, bool, float], Candidate, List[str]]] = None
    for c in pool:
        diff = sorted(n for n in set(components) | set(c.key_components)
                      if components.get(n) != c.key_components.get(n))
        rank = (len(diff), bool(_TEST_VALUES & set(diff)), -c.last_used)
        if best is None or rank < best[0]:
            best = (rank, c, diff)
    return (best[1], best[2]) if best is not None else None


def explain(components: Mapping[str, Any], files: Optional[KeyFiles], model: str, image: str,
            candidates: Sequence[Candidate], files_of: Any = None) -> MissReason:
    """The reason a key with `components` (and `files`) is not cached among `candidates`.

    `files_of(entry_id)` returns the entry's kept file list as JSON (or None)."""
    found = nearest(components, model, image, candidates)
    if found is None:
        return MissReason("new", f"no entry of model {model!r} in the cache yet")
    entry, diff = found
    if not diff:
        return MissReason("other", f"an entry with this key ({entry.id}) could not be used", entry.id)
    theirs = KeyFiles.from_json(files_of(entry.id)) if files_of is not None else None
    if "dockerfile_sha256" in diff and _context_change(files, theirs) == "" and files is not None \
            and theirs is not None:
        diff = [n for n in diff if n != "context_sha256"]  # the edited Dockerfile was the context's only change
    order = [n for n in _NAMES if n in diff] + [n for n in diff if n not in _NAMES]
    parts = [f"{_NAMES.get(n, n)} changed{f' since {entry.id}' if i == 0 else ''}"
             f"{_detail(n, components, entry.key_components, files, theirs)}" for i, n in enumerate(order)]
    return MissReason(order[0], "; ".join(parts), entry.id)


def _detail(name: str, mine: Mapping[str, Any], theirs: Mapping[str, Any], files: Optional[KeyFiles],
            their_files: Optional[KeyFiles]) -> str:
    """What changed in one component, as ": ..." (or "" where nothing more can be said)."""
    if name == "context_sha256":
        return _context_change(files, their_files)
    if name == "dockerfile_sha256":
        if files is None or their_files is None or not their_files.dockerfile:
            return ""
        count = _changed_lines(their_files.dockerfile, files.dockerfile)
        return f": {count} line{'s' if count != 1 else ''}"
    if name in ("params", "build_args", "additional_context", "bases"):
        changes = _dict_change(mine.get(name) or {}, theirs.get(name) or {})
        return f": {changes}" if changes else ""
    return f": {_short(theirs.get(name))} -> {_short(mine.get(name))}"


def _context_change(files: Optional[KeyFiles], theirs: Optional[KeyFiles]) -> str:
    if files is None or theirs is None:
        return ""
    skip = {files.dockerfile_path, theirs.dockerfile_path} - {None}  # the Dockerfile has its own component
    now = {p: d for p, d in files.context.items() if p not in skip}
    then = {p: d for p, d in theirs.context.items() if p not in skip}
    changes = ([f"+{p}" for p in sorted(set(now) - set(then))] + [f"-{p}" for p in sorted(set(then) - set(now))]
               + [f"~{p}" for p in sorted(set(now) & set(then)) if now[p] != then[p]])
    if not changes:
        return ""
    shown = ", ".join(changes[:SHOWN_FILES])
    more = f" (and {len(changes) - SHOWN_FILES} more)" if len(changes) > SHOWN_FILES else ""
    return f": {shown}{more}; add generated files to .dockerignore"


def _changed_lines(before: Sequence[str], after: Sequence[str]) -> int:
    ops = difflib.SequenceMatcher(a=list(before), b=list(after), autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal")


def _dict_change(now: Mapping[str, Any], then: Mapping[str, Any]) -> str:
    if not isinstance(now, Mapping) or not isinstance(then, Mapping):
        return f"{_short(then)} -> {_short(now)}"
    out = []
    for k in sorted(set(now) | set(then)):
        if k not in then:
            out.append(f"+{k}={_short(now[k])}")
        elif k not in now:
            out.append(f"-{k}")
        elif now[k] != then[k]:
            out.append(f"{k} {_short(then[k])} -> {_short(now[k])}")
    return ", ".join(out)


def _short(value: Any) -> str:
    """A value as a reason shows it: secrets (hashed) as such, long digests cut."""
    if isinstance(value, dict) and set(value) == {"secret_sha256"}:  # key.secret_hash: a secret's value
        return "(secret)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if text.startswith("sha256:") and len(text) > 19:
        return text[:19] + "…"
    return text if len(text) <= 60 else text[:57] + "..."
