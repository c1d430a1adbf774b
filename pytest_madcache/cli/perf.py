"""`madcache perf`: the performance history (`history [MODEL]`) and the merge request note of a
report (`note REPORT.md`, gitlab.py).  The history is perf/history.py's, read from both copies: the
file (`--perf-history`, default perf/history.json in the cache directory) and the remote's."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, TextIO, Tuple

from pytest_madcache.cli.common import RULE, Out, add_settings_options
from pytest_madcache.core import settings as _settings
from pytest_madcache.perf.history import Documents, HistoryFile, gather, history_lines

__all__ = ["add_perf_parser", "cmd_perf"]


def add_perf_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("perf", help="the performance history, and a report as a merge request note")
    what = p.add_subparsers(dest="perf_command", metavar="WHAT")
    what.required = True
    h = what.add_parser("history", parents=[common],
                        help="the default branch's recorded runs (pytest --perf-record), oldest first")
    add_settings_options(h, ("perf_history", "perf_history_size"))
    h.add_argument("model", metavar="MODEL", nargs="?", help="only this model")
    n = what.add_parser("note", parents=[common],
                        help="post a --perf-report file as the merge request's note (GitLab, with "
                             "MADCACHE_GITLAB_TOKEN), updating the one posted before")
    n.add_argument("report", metavar="REPORT.md")


def _remote(settings: _settings.Settings) -> Tuple[Optional[Documents], str]:
    if not settings.remote:
        return None, ""
    from pytest_madcache.remote import open_remote
    from pytest_madcache.remote.documents import documents_of

    try:
        remote = open_remote(settings.remote, log=lambda m: print(m, file=sys.stderr), settings=settings)
        return documents_of(remote), f"remote {settings.remote}"
    except (OSError, ValueError) as exc:
        print(f"Warning: remote {settings.remote}: {exc}; showing the local copy only", file=sys.stderr)
        return None, ""


def cmd_history(args: argparse.Namespace, settings: _settings.Settings, out: Out) -> int:
    remote, name = _remote(settings)
    path = settings.history_path
    outcome = gather(HistoryFile(path), remote, name, settings.perf_history_size)
    for problem in outcome.problems:
        print(f"Warning: {problem}", file=sys.stderr)
    history = outcome.history
    if args.model and args.model not in history.models() and history.runs:
        print(f"madcache: no run of model {args.model!r} in the performance history (models: "
              f"{', '.join(history.models())})", file=sys.stderr)
        return 1
    if args.json:
        import json

        from pytest_madcache.perf.history import encode

        out.json({"path": str(path), "remote": settings.remote, "size": settings.perf_history_size,
                  **json.loads(encode(history))})
        return 0
    n = len(history.runs)
    out(f"Performance history: {n} run{'' if n == 1 else 's'} (at most {settings.perf_history_size}, "
        f"{settings.source('perf_history_size')}), oldest first; {path}" + (f" and {name}" if name else ""))
    out(RULE)
    for line in history_lines(history, args.model):
        out(line)
    return 0


def cmd_perf(args: argparse.Namespace, settings: _settings.Settings, out: Out, stdin: TextIO) -> int:
    if args.perf_command == "history":
        return cmd_history(args, settings, out)
    from pytest_madcache.cli.gitlab import post_note

    return post_note(args.report, out)
