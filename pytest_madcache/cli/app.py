"""The `madcache` command: list, inspect, evict, clear, prune, verify, load, push a cache, compute
a key, and show the performance history.

Options come from the same table the pytest plugin uses (settings.OPTIONS), and settings resolve the
same way: flag > environment > ini > default.  Wording follows madengine's `cache` commands where it
has some.  It must not hold cache logic of its own: every command is a call on `Store` (or a remote
backend) and a printout.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, Sequence, TextIO

from pytest_madcache.cli.common import Out, ReaderGone, add_settings_options
from pytest_madcache.cli.entries import (
    cmd_clear,
    cmd_evict,
    cmd_info,
    cmd_list,
    cmd_load,
    cmd_prune,
    cmd_push,
    cmd_stats,
    cmd_verify,
)
from pytest_madcache.cli.keys import cmd_key
from pytest_madcache.cli.perf import add_perf_parser, cmd_perf
from pytest_madcache.core import settings as _settings
from pytest_madcache.core.bases import DockerfileError
from pytest_madcache.core.inifile import read_ini_file
from pytest_madcache.core.key import KeyError_
from pytest_madcache.store import EntryNotFound, StoreError

if TYPE_CHECKING:
    pass


__all__ = ["main", "build_parser", "EXIT_BROKEN_PIPE", "COMMANDS"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="madcache",
        description="Inspect and manage a pytest-madcache image cache.",
        epilog="Settings: flag > environment (MADCACHE_DIR, MADCACHE_MAX_ENTRIES, MADCACHE_MAX_SIZE_GB, "
               "MADCACHE_TTL) > madcache_* keys in pytest's ini file > defaults.",
    )
    common = argparse.ArgumentParser(add_help=False)
    add_settings_options(common, ("dir", "max_entries", "max_size_gb", "ttl", "remote", "remote_compress", "shared"))
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
    add_settings_options(p, ("base_key",))
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
    add_perf_parser(sub, common)
    return parser


_PRUNE_ALIASES = (("--max-entries", "max_entries", "N"), ("--max-size-gb", "max_size_gb", "GB"),
                  ("--ttl", "ttl", "TTL"))


def _resolve(args: argparse.Namespace, env: Mapping[str, str]) -> _settings.Settings:
    ini, ini_source = read_ini_file()
    given = vars(args)
    flags = {k: v for k, v in given.items() if k.startswith("madcache_")}
    names = {}
    for flag, name, _ in _PRUNE_ALIASES:
        if f"alias_{name}" in given:
            flags[name] = given[f"alias_{name}"]
            names[name] = flag
    return _settings.resolve(flags, env, ini, ini_source, flag_names=names, scopes=("cache",))


def main(argv: Optional[Sequence[str]] = None, env: Optional[Mapping[str, str]] = None,
         stdout: Optional[TextIO] = None, stdin: Optional[TextIO] = None) -> int:
    out = Out(stdout or sys.stdout)
    try:
        code = _main(argv, env, out, stdin)
        out.write("", flush=True)  # a reader gone before the last buffered text is written is the same case
        return code
    except ReaderGone:
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


def _main(argv: Optional[Sequence[str]], env: Optional[Mapping[str, str]], out: Out,
          stdin: Optional[TextIO]) -> int:
    env = os.environ if env is None else env
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _resolve(args, env)
    except _settings.SettingsError as exc:
        parser.exit(2, f"madcache: error: {exc}\n")
    try:
        return COMMANDS[args.command](args, settings, out, stdin or sys.stdin)
    except EntryNotFound as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except (StoreError, KeyError_, _settings.SettingsError, DockerfileError) as exc:
        print(f"madcache: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


COMMANDS = {
    "list": cmd_list, "stats": cmd_stats, "info": cmd_info, "evict": cmd_evict, "clear": cmd_clear,
    "prune": cmd_prune, "verify": cmd_verify, "load": cmd_load, "key": cmd_key, "push": cmd_push,
    "perf": cmd_perf,
}
