"""The `madcache` command: list, inspect, evict, clear, prune and verify a cache.

Options come from the same table the pytest plugin uses (settings.OPTIONS),
and settings resolve the same way: flag > environment > ini > default.
Wording follows madengine's `cache` commands where it has some.

It must not hold cache logic of its own: every command is a call on `Store` (or a remote backend) and a printout.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple, cast

from pytest_madcache.core import settings as _settings
from pytest_madcache.core.bases import VIA, Base, BaseResolver, DockerfileError, ResolvedBase, key_bases, resolve_bases
from pytest_madcache.core.key import CacheKey, KeyError_, KeySpec, exclude_patterns, key_files, key_for
from pytest_madcache.core.why import explain
from pytest_madcache.remote.registry import registry_digest
from pytest_madcache.store import Entry, EntryNotFound, Store, StoreError
from pytest_madcache.util.progress import human_bytes

if TYPE_CHECKING:
    from pytest_madcache.remote.base import RemoteBackend, RemoteLister

__all__ = ["main", "build_parser"]

RULE = "=" * 100
THIN = "-" * 100


def _when(ts: Optional[float]) -> str:
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def _add_settings_options(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for name in names:
        opt = _settings.OPTIONS_BY_NAME[name]
        kwargs = opt.argparse_kwargs()
        kwargs["default"] = argparse.SUPPRESS  # keep None defaults out of sub-command namespaces
        parser.add_argument(opt.flag, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="madcache",
        description="Inspect and manage a pytest-madcache image cache.",
        epilog="Settings: flag > environment (MADCACHE_DIR, MADCACHE_MAX_ENTRIES, MADCACHE_MAX_SIZE_GB, "
               "MADCACHE_TTL) > madcache_* keys in pytest's ini file > defaults.",
    )
    common = argparse.ArgumentParser(add_help=False)
    _add_settings_options(common, ("dir", "max_entries", "max_size_gb", "ttl", "remote", "remote_compress", "shared"))
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", parents=[common], help="list cache entries, most recently used first")
    p.add_argument("--remote", dest="on_remote", action="store_true",
                   help="list the entries in the remote cache (--cache-remote / MADCACHE_REMOTE) instead")
    sub.add_parser("stats", parents=[common], help="show cache usage against its limits")
    p = sub.add_parser("info", parents=[common],
                       help="show one entry: key components, image, layers, run configuration")
    p.add_argument("entry_id", metavar="ID")
    p = sub.add_parser("evict", parents=[common], help="remove one entry")
    p.add_argument("entry_id", metavar="ID")
    p = sub.add_parser("clear", parents=[common], help="remove all entries")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p = sub.add_parser("prune", parents=[common], help="apply the limits now and say what was evicted")
    # madengine-style short spellings; the --cache-* forms from `common` work too.
    for flag, name, metavar in _PRUNE_ALIASES:
        p.add_argument(flag, dest=f"alias_{name}", metavar=metavar, default=argparse.SUPPRESS)
    p.add_argument("--remote", dest="on_remote", action="store_true",
                   help="prune the remote cache's manifests by the same rules (entry count and TTL)")
    p = sub.add_parser("push", parents=[common],
                       help="push entries to the remote cache: the IDs given, else every entry it lacks "
                            "(and complete pushes an earlier run left unfinished)")
    p.add_argument("entry_ids", metavar="ID", nargs="*")
    sub.add_parser("verify", parents=[common], help="check every blob against its digest; drop broken entries")
    p = sub.add_parser("load", parents=[common], help="load an entry's image into the Docker engine")
    p.add_argument("entry_id", metavar="ID")
    p = sub.add_parser("key", parents=[common],
                       help="compute the key of a build and say which entry (if any) it matches and why not")
    _add_settings_options(p, ("base_key",))
    p.add_argument("--image", required=True, help="image name")
    p.add_argument("--context", type=Path, help="build context directory")
    p.add_argument("--dockerfile", type=Path, help="Dockerfile (default: CONTEXT/Dockerfile)")
    p.add_argument("--tag", dest="model_tags", action="append", default=[], help="model tag (repeatable)")
    p.add_argument("--build-arg", dest="build_args", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="NAME=VALUE",
                   help="test parameter (value parsed as a Python/JSON literal when it is one)")
    p.add_argument("--additional-context", metavar="DICT", help="madengine-style dict literal or JSON")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--exclude", action="append", default=[], metavar="PATH",
                   help="a file the test session writes into the context (--output, a report): left out as the "
                        "plugin leaves it out (pytest's .pytest_cache always is); repeatable")
    p.add_argument("--secret", dest="secrets", action="append", default=[], metavar="NAME",
                   help="build arg or context entry whose value is secret (hashed, never shown)")
    return parser


_PRUNE_ALIASES = (("--max-entries", "max_entries", "N"), ("--max-size-gb", "max_size_gb", "GB"),
                  ("--ttl", "ttl", "TTL"))


def _resolve(args: argparse.Namespace, env: Mapping[str, str]) -> _settings.Settings:
    ini, ini_source = _settings.read_ini_file()
    given = vars(args)
    flags = {k: v for k, v in given.items() if k.startswith("madcache_")}
    names = {}
    for flag, name, _ in _PRUNE_ALIASES:
        if f"alias_{name}" in given:
            flags[name] = given[f"alias_{name}"]
            names[name] = flag
    return _settings.resolve(flags, env, ini, ini_source, flag_names=names, scopes=("cache",))


def _entry_json(entry: Entry, unique: Optional[int] = None) -> Dict[str, Any]:
    data = entry.to_json()
    data["last_used"] = entry.last_used
    data["own_bytes"] = entry.own_bytes
    if unique is not None:
        data["unique_bytes"] = unique
    return data


class _ReaderGone(Exception):
    """Writing our output failed with BrokenPipeError (not some socket of an engine or registry)."""


class _Out:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str, flush: bool = False) -> None:
        try:
            self.stream.write(text)
            if flush:
                self.stream.flush()
        except BrokenPipeError:
            raise _ReaderGone() from None

    def __call__(self, text: str = "") -> None:
        self.write(f"{text}\n")

    def json(self, data: Any) -> None:
        self.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def main(argv: Optional[Sequence[str]] = None, env: Optional[Mapping[str, str]] = None,
         stdout: Optional[TextIO] = None, stdin: Optional[TextIO] = None) -> int:
    out = _Out(stdout or sys.stdout)
    try:
        code = _main(argv, env, out, stdin)
        out.write("", flush=True)  # a reader gone before the last buffered text is written is the same case
        return code
    except _ReaderGone:
        return _reader_gone(out.stream)


# What a shell reports for a command killed by SIGPIPE (128 + 13), as `seq 1000000 | head -1` does.
EXIT_BROKEN_PIPE = 141


def _reader_gone(stream: TextIO) -> int:
    """The reader of our output went away (`madcache list | head`): stop quietly.

    Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError;
    the text still buffered would raise it again when the interpreter flushes
    stdout at exit ("Exception ignored ... BrokenPipeError").  Point the
    stream's file descriptor at /dev/null so that flush succeeds, and exit
    with 141 like a Unix tool killed by SIGPIPE: the output was cut short,
    which a caller with `set -o pipefail` sees as it would for any other tool.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # StringIO and the like: nothing buffered at exit
        return EXIT_BROKEN_PIPE
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    return EXIT_BROKEN_PIPE


def _main(argv: Optional[Sequence[str]], env: Optional[Mapping[str, str]], out: _Out,
          stdin: Optional[TextIO]) -> int:
    env = os.environ if env is None else env
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _resolve(args, env)
    except _settings.SettingsError as exc:
        parser.exit(2, f"madcache: error: {exc}\n")
    try:
        return _COMMANDS[args.command](args, settings, out, stdin or sys.stdin)
    except EntryNotFound as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except (StoreError, KeyError_, _settings.SettingsError, DockerfileError) as exc:
        print(f"madcache: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _open(settings: _settings.Settings, engine: Any = None) -> Store:
    return Store.from_settings(settings, engine=engine, log=lambda m: print(m, file=sys.stderr))


def _remote(settings: _settings.Settings) -> "RemoteLister":
    from pytest_madcache.remote import open_remote

    if not settings.remote:
        raise StoreError("no remote cache is set: use --cache-remote REGISTRY/REPOSITORY or MADCACHE_REMOTE")
    return cast("RemoteLister", open_remote(settings.remote, log=lambda m: print(m, file=sys.stderr),
                                            settings=settings))


def cmd_push(args: argparse.Namespace, settings: _settings.Settings, out: _Out, stdin: TextIO) -> int:
    from pytest_madcache.remote.base import RemoteError

    remote = cast("RemoteBackend", _remote(settings))
    store = _open(settings)  # the settings' compression and limits, as every other command
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


def cmd_list(args: argparse.Namespace, settings: _settings.Settings, out: _Out, stdin: TextIO) -> int:
    if args.on_remote:
        return _list_remote(args, settings, out)
    store = _open(settings)
    entries = store.entries()
    unique = store.unique_bytes(entries)
    if args.json:
        out.json([_entry_json(e, unique[e.id]) for e in entries])
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
        out(f"  Created: {_when(e.created)}")
        out(f"  Last Used: {_when(e.last_used)}")
        out(f"  Size: {human_bytes(e.own_bytes)} ({human_bytes(unique[e.id])} not shared with other entries)")
        out(f"  Nodes: {e.nodes}")
        out(THIN)
    return 0


def _list_remote(args: argparse.Namespace, settings: _settings.Settings, out: _Out) -> int:
    from pytest_madcache.remote.base import RemoteError

    remote = _remote(settings)
    try:
        items = sorted(remote.entries(), key=lambda item: item[2], reverse=True)
    except RemoteError as exc:
        raise StoreError(str(exc)) from None
    if args.json:
        out.json([dict(meta, last_used=used, tag=tag) for tag, meta, used, _ in items])
        return 0
    out(f"{len(items)} cache entr{'y' if len(items) == 1 else 'ies'} in {remote}:")
    out(RULE)
    for tag, meta, used, _ in items:
        sizes = meta.get("sizes", {})
        out(f"ID: {meta['id']}")
        hint = remote.pull_hint(tag)
        out(f"  Image: {meta.get('image_name')}:{meta.get('image_tag')}" + (f"  {hint}" if hint else ""))
        out(f"  Tags: {', '.join(meta.get('model_tags') or []) or '-'}")
        out(f"  Created: {_when(meta.get('created'))}")
        out(f"  Last Used: {_when(used)}")
        out(f"  Size: {human_bytes(sum(sizes.values()))}")
        out(f"  Nodes: {meta.get('nodes', 1)}")
        out(THIN)
    return 0


def cmd_stats(args: argparse.Namespace, settings: _settings.Settings, out: _Out, stdin: TextIO) -> int:
    store = _open(settings)
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
        engine = Engine()
        engine.ping()
        return engine.describe()
    except EngineError as exc:
        return f"none answers ({exc})"


def cmd_info(args: argparse.Namespace, settings: _settings.Settings, out: _Out, stdin: TextIO) -> int:
    store = _open(settings)
    e = store.get(args.entry_id)
    unique = store.unique_bytes()[e.id]
    if args.json:
        out.json(_entry_json(e, unique))
        return 0
    out(f"Cache Entry: {e.id}")
    out("=" * 80)
    out(f"Cache Key: {e.key}")
    out(f"Docker Image: {e.image_ref}")
    out(f"Image ID: {e.image_id}")
    out(f"Model Tags: {', '.join(e.model_tags) or '-'}")
    out(f"Created: {_when(e.created)}")
    out(f"Last Used: {_when(e.last_used)}")
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
    _show_bases(out, None, bases)
    out("")
    out("Run Configuration:")
    out(json.dumps(e.run_config, indent=2, sort_keys=True, default=str))
    return 0


def cmd_evict(args: argparse.Namespace, settings: _settings.Settings, out: _Out, stdin: TextIO) -> int:
    e = _open(settings).evict(args.entry_id)
    if args.json:
        out.json({"evicted": [e.id]})
    else:
        out(f"Evicted cache entry {e.id} ({e.image_ref})")
    return 0


def cmd_clear(args: argparse.Namespace, settings: _settings.Settings, out: _Out, stdin: TextIO) -> int:
    store = _open(settings)
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


def cmd_prune(args: argparse.Namespace, settings: _settings.Settings, out: _Out, stdin: TextIO) -> int:
    if args.on_remote:
        from pytest_madcache.remote.base import RemoteError

        remote = _remote(settings)
        try:
            gone = remote.prune(settings.max_entries, settings.ttl)
        except RemoteError as exc:
            raise StoreError(str(exc)) from None
        if args.json:
            out.json({"evicted": gone, "remote": str(remote)})
            return 0
        from pytest_madcache.remote.directory import DirectoryRemote

        if isinstance(remote, DirectoryRemote):  # a cache directory: entries and their blobs go now
            for meta in gone:
                out(f"Evicted {meta['id']} ({meta.get('image_name')}:{meta.get('image_tag')}) from {remote}")
            out(f"Evicted {len(gone)} entr{'y' if len(gone) == 1 else 'ies'} (max entries {settings.max_entries}, "
                f"TTL {_settings.format_ttl(settings.ttl)})")
            return 0
        for meta in gone:
            out(f"Deleted manifest of {meta['id']} ({meta.get('image_name')}:{meta.get('image_tag')}) "
                f"from {remote}")
        out(f"Deleted {len(gone)} manifest(s) (max entries {settings.max_entries}, TTL "
            f"{_settings.format_ttl(settings.ttl)}); the registry frees their blobs at its next garbage collection")
        return 0
    store = _open(settings)
    evicted = store.prune()
    stats = store.stats()
    if args.json:
        out.json({"evicted": [_entry_json(e) for e in evicted], "entries": stats.entries,
                  "total_bytes": stats.total_bytes})
        return 0
    limits = (f"max entries {settings.max_entries}, max size {human_bytes(settings.max_size_bytes)}, "
              f"TTL {_settings.format_ttl(settings.ttl)}")
    if not evicted:
        out(f"Nothing to evict ({limits}); {stats.entries} entries, {human_bytes(stats.total_bytes)}")
    for e in evicted:
        out(f"Evicted {e.id} ({e.image_ref}, last used {_when(e.last_used)}, {human_bytes(e.own_bytes)})")
    if evicted:
        out(f"Evicted {len(evicted)} entr{'y' if len(evicted) == 1 else 'ies'} ({limits}); "
            f"{stats.entries} left, {human_bytes(stats.total_bytes)}")
    return 0


def cmd_verify(args: argparse.Namespace, settings: _settings.Settings, out: _Out, stdin: TextIO) -> int:
    report = _open(settings).verify()
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


def cmd_load(args: argparse.Namespace, settings: _settings.Settings, out: _Out, stdin: TextIO) -> int:
    from pytest_madcache.core.images import EngineError
    from pytest_madcache.engines.docker import Engine

    try:
        engine = Engine()
        engine.ping()
    except EngineError as exc:
        print(f"madcache: error: {exc}", file=sys.stderr)
        return 1
    store = _open(settings, engine)
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


def _literal(text: str) -> Any:
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _pairs(items: Sequence[str], what: str, parse: bool) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise KeyError_(f"{what} {item!r} must look like NAME=VALUE")
        out[name] = _literal(value) if parse else value
    return out


def cmd_key(args: argparse.Namespace, settings: _settings.Settings, out: _Out, stdin: TextIO) -> int:
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
    store = _open(settings)
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
    _show_bases(out, settings.base_key, _bases_json(bases, resolved))
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


def _bases(spec: KeySpec, mode: str, out: _Out) -> Tuple[List[Base], List[ResolvedBase]]:
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
            engine = Engine()
            engine.ping()
        except EngineError as exc:
            out(f"madcache: no engine answers ({exc}); bases are resolved without it")
        resolver = BaseResolver(engine, engine_name=str(engine.host() if engine else ""),
                                warn=lambda text: out(f"madcache: {text}"), direct=registry_digest)
    return resolve_bases(Path(dockerfile), spec.build_args, mode, resolver)


def _bases_json(bases: Sequence[Base], resolved: Sequence[ResolvedBase]) -> List[Dict[str, Any]]:
    found = {r.reference: r for r in resolved}
    return [{"reference": b.reference, "platform": b.platform, "stage": b.stage,
             "value": found[b.reference].value if b.reference in found else b.reference,
             "via": found[b.reference].via if b.reference in found else "tag"} for b in bases]


def _show_bases(out: _Out, mode: Optional[str], bases: Sequence[Mapping[str, Any]]) -> None:
    out(f"Base Images{f' (base_key={mode})' if mode else ''}:" if bases else "Base Images: none")
    for b in bases:
        platform = f" [{b.get('platform')}]" if b.get("platform") else ""
        out(f"  {b.get('reference')}{platform} -> {b.get('value')} ({VIA.get(str(b.get('via')), b.get('via'))})")


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


_COMMANDS = {
    "list": cmd_list, "stats": cmd_stats, "info": cmd_info, "evict": cmd_evict, "clear": cmd_clear,
    "prune": cmd_prune, "verify": cmd_verify, "load": cmd_load, "key": cmd_key, "push": cmd_push,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
