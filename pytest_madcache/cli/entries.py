"""The commands on entries: list, stats, info, evict, clear, prune, verify, load, push.  Each is a call
on `Store` (or a remote backend) and a printout: no cache logic here."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any, Mapping, TextIO, cast

from pytest_madcache.cli.common import RULE, THIN, Out, entry_json, open_lister, open_store, show_bases, when
from pytest_madcache.core import settings as _settings
from pytest_madcache.store import StoreError
from pytest_madcache.util.progress import human_bytes

if TYPE_CHECKING:
    from pytest_madcache.remote.base import RemoteBackend


__all__ = ["cmd_list", "cmd_stats", "cmd_info", "cmd_evict", "cmd_clear", "cmd_prune", "cmd_verify", "cmd_load",
           "cmd_push"]


def cmd_push(args: argparse.Namespace, settings: _settings.Settings, out: Out, stdin: TextIO) -> int:
    from pytest_madcache.remote.base import RemoteError

    remote = cast("RemoteBackend", open_lister(settings))
    store = open_store(settings)  # the settings' compression and limits, as every other command
    chosen = [store.get(i) for i in args.entry_ids] if args.entry_ids else store.entries()
    try:
        pushed, completed, sent = remote.sync(chosen, store.open_blob, every=bool(args.entry_ids))
    except RemoteError as exc:
        raise StoreError(str(exc)) from None
    if args.json:
        out.json({"pushed": pushed, "completed": completed, "bytes_sent": sent, "remote": str(remote)})
        return 0
    for entry_id in pushed:
        out(f"Pushed {entry_id} to {remote}")
    out(f"{len(pushed)} entr{'y' if len(pushed) == 1 else 'ies'} pushed, {completed} unfinished push(es) completed, "
        f"{human_bytes(sent)} sent")
    return 0


def cmd_list(args: argparse.Namespace, settings: _settings.Settings, out: Out, stdin: TextIO) -> int:
    if args.on_remote:
        return _list_remote(args, settings, out)
    store = open_store(settings)
    entries = store.entries()
    unique = store.unique_bytes(entries)
    if args.json:
        out.json([entry_json(e, unique[e.id]) for e in entries])
        return 0
    if not entries:
        out(f"No cache entries in {store.dir}")
        return 0
    out(f"{len(entries)} cache entr{'y' if len(entries) == 1 else 'ies'}:")
    out(RULE)
    for e in entries:
        out(f"ID: {e.id}")
        out(f"  Image: {e.image_ref}")
        out(f"  Tags: {', '.join(e.model_tags) or '-'}")
        out(f"  Created: {when(e.created)}")
        out(f"  Last Used: {when(e.last_used)}")
        out(f"  Size: {human_bytes(e.own_bytes)} ({human_bytes(unique[e.id])} not shared with other entries)")
        out(f"  Nodes: {e.nodes}")
        out(THIN)
    return 0


def _list_remote(args: argparse.Namespace, settings: _settings.Settings, out: Out) -> int:
    from pytest_madcache.remote.base import RemoteError

    remote = open_lister(settings)
    try:
        items = sorted(remote.entries(), key=lambda item: item.last_used, reverse=True)
    except RemoteError as exc:
        raise StoreError(str(exc)) from None
    if args.json:
        out.json([dict(item.meta, last_used=item.last_used, tag=item.tag) for item in items])
        return 0
    out(f"{len(items)} cache entr{'y' if len(items) == 1 else 'ies'} in {remote}:")
    out(RULE)
    for item in items:
        meta = item.meta
        sizes = meta.get("sizes", {})
        out(f"ID: {item.id}")
        hint = remote.pull_hint(item.tag)
        out(f"  Image: {item.image}" + (f"  {hint}" if hint else ""))
        out(f"  Tags: {', '.join(meta.get('model_tags') or []) or '-'}")
        out(f"  Created: {when(meta.get('created'))}")
        out(f"  Last Used: {when(item.last_used)}")
        out(f"  Size: {human_bytes(sum(sizes.values()))}")
        out(f"  Nodes: {meta.get('nodes', 1)}")
        out(THIN)
    return 0


def cmd_stats(args: argparse.Namespace, settings: _settings.Settings, out: Out, stdin: TextIO) -> int:
    store = open_store(settings)
    stats = store.stats()
    last = store.last_session()
    if args.json:
        data = dict(vars(stats))
        data["usage_percent"] = round(stats.usage, 2)
        data["engine"] = _engine_description()
        data["last_session"] = last
        out.json(data)
        return 0
    out("Cache Statistics:")
    out("=" * 60)
    out(f"Cache Directory: {stats.directory}")
    out(f"Total Entries: {stats.entries} / {stats.max_entries}")
    out(f"Total Size: {human_bytes(stats.total_bytes)} / {human_bytes(stats.max_bytes)}")
    out(f"Usage: {stats.usage:.1f}%")
    out(f"TTL: {_settings.format_ttl(stats.ttl)}")
    out(f"Blobs: {stats.blobs} (sharing saves {human_bytes(stats.shared_bytes_saved)})")
    out(f"Engine: {_engine_description()}")
    if last:
        out(_last_session_line(last))
    out("=" * 60)
    return 0


def _last_session_line(last: Mapping[str, Any]) -> str:
    """What the last test session did to the limits (store.record_session), in one line."""
    try:
        return _session_line(last)
    except (TypeError, ValueError, OverflowError):  # the file is read from a shared directory
        return "Last Session: unreadable (last-session.json)"


def _session_line(last: Mapping[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(last.get("ended") or 0)))
    return (f"Last Session ({when}): {last.get('hits', 0)} hits, {last.get('misses', 0)} misses, "
            f"{last.get('evicted', 0)} evicted; it needed {last.get('needed_entries', 0)} entries, "
            f"{human_bytes(int(last.get('needed_bytes') or 0))}")


def _engine_description() -> str:
    """Which engine DOCKER_HOST reaches and how the cache uses it, or why none answers."""
    from pytest_madcache.core.images import EngineError
    from pytest_madcache.engines.docker import Engine

    try:
        return Engine.open().describe()
    except EngineError as exc:
        return f"none answers ({exc})"


def cmd_info(args: argparse.Namespace, settings: _settings.Settings, out: Out, stdin: TextIO) -> int:
    store = open_store(settings)
    e = store.get(args.entry_id)
    unique = store.unique_bytes()[e.id]
    if args.json:
        out.json(entry_json(e, unique))
        return 0
    out(f"Cache Entry: {e.id}")
    out("=" * 80)
    out(f"Cache Key: {e.key}")
    out(f"Docker Image: {e.image_ref}")
    out(f"Image ID: {e.image_id}")
    out(f"Model Tags: {', '.join(e.model_tags) or '-'}")
    out(f"Created: {when(e.created)}")
    out(f"Last Used: {when(e.last_used)}")
    out(f"Size: {human_bytes(e.own_bytes)} ({human_bytes(unique)} not shared with other entries)")
    out(f"Layers: {len(e.layers)}")
    out(f"Nodes: {e.nodes}")
    if e.build_duration is not None:
        out(f"Build Duration: {e.build_duration:.1f} seconds")
    out(f"Cache Directory: {store.entry_dir / e.id}")
    out("")
    out("Key Components:")
    out(json.dumps(e.key_components, indent=2, sort_keys=True))
    out("")
    bases = list(e.run_config.get("bases") or []) if isinstance(e.run_config, Mapping) else []
    if not bases and e.key_components.get("bases"):
        bases = [{"reference": ref, "value": value, "via": value.split(":", 1)[0]}
                 for ref, value in e.key_components["bases"].items()]
    show_bases(out, None, bases)
    out("")
    out("Run Configuration:")
    out(json.dumps(e.run_config, indent=2, sort_keys=True, default=str))
    return 0


def cmd_evict(args: argparse.Namespace, settings: _settings.Settings, out: Out, stdin: TextIO) -> int:
    e = open_store(settings).evict(args.entry_id)
    if args.json:
        out.json({"evicted": [e.id]})
    else:
        out(f"Evicted cache entry {e.id} ({e.image_ref})")
    return 0


def cmd_clear(args: argparse.Namespace, settings: _settings.Settings, out: Out, stdin: TextIO) -> int:
    store = open_store(settings)
    if not args.yes:
        n = len(store.entries())
        out.write(f"Remove all {n} cache entries from {store.dir}? [y/N] ", flush=True)
        answer = stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            out("Aborted; nothing removed.")
            return 1
    removed = store.clear()
    if args.json:
        out.json({"cleared": [e.id for e in removed]})
    else:
        out(f"Cleared {len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'} from {store.dir}")
    return 0


def cmd_prune(args: argparse.Namespace, settings: _settings.Settings, out: Out, stdin: TextIO) -> int:
    if args.on_remote:
        from pytest_madcache.remote.base import RemoteError

        remote = open_lister(settings)
        try:
            gone = remote.prune(settings.max_entries, settings.ttl)
        except RemoteError as exc:
            raise StoreError(str(exc)) from None
        if args.json:
            out.json({"evicted": [dict(g.meta) for g in gone], "remote": str(remote)})
            return 0
        from pytest_madcache.remote.directory import DirectoryRemote

        if isinstance(remote, DirectoryRemote):  # a cache directory: entries and their blobs go now
            for g in gone:
                out(f"Evicted {g.id} ({g.image}) from {remote}")
            out(f"Evicted {len(gone)} entr{'y' if len(gone) == 1 else 'ies'} (max entries {settings.max_entries}, "
                f"TTL {_settings.format_ttl(settings.ttl)})")
            return 0
        for g in gone:
            out(f"Deleted manifest of {g.id} ({g.image}) from {remote}")
        out(f"Deleted {len(gone)} manifest(s) (max entries {settings.max_entries}, TTL "
            f"{_settings.format_ttl(settings.ttl)}); the registry frees their blobs at its next garbage collection")
        return 0
    store = open_store(settings)
    evicted = store.prune()
    stats = store.stats()
    if args.json:
        out.json({"evicted": [entry_json(e) for e in evicted], "entries": stats.entries,
                  "total_bytes": stats.total_bytes})
        return 0
    limits = (f"max entries {settings.max_entries}, max size {human_bytes(settings.max_size_bytes)}, "
              f"TTL {_settings.format_ttl(settings.ttl)}")
    if not evicted:
        out(f"Nothing to evict ({limits}); {stats.entries} entries, {human_bytes(stats.total_bytes)}")
    for e in evicted:
        out(f"Evicted {e.id} ({e.image_ref}, last used {when(e.last_used)}, {human_bytes(e.own_bytes)})")
    if evicted:
        out(f"Evicted {len(evicted)} entr{'y' if len(evicted) == 1 else 'ies'} ({limits}); "
            f"{stats.entries} left, {human_bytes(stats.total_bytes)}")
    return 0


def cmd_verify(args: argparse.Namespace, settings: _settings.Settings, out: Out, stdin: TextIO) -> int:
    report = open_store(settings).verify()
    if args.json:
        data = dict(vars(report))
        data["ok"] = report.ok
        out.json(data)
    else:
        out(f"Checked {report.blobs_checked} blobs ({human_bytes(report.bytes_checked)})")
        for d in report.bad_blobs:
            out(f"  corrupt blob: {d}")
        for d in report.missing_blobs:
            out(f"  missing blob: {d}")
        for i in report.broken_entries:
            out(f"  {'dropped' if i in report.dropped_entries else 'broken'} entry: {i}")
        out("All blobs match their digests." if report.ok else "Problems found; broken entries were dropped.")
    return 0 if report.ok else 1


def cmd_load(args: argparse.Namespace, settings: _settings.Settings, out: Out, stdin: TextIO) -> int:
    from pytest_madcache.core.images import EngineError
    from pytest_madcache.engines.docker import Engine

    try:
        engine = Engine.open()
    except EngineError as exc:
        print(f"madcache: error: {exc}", file=sys.stderr)
        return 1
    store = open_store(settings, engine)
    entry = store.get(args.entry_id)
    result = store.load(entry)
    if args.json:
        out.json({"id": entry.id, "image": entry.image_ref, "image_id": entry.image_id, **vars(result)})
    elif result.how == "present":
        out(f"Docker image '{entry.image_ref}' already exists locally")
    else:
        out(f"Docker image loaded from cache successfully: {entry.image_ref} "
            f"({result.how}, {human_bytes(result.bytes_sent)} in {result.seconds:.2f}s)")
    return 0
