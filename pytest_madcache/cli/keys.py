"""`madcache key`: the key a model would get, computed as the plugin computes it, and why it would
miss against what the cache holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

from pytest_madcache.cli.common import Out, open_store, show_bases
from pytest_madcache.core import settings as _settings
from pytest_madcache.core.bases import Base, ResolvedBase, key_bases, resolve_bases
from pytest_madcache.core.context import literal
from pytest_madcache.core.key import CacheKey, KeyError_, KeySpec, exclude_patterns, key_files, key_for
from pytest_madcache.core.why import explain
from pytest_madcache.provide import base_resolver
from pytest_madcache.store import Entry

if TYPE_CHECKING:
    pass


__all__ = ["cmd_key"]


def _literal(text: str) -> Any:
    """A --param value: a Python literal when it is one (`2`, `'fp16'`), else the text as written."""
    try:
        return literal(text)
    except ValueError:
        return text


def _pairs(items: Sequence[str], what: str, parse: bool) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise KeyError_(f"{what} {item!r} must look like NAME=VALUE")
        out[name] = _literal(value) if parse else value
    return out


def cmd_key(args: argparse.Namespace, settings: _settings.Settings, out: Out, stdin: TextIO) -> int:
    context: Dict[str, Any] = {}
    if args.additional_context:
        context = _settings.parse_additional_context(args.additional_context, "option --additional-context")
    spec = KeySpec(
        image=args.image, model_tags=args.model_tags, additional_context=context,
        params=_pairs(args.params, "--param", parse=True),
        build_args=_pairs(args.build_args, "--build-arg", parse=False), nodes=args.nodes,
        dockerfile=args.dockerfile, context=args.context, secrets=set(args.secrets),
        context_excludes=_session_excludes(args),
    )
    bases, resolved = _bases(spec, settings.base_key, out)
    spec.bases = key_bases(resolved)
    key = key_for(spec, settings.dir)
    store = open_store(settings)
    entries = store.entries()
    match = next((e for e in entries if e.key == key.digest), None)
    nearest = _nearest(key, entries) if match is None else None
    reason = None
    if match is None:
        model = str(args.model_tags[0]) if args.model_tags else args.image
        reason = explain(key.components, key_files(key, settings.dir), model, args.image, entries, store.entry_files)
    if args.json:
        out.json({"key": key.digest, "components": key.components, "entry": match.id if match else None,
                  "base_key": settings.base_key, "bases": _bases_json(bases, resolved),
                  "nearest": {"id": nearest[0].id, "differs_in": nearest[1]} if nearest else None,
                  "miss_reason": reason.line if reason else None})
        return 0
    out(f"Cache Key: {key.digest}")
    out(json.dumps(key.components, indent=2, sort_keys=True))
    show_bases(out, settings.base_key, _bases_json(bases, resolved))
    if match:
        out(f"Cached as {match.id} ({match.image_ref}): the next run hits.")
    elif nearest:
        out(f"Not cached. Nearest entry {nearest[0].id} ({nearest[0].image_ref}) differs in: "
            f"{', '.join(_explain(name, key.components, nearest[0].key_components) for name in nearest[1])}")
        if reason is not None:
            out(reason.line)
    else:
        out("Not cached, and no entry of this image to compare with.")
    return 0


def _session_excludes(args: argparse.Namespace) -> Tuple[str, ...]:
    """What the plugin leaves out of a context as the session's own files: pytest's cache here and in
    the context, and what `--exclude` names (the plugin's --output, reports...)."""
    if args.context is None:
        return ()
    paths = [Path.cwd() / ".pytest_cache", Path(args.context) / ".pytest_cache",
             *(Path(p).expanduser().absolute() for p in args.exclude)]
    return exclude_patterns(Path(args.context), paths, args.dockerfile)


def _bases(spec: KeySpec, mode: str, out: Out) -> Tuple[List[Base], List[ResolvedBase]]:
    """The build's bases, resolved by `mode` as the plugin does (an engine only when the mode needs one)."""
    dockerfile = spec.dockerfile or (Path(spec.context) / "Dockerfile" if spec.context is not None else None)
    if dockerfile is None or not Path(dockerfile).is_file():
        return [], []
    resolver = None
    if mode != "tag":
        from pytest_madcache.core.images import EngineError
        from pytest_madcache.engines.docker import Engine

        engine: Optional[Engine] = None
        try:
            engine = Engine.open()
        except EngineError as exc:
            out(f"madcache: no engine answers ({exc}); bases are resolved without it")
        resolver = base_resolver(engine, lambda text: out(f"madcache: {text}"))
    return resolve_bases(Path(dockerfile), spec.build_args, mode, resolver)


def _bases_json(bases: Sequence[Base], resolved: Sequence[ResolvedBase]) -> List[Dict[str, Any]]:
    found = {r.reference: r for r in resolved}
    return [{"reference": b.reference, "platform": b.platform, "stage": b.stage,
             "value": found[b.reference].value if b.reference in found else b.reference,
             "via": found[b.reference].via if b.reference in found else "tag"} for b in bases]


def _explain(name: str, mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> str:
    """A differing component; for bases, which base changed and from what to what."""
    if name != "bases":
        return name
    a, b = dict(mine.get("bases") or {}), dict(theirs.get("bases") or {})
    changed = [f"{ref} ({b.get(ref, 'not in the key')} -> {a.get(ref, 'not in the key')})"
               for ref in sorted(set(a) | set(b)) if a.get(ref) != b.get(ref)]
    return f"bases: {'; '.join(changed)}"


def _nearest(key: CacheKey, entries: List[Entry]) -> Optional[tuple]:
    """The entry whose key components differ from `key` in the fewest places."""
    best = None
    for e in entries:
        if not e.key_components:
            continue
        diff = key.diff(e.key_components)
        if best is None or len(diff) < len(best[1]):
            best = (e, diff)
    return best
