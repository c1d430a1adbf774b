"""What every `madcache` command shares: the output stream (which stops quietly when its reader
goes away), the separators madengine prints, an entry as JSON, and opening the store or the remote
with the resolved settings."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, TextIO, cast

from pytest_madcache.core import settings as _settings
from pytest_madcache.core.bases import VIA
from pytest_madcache.store import Entry, Store, StoreError

if TYPE_CHECKING:
    from pytest_madcache.remote.base import RemoteLister


__all__ = ["add_settings_options", "Out", "ReaderGone", "RULE", "THIN", "when", "entry_json", "open_store",
           "open_lister", "show_bases"]


def add_settings_options(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """The flags of these settings (settings.OPTIONS), absent from the namespace unless given."""
    for name in names:
        opt = _settings.OPTIONS_BY_NAME[name]
        kwargs = opt.argparse_kwargs()
        kwargs["default"] = argparse.SUPPRESS  # keep None defaults out of sub-command namespaces
        parser.add_argument(opt.flag, **kwargs)


RULE = "=" * 100
THIN = "-" * 100


def when(ts: Optional[float]) -> str:
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def entry_json(entry: Entry, unique: Optional[int] = None) -> Dict[str, Any]:
    data = entry.to_json()
    data["last_used"] = entry.last_used
    data["own_bytes"] = entry.own_bytes
    if unique is not None:
        data["unique_bytes"] = unique
    return data


class ReaderGone(Exception):
    """Writing our output failed with BrokenPipeError (not some socket of an engine or registry)."""


class Out:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str, flush: bool = False) -> None:
        try:
            self.stream.write(text)
            if flush:
                self.stream.flush()
        except BrokenPipeError:
            raise ReaderGone() from None

    def __call__(self, text: str = "") -> None:
        self.write(f"{text}\n")

    def json(self, data: Any) -> None:
        self.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def open_store(settings: _settings.Settings, engine: Any = None) -> Store:
    return Store.from_settings(settings, engine=engine, log=lambda m: print(m, file=sys.stderr))


def open_lister(settings: _settings.Settings) -> "RemoteLister":
    from pytest_madcache.remote import open_remote

    if not settings.remote:
        raise StoreError("no remote cache is set: use --cache-remote REGISTRY/REPOSITORY or MADCACHE_REMOTE")
    return cast("RemoteLister", open_remote(settings.remote, log=lambda m: print(m, file=sys.stderr),
                                            settings=settings))


def show_bases(out: Out, mode: Optional[str], bases: Sequence[Mapping[str, Any]]) -> None:
    out(f"Base Images{f' (base_key={mode})' if mode else ''}:" if bases else "Base Images: none")
    for b in bases:
        platform = f" [{b.get('platform')}]" if b.get("platform") else ""
        out(f"  {b.get('reference')}{platform} -> {b.get('value')} ({VIA.get(str(b.get('via')), b.get('via'))})")
